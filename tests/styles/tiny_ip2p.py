"""A tiny InstructPix2Pix pipeline with random (seeded) weights, saved the way a real one is.

``build_tiny_ip2p(folder)`` writes ``folder`` as ``pipe.save_pretrained`` does
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``),
so that :func:`streamfx.styles.text.load_text_model` loads it through the real
``StableDiffusionInstructPix2PixPipeline.from_pretrained`` path, with no hub access.

Shapes: the VAE has 4 blocks (8x down, as SD's), so a (512, 512, 3) photo is a (4, 64, 64)
latent; the UNet takes 8 channels (4 noisy latent + 4 photo latent) and returns 4. Attention
runs only at 32x32 (1024 tokens), so a step takes well under a second on one CPU core.
Its images are noise: the tests check the plumbing, never the look.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

#: what the tokenizer knows: every lower-case letter and digit, alone and word-final
_CHARS = string.ascii_lowercase + string.digits
#: merges that build the test prompt's words (CLIP BPE: the last symbol carries ``</w>``)
_WORDS = ("bronze", "statue")


def _write_tokenizer_files(folder: Path) -> Path:
    """vocab.json and merges.txt of a character-level CLIP BPE (plus merges for ``_WORDS``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(_CHARS) + [c + "</w>" for c in _CHARS]
    merges = []
    for word in _WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merges.append(f"{symbols[0]} {symbols[1]}")
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            tokens.append(symbols[0])
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    return folder


def build_tiny_ip2p(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random InstructPix2Pix pipeline to ``folder`` (created) and return it."""
    import torch
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(_write_tokenizer_files(Path(tmp)), model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=8, sample_size=512,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, projection_dim=32,
        vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                num_train_timesteps=1000)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder

"""3DPE: the whole network behind one object, and its uint8 pre-processing.

```python
from streamfx.models import threedpe
model = threedpe.load(path, device="cpu", dtype=torch.float32)   # official 3dpe.pt or imported dir
tokens = model.reference_tokens(threedpe.prepare_reference(style_rgb))   # (1, 197, 768)
planes = model.encode(threedpe.prepare_input(face_crop_rgb), tokens)      # (1, 96, 256, 256)
out = model.render(planes, camera, preset="full")   # image (1,3,512,512), image_raw, image_depth
```

Pre-processing (as in the official code):

* reference: RGB uint8 resized to 224x224 with Pillow's bicubic filter (what torchvision's
  ``Resize`` does on PIL images; like the official test loader, a non-square image is
  squashed, not cropped), scaled to [0, 1] and normalised with the ImageNet mean (0.485, 0.456, 0.406) and std
  (0.229, 0.224, 0.225);
* input: the 512x512 EG3D-aligned face crop, RGB uint8, scaled to [-1, 1] (v / 127.5 - 1).

Reference tokens depend only on the prompt: :meth:`ThreeDPE.prompt_tokens` caches them by
prompt key.
"""

from __future__ import annotations

import copy

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import log
from .checkpoint import GET_WEIGHTS_HINT, CheckpointError, StateDicts, find_imported_weights, read_any
from .encoder import LiveEncoder, MaeViT
from .keymap import encoder_key

from .renderer import TriplaneRenderer

logger = log.get(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REF_SIZE = 224
INPUT_SIZE = 512
PLANES_SHAPE = (96, 256, 256)
TOKENS_SHAPE = (197, 768)


class ModelInputError(ValueError):
    """An image or tensor given to the model has the wrong shape or dtype (one line)."""


class WeightsNotFoundError(CheckpointError):
    """No weights path was given and none are imported."""


# ---------------------------------------------------------------------------- pre-processing


def _check_rgb_uint8(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ModelInputError(f"{what}: expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    return image


def prepare_reference(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, 224, 224) float32, bicubic + ImageNet normalisation."""
    from PIL import Image

    rgb = _check_rgb_uint8(rgb, "reference image")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    resized = np.asarray(image.resize((REF_SIZE, REF_SIZE), Image.BICUBIC), dtype=np.float32) / 255.0
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1).copy()).unsqueeze(0)


def prepare_input(crop: np.ndarray) -> torch.Tensor:
    """Aligned face crop, RGB uint8 (512, 512, 3) -> (1, 3, 512, 512) float32 in [-1, 1]."""
    crop = _check_rgb_uint8(crop, "face crop")
    if crop.shape[:2] != (INPUT_SIZE, INPUT_SIZE):
        raise ModelInputError(f"face crop: expected {INPUT_SIZE}x{INPUT_SIZE}, got {crop.shape[1]}x{crop.shape[0]}")
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).unsqueeze(0)
    return x.to(torch.float32) / 127.5 - 1.0


def check_tensor(t: torch.Tensor, tail: tuple[int, ...], what: str) -> None:
    """Raise :class:`ModelInputError` unless ``t`` is a tensor of shape (B, *tail)."""
    if not isinstance(t, torch.Tensor) or t.ndim != len(tail) + 1 or tuple(t.shape[1:]) != tail:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ModelInputError(f"{what}: expected shape (B, {', '.join(map(str, tail))}), got {got}")


# ---------------------------------------------------------------------------- cache


class ReferenceTokenCache:
    """Thread-safe LRU cache of reference tokens keyed by prompt key (``Prompt.key``)."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = compute()  # outside the lock: the ViT takes ~0.3-1 s
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value

    def __deepcopy__(self, memo: dict) -> "ReferenceTokenCache":
        """A copied model starts with an empty cache of its own."""
        return ReferenceTokenCache(self.max_entries)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------- model


class ThreeDPE(nn.Module):
    """The 3DPE network: ``vit`` (reference MAE ViT-B/16), ``encoder`` (image + tokens ->
    tri-planes) and ``renderer`` (tri-planes + camera -> images)."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = MaeViT()
        self.encoder = LiveEncoder()
        self.renderer = TriplaneRenderer()
        self.token_cache = ReferenceTokenCache()

    @property
    def dtype(self) -> torch.dtype:
        return self.vit.pos_embed.dtype

    @property
    def device(self) -> torch.device:
        return self.vit.pos_embed.device

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def reference_tokens(self, ref224: torch.Tensor) -> torch.Tensor:
        """ref224: (B, 3, 224, 224) ImageNet-normalised -> tokens (B, 197, 768)."""
        check_tensor(ref224, (3, REF_SIZE, REF_SIZE), "reference")
        return self.vit(self._cast(ref224))

    def prompt_tokens(self, key: str, reference_rgb: np.ndarray) -> torch.Tensor:
        """Tokens (1, 197, 768) of a reference image, computed once per prompt ``key``."""
        return self.token_cache.get_or_compute(
            key, lambda: self.reference_tokens(prepare_reference(reference_rgb)))

    @torch.inference_mode()
    def encode(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 512, 512) in [-1, 1], tokens: (B or 1, 197, 768) -> planes (B, 96, 256, 256)."""
        check_tensor(x, (3, INPUT_SIZE, INPUT_SIZE), "input")
        check_tensor(tokens, TOKENS_SHAPE, "tokens")
        if tokens.shape[0] not in (1, x.shape[0]):
            raise ModelInputError(f"tokens: batch {tokens.shape[0]} does not match input batch {x.shape[0]}")
        tokens = tokens.expand(x.shape[0], -1, -1)
        return self.encoder(self._cast(x), self._cast(tokens))

    @torch.inference_mode()
    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset: Any = "full") -> dict[str, torch.Tensor]:
        """planes (B, 96, 256, 256), camera (B, 25) EG3D label -> dict with ``image``,
        ``image_raw``, ``image_depth`` (see :mod:`streamfx.models.renderer`)."""
        check_tensor(planes, PLANES_SHAPE, "planes")
        return self.renderer(self._cast(planes), camera.to(self.device, torch.float32), preset)


def weights_sha256(model: ThreeDPE) -> str:
    """sha256 of the model's tensors (names, shapes and float32 values, in name order): which
    base weights a style adapter was trained on. About 0.4 s for the 152 M parameters."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|".encode())
        digest.update(memoryview(t.numpy()).cast("B"))
    return digest.hexdigest()


def _encoder_state(state: StateDicts) -> dict[str, torch.Tensor]:
    """Official ``encoder_state_dict`` -> ``vit.*`` / ``encoder.*`` StreamFX keys (unused dropped)."""
    mapped = {}
    for key, tensor in state["encoder_state_dict"].items():
        target = encoder_key(key)
        if target is not None:
            mapped[target] = tensor
    return mapped


def from_state(state: StateDicts, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ThreeDPE:
    """Build a :class:`ThreeDPE` from validated official-format state dicts (no random init:
    the modules are built on the meta device and take the checkpoint's tensors)."""
    with torch.device("meta"):
        model = ThreeDPE()
    renderer = {f"renderer.{key}": tensor for key, tensor in state["renderer_state_dict"].items()}
    model.load_state_dict(_encoder_state(state) | renderer, strict=True, assign=True)
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()


def copy_on(model: ThreeDPE, device: str | torch.device) -> ThreeDPE:
    """A copy of ``model`` with its weights on ``device`` (``model`` itself stays where it is)."""
    return copy.deepcopy(model).to(device)


def load(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> ThreeDPE:
    """Load 3DPE from an official ``3dpe.pt``, an imported directory or ``.safetensors``;
    with no path, from the imported weights (``streamfx weights import``)."""
    if path is None:
        path = find_imported_weights()
        if path is None:
            raise WeightsNotFoundError(f"no 3DPE weights imported; {GET_WEIGHTS_HINT}")
    state = read_any(Path(path))
    logger.info("3dpe weights read", extra={"path": str(path)})
    return from_state(state, device=device, dtype=dtype)

"""Text -> reference image: a photo edited by an instruction-editing diffusion model
(InstructPix2Pix, through ``diffusers``), written as a style pack (``streamfx styles create``).

    pipe = load_text_model(Path("models/instruct-pix2pix"), "cpu")     # a local folder, never a download
    crop = align_photo(Path("me.jpg"))                                  # (512, 512, 3) uint8 EG3D crop
    image = generate_reference(pipe, crop, "turn him into a bronze statue", seed=0)   # (512, 512, 3) uint8
    create_text_style(styles / "statue", crop, "turn him into a bronze statue", model_path, pipe=pipe)

The pack's ``style.json`` has ``kind: text``, the text, the model folder (and its
``model_index.json`` class and diffusers version), seed, steps, guidance scales, device and
seconds. The same seed, settings, model and device give the same image.

``diffusers`` and ``transformers`` are the ``text`` extra; they are imported only to load a
model. Every refusal is one line (:class:`TextModelError`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .pack import Style, write_pack

SIZE = 512
STEPS, GUIDANCE, IMAGE_GUIDANCE, SEED = 20, 7.5, 1.5, 0
EXTRA_HINT = "text prompts need the text extra: pip install 'streamfx[text]'"
DOWNLOAD_HINT = ("StreamFX never downloads models; on a machine with internet run `hf download "
                 "timbrooks/instruct-pix2pix --local-dir DIR` (older huggingface_hub: huggingface-cli download) "
                 "and pass that DIR")
INDEX_FILE = "model_index.json"


class TextModelError(ValueError):
    """A text style cannot be made (no extra, no model, no face, ...): one line."""


def require_text_extra() -> None:
    """Refuse, without importing them (seconds), when ``diffusers`` or ``transformers`` is missing."""
    for name in ("diffusers", "transformers"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise TextModelError(EXTRA_HINT)


def check_model_folder(path: Path) -> Path:
    """``path`` if it is a local diffusers pipeline folder (one with ``model_index.json``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise TextModelError(f"--text-model {path} is not a folder: {DOWNLOAD_HINT}")
    if not (path / INDEX_FILE).is_file():
        raise TextModelError(f"{path} is not a diffusers pipeline folder (no {INDEX_FILE}); {DOWNLOAD_HINT}")
    return path


def model_info(path: Path) -> dict[str, Any]:
    """What ``style.json`` records of the model: folder, name, pipeline class, diffusers version."""
    path = Path(path).expanduser().resolve()
    info: dict[str, Any] = {"path": str(path), "name": path.name}
    try:
        index = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if isinstance(index, dict):
        for key, field in (("_class_name", "class"), ("_name_or_path", "name"), ("_diffusers_version", "diffusers")):
            if isinstance(index.get(key), str):
                info[field] = index[key]
    return info


@contextlib.contextmanager
def _quiet():
    """diffusers' and transformers' warnings and loading bars off (the CLI draws its own bar)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = [(log, log.get_verbosity(), log.is_progress_bar_enabled()) for log in (dlog, tlog)]
    for log in (dlog, tlog):
        log.set_verbosity(log.ERROR)
        log.disable_progress_bar()
    try:
        yield
    finally:
        for log, verbosity, bars in saved:
            log.set_verbosity(verbosity)
            (log.enable_progress_bar if bars else log.disable_progress_bar)()


def load_text_model(path: Path, device="cpu"):
    """The ``StableDiffusionInstructPix2PixPipeline`` in the local folder ``path``, on ``device``
    (a GPU: float16; the CPU: float32). Nothing is downloaded (``local_files_only``)."""
    import torch

    path = check_model_folder(path)
    try:
        for name in ("diffusers", "transformers"):  # both, before _quiet() sets their logging
            importlib.import_module(name)
        with _quiet():
            from diffusers import StableDiffusionInstructPix2PixPipeline
    except ImportError:
        raise TextModelError(EXTRA_HINT) from None
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        with _quiet():
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(  # float32 as stored
                path, local_files_only=True, safety_checker=None, requires_safety_checker=False,
                low_cpu_mem_usage=False)
    except Exception as exc:  # noqa: BLE001 - diffusers and transformers raise many kinds here
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise TextModelError(f"{path} is not a loadable InstructPix2Pix pipeline folder "
                             f"({type(exc).__name__}{': ' + detail if detail else ''})") from None
    latent, unet_in = pipe.vae.config.latent_channels, pipe.unet.config.in_channels
    if unet_in != 2 * latent:
        raise TextModelError(f"{path} is a diffusers pipeline but not an instruction-editing one: its UNet takes "
                             f"{unet_in} channels, InstructPix2Pix's take {2 * latent}")
    pipe.set_progress_bar_config(disable=True)
    with _quiet():  # (SD's UNet and VAE keep no modules in float32, which to() would warn about)
        return pipe.to(device, dtype)  # not from_pretrained(torch_dtype=): renamed dtype= lately


def generate_reference(pipe, crop_rgb: np.ndarray, text: str, steps: int = STEPS, guidance: float = GUIDANCE,
                       image_guidance: float = IMAGE_GUIDANCE, seed: int = SEED,
                       progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``crop_rgb`` (512, 512, 3) uint8 edited by the instruction ``text``: (512, 512, 3) uint8.

    ``steps`` diffusion steps, text guidance ``guidance``, image guidance ``image_guidance``
    (higher keeps more of the photo); the noise comes from a torch.Generator on the
    pipeline's device seeded with ``seed``. ``progress(k, n)`` is called after step k of n.
    """
    import torch
    from PIL import Image

    if not (isinstance(crop_rgb, np.ndarray) and crop_rgb.shape == (SIZE, SIZE, 3) and crop_rgb.dtype == np.uint8):
        raise TextModelError(f"expected a ({SIZE}, {SIZE}, 3) uint8 crop, got {getattr(crop_rgb, 'shape', None)}")
    if not text.strip():
        raise TextModelError("the text instruction is empty")
    if steps < 1:
        raise TextModelError(f"steps must be at least 1, not {steps}")

    def on_step(pipeline, i: int, timestep, tensors: dict) -> dict:
        if progress is not None:
            progress(i + 1, int(getattr(pipeline, "num_timesteps", steps) or steps))
        return tensors

    generator = torch.Generator(device=pipe.device).manual_seed(int(seed))
    out = pipe(text, image=Image.fromarray(crop_rgb), num_inference_steps=int(steps), guidance_scale=guidance,
               image_guidance_scale=image_guidance, generator=generator, output_type="np",
               callback_on_step_end=on_step).images[0]  # (H, W, 3) float in [0, 1]; a text over 77 tokens: warned
    if not np.isfinite(out).all():
        raise TextModelError("the model produced NaNs (float16 overflow? try --device cpu)")
    image = (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if image.shape[:2] != (SIZE, SIZE):
        image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return image


def align_photo(path: Path) -> np.ndarray:
    """The EG3D crop (512, 512, 3) uint8 of the face in the photo at ``path``; a photo that
    already is such a crop is used as it is (as training pairs are, :mod:`streamfx.training.pairs`)."""
    from ..face import FaceTracker, align_face
    from ..training.pairs import PairsError, _is_crop, read_image

    try:
        photo = read_image(Path(path))
    except PairsError as exc:
        raise TextModelError(str(exc)) from None
    with FaceTracker(static_image=True) as tracker:
        found = tracker.update(np.ascontiguousarray(photo))
    if found.face is None:
        raise TextModelError(f"no face found in {path}")
    crop = align_face(photo, found.face)
    return np.ascontiguousarray(photo) if _is_crop(photo, crop.matrix) else crop.crop


def create_text_style(folder: Path, crop: np.ndarray, text: str, model_path: Path, steps: int = STEPS,
                      guidance: float = GUIDANCE, image_guidance: float = IMAGE_GUIDANCE, seed: int = SEED,
                      device="cpu", pipe=None, progress: Callable[[int, int], None] | None = None) -> Style:
    """Make the reference image of ``text`` from ``crop`` (512, 512, 3) uint8 and write the pack
    ``folder`` (``reference.png``, ``style.json``). ``pipe``: an already loaded model of
    ``model_path`` (else it is loaded on ``device``)."""
    if pipe is None:
        pipe = load_text_model(model_path, device)
    started = time.perf_counter()
    image = generate_reference(pipe, crop, text, steps, guidance, image_guidance, seed, progress)
    meta = {
        "kind": "text",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "text": text,
        "model": model_info(model_path),
        "seed": int(seed), "steps": int(steps), "guidance": float(guidance), "image_guidance": float(image_guidance),
        "device": str(pipe.device), "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return write_pack(Path(folder), image, meta)

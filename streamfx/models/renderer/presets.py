"""Quality presets: how many rays and samples to render, and how far to super-resolve.

Every preset fixes all tensor shapes, so each one can be exported as a static graph.
``full`` is the official 3DPE setting and the one the known-answer test checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import UnknownPresetError

SuperResMode = Literal["full", "block0", "none"]
_SR_MODES = ("full", "block0", "none")


@dataclass(frozen=True)
class RenderPreset:
    """Static shape configuration of one render.

    - ``neural_resolution`` R: the volume is rendered at R x R rays (``image_raw``, ``image_depth``).
    - ``coarse_samples`` / ``importance_samples``: samples per ray of the two passes;
      ``importance_samples = 0`` disables the fine pass.
    - ``superres``: ``"full"`` runs both super-resolution blocks (x4 of ``sr_input_resolution``),
      ``"block0"`` stops after the first block (x2, a valid image thanks to the skip
      architecture), ``"none"`` uses ``image_raw`` as the image.
    - ``sr_input_resolution``: the raw features are resized to this size before super-resolution
      (the official network always uses 128; smaller is faster but off-distribution).
    - ``output_size``: ``image`` is resized (bilinear) to this size if it differs.
    """

    name: str
    neural_resolution: int = 128
    coarse_samples: int = 48
    importance_samples: int = 48
    superres: SuperResMode = "full"
    output_size: int = 512
    sr_input_resolution: int = 128

    def __post_init__(self) -> None:
        if self.superres not in _SR_MODES:
            raise UnknownPresetError(f"preset {self.name!r}: superres must be one of {_SR_MODES}, got {self.superres!r}")
        if self.neural_resolution < 1 or self.output_size < 1 or self.sr_input_resolution < 1:
            raise UnknownPresetError(f"preset {self.name!r}: resolutions must be positive")
        if self.coarse_samples < 4:
            raise UnknownPresetError(f"preset {self.name!r}: coarse_samples must be >= 4, got {self.coarse_samples}")
        if self.importance_samples < 0:
            raise UnknownPresetError(f"preset {self.name!r}: importance_samples must be >= 0")

    @property
    def samples_per_ray(self) -> int:
        return self.coarse_samples + self.importance_samples

    @property
    def sr_output_size(self) -> int:
        """Size of the image the chosen super-resolution mode produces, before the final resize."""
        if self.superres == "full":
            return 4 * self.sr_input_resolution
        if self.superres == "block0":
            return 2 * self.sr_input_resolution
        return self.neural_resolution


PRESETS: dict[str, RenderPreset] = {
    p.name: p
    for p in (
        # Official 3DPE quality: the parity path.
        RenderPreset("full", 128, 48, 48, "full", 512),
        # Fewer samples per ray at full resolution.
        RenderPreset("balanced", 128, 24, 24, "full", 512),
        # Quarter of the rays, super-resolution stopped at the 256 block.
        RenderPreset("fast", 64, 24, 24, "block0", 256),
        # Volume only, no super-resolution: image_raw upsampled to 256.
        RenderPreset("fastest", 64, 24, 12, "none", 256),
    )
}


def get_preset(preset: str | RenderPreset) -> RenderPreset:
    """Resolve a preset name (or pass a :class:`RenderPreset` through)."""
    if isinstance(preset, RenderPreset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise UnknownPresetError(f"unknown render preset {preset!r}; choose one of {', '.join(PRESETS)}") from None

"""Fixed rendering options of the 3DPE renderer (EG3D FFHQ-512 settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderingOptions:
    """Scene bounds and decoder options, as in the official ``rendering_kwargs``.

    Sample counts and resolutions vary per :class:`~.presets.RenderPreset`; these do not.
    """

    ray_start: float = 2.25  # near bound of every ray (scene units)
    ray_end: float = 3.3  # far bound of every ray
    box_warp: float = 1.0  # side of the cube spanned by the tri-planes: [-0.5, 0.5]^3
    white_back: bool = False  # composite over white instead of black
    sr_antialias: bool = True  # antialias when the super-resolution input is resized down
    decoder_lr_mul: float = 1.0  # learning-rate multiplier of the decoder's FC layers
    avg_camera_radius: float = 2.7  # default orbit radius for look-at cameras
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)  # default look-at point
    fov_deg: float = 18.837  # default field of view of look-at cameras
    importance_eps: float = 1e-5  # epsilon of the inverse-CDF step
    weight_floor: float = 0.01  # added to the smoothed coarse weights before importance sampling

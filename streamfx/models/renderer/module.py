"""TriplaneRenderer: tri-planes + camera -> image, raw image and depth (3DPE's renderer half).

Parameter and buffer names equal the official ``TriplaneRenderer`` (EzioBy/3dpe
``models/model.py``), so ``renderer.load_state_dict(ckpt["renderer_state_dict"])`` works as is;
no key map is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from streamfx import log

from .cameras import check_camera
from .config import RenderingOptions
from .decoder import OSGDecoder
from .errors import RenderInputError
from .presets import RenderPreset, get_preset
from .superres import SuperresolutionHybrid8XDC, resize
from .triplane import N_PLANES, sample_triplanes
from .volume import PointDecoder, render_volume

logger = log.get(__name__)

PLANE_CHANNELS = 32
W_DIM = 512


class TriplaneRenderer(nn.Module):
    """EG3D volume renderer with OSGDecoder and SuperresolutionHybrid8XDC driven by a learned ``const`` w.

    Args:
        img_resolution: final image size of the official network (must be 512).
        img_channels: colour channels (3).
        rendering: fixed scene options; defaults are 3DPE's.
    """

    def __init__(self, img_resolution: int = 512, img_channels: int = 3, rendering: RenderingOptions | None = None) -> None:
        super().__init__()
        if img_channels != 3:
            raise ValueError(f"TriplaneRenderer renders RGB; img_channels must be 3, got {img_channels}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.rendering = rendering or RenderingOptions()
        self.const = nn.Parameter(torch.randn(1, 1, W_DIM))
        self.decoder = OSGDecoder(PLANE_CHANNELS, PLANE_CHANNELS, lr_multiplier=self.rendering.decoder_lr_mul)
        self.superresolution = SuperresolutionHybrid8XDC(
            PLANE_CHANNELS, img_resolution, sr_antialias=self.rendering.sr_antialias
        )

    # ------------------------------------------------------------------ volume
    def point_decoder(self, planes: torch.Tensor, channels: int = PLANE_CHANNELS) -> PointDecoder:
        """The reference :data:`~.volume.PointDecoder` of ``planes`` (B, 96, H, W): ``grid_sample``
        lookups (float32) and the official decoder module (in the model's dtype)."""
        batch = planes.shape[0]
        planes = planes.reshape(batch, N_PLANES, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])

        def decode(origins: torch.Tensor, directions: torch.Tensor,
                   depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            points = origins + depths.unsqueeze(-1) * directions  # (B, RR, S, 3)
            rays, samples = points.shape[1], points.shape[2]
            features = sample_triplanes(planes, points.reshape(batch, rays * samples, 3), self.rendering.box_warp)
            rgb, sigma = self.decoder(features)  # (B, 32, M), (B, 1, M)
            colors = rgb[:, :channels].float().reshape(batch, channels, rays, samples)
            return (colors.permute(0, 2, 3, 1).reshape(batch * rays, samples, channels),
                    sigma.float().reshape(batch * rays, samples))

        return decode

    def render_volume(
        self, planes: torch.Tensor, camera: torch.Tensor, preset: RenderPreset
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray-march the tri-planes (:func:`~.volume.render_volume`).

        Args:
            planes: (B, 96, H, W); camera: (B, 25).

        Returns:
            features (B, 32, R, R) in about [-1, 1] (the first 3 are ``image_raw``) and depth (B, 1, R, R).
        """
        return render_volume(self.point_decoder(planes), camera, preset, self.rendering, PLANE_CHANNELS)

    # ------------------------------------------------------------------ public
    def style(self) -> torch.Tensor:
        """The constant w modulating the super-resolution: (1, 512)."""
        return self.const[:, -1, :]

    def forward(
        self, planes: torch.Tensor, camera: torch.Tensor, preset: str | RenderPreset = "full"
    ) -> dict[str, torch.Tensor]:
        """Render tri-planes from a camera.

        Args:
            planes: (B, 96, H, W) tri-planes (3 planes x 32 channels, H = W = 256 for 3DPE).
            camera: (B, 25) EG3D labels.
            preset: a name in ``PRESETS`` or a :class:`RenderPreset`.

        Returns:
            ``image`` (B, 3, S, S) with S = ``preset.output_size``, ``image_raw`` (B, 3, R, R) and
            ``image_depth`` (B, 1, R, R) with R = ``preset.neural_resolution``; colours in about [-1, 1].
        """
        preset = get_preset(preset)
        self._check_inputs(planes, camera)
        features, depth = self.render_volume(planes, camera, preset)
        image_raw = features[:, :3]
        if preset.superres == "none":
            image = image_raw
        else:
            blocks = 2 if preset.superres == "full" else 1
            sr_in = features.to(self.const.dtype)  # a bfloat16 model runs its convolutions in bfloat16
            image = self.superresolution(
                sr_in[:, :3], sr_in, self.style(), blocks=blocks, input_resolution=preset.sr_input_resolution
            )
        image = resize(image.float(), preset.output_size, antialias=True)
        return {"image": image, "image_raw": image_raw, "image_depth": depth}

    @classmethod
    def from_official_state_dict(
        cls, state_dict: dict[str, torch.Tensor], *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> TriplaneRenderer:
        """An eval-mode renderer holding an official ``renderer_state_dict`` (the key map is the identity).

        Raises ``RuntimeError`` from ``load_state_dict`` on missing/unexpected keys or wrong shapes;
        validate checkpoints before calling this to give users a one-line message.
        """
        renderer = cls(img_resolution=512)
        renderer.load_state_dict(state_dict, strict=True)
        logger.debug("renderer loaded", extra={"device": str(device), "dtype": str(dtype)})
        return renderer.to(device=device, dtype=dtype).eval().requires_grad_(False)

    @staticmethod
    def _check_inputs(planes: torch.Tensor, camera: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are static per preset in exported graphs
            return
        if not isinstance(planes, torch.Tensor) or planes.ndim != 4 or planes.shape[1] != N_PLANES * PLANE_CHANNELS:
            shape = tuple(planes.shape) if isinstance(planes, torch.Tensor) else type(planes).__name__
            raise RenderInputError(f"planes must have shape (B, {N_PLANES * PLANE_CHANNELS}, H, W), got {shape}")
        if not planes.is_floating_point():
            raise RenderInputError(f"planes must be a float tensor, got {planes.dtype}")
        check_camera(camera, planes.shape[0])

"""TriplaneRenderer: tri-planes + camera -> image, raw image and depth (3DPE's renderer half).

Parameter and buffer names equal the official ``TriplaneRenderer`` (EzioBy/3dpe
``models/model.py``), so ``renderer.load_state_dict(ckpt["renderer_state_dict"])`` works as is;
no key map is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from streamfx import log

from .cameras import camera_rays, check_camera
from .config import RenderingOptions
from .decoder import OSGDecoder
from .errors import RenderInputError
from .marcher import alpha_weights, composite_depth, finish_rgb, sample_coefficients
from .presets import RenderPreset, get_preset
from .sampling import coarse_depths, importance_depths
from .superres import SuperresolutionHybrid8XDC, resize
from .triplane import N_PLANES, sample_triplanes

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
    def _run_decoder(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """planes (B, 3, 32, H, W), points (B, R, S, 3) -> colors (B, 32, R, S), sigma (B, 1, R, S)."""
        batch, rays, samples, _ = points.shape
        features = sample_triplanes(planes, points.reshape(batch, rays * samples, 3), self.rendering.box_warp)
        rgb, sigma = self.decoder(features)
        return rgb.reshape(batch, -1, rays, samples), sigma.reshape(batch, 1, rays, samples)

    def render_volume(
        self, planes: torch.Tensor, camera: torch.Tensor, preset: RenderPreset
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray-march the tri-planes.

        Args:
            planes: (B, 96, H, W); camera: (B, 25).

        Returns:
            features (B, 32, R, R) in about [-1, 1] (the first 3 are ``image_raw``) and depth (B, 1, R, R).
        """
        opts = self.rendering
        batch = planes.shape[0]
        res = preset.neural_resolution
        planes = planes.reshape(batch, N_PLANES, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])
        origins, directions = camera_rays(camera, res)  # (B, 1, 3), (B, R*R, 3)
        origins = origins.unsqueeze(-2)  # (B, 1, 1, 3)
        directions = directions.unsqueeze(-2)  # (B, R*R, 1, 3)
        rays = directions.shape[1]

        depths = coarse_depths(opts.ray_start, opts.ray_end, preset.coarse_samples, device=planes.device)
        colors, sigma = self._run_decoder(planes, origins + depths.reshape(1, 1, -1, 1) * directions)
        sigma = sigma.float()
        depths_all = depths.reshape(1, 1, 1, -1)  # (1, 1, 1, S) shared by every ray
        weights = alpha_weights(sigma, depths_all)  # (B, 1, R*R, S - 1)

        if preset.importance_samples == 0:
            coeffs = sample_coefficients(weights)
            rgb = torch.sum(colors * coeffs.to(colors.dtype), dim=-1)
        else:
            fine = importance_depths(
                depths, weights.reshape(batch * rays, -1), preset.importance_samples,
                floor=opts.weight_floor, eps=opts.importance_eps,
            ).reshape(batch, 1, rays, -1)  # (B, 1, R*R, Q)
            colors_f, sigma_f = self._run_decoder(planes, origins + fine.reshape(batch, rays, -1, 1) * directions)
            # Sort all samples by depth; only the 1-channel density and depth are reordered.
            unsorted = torch.cat((depths_all.expand(batch, 1, rays, -1), fine), dim=-1)
            depths_all, order = torch.sort(unsorted, dim=-1)
            sigma_all = torch.gather(torch.cat((sigma, sigma_f.float()), dim=-1), -1, order)
            weights = alpha_weights(sigma_all, depths_all)
            # Each sample's colour coefficient, scattered back to the unsorted sample order.
            coeffs = torch.zeros_like(unsorted).scatter(-1, order, sample_coefficients(weights)).to(colors.dtype)
            n_coarse = preset.coarse_samples
            rgb = torch.sum(colors * coeffs[..., :n_coarse], dim=-1) + torch.sum(colors_f * coeffs[..., n_coarse:], dim=-1)

        features = finish_rgb(rgb.float(), weights.sum(dim=-1), opts.white_back)  # (B, 32, R*R)
        depth = composite_depth(weights, depths_all)  # (B, 1, R*R)
        return features.reshape(batch, -1, res, res), depth.reshape(batch, 1, res, res)

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

"""The paste-back of :mod:`.compositing` in torch, so that it runs where the render is (GPU).

Same maths as :func:`~.compositing.composite`: the seam colour correction on a 64x64 grid
(area downsampling, a Gaussian of sigma = grid/10 with reflected borders, bilinear
upsampling), the affine warp of the corrected render and of the feathered head mask into
the frame's region under the crop (bilinear; the render's border replicated, the mask's
zero), and the linear blend. Only the region under the crop is returned, so a GPU caller
copies that region to the host once per frame. It runs on any torch device; on the CPU
it matches the OpenCV version within a few grey levels (tests/face/test_tensor_compositing.py).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .paste_geometry import COLOR_GRID, region_under, scaled_support, crop_to_region, crop_head_mask
from .types import AlignedFace

Box = tuple[int, int, int, int]


def paste_region(aligned: AlignedFace, size: int = 512, feather: float = 0.06) -> Box | None:
    """(x0, y0, x1, y1): the frame region a render of ``size`` pixels is pasted into (None if off-frame)."""
    return region_under(aligned, scaled_support(crop_head_mask(size, feather), aligned.size, float(feather)))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) -> the same, OpenCV's float Gaussian (kernel 8 sigma + 1, reflect-101 borders)."""
    radius = int(round(sigma * 4 * 2 + 1)) // 2
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(t * t) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def seam_corrected(original: torch.Tensor, rendered: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``rendered`` pulled towards ``original`` near the seam: (1, 3, S, S) float in 0..255."""
    g, s = COLOR_GRID, rendered.shape[-1]
    o = F.interpolate(original, size=(g, g), mode="area")
    r = F.interpolate(rendered, size=(g, g), mode="area")
    m = F.interpolate(mask, size=(g, g), mode="area")
    band = 4.0 * m * (1.0 - m)
    num = _gaussian_blur((o - r) * band, g / 10.0)
    den = _gaussian_blur(band, g / 10.0)
    offset = num / den.clamp_min(1e-3) * (1.0 - m)
    biased = (offset + 128.0).clamp(0, 255).floor()  # as OpenCV: uint8 before the upsampling
    correction = F.interpolate(biased, size=(s, s), mode="bilinear", align_corners=False).round()
    return (rendered + correction - 128.0).round().clamp(0, 255)


def _warp(image: torch.Tensor, matrix: np.ndarray, size: tuple[int, int], padding: str) -> torch.Tensor:
    """cv2.warpAffine(image, matrix, size) with bilinear sampling: (1, C, S, S) -> (1, C, h, w)."""
    w, h = size
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]  # ROI pixel -> source pixel
    src_h, src_w = image.shape[-2:]
    # grid_sample (align_corners=False) reads normalised x = (2 u + 1) / W - 1 for source pixel u
    to_norm = np.array([[2.0 / src_w, 0.0, 1.0 / src_w - 1.0], [0.0, 2.0 / src_h, 1.0 / src_h - 1.0]])
    # affine_grid's output coordinates are normalised too: ROI pixel x = ((x_n + 1) w - 1) / 2
    from_norm = np.array([[w / 2.0, 0.0, (w - 1) / 2.0], [0.0, h / 2.0, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    theta = torch.tensor(to_norm @ np.vstack([inverse, [0.0, 0.0, 1.0]]) @ from_norm, dtype=torch.float32)
    # the grid is built where the image is: nothing but the 2x3 matrix crosses to the device
    grid = F.affine_grid(theta.to(image.device)[None], [1, 1, h, w], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=False)


@lru_cache(maxsize=8)
def _mask_on(device: torch.device, size: int, feather: float) -> torch.Tensor:
    """The head mask (1, 1, S, S) on ``device``, uploaded once per device and size."""
    return torch.from_numpy(np.array(crop_head_mask(size, feather))).to(device)[None, None]


def composite_region(frame_region: torch.Tensor, rendered: torch.Tensor, crop: torch.Tensor, aligned: AlignedFace,
                     region: Box, feather: float = 0.06, color_match: bool = True) -> torch.Tensor:
    """Blend a render into the frame region under the crop.

    Args:
        frame_region: (h, w, 3) uint8, the frame's pixels in ``region`` (on the device).
        rendered: (1, 3, S, S) in [-1, 1], the render of ``aligned``'s crop (on the device).
        crop: (S', S', 3) uint8, the aligned crop the render was made from (on the device).
        aligned: the alignment; region: :func:`paste_region`.

    Returns:
        (h, w, 3) uint8 on the device: the region to write back into the frame.
    """
    device, s = rendered.device, rendered.shape[-1]
    image = ((rendered.float().clamp(-1, 1) + 1) * 127.5).round()
    mask = _mask_on(device, s, float(feather))
    if color_match:
        original = crop.permute(2, 0, 1)[None].float()
        if original.shape[-1] != s:
            original = F.interpolate(original, size=(s, s), mode="area")
        image = seam_corrected(original, image, mask)
    x0, y0, x1, y1 = region
    to_roi = crop_to_region(aligned, s, region)
    warped = _warp(image, to_roi, (x1 - x0, y1 - y0), "border")[0]
    alpha = _warp(mask, to_roi, (x1 - x0, y1 - y0), "zeros")[0]
    base = frame_region.permute(2, 0, 1).float()
    out = warped * alpha + base * (1.0 - alpha)
    return out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)

"""A 3DPE session's GPU side: one CUDA stream, pinned uploads, the paste on the device.

Per frame on a GPU: the aligned crop and the frame region under it go up once each
through pinned host buffers; encode, tri-plane smoothing, render and the paste run on the
session's own stream; the composited region comes back in one device-to-host copy.
Tracking and the crop's affine cut stay on the CPU, where the frame already is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ....face.tensor_compositing import composite_region, paste_region
from ....face.types import AlignedFace
from ....runtime.device_ops import DeviceOps


class PinnedUploader:
    """Host-to-device copies through two reused pinned buffers: the CPU fills one while the
    other may still be in flight, and an event says when a buffer may be written again.
    Buffers grow to the largest array seen (regions under the crop change size per frame)."""

    def __init__(self, ops: DeviceOps) -> None:
        self.ops = ops
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._done: list[Any] = [None, None]
        self._turn = 0

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """A uint8 array -> the same values on the device (ordered on the current stream)."""
        if array.dtype != np.uint8:
            raise TypeError(f"uploads are uint8 images, got {array.dtype}")
        turn, self._turn = self._turn, 1 - self._turn
        streams = self.ops.streams
        streams.synchronize(self._done[turn])  # the copy that last read this buffer has finished
        buffer = self._buffers[turn]
        if buffer is None or buffer.numel() < array.size:
            self._buffers[turn] = buffer = self.ops.pinned(torch.empty(array.size, dtype=torch.uint8))
        host = buffer[:array.size].view(array.shape)
        host.numpy()[...] = array
        on_device = host.to(self.ops.device, non_blocking=True)
        if on_device is host:  # the device is this host (CPU): the buffer is reused, hand out a copy
            on_device = on_device.clone()
        self._done[turn] = streams.record(streams.current())
        return on_device


class GpuFrames:
    """The stream and transfers of one session on ``ops.device`` (a CUDA device, or the GPU's
    road on another device in tests: the same code, with the device's stream operations)."""

    def __init__(self, ops: DeviceOps) -> None:
        self.ops = ops
        self.device = ops.device
        self.stream = ops.streams.new_stream()
        self.upload = PinnedUploader(ops)

    def model_input(self, crop: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop on the device, as uint8 (H, W, 3) and as the encoder's (1, 3, H, W) in [-1, 1]."""
        crop_t = self.upload(crop)
        return crop_t, crop_t.permute(2, 0, 1)[None].float() / 127.5 - 1.0

    def paste(self, frame: np.ndarray, image: torch.Tensor, crop_t: torch.Tensor, aligned: AlignedFace) -> np.ndarray:
        """``frame`` with the render pasted in; one copy of the region back to the host."""
        region = paste_region(aligned, image.shape[-1])
        out = frame.copy()
        if region is None:
            return out
        x0, y0, x1, y1 = region
        base = self.upload(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        out[y0:y1, x0:x1] = composite_region(base, image, crop_t, aligned, region).cpu().numpy()
        return out

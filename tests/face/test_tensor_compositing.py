"""The torch paste-back (what a GPU session runs) against the OpenCV one, on real faces, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamfx.face import FaceTracker, align_face, composite
from streamfx.face.tensor_compositing import composite_region, paste_region


@pytest.mark.parametrize("face, shift", [("faces/ffhq_2.png", (90, 40)), ("faces/ffhq_6.png", (-60, 10))])
def test_torch_paste_matches_opencv(read_rgb, face, shift):
    photo = read_rgb(face)
    frame = np.full((720, 960, 3), 60, np.uint8)
    y, x = 104 + shift[1], 224 + shift[0]
    frame[y:y + 512, x:x + 512] = photo
    with FaceTracker(static_image=True) as tracker:
        found = tracker.update(frame).face
    assert found is not None
    aligned = align_face(frame, found)
    rng = np.random.default_rng(0)
    rendered = np.clip(aligned.crop.astype(int) + rng.integers(-40, 40, (1, 1, 3)) + 30, 0, 255).astype(np.uint8)
    expected = composite(frame, rendered, aligned)
    region = paste_region(aligned)
    assert region is not None
    x0, y0, x1, y1 = region
    render_t = torch.from_numpy(rendered).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    got = composite_region(torch.from_numpy(frame[y0:y1, x0:x1].copy()), render_t,
                           torch.from_numpy(aligned.crop), aligned, region).numpy()
    changed = np.abs(expected.astype(int) - frame)
    assert changed[y0:y1, x0:x1].max() > 20 and changed.sum() == changed[y0:y1, x0:x1].sum(), \
        "the paste changes pixels, all of them inside the region"
    diff = np.abs(got.astype(int) - expected[y0:y1, x0:x1])
    psnr = 10 * np.log10(255.0 ** 2 / max(float((diff.astype(float) ** 2).mean()), 1e-9))
    assert psnr > 50 and diff.max() <= 3, (psnr, diff.max())  # measured 60.3 / 60.7 dB, max 2


def test_gpu_session_frames_upload_and_paste_like_the_cpu_path(read_rgb):
    """The GPU session's transfers and paste (pipeline/engines/threedpe/gpu.py), run on the CPU:
    uploads rotate two reused buffers without aliasing, grow for a larger region, refuse
    non-uint8, and the paste equals the torch paste written into the frame."""
    from streamfx.pipeline.engines.threedpe.gpu import GpuFrames
    from streamfx.runtime.device_ops import gpu_road

    frames = GpuFrames(gpu_road("cpu"))
    a = np.full((512, 512, 3), 7, np.uint8)
    b = np.full((512, 512, 3), 9, np.uint8)
    first, x = frames.model_input(a)
    second, _ = frames.model_input(b)
    third, _ = frames.model_input(np.full((512, 512, 3), 11, np.uint8))  # reuses the first buffer
    fourth = frames.upload(np.full((600, 600, 3), 13, np.uint8))  # a larger array: the buffer grows
    assert int(first.max()) == 7 and int(second.max()) == 9, "a reused buffer must not change what was handed out"
    assert int(third.min()) == 11 and fourth.shape == (600, 600, 3) and int(fourth.min()) == 13
    assert x.shape == (1, 3, 512, 512) and abs(float(x.mean()) - (7 / 127.5 - 1)) < 1e-6
    with pytest.raises(TypeError, match="uint8"):
        frames.upload(np.zeros((4, 4, 3), np.float32))

    photo = read_rgb("faces/ffhq_3.png")
    frame = np.full((720, 960, 3), 60, np.uint8)
    frame[100:612, 200:712] = photo
    with FaceTracker(static_image=True) as tracker:
        aligned = align_face(frame, tracker.update(frame).face)
    render_t = torch.from_numpy(aligned.crop[::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    crop_t, _ = frames.model_input(aligned.crop)
    out = frames.paste(frame, render_t, crop_t, aligned)
    x0, y0, x1, y1 = paste_region(aligned)
    expected = composite_region(torch.from_numpy(frame[y0:y1, x0:x1].copy()), render_t, crop_t, aligned,
                                (x0, y0, x1, y1)).numpy()
    assert np.array_equal(out[y0:y1, x0:x1], expected)
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside]) and not np.array_equal(out, frame)

"""Pasting a rendered crop back: seams, frame sizes, masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from helpers import paste, psnr
from streamfx.face import FaceError, FaceTracker, align_face, composite, crop_head_mask, frame_head_mask
from streamfx.face.mesh import triangles


@pytest.fixture(scope="module")
def astronaut(read_rgb):
    image = read_rgb("faces/astronaut_512.png")
    with FaceTracker(static_image=True) as t:
        face = t.update(image).face
    assert face is not None
    return image, align_face(image, face)


def _seam_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude on the ring where the head mask crosses 0.5."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    ring = (mask > 0.3) & (mask < 0.7)
    assert ring.sum() > 50
    return float(g[ring].mean())


def test_astronaut_identity_paste_is_invisible(astronaut):
    image, aligned = astronaut
    out = composite(image, aligned.crop, aligned)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr(out, image) > 38


@pytest.mark.parametrize("shift", [40, -40])
def test_astronaut_edited_paste_has_no_visible_seam(astronaut, shift):
    image, aligned = astronaut
    edited = np.clip(aligned.crop.astype(np.int16) + shift, 0, 255).astype(np.uint8)  # a strong colour edit
    mask = frame_head_mask(aligned)
    base = _seam_energy(image, mask)
    plain = _seam_energy(composite(image, edited, aligned, color_match=False), mask)
    matched = _seam_energy(composite(image, edited, aligned, color_match=True), mask)
    # the feathered seam adds little gradient energy; colour matching keeps it near the original
    assert plain < base * 1.5 + 4.0, (base, plain)
    assert matched < base * 1.25 + 1.0, (base, matched)
    out = composite(image, edited, aligned, color_match=True)
    inside = mask > 0.99
    # the edit survives inside the head
    assert abs(float(out[inside].astype(np.float32).mean() - image[inside].astype(np.float32).mean())) > 0.5 * abs(shift)


@pytest.mark.parametrize("size", [(320, 240), (640, 480), (1280, 720), (1920, 1080)])
def test_frame_sizes(read_rgb, size):
    crop = read_rgb("faces/ffhq_4.png")
    w, h = size
    scale = 0.5 * h / 512 * 1.5
    canvas, _ = paste(crop, scale, (w / 2 - 256 * scale, h / 2 - 256 * scale), size=size)
    with FaceTracker(static_image=True) as t:
        res = t.update(canvas)
    assert res.face is not None
    aligned = align_face(canvas, res.face)
    assert aligned.crop.shape == (512, 512, 3)
    rendered = np.full_like(aligned.crop, 200)
    out = composite(canvas, rendered, aligned, color_match=False)
    assert out.shape == canvas.shape
    m = frame_head_mask(aligned)
    assert m.shape == (h, w) and m.max() > 0.99
    assert np.array_equal(out[m == 0], canvas[m == 0])  # nothing outside the head changes
    assert np.abs(out[m > 0.99].astype(int) - 200).max() <= 2
    matched = composite(canvas, rendered, aligned)  # colour matching changes only the seam zone
    assert np.array_equal(matched[m == 0], canvas[m == 0])
    core = cv2.erode((m > 0.99).astype(np.uint8), np.ones((5, 5), np.uint8), iterations=max(1, h // 60)) > 0
    assert np.abs(matched[core].astype(int) - 200).mean() < 3


def test_rendered_crop_of_another_size(astronaut):
    image, aligned = astronaut
    small = cv2.resize(aligned.crop, (256, 256), interpolation=cv2.INTER_AREA)
    out = composite(image, small, aligned)
    assert psnr(out, image) > 30


def test_mask_shape_and_feather():
    m = crop_head_mask(512)
    assert m.shape == (512, 512) and m.dtype == np.float32
    assert m[256, 256] == 1.0 and m[0, 0] == 0.0
    row = m[244]
    soft = np.count_nonzero((row > 0.02) & (row < 0.98))
    assert 30 < soft < 120  # feathered over a band, not a hard edge


def test_composite_bad_input(astronaut):
    image, aligned = astronaut
    with pytest.raises(FaceError):
        composite(image[:100], aligned.crop, aligned)
    with pytest.raises(FaceError):
        composite(image, aligned.crop[:, :300], aligned)
    with pytest.raises(FaceError):
        composite(image, aligned.crop, aligned, mask=np.ones((10, 10)))


def test_mesh_triangles_from_mediapipe():
    tri = triangles()
    assert tri.shape == (852, 3) and tri.dtype == np.int32
    assert tri.min() >= 0 and tri.max() < 468
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2  # a proper surface: each edge borders at most two triangles
    # Euler characteristic of a disc with holes (eyes, mouth): V - E + F <= 1
    assert 468 - len(counts) + len(tri) <= 1

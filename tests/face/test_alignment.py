"""EG3D crop: the transform against a literal re-run of EG3D's steps, and ground truth
from the FFHQ crops pasted into a larger frame with a known scale and shift.

The FFHQ crops are EG3D's own crops, so re-aligning a pasted crop must give it back.
The calibration (``alignment.CALIBRATION``) is fitted on these same crops; its accuracy
is measured on crops left out of the fit (two-fold cross-fit)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import face_mask, paste, psnr
from streamfx.face import Face, FaceError, FaceTracker, align_face, eg3d_matrix, invert, transform_points
from streamfx.face.alignment import CALIBRATION, LM3D_STD, warp
from streamfx.face.canonical_build import fit_calibration

FACES = [f"faces/ffhq_{i}.png" for i in range(1, 9)]
# (scale, shift) of the paste into 1280x720; scales 0.5 to 1.5, no rotation
PASTES = [(0.5, (100, 50)), (0.75, (850, 300)), (1.0, (600, 150)), (1.25, (20, 60)), (1.5, (300, -40))]


def _literal_eg3d(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """EG3D's crop written out step by step with PIL, as in crop_images_in_the_wild.py."""
    im = Image.fromarray(image)
    w0, h0 = im.size
    lm = points.astype(np.float64).copy()
    lm[:, 1] = h0 - 1 - lm[:, 1]
    a = np.zeros((10, 8))
    a[0::2, :3], a[0::2, 3], a[1::2, 4:7], a[1::2, 7] = LM3D_STD, 1, LM3D_STD, 1
    k = np.linalg.lstsq(a, lm.reshape(-1), rcond=None)[0]
    s = 300.0 / ((np.linalg.norm(k[:3]) + np.linalg.norm(k[4:7])) / 2)
    t = (k[3], k[7])
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - 512 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - 512 + (h0 / 2 - t[1]) * s)
    big = im.resize((w, h), resample=Image.BICUBIC).crop((left, up, left + 1024, up + 1024))
    return np.asarray(big.crop((162, 162, 862, 862)).resize((512, 512), resample=Image.LANCZOS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_reproduces_literal_eg3d_steps(seed):
    rng = np.random.default_rng(seed)
    h, w = 600, 800
    image = cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    centre = np.array([400.0, 300.0]) + rng.uniform(-60, 60, 2)
    size = rng.uniform(70, 130)
    points = centre + size * np.array([[-0.5, -0.45], [0.5, -0.44], [0.0, 0.1], [-0.4, 0.55], [0.4, 0.56]])
    ref = _literal_eg3d(image, points).astype(np.float64)
    m = eg3d_matrix(points, h, calibration=None)
    # EG3D truncates its crop offsets to integers: allow up to one 1024-pixel (0.73 px) of shift
    errors = []
    for dx in np.linspace(-0.75, 0.75, 7):
        for dy in np.linspace(-0.75, 0.75, 7):
            mm = m.copy()
            mm[:, 2] += (dx, dy)
            ours = warp(image, mm, 512, interpolation=cv2.INTER_CUBIC).astype(np.float64)
            errors.append(((ours - ref) ** 2)[16:-16, 16:-16].mean())
    assert 10 * np.log10(255**2 / min(errors)) > 38


def test_inverse_and_point_transform():
    points = np.array([[300, 200], [360, 202], [330, 240], [305, 270], [355, 271]], float)
    m = eg3d_matrix(points, 480)
    inv = invert(m)
    p = np.random.default_rng(0).uniform(0, 512, (20, 2))
    np.testing.assert_allclose(transform_points(m, transform_points(inv, p)), p, atol=1e-9)
    # the crop is a pure scale and shift, no rotation (as in EG3D)
    assert m[0, 1] == 0 and m[1, 0] == 0 and m[0, 0] == pytest.approx(m[1, 1])


def test_other_crop_sizes_are_the_same_crop():
    points = np.array([[300, 200], [360, 202], [330, 240], [305, 270], [355, 271]], float)
    m512, m256 = eg3d_matrix(points, 480, 512), eg3d_matrix(points, 480, 256)
    # pixel centre conventions: u256 + 0.5 = (u512 + 0.5) / 2
    p = np.array([[310.0, 220.0], [350.0, 260.0]])
    np.testing.assert_allclose(transform_points(m256, p) + 0.5, (transform_points(m512, p) + 0.5) / 2, atol=1e-9)


def test_bad_points_raise_face_error():
    with pytest.raises(FaceError):
        eg3d_matrix(np.zeros((5, 2)), 480)
    with pytest.raises(FaceError):
        align_face(np.zeros((10, 10), np.uint8), np.zeros((5, 2)))


@pytest.fixture(scope="module")
def photo_tracker():
    with FaceTracker(static_image=True) as t:
        yield t


@pytest.fixture(scope="module")
def crops(read_rgb, photo_tracker) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (the EG3D crop, its own landmarks)."""
    out = {}
    for name in FACES:
        crop = read_rgb(name)
        landmarks = photo_tracker.find_landmarks(crop)
        assert landmarks is not None, name
        out[name] = (crop, landmarks)
    return out


@pytest.fixture(scope="module")
def pasted(crops, photo_tracker) -> dict[str, list[tuple[np.ndarray, np.ndarray, Face]]]:
    """name -> [(canvas, paste matrix, tracked face) for each of PASTES]."""
    out = {}
    for name, (crop, _) in crops.items():
        out[name] = []
        for scale, shift in PASTES:
            canvas, p = paste(crop, scale, shift)
            res = photo_tracker.update(canvas)
            assert res.status == "tracking" and res.face is not None, (name, scale)
            out[name].append((canvas, p, res.face))
    return out


@pytest.mark.parametrize("name", FACES)
def test_paste_and_realign_recovers_the_crop(name, crops, pasted, photo_tracker):
    """The same crop whatever the paste (the tracker and the transform are scale- and
    shift-equivariant), and near EG3D's own crop.  The production calibration was fitted
    on these faces, so the crop-to-crop bounds here are only sanity bounds; the accuracy
    on faces outside the fit is measured by the cross-fit test below."""
    crop, own_lm = crops[name]
    mask = face_mask(own_lm, crop.shape[:2])
    centred, _ = paste(crop, 1.0, (384, 104))
    own = align_face(centred, photo_tracker.update(centred).face)  # our crop of the face at scale 1
    for (scale, _), (canvas, p, face) in zip(PASTES, pasted[name]):
        aligned = align_face(canvas, face)
        assert psnr(aligned.crop, own.crop, mask) >= 28.0, (name, scale)
        crop_to_crop = aligned.matrix @ np.vstack([p, [0, 0, 1]])
        assert abs(crop_to_crop[0, 0] - 1.0) < 0.06, (name, scale)
        centre_shift = crop_to_crop[:, :2] @ [255.5, 255.5] + crop_to_crop[:, 2] - 255.5
        assert np.linalg.norm(centre_shift) < 10.0, (name, scale, centre_shift)


def test_production_calibration_is_the_fit_on_all_faces(crops):
    """alignment.CALIBRATION is what canonical_build.fit_calibration gives on the 8 crops."""
    assert fit_calibration([lm for _, lm in crops.values()]) == pytest.approx(CALIBRATION, abs=5e-4)


def _realign_psnr(crops, pasted, names: list[str], calibration: float) -> np.ndarray:
    """PSNR (face region) of the re-aligned crop against EG3D's crop, every face and paste."""
    values = []
    for name in names:
        crop, own_lm = crops[name]
        mask = face_mask(own_lm, crop.shape[:2])
        for canvas, _, face in pasted[name]:
            m = eg3d_matrix(face.five_points, canvas.shape[0], calibration=calibration)
            values.append(psnr(warp(canvas, m, 512), crop, mask))
    return np.array(values)


# (fit faces, unseen faces, least median PSNR, least minimum PSNR) on the unseen faces
CROSS_FITS = [(FACES[:4], FACES[4:], 23.5, 22.5), (FACES[4:], FACES[:4], 22.2, 20.6)]


@pytest.mark.parametrize("fit_on,unseen,median_db,min_db", CROSS_FITS, ids=["fit1-4", "fit5-8"])
def test_calibration_generalises_to_unseen_faces(crops, pasted, fit_on, unseen, median_db, min_db):
    """The calibration fitted on four faces, measured on the other four: each crop pasted
    into a 1280x720 frame at the five PASTES, re-aligned, PSNR over the face against EG3D's
    crop.  Measured (mediapipe 0.10.21, 1-parameter calibration):
    fit on 1-4 -> 5-8: median 24.5 dB, min 23.6 dB (scale 1.0260);
    fit on 5-8 -> 1-4: median 23.2 dB, min 21.6 dB (scale 1.0142).
    The bounds sit about 1 dB below.  For a sense of scale: a 1 px shift of a correct crop gives about
    33 dB, 2 px 29 dB, 3 px 27 dB; what remains is per-face disagreement between mediapipe's
    points and the detector EG3D's crops were made with."""
    calibration = fit_calibration([crops[n][1] for n in fit_on])
    values = _realign_psnr(crops, pasted, unseen, calibration)
    summary = (round(float(np.median(values)), 2), round(float(values.min()), 2), round(calibration, 4))
    assert np.median(values) >= median_db and values.min() >= min_db, summary

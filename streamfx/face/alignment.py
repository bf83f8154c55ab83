"""The EG3D / FFHQ face crop (``dataset_preprocessing/ffhq`` in NVlabs/eg3d).

EG3D aligns a photo with Deep3DFaceRecon's ``align_img``: five 2D points are fitted, by
least squares, with an affine projection of a standard 3D five-point layout (``POS``);
its mean row norm ``s`` is the scale and its translation ``t`` the image position of
the layout's origin.  The image is resized by ``300 / s`` and a 1024 square centred on
``t`` is cut out (the fit runs on y-flipped points, which is why the centre lands one
source pixel below ``t``), then the centre 700 square is resized to 512.  There is no
rotation.  All of that is one scale-and-shift, computed here as a 2x3 matrix and applied
with a single ``cv2.warpAffine``.

Pixel coordinates have pixel centres at integers.  mediapipe's five points are not the
MTCNN points EG3D used; a small fixed scale about the crop centre (:data:`CALIBRATION`)
brings the crop closer to the EG3D crop.
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import AlignedFace, Face, FaceError

# Deep3DFaceRecon's standard five-point layout (x right, y up, z towards the viewer):
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corner.
LM3D_STD = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032535, -0.04617932, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ]
)
TARGET_SIZE = 1024.0
RESCALE_FACTOR = 300.0
CENTER_CROP = 700.0
EG3D_SIZE = 512

# Scale about the crop centre applied after the EG3D transform: the least-squares scale
# that best maps our crops of the 8 FFHQ test faces onto their EG3D crops
# (``canonical_build.fit_calibration``).  A scale and shift (3 parameters) fitted the same
# faces no better, and generalised worse to faces left out of the fit (cross-fit figures
# in tests/face/test_alignment.py); what remains is per-face detector disagreement.
CALIBRATION = 1.0201


def pos_fit(points: np.ndarray, frame_height: int) -> tuple[np.ndarray, float]:
    """Fit the standard layout to five image points (POS).

    points: (5, 2) image pixels.  Returns (t, s): t (2,) the fitted image position of the
    layout origin in EG3D's y-flipped frame (x, H - 1 - y), s pixels per layout unit.
    """
    p = np.asarray(points, dtype=np.float64).reshape(5, 2).copy()
    p[:, 1] = frame_height - 1 - p[:, 1]
    a = np.zeros((10, 8))
    a[0::2, 0:3] = LM3D_STD
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = LM3D_STD
    a[1::2, 7] = 1.0
    k = np.linalg.lstsq(a, p.reshape(-1), rcond=None)[0]
    s = 0.5 * (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7]))
    return np.array([k[3], k[7]]), float(s)


def eg3d_matrix(
    points: np.ndarray, frame_height: int, size: int = EG3D_SIZE, calibration: float | None = CALIBRATION
) -> np.ndarray:
    """(2, 3) matrix mapping frame pixels to the ``size`` x ``size`` EG3D crop.

    points: (5, 2) five points in frame pixels (see :func:`landmarks.five_points`).
    ``calibration``: the scale about the crop centre applied last; ``None`` gives EG3D's
    transform exactly (up to its integer rounding).
    """
    t, s = pos_fit(points, frame_height)
    if not (np.isfinite(s) and s > 1e-6 and np.all(np.isfinite(t))):
        raise FaceError("degenerate five points: cannot fit the face layout")
    r = RESCALE_FACTOR / s  # frame -> 1024 image scale
    tx, ty_img = t[0], frame_height - 1 - t[1]
    # resize (PIL: u' + 0.5 = (u + 0.5) r), cut the 1024 square at r * (tx, ty_img + 1) - 512,
    # then the centre 700 square at 162 and resize it to 512.
    k = EG3D_SIZE / CENTER_CROP
    off = (TARGET_SIZE - CENTER_CROP) / 2.0
    x0 = k * (r * (0.5 - tx) + TARGET_SIZE / 2 - 0.5 - off + 0.5) - 0.5
    y0 = k * (r * (-0.5 - ty_img) + TARGET_SIZE / 2 - 0.5 - off + 0.5) - 0.5
    m = np.array([[k * r, 0.0, x0], [0.0, k * r, y0]])
    if calibration is not None:
        c = (EG3D_SIZE - 1) / 2.0
        m = calibration * m
        m[:, 2] += (1.0 - calibration) * c
    if size != EG3D_SIZE:
        f = size / EG3D_SIZE
        m = m * f
        m[:, 2] += 0.5 * f - 0.5
    return m


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) matrix to (N, 2) points."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    return p @ matrix[:, :2].T + matrix[:, 2]


def warp(
    frame: np.ndarray,
    matrix: np.ndarray,
    size: int,
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REPLICATE,
) -> np.ndarray:
    """Warp ``frame`` (H, W, C) into a (size, size, C) image with the frame->image ``matrix``.

    Only the frame region under the output is touched; when the output is much smaller
    than that region, it is first shrunk with area averaging (no aliasing).
    """
    h, w = frame.shape[:2]
    inv = invert(matrix)
    corners = transform_points(inv, np.array([[-1, -1], [size, -1], [-1, size], [size, size]], dtype=np.float64))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size) + frame.shape[2:], dtype=frame.dtype)
    sub = frame[y0:y1, x0:x1]
    m = np.array(matrix, dtype=np.float64)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # strong downscale: area-average first (linear warps alias)
        sw, sh = max(1, round(sub.shape[1] * scale)), max(1, round(sub.shape[0] * scale))
        fx, fy = sw / sub.shape[1], sh / sub.shape[0]
        sub = cv2.resize(sub, (sw, sh), interpolation=cv2.INTER_AREA)
        # small pixel u' relates to sub pixel u by u' + 0.5 = (u + 0.5) f
        back = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5], [0.0, 0.0, 1.0]])
        m = m @ back
    return cv2.warpAffine(sub, m, (size, size), flags=interpolation, borderMode=border)


def align_face(frame: np.ndarray, face: Face | np.ndarray, size: int = EG3D_SIZE) -> AlignedFace:
    """Cut the EG3D crop of ``face`` out of ``frame`` (H, W, 3) uint8.

    ``face`` is a :class:`Face` or its (5, 2) five points in frame pixels.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        raise FaceError(f"expected an (H, W, 3) frame, got shape {getattr(frame, 'shape', None)}")
    points = face.five_points if isinstance(face, Face) else np.asarray(face, dtype=np.float64)
    if points.shape != (5, 2):
        raise FaceError(f"expected (5, 2) five points, got {points.shape}")
    m = eg3d_matrix(points, frame.shape[0], size)
    crop = warp(frame, m, size)
    return AlignedFace(crop=crop, matrix=m, inverse=invert(m), frame_shape=(frame.shape[0], frame.shape[1]))

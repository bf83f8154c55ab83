"""Head pose from 3D landmarks, and EG3D camera labels.

Pose: a weighted similarity (Umeyama/Kabsch) fit of the canonical face
(``canonical_face.csv``) to the rigid mesh points, in camera axes x = image right,
y = up, z = towards the viewer.  Angles follow :class:`~streamfx.face.types.HeadPose`:
yaw > 0 = head turned to its own left, pitch > 0 = looking up, roll > 0 = tilted
counter-clockwise in the image, with rotation = Rz(roll) @ Rx(-pitch) @ Ry(yaw).

Accuracy (tests/face/test_pose.py, ground truth from real faces' own meshes): on exact
landmarks the fit is within about 0.6 degrees up to 30 degrees yaw and 15 pitch, although
each face differs from the canonical one.  On images the limit is the tracker: mediapipe's
landmarks lag a turn, so +-30 degrees of yaw read as about +-20 to 28.

EG3D: the world is the head frame (x = the head's left, y = up, z = out of the face);
``LookAtPoseSampler.sample(theta, v, pivot, radius)`` puts the camera at
radius * (-sin(phi) cos(theta), cos(phi), sin(phi) sin(theta)), phi = arccos(1 - 2 v / pi),
looking at the pivot.  The frontal camera is theta = v = pi/2.  A head pose (yaw, pitch)
is the camera direction seen from the head, so

    theta = pi/2 - yaw,   v = pi/2 * (1 + sin(pitch))

(yaw to the head's left moves the EG3D camera to -x, i.e. theta < pi/2; note that v is
not an angle: v = pi/2 + 0.1 is a camera 3.6 degrees below the face).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .landmarks import RIGID
from .types import FaceError, HeadPose

RADIUS = 2.7
PIVOT = np.array([0.0, 0.0, 0.2])
FOCAL = 4.2647  # normalised focal length (18.837 degree field of view)
FRONTAL = (math.pi / 2, math.pi / 2)

CANONICAL_FILE = "canonical_face.csv"
_FLIP = np.array([1.0, -1.0, -1.0])  # image axes (x right, y down, z away) <-> camera axes (y up, z towards)


@lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """(478, 3) float64 canonical face in the head frame (five-point layout units), from the
    packaged ``canonical_face.csv`` (written by :mod:`.canonical_build`)."""
    from importlib import resources

    text = resources.files(__package__).joinpath(CANONICAL_FILE).read_text()
    points = np.loadtxt(text.splitlines(), delimiter=",", comments="#", dtype=np.float64)
    points.setflags(write=False)
    return points


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising sum w |dst - (s R src + t)|^2; src, dst (N, 3)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    r = u @ np.diag(d) @ vt
    var_s = float(w @ (a**2).sum(axis=1))
    s = float((sig * d).sum() / var_s)
    return s, r, mu_d - s * r @ mu_s


def rotation_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """(3, 3) Rz(roll) @ Rx(-pitch) @ Ry(yaw) in camera axes (x right, y up, z to the viewer)."""
    a, b, c = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])  # Rx(-pitch)
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of a rotation built as in :func:`rotation_from_angles`."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.atan2(-r[2, 0], r[2, 2])
    pitch = math.asin(float(np.clip(-r[2, 1], -1.0, 1.0)))
    rest = r @ rotation_from_angles(math.degrees(yaw), math.degrees(pitch)).T  # = Rz(roll)
    roll = math.atan2(rest[1, 0], rest[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def estimate_pose(landmarks: np.ndarray) -> HeadPose:
    """Head pose from (478, 3) landmarks in image pixels (x right, y down, z away)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] != 3:
        raise FaceError(f"expected (478, 3) landmarks, got {lm.shape}")
    src = canonical_face()[RIGID]
    dst = lm[RIGID] * _FLIP
    s, r, t = umeyama(src, dst)
    yaw, pitch, roll = angles_from_rotation(r)
    return HeadPose(yaw, pitch, roll, rotation=r, translation=t * _FLIP, scale=s)


def pose_from_angles(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> HeadPose:
    """A HeadPose with the given angles (no translation)."""
    r = rotation_from_angles(yaw_deg, pitch_deg, roll_deg)
    return HeadPose(float(yaw_deg), float(pitch_deg), float(roll_deg), rotation=r, translation=np.zeros(3))


# --- EG3D camera labels -------------------------------------------------------------


def eg3d_angles(yaw_deg: float, pitch_deg: float) -> tuple[float, float]:
    """Head (yaw, pitch) in degrees -> EG3D sampler (theta, v) in radians."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    return math.pi / 2 - yaw, math.pi / 2 * (1.0 + math.sin(pitch))


def degrees_from_eg3d(theta: float, v: float) -> tuple[float, float]:
    """EG3D sampler (theta, v) in radians -> head (yaw, pitch) in degrees."""
    s = float(np.clip(2.0 * v / math.pi - 1.0, -1.0, 1.0))
    return math.degrees(math.pi / 2 - theta), math.degrees(math.asin(s))


def cam2world(theta: float, v: float, radius: float = RADIUS, pivot: np.ndarray = PIVOT) -> np.ndarray:
    """(4, 4) float64 OpenCV-style cam2world of ``LookAtPoseSampler.sample(theta, v, pivot, radius)``."""
    v = min(max(v, 1e-5), math.pi - 1e-5)
    phi = math.acos(1.0 - 2.0 * v / math.pi)
    origin = radius * np.array([-math.sin(phi) * math.cos(theta), math.cos(phi), math.sin(phi) * math.sin(theta)])
    forward = np.asarray(pivot, dtype=np.float64) - origin
    forward /= np.linalg.norm(forward)
    right = -np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    up /= np.linalg.norm(up)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, forward, origin
    return m


def focal_from_fov(fov_deg: float) -> float:
    """EG3D's ``FOV_to_intrinsics`` focal length (with its 3.14159 and 1.414 constants)."""
    return float(1.0 / (math.tan(fov_deg * 3.14159 / 360.0) * 1.414))


def intrinsics(focal: float = FOCAL) -> np.ndarray:
    """(3, 3) normalised intrinsics, principal point at the image centre."""
    return np.array([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])


def camera_label(theta: float, v: float, radius: float = RADIUS, focal: float = FOCAL) -> np.ndarray:
    """EG3D conditioning label (25,) float32: cam2world (16) then intrinsics (9).

    theta, v: ``LookAtPoseSampler`` angles in radians, frontal = (pi/2, pi/2).
    """
    return np.concatenate([cam2world(theta, v, radius).reshape(-1), intrinsics(focal).reshape(-1)]).astype(np.float32)


def label_from_degrees(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(25,) label for a head pose in degrees (0, 0 = frontal)."""
    return camera_label(*eg3d_angles(yaw_deg, pitch_deg))


def pose_to_label(pose: HeadPose) -> np.ndarray:
    """(25,) label of the camera that sees the canonical head as ``pose`` (roll is ignored)."""
    return label_from_degrees(pose.yaw_deg, pose.pitch_deg)


def label_to_angles(label: np.ndarray) -> tuple[float, float]:
    """(25,) or (16+,) label -> EG3D sampler (theta, v) in radians."""
    lab = np.asarray(label, dtype=np.float64).reshape(-1)
    if lab.size < 16:
        raise FaceError(f"expected a (25,) camera label, got {lab.size} values")
    origin = lab[[3, 7, 11]]
    r = float(np.linalg.norm(origin))
    if r <= 0:
        raise FaceError("camera label has its origin at the world centre")
    cos_phi = float(np.clip(origin[1] / r, -1.0, 1.0))
    return math.atan2(origin[2], -origin[0]), math.pi / 2 * (1.0 - cos_phi)


def label_to_degrees(label: np.ndarray) -> tuple[float, float]:
    """(25,) label -> head (yaw, pitch) in degrees."""
    return degrees_from_eg3d(*label_to_angles(label))

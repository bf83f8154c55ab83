"""Plain result types shared by the face modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TrackStatus = Literal["tracking", "holding", "none"]


class FaceError(ValueError):
    """Bad input to a face function (wrong array shape or dtype); the message is one line."""


@dataclass(frozen=True)
class HeadPose:
    """Head orientation relative to the camera.

    Degrees, 0/0/0 = looking straight into the camera, upright:
    ``yaw_deg`` > 0: the head turned to its own left (the nose moves to the image right);
    ``pitch_deg`` > 0: the head looks up; ``roll_deg`` > 0: the head tilts counter-clockwise
    as seen in the image.  ``rotation`` (3, 3) maps head coordinates (x = the head's left,
    y = up, z = out of the face) to camera coordinates (x = image right, y = up, z = towards
    the viewer): rotation = Rz(roll) @ Rx(-pitch) @ Ry(yaw).  ``translation`` (3,) is the
    head origin in the same camera axes, x/y in frame pixels (y up), z in pixel-ish units.
    ``scale`` is frame pixels per head unit (the EG3D five-point layout's unit).
    """

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    rotation: np.ndarray = field(repr=False)
    translation: np.ndarray = field(repr=False)
    scale: float = 1.0


@dataclass(frozen=True)
class Face:
    """One tracked face in frame pixel coordinates.

    ``landmarks`` (478, 3) float32: x, y in pixels (pixel centres at integers), z in
    pixel-ish units (smaller = nearer the camera), smoothed; ``raw_landmarks`` the same
    before smoothing; ``five_points`` (5, 2) float32: the image-left eye, image-right eye,
    nose tip, image-left and image-right mouth corner; ``bbox`` (x0, y0, x1, y1).
    """

    landmarks: np.ndarray = field(repr=False)
    raw_landmarks: np.ndarray = field(repr=False)
    five_points: np.ndarray = field(repr=False)
    pose: HeadPose
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackResult:
    """What :meth:`FaceTracker.update` returns for one frame.

    ``status``: "tracking" (a fresh face), "holding" (lost for a moment, ``face`` is the
    last state) or "none" (pass the frame through).  ``num_faces``: faces seen in the
    frame (from the last detection).  ``switched``: the tracked identity changed (a new
    face was acquired), so callers should reset their temporal state.
    """

    face: Face | None
    status: TrackStatus
    num_faces: int
    switched: bool = False


@dataclass(frozen=True)
class AlignedFace:
    """A face warped into the EG3D crop.

    ``crop`` (size, size, 3) uint8; ``matrix`` (2, 3) maps frame pixels to crop pixels,
    ``inverse`` (2, 3) crop pixels to frame pixels (pixel centres at integers);
    ``frame_shape`` (H, W) of the source frame.
    """

    crop: np.ndarray = field(repr=False)
    matrix: np.ndarray
    inverse: np.ndarray
    frame_shape: tuple[int, int]

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

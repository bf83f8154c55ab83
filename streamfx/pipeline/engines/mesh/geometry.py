"""Target pose and the rotated face mesh; the working region (ROI) and its grid.

Coordinates: landmarks are image pixels (x right, y down, z away from the viewer);
rotations act in camera axes (x right, y up, z towards the viewer) as in
:class:`~streamfx.face.HeadPose`.  The mesh is rotated about the head's centre (the
canonical face's origin, pushed back by ``pivot_depth`` head units) and projected
orthographically, the same weak-perspective model the pose fit uses.

Only the face mesh turns: hair, ears and the head's outline follow a displacement that
fades out, and the side of the nose or cheek the live frame does not see is filled in
from what it does see.  A re-posed face therefore reads as turned less than its mesh (the
face stack's own pose estimate, run on the output, sees about 70-100% of the mesh's yaw
change on the head-turn test clips).  ``cfg.yaw_gain`` scales the mesh's yaw change to
make up for it; the scaled change is what ``cfg.max_rotation_deg`` limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ....face import Face
from ....face.landmarks import RIGID
from ....face.pose import canonical_face, rotation_from_angles
from ...controls import PoseMode
from .config import MeshEngineConfig

_FLIP = np.array([1.0, -1.0, -1.0])  # image axes <-> camera axes


@dataclass(frozen=True)
class PosePlan:
    """Where the face is drawn: ``target`` (V, 3) float64 image coordinates (x, y, z),
    ``moves`` False when the target equals the live mesh (nothing to re-render);
    ``target_deg`` the (yaw, pitch) the output is meant to show, ``render_deg`` the one
    the mesh is drawn at (the yaw change scaled by ``yaw_gain``); ``clamped`` True when
    the rotation asked for was larger than the texture supports."""

    live_deg: tuple[float, float]
    target_deg: tuple[float, float]
    render_deg: tuple[float, float]
    clamped: bool
    moves: bool
    target: np.ndarray

    @property
    def rotation_deg(self) -> float:
        """The larger of the mesh's yaw and pitch change, in degrees."""
        return max(abs(self.render_deg[i] - self.live_deg[i]) for i in range(2))


def plan_pose(face: Face, vertices: np.ndarray, mode: PoseMode, cfg: MeshEngineConfig) -> PosePlan:
    """Rotate the live render ``vertices`` (V, 3), whose pose is ``face.pose``, to the pose
    ``mode`` asks for; the mesh's change is clamped to ``cfg.max_rotation_deg``."""
    pose = face.pose
    live = (float(pose.yaw_deg), float(pose.pitch_deg))
    asked = mode.target(*live)
    lim = cfg.max_rotation_deg
    gain = (float(cfg.yaw_gain), 1.0)
    wanted = [gain[i] * (asked[i] - live[i]) for i in range(2)]  # the mesh's change
    delta = [float(np.clip(wanted[i], -lim, lim)) for i in range(2)]
    clamped = any(abs(wanted[i]) > lim + 1e-6 for i in range(2))
    render_deg = (live[0] + delta[0], live[1] + delta[1])
    target_deg = (live[0] + delta[0] / gain[0], live[1] + delta[1] / gain[1])
    verts = np.asarray(vertices, dtype=np.float64)
    if max(abs(delta[0]), abs(delta[1])) < cfg.min_rotation_deg:
        return PosePlan(live, live, live, clamped, False, verts)
    r_live = np.asarray(pose.rotation, dtype=np.float64)
    r_target = rotation_from_angles(render_deg[0], render_deg[1], float(pose.roll_deg))
    rot = r_target @ r_live.T
    rigid = np.asarray(face.landmarks, dtype=np.float64)[RIGID] * _FLIP  # camera axes
    canon = canonical_face()
    pivot_head = np.array([0.0, 0.0, -cfg.pivot_depth])
    centre = rigid.mean(axis=0) - float(pose.scale) * r_live @ (canon[RIGID].mean(axis=0) - pivot_head)
    q = (verts * _FLIP - centre) @ rot.T + centre
    return PosePlan(live, target_deg, render_deg, clamped, True, q * _FLIP)


@dataclass(frozen=True)
class Grid:
    """The working rectangle ``[x0, x1) x [y0, y1)`` of the frame and a coarser grid over it.

    Grid pixel (i, j) has its centre at frame (x0 + (j + 0.5) * sx - 0.5, y0 + (i + 0.5) * sy - 0.5),
    which is how ``cv2.resize`` relates the two sizes.  ``face_px``: the face size in grid pixels.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    gw: int
    gh: int
    face_px: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frame rectangle."""
        return self.x1 - self.x0, self.y1 - self.y0

    @property
    def scale(self) -> tuple[float, float]:
        """Frame pixels per grid pixel along x and y."""
        return (self.x1 - self.x0) / self.gw, (self.y1 - self.y0) / self.gh

    def to_grid(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) frame pixels -> grid pixels."""
        sx, sy = self.scale
        return (np.asarray(xy, dtype=np.float64)[:, :2] - [self.x0 - 0.5, self.y0 - 0.5]) / [sx, sy] - 0.5

    @cached_property
    def _centres(self) -> np.ndarray:
        sx, sy = self.scale
        xs = self.x0 + (np.arange(self.gw) + 0.5) * sx - 0.5
        ys = self.y0 + (np.arange(self.gh) + 0.5) * sy - 0.5
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy], axis=-1).astype(np.float32)

    def centres(self) -> np.ndarray:
        """(gh, gw, 2) float32 frame coordinates of the grid pixel centres (do not modify)."""
        return self._centres


def face_size(*meshes: np.ndarray) -> float:
    """The larger side of the bounding box of all given (N, >=2) point sets, in pixels."""
    pts = np.concatenate([m[:, :2] for m in meshes])
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))


def make_grid(frame_shape: tuple[int, int], cfg: MeshEngineConfig, *meshes: np.ndarray) -> Grid | None:
    """The rectangle around ``meshes`` plus the fade margin, clipped to the frame; None if empty."""
    h, w = frame_shape
    pts = np.concatenate([m[:, :2] for m in meshes])
    f = face_size(*meshes)
    margin = cfg.fade * f + 2.0
    x0 = max(int(math.floor(pts[:, 0].min() - margin)), 0)
    y0 = max(int(math.floor(pts[:, 1].min() - margin)), 0)
    x1 = min(int(math.ceil(pts[:, 0].max() + margin)) + 1, w)
    y1 = min(int(math.ceil(pts[:, 1].max() + margin)) + 1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    g = min(cfg.grid_face_px / f, 1.0)
    gw = max(int(round((x1 - x0) * g)), 4)
    gh = max(int(round((y1 - y0) * g)), 4)
    return Grid(x0, y0, x1, y1, gw, gh, face_px=f * gw / (x1 - x0))

"""Ground truth for the pose tests: a face's own mesh, textured from its photo, shown at
a known head rotation.

The mesh is mediapipe's 468 landmarks of the photo (x, y in pixels and the model's z),
with the eye and mouth openings closed by fans and a skirt of rings around the outline
that carries the hair, ears and background of the photo (sloping back: a head is not a
mask).  Every vertex samples the photo at its own position there.  The mesh turns about
its centroid in camera axes (x right, y up, z towards the viewer), is seen by a pinhole
camera with EG3D's field of view, z-buffered by ``streamfx.pipeline.engines.mesh.raster``
and textured with ``cv2.remap``.

Nothing here uses the pose estimator's angle code or its canonical shape (the canonical
face only names each landmark's mirror partner).  The head frame comes from the face's
own shape: its left-right mirror symmetry fixes yaw and roll.
Pitch zero is only a convention (the estimator's: the mean pitch of the FFHQ portraits
its canonical face was built from), so :func:`head_frame` takes the face's pitch as an
argument, and the tests read it once per face, from the frontal view.

Angles follow the documented convention (:class:`streamfx.face.HeadPose`): yaw > 0 turns
the nose to the image right (the head turns to its own left), pitch > 0 lifts it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from streamfx.face.canonical_build import mirror_pairs
from streamfx.face.mesh import NUM_MESH_POINTS, triangles
from streamfx.pipeline.engines.mesh.raster import rasterize

FLIP = np.array([1.0, -1.0, -1.0])  # image axes (x right, y down, z away) <-> camera axes
MIRROR = np.array([-1.0, 1.0, 1.0])
FOCAL = 4.2647  # EG3D's normalised focal length (18.8 degree field of view)
BACKGROUND = (118, 112, 104)
SKIRT = (1.15, 1.35, 1.7, 2.4, 4.0)  # rings around the outline, in multiples of its radius


@dataclass(frozen=True)
class HeadMesh:
    """``verts`` (V, 3) camera axes, centred on the face centroid, in the head frame;
    ``uv`` (V, 2) photo pixels; ``tris`` (T, 3); ``centre`` (2,) image position of the
    centroid (x, y pixels); ``photo`` the texture.  The first 468 vertices are the
    landmarks."""

    verts: np.ndarray
    uv: np.ndarray
    tris: np.ndarray
    centre: np.ndarray
    photo: np.ndarray


def rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(3, 3) head -> camera rotation: turn by yaw about the vertical axis (the nose to
    the image right for yaw > 0), then lift the nose by pitch."""
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    turn = np.array([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    lift = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), math.sin(b)], [0.0, -math.sin(b), math.cos(b)]])
    return lift @ turn


@lru_cache(maxsize=1)
def _boundaries() -> list[list[int]]:
    """The boundary loops of the face mesh (vertex indices, in order), longest first:
    the face outline, then the eye and mouth openings."""
    use: Counter = Counter()
    for a, b, c in triangles():
        use.update(tuple(sorted(e)) for e in ((a, b), (b, c), (a, c)))
    nb: dict[int, list[int]] = defaultdict(list)
    for (a, b), n in use.items():
        if n == 1:
            nb[a].append(b)
            nb[b].append(a)
    loops, seen = [], set()
    for start in sorted(nb):
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        while nxt := [v for v in nb[loop[-1]] if v not in seen]:
            loop.append(nxt[0])
            seen.add(nxt[0])
        loops.append(loop)
    return sorted(loops, key=len, reverse=True)


def mesh_from_photo(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verts (V, 3) image axes, uv (V, 2) photo pixels, tris (T, 3)) of a photo's mesh."""
    lm = np.asarray(landmarks, dtype=np.float64)[:NUM_MESH_POINTS]
    pts, tris = [lm], [triangles().astype(np.int64)]
    n = NUM_MESH_POINTS
    outline, *holes = _boundaries()
    for loop in holes:
        pts.append(lm[loop].mean(axis=0)[None])
        tris.append(np.array([[n, loop[i], loop[(i + 1) % len(loop)]] for i in range(len(loop))]))
        n += 1
    centre = lm.mean(axis=0)
    radius = float(np.linalg.norm(lm[outline, :2] - centre[:2], axis=1).mean())
    prev, m = np.array(outline), len(outline)
    for k in SKIRT:
        ring = lm[outline].copy()
        ring[:, :2] = centre[:2] + k * (ring[:, :2] - centre[:2])
        ring[:, 2] += (k - 1.0) * radius  # further away (image z points away from the viewer)
        pts.append(ring)
        cur = n + np.arange(m)
        nxt_prev, nxt_cur = np.roll(prev, -1), np.roll(cur, -1)
        tris.append(np.concatenate([np.stack([prev, nxt_prev, cur], 1), np.stack([cur, nxt_prev, nxt_cur], 1)]))
        prev, n = cur, n + m
    verts = np.concatenate(pts)
    return verts, verts[:, :2].copy(), np.concatenate(tris)


@lru_cache(maxsize=1)
def _mirror() -> np.ndarray:
    """Each mesh landmark's mirror partner (by index: the topology, not a shape)."""
    from streamfx.face.pose import canonical_face

    return mirror_pairs(canonical_face()[:NUM_MESH_POINTS])


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation R minimising |dst - R src| for centred (N, 3) point sets."""
    u, _, vt = np.linalg.svd(dst.T @ src)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def symmetry_rotation(points: np.ndarray, iterations: int = 30) -> np.ndarray:
    """(3, 3) rotation that makes the (468, 3) camera-axes mesh mirror-symmetric about
    the plane x = 0: repeatedly turn it towards the average of itself and its mirror
    image (all 468 points, equal weights).  Leaves pitch (a turn about x) unchanged."""
    x = points - points.mean(axis=0)
    pair = _mirror()
    total = np.eye(3)
    for _ in range(iterations):
        target = 0.5 * (x + (x * MIRROR)[pair])
        r = _kabsch(x, target - target.mean(axis=0))
        x, total = x @ r.T, r @ total
    return total


def head_frame(photo: np.ndarray, landmarks: np.ndarray, pitch_deg: float = 0.0) -> HeadMesh:
    """The photo's mesh in its head frame: symmetric (yaw = roll = 0), its centroid at
    the origin, and ``pitch_deg`` (the face's pitch once symmetric) turned out."""
    verts, uv, tris = mesh_from_photo(landmarks)
    cam = verts * FLIP
    centroid = cam[:NUM_MESH_POINTS].mean(axis=0)
    r = rotation(0.0, pitch_deg).T @ symmetry_rotation(cam[:NUM_MESH_POINTS])
    return HeadMesh((cam - centroid) @ r.T, uv, tris, centroid[:2] * FLIP[:2], photo)


def project(mesh: HeadMesh, rot: np.ndarray, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(xy (V, 2) image pixels, depth (V,)) of the mesh turned by ``rot``; the centroid
    stays at its photo position and depth (the camera is FOCAL * size pixels away)."""
    f = FOCAL * size
    p = mesh.verts @ np.asarray(rot, dtype=np.float64).T
    depth = f - p[:, 2]
    return p[:, :2] * FLIP[:2] * (f / depth)[:, None] + mesh.centre, depth


def landmarks_at(mesh: HeadMesh, rot: np.ndarray, size: int = 512) -> np.ndarray:
    """(468, 3) exact image landmarks (x, y, z away; z at the x, y scale) of the turned mesh."""
    xy, depth = project(mesh, rot, size)
    z = (depth - FOCAL * size) * (FOCAL * size / depth)
    return np.column_stack([xy, z])[:NUM_MESH_POINTS]


def render(mesh: HeadMesh, rot: np.ndarray, size: int = 512, supersample: int = 2) -> np.ndarray:
    """(size, size, 3) uint8 image of the mesh turned by ``rot`` (see :func:`project`)."""
    k = supersample
    xy, depth = project(mesh, rot, size)
    ras = rasterize((xy + 0.5) * k - 0.5, depth, mesh.tris, (size * k, size * k))
    uv = ras.interpolate(mesh.uv, mesh.tris)
    tex = cv2.remap(mesh.photo, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    big = np.where(ras.covered[..., None], tex, np.array(BACKGROUND, np.uint8))
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)

"""The render mesh: mediapipe's face triangles, consistently wound, with the eye and
mouth openings closed, plus the shared UV layout.

mediapipe's tessellation leaves holes at the eyes and at the mouth and its triangles
come with arbitrary winding.  For rendering we need (a) one winding so that back faces
can be culled from a signed area and (b) the openings covered, so that an open mouth
and the eyes move with the head instead of being interpolated.  The openings are
closed by strips between the upper and lower lid / lip contours; those "feature"
triangles are never culled (they are folds of the surface) and let the appearance
transfer keep the caller's own eyes and mouth when open.

Around the face outline the mesh gets a "skirt": a ring of vertices a little outside the
outline, moving rigidly with the head.  Hair, ears and the jaw line inside that ring are
then warped by exact, smooth triangle maps, and the silhouette of the face (where skin
meets background) falls inside smooth triangles instead of on the raster's staircase.

UV: the canonical face seen from the front (x right, y up), shared by every face
tracked with the same topology, which is what makes reference transfer triangle-by-
triangle possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ....face.mesh import NUM_MESH_POINTS, face_oval, triangles
from ....face.pose import canonical_face

# Lid and lip contours, each from one corner to the other (both rings share the corners).
EYE_L_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_L_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_R_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
EYE_R_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LIP_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
SKIRT = 0.08  # the skirt ring sits this fraction of the face size outside the outline
SKIN, EYES, MOUTH, SKIRT_GROUP = 0, 1, 2, 3
FEATURES = ((EYE_L_UPPER, EYE_L_LOWER), (EYE_R_UPPER, EYE_R_LOWER), (LIP_UPPER_INNER, LIP_LOWER_INNER))


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles (2n - 4) filling the gap between two contours sharing both end points."""
    n = len(upper)
    assert len(lower) == n and upper[0] == lower[0] and upper[-1] == lower[-1]
    tris = [(upper[0], upper[1], lower[1])]
    for i in range(1, n - 2):
        tris += [(upper[i], upper[i + 1], lower[i + 1]), (upper[i], lower[i + 1], lower[i])]
    tris.append((upper[n - 2], upper[n - 1], lower[n - 2]))
    return tris


def _orient(tris: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Wind every triangle so that its normal points out of the head (canonical frame)."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    normal = np.cross(b - a, c - a)
    centre = np.array([0.0, 0.0, -1.0])  # well behind the face surface
    outward = np.einsum("ij,ij->i", normal, (a + b + c) / 3.0 - centre) >= 0
    out = tris.copy()
    out[~outward, 1], out[~outward, 2] = tris[~outward, 2], tris[~outward, 1]
    return out


@dataclass(frozen=True)
class RenderMesh:
    """The render mesh over V = 468 + 36 vertices: the 468 mesh landmarks, then the skirt.

    ``tris`` (T, 3) int32, skin triangles wound so that a triangle faces the camera when
    its signed area in image coordinates (x right, y down) is negative; ``group`` (T,)
    int8: SKIN, EYES, MOUTH (the closing strips) or SKIRT_GROUP; ``cullable`` (T,) bool: skin triangles (the others are folds or
    ring pieces and are never culled); ``uv`` (V, 2) float64 in [0, 1] (u right, v down;
    skirt vertices repeat their outline vertex); ``oval`` (36,) the face outline indices;
    ``mirror`` (V,) int32: the vertex on the other side of the face (skirt: itself)."""

    tris: np.ndarray
    group: np.ndarray
    cullable: np.ndarray
    uv: np.ndarray
    oval: np.ndarray
    mirror: np.ndarray

    @property
    def num_tris(self) -> int:
        return int(self.tris.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.uv.shape[0])


@lru_cache(maxsize=1)
def render_mesh() -> RenderMesh:
    canon = canonical_face()[:NUM_MESH_POINTS]
    skin = _orient(triangles().astype(np.int64), canon)
    groups = [np.zeros(len(skin), np.int8)]
    closing = []
    for k, (upper, lower) in enumerate(FEATURES):
        strip = np.array(_strip(upper, lower), dtype=np.int64)
        closing.append(strip)
        groups.append(np.full(len(strip), 1 if k < 2 else 2, np.int8))
    oval = face_oval()
    n = len(oval)
    ring = NUM_MESH_POINTS + np.arange(n)
    skirt = []
    for i in range(n):
        j = (i + 1) % n
        skirt += [(oval[i], oval[j], ring[j]), (oval[i], ring[j], ring[i])]
    closing.append(np.array(skirt, dtype=np.int64))
    groups.append(np.full(len(skirt), SKIRT_GROUP, np.int8))
    tris = np.concatenate([skin, *closing]).astype(np.int32)
    group = np.concatenate(groups)
    xy = canon[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    uv = np.stack([(xy[:, 0] - lo[0]) / (hi[0] - lo[0]), (hi[1] - xy[:, 1]) / (hi[1] - lo[1])], axis=1)
    uv = np.concatenate([uv, uv[oval]])
    flipped = canon * [-1.0, 1.0, 1.0]
    mirror = np.argmin(((flipped[:, None, :] - canon[None, :, :]) ** 2).sum(-1), axis=1).astype(np.int32)
    mirror = np.concatenate([mirror, ring]).astype(np.int32)
    for arr in (tris, group, uv, mirror):
        arr.setflags(write=False)
    return RenderMesh(tris=tris, group=group,
                      cullable=group == SKIN, uv=uv, oval=oval, mirror=mirror)


def with_skirt(landmarks: np.ndarray, mesh: RenderMesh) -> np.ndarray:
    """(478 or 468, 3) landmarks -> (V, 3) float64 render vertices: the 468 mesh points and
    the skirt ring (the outline pushed outwards from its centre in the image plane by
    ``SKIRT`` face sizes; depth kept)."""
    p = np.asarray(landmarks, dtype=np.float64)[:NUM_MESH_POINTS]
    rim = p[mesh.oval]
    centre = rim[:, :2].mean(axis=0)
    size = float(max(np.ptp(rim[:, 0]), np.ptp(rim[:, 1]), 1.0))
    out = rim.copy()
    d = rim[:, :2] - centre
    norm = np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    out[:, :2] = rim[:, :2] + d / norm * SKIRT * size
    return np.concatenate([p, out])


def signed_area(xy: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(T,) twice the signed area of each triangle of ``xy`` (V, 2) image points."""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def facing(xy: np.ndarray, mesh: RenderMesh) -> np.ndarray:
    """(T,) bool: triangles turned towards the camera (non-skin triangles always count)."""
    return (signed_area(xy, mesh.tris) < 0) | ~mesh.cullable


def facing_cos(points: np.ndarray, mesh: RenderMesh) -> np.ndarray:
    """(T,) cosine between each triangle's normal and the direction to the camera.

    points: (468, 3) image coordinates (x right, y down, z away, z in pixel units).
    """
    p = np.asarray(points, dtype=np.float64)
    a, b, c = p[mesh.tris[:, 0]], p[mesh.tris[:, 1]], p[mesh.tris[:, 2]]
    n = np.cross(b - a, c - a)
    return -n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-9)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (N, 3) arrays (np.cross has a large fixed overhead)."""
    return np.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1],
                     u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                     u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], axis=1)


def vertex_cos(points: np.ndarray, mesh: RenderMesh) -> np.ndarray:
    """(468,) cosine between each vertex normal (area-weighted, skin triangles) and the
    direction to the camera; points as in :func:`facing_cos`."""
    p = np.asarray(points, dtype=np.float64)
    tris = mesh.tris[mesh.cullable]
    a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
    n = _cross(b - a, c - a)
    corners = tris.T.reshape(-1)  # each triangle's normal goes to its three corners
    acc = np.stack([np.bincount(corners, weights=np.tile(n[:, i], 3), minlength=p.shape[0]) for i in range(3)], axis=1)
    return -acc[:, 2] / np.maximum(np.linalg.norm(acc, axis=1), 1e-9)

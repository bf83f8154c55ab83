"""The face-mesh topology: triangles of mediapipe's 468-point face mesh.

mediapipe ships the mesh as an edge list (``FACEMESH_TESSELATION``).  The triangles are
the 3-cycles of that graph.  Two places of the mesh have a vertex inside a triangle of
its three neighbours; that enclosing triangle is also a 3-cycle but not a face, and it
is recognised by all three of its edges being shared by three cycles.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np

NUM_MESH_POINTS = 468  # the tessellated points; 468..477 are the iris points


@lru_cache(maxsize=1)
def triangles() -> np.ndarray:
    """(T, 3) int32 vertex indices into the first 468 landmarks, sorted, T = 852."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cycles = {tuple(sorted((a, b, c))) for a, b in FACEMESH_TESSELATION for c in neighbours[a] & neighbours[b]}
    edge_use: Counter = Counter()
    for a, b, c in cycles:
        edge_use.update(((a, b), (b, c), (a, c)))
    faces = [t for t in cycles if min(edge_use[(t[0], t[1])], edge_use[(t[1], t[2])], edge_use[(t[0], t[2])]) < 3]
    return np.array(sorted(faces), dtype=np.int32)


@lru_cache(maxsize=1)
def face_oval() -> np.ndarray:
    """Indices of the face-outline landmarks, in order around the face, (36,) int32."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    nxt = dict(FACEMESH_FACE_OVAL)
    start = min(nxt)
    order = [start]
    while nxt[order[-1]] != start:
        order.append(nxt[order[-1]])
    return np.array(order, dtype=np.int32)

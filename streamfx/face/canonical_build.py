"""Fit the face constants from EG3D-aligned portraits: the canonical 3D face
(``canonical_face.csv``) and the alignment calibration (``alignment.CALIBRATION``).

    python -m streamfx.face.canonical_build ../shared/testdata/faces/ffhq_*.png

Canonical face: runs the face mesh on each (near-frontal) portrait, averages the 478
landmark sets after a similarity (Procrustes) alignment, makes the mean exactly
left-right symmetric, and expresses it in the frame of Deep3DFaceRecon's five-point
layout (x = the head's left, y = up, z = out of the face; the layout's units and
origin).  Symmetry fixes yaw and roll, the portraits' mean pitch is zero pitch, and the layout
fixes scale and origin.

Calibration: the portraits are EG3D crops, so our crop of each should be the identity;
the scale about the crop centre that brings our crops closest to them is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .alignment import EG3D_SIZE, LM3D_STD, eg3d_matrix, transform_points
from .landmarks import RIGID, five_of, five_points
from .mesh import NUM_MESH_POINTS
from .pose import angles_from_rotation, rotation_from_angles, umeyama


def mesh_edges() -> np.ndarray:
    """(E, 2) sorted vertex pairs of the face mesh and the iris rings (mediapipe topology)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_IRISES, FACEMESH_TESSELATION

    return np.unique(np.sort(np.array(sorted(FACEMESH_TESSELATION | FACEMESH_IRISES)), axis=1), axis=0)


def _broken_edges(pair: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E,) bool: the mesh edges that ``pair`` does not map onto mesh edges."""
    n = len(pair)
    mapped = np.sort(pair[edges], axis=1)
    return ~np.isin(mapped[:, 0] * n + mapped[:, 1], edges[:, 0] * n + edges[:, 1])


def mirror_pairs(shape: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """(N,) index of each point's mirror image across x = 0 (midline points: themselves).

    A greedy matching of the points with their mirror images, closest pairs first (so
    the pairing is mutual), then repaired with the mesh topology: a mirror symmetry maps
    mesh edges onto mesh edges, so pair swaps that map more edges are taken.  Where the
    lips or eyelids of the shape are not quite symmetric, plain nearest neighbours pair
    an inner lip or eye corner with its neighbour or the midline.  mediapipe's own
    triangulation is mirror-symmetric except for three flipped quad diagonals (six edges).
    """
    shape = np.asarray(shape, dtype=np.float64)
    n = len(shape)
    edges = mesh_edges() if edges is None else edges
    edges = edges[edges.max(axis=1) < n]
    cost = np.linalg.norm(shape[:, None, :] - (shape * np.array([-1.0, 1.0, 1.0]))[None, :, :], axis=2)
    cost = 0.5 * (cost + cost.T)
    pair = np.full(n, -1)
    iu = np.triu_indices(n)
    for k in np.argsort(cost[iu], kind="stable"):
        i, j = iu[0][k], iu[1][k]
        if pair[i] < 0 and pair[j] < 0:
            pair[i], pair[j] = j, i
    nearest = np.argsort(cost, axis=1)[:, :6]
    bad = _broken_edges(pair, edges)
    broken = int(bad.sum())
    improved = True
    while improved and broken > 0:
        improved = False
        for i in np.unique(edges[bad]):  # the points on edges that do not map yet
            for j in nearest[i]:
                if pair[i] == j:
                    continue
                a, b = pair[i], pair[j]  # (i, a), (j, b) -> (i, j), (a, b)
                trial = pair.copy()
                trial[i], trial[j] = j, i
                if a != i and b != j:
                    trial[a], trial[b] = b, a
                elif a != i:
                    trial[a] = a
                elif b != j:
                    trial[b] = b
                trial_bad = _broken_edges(trial, edges)
                if trial_bad.sum() < broken:
                    pair, bad, broken, improved = trial, trial_bad, int(trial_bad.sum()), True
    if not np.all(pair[pair] == np.arange(n)):
        raise RuntimeError("mirror pairing of the landmarks is not consistent")
    return pair


def build(landmark_sets: list[np.ndarray]) -> np.ndarray:
    """landmark_sets: (478, 3) image landmarks (x right, y down, z away) -> canonical (478, 3)."""
    shapes = [np.asarray(l, dtype=np.float64) * np.array([1.0, -1.0, -1.0]) for l in landmark_sets]
    mean = shapes[0]
    for _ in range(5):  # generalised Procrustes
        fitted = []
        for s_ in shapes:
            s, r, t = umeyama(s_, mean)
            fitted.append(s * s_ @ r.T + t)
        mean = np.mean(fitted, axis=0)
    # into the layout frame (approximately), then mirror-pair the points and symmetrise
    s, r, t = umeyama(five_of(mean), LM3D_STD)
    mean = s * mean @ r.T + t
    for _ in range(3):  # fit the symmetry plane: rotate towards the mirror-paired average
        pair = mirror_pairs(mean)
        target = 0.5 * (mean + (mean * np.array([-1.0, 1.0, 1.0]))[pair])
        _, r, t = umeyama(mean, target)
        mean = mean @ r.T + t
    pair = mirror_pairs(mean)
    mirrored = mean * np.array([-1.0, 1.0, 1.0])
    sym = 0.5 * (mean + mirrored[pair])
    # pitch, scale and origin from the layout: a rotation about x only keeps the symmetry
    s, r, t = umeyama(five_of(sym), LM3D_STD)
    angle = np.arctan2(r[2, 1], r[1, 1])
    rx = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    sym = s * sym @ rx.T
    # pitch zero = the portraits' average pitch (mediapipe's depth is not the layout's, so
    # the layout's own pitch would call typical FFHQ faces 12 degrees downcast)
    pitches = [angles_from_rotation(umeyama(sym[RIGID], x[RIGID])[1])[1] for x in shapes]
    sym = sym @ rotation_from_angles(0.0, float(np.mean(pitches))).T
    sym[:, 1:] += (LM3D_STD - five_of(sym)).mean(axis=0)[1:]
    return sym


def fit_calibration(landmark_sets: list[np.ndarray]) -> float:
    """The scale about the crop centre that best maps our (uncalibrated) crops of EG3D-aligned
    512 x 512 portraits onto themselves: least squares over the 468 mesh points of each.

    landmark_sets: (478, 3) landmarks of each portrait, in its own pixels.
    """
    c = (EG3D_SIZE - 1) / 2.0
    num = den = 0.0
    for lm in landmark_sets:
        p = np.asarray(lm, dtype=np.float64)[:NUM_MESH_POINTS, :2]
        q = transform_points(eg3d_matrix(five_points(lm), EG3D_SIZE, calibration=None), p)
        num += float(((q - c) * (p - c)).sum())
        den += float(((q - c) ** 2).sum())
    return num / den


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).with_name("canonical_face.csv"))
    args = parser.parse_args(argv)
    import cv2

    from .tracking import FaceTracker

    tracker = FaceTracker(static_image=True)
    sets = []
    for path in args.images:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        landmarks = tracker.find_landmarks(image)
        if landmarks is None:
            print(f"no face in {path}", file=sys.stderr)
            continue
        sets.append(landmarks)
    canon = build(sets)
    header = ["# Canonical 3D face: (478, 3) mesh points (x, y, z) in the five-point layout frame.",
              "# Generated by `python -m streamfx.face.canonical_build` from the mesh of "
              f"{len(sets)} aligned portraits; do not edit."]
    rows = [f"{x:.4f},{y:.4f},{z:.4f}" for x, y, z in canon]
    args.out.write_text("\n".join(header + rows) + "\n")
    print(f"wrote {args.out} from {len(sets)} faces")
    print(f"alignment.CALIBRATION = {fit_calibration(sets):.4f}  (fitted on the same faces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

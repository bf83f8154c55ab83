"""Named mediapipe face-mesh indices and the five alignment points.

Index naming follows the image of a face looking at the camera: "image-left" is the
subject's right side.  Landmarks are (478, 3) arrays; 468..477 are the refined irises.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478

# Eye corners: image-left eye (subject's right) outer/inner, image-right eye inner/outer.
EYE_L_OUTER, EYE_L_INNER, EYE_R_INNER, EYE_R_OUTER = 33, 133, 362, 263
IRIS_L, IRIS_R = 468, 473
NOSE_TIP = 1
# Mouth corner points that best reproduce the EG3D crops of the FFHQ test faces (the
# outer lip-corner points 61/291 give slightly larger errors).
MOUTH_L, MOUTH_R = 57, 287

# Points that move rigidly with the skull (forehead, temples, nose bridge and tip, eye
# corners, cheekbones); the pose fit uses only these so expressions do not tilt the head.
RIGID = np.array(
    [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline: forehead to nose tip
     109, 338, 67, 297, 103, 332, 54, 284,  # forehead
     21, 251, 162, 389, 127, 356, 234, 454,  # temples / sides
     33, 133, 362, 263, 130, 359, 243, 463,  # eye corners
     226, 446, 113, 342, 46, 276,  # brow ridge
     116, 345, 117, 346, 118, 347, 123, 352, 50, 280,  # cheekbones
     98, 327, 129, 358, 48, 278, 115, 344, 45, 275],  # nose sides
    dtype=np.int32,
)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, >=2) landmarks -> (5, 2) float32: eyes (corner means), nose tip, mouth corners.

    Order as in Deep3DFaceRecon / EG3D: image-left eye, image-right eye, nose,
    image-left mouth corner, image-right mouth corner.
    """
    return five_of(np.asarray(landmarks, dtype=np.float32)[:, :2])


def five_of(points: np.ndarray) -> np.ndarray:
    """The five layout points of (478, D) mesh points, in the same D dimensions."""
    return np.stack([
        0.5 * (points[EYE_L_OUTER] + points[EYE_L_INNER]),
        0.5 * (points[EYE_R_INNER] + points[EYE_R_OUTER]),
        points[NOSE_TIP],
        points[MOUTH_L],
        points[MOUTH_R],
    ])


def bbox(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the landmarks' x, y."""
    p = np.asarray(landmarks)[:, :2]
    x0, y0 = p.min(axis=0)
    x1, y1 = p.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)

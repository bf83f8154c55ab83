"""Smooth image-space fields on small grids: fall-off and extension beyond a region."""

from __future__ import annotations

import cv2
import numpy as np


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 for x <= 0, 1 for x >= 1, C1-smooth in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Extension:
    """Continues fields defined on ``covered`` (H, W) bool to the pixels around it.

    Just outside the covered region each pixel takes its nearest covered value (so the
    field stays continuous at the border); further out the field relaxes to its blurred
    self and, optionally, is weighted down to exactly zero at ``fade_px`` from the region.
    The nearest-pixel lookup is computed once and shared by all fields of a frame.
    """

    def __init__(self, covered: np.ndarray) -> None:
        self.covered = covered
        outside = (~covered).astype(np.uint8)
        self.empty = not covered.any()
        if self.empty or not outside.any():
            self.dist = np.zeros(covered.shape, np.float32)
            self.index = np.arange(covered.size).reshape(covered.shape)
            return
        dist, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        sources = np.flatnonzero(outside.reshape(-1) == 0)  # label k marks the k-th covered pixel in scan order
        self.dist = dist
        self.index = sources[np.clip(labels.reshape(-1) - 1, 0, len(sources) - 1)]

    def _weight(self, fade_px: float, box: tuple[int, int, int, int] | None) -> np.ndarray:
        x0, y0, x1, y1 = box if box is not None else (0, 0, self.dist.shape[1], self.dist.shape[0])
        return smoothstep(1.0 - self.dist[y0:y1, x0:x1] * (1.0 / max(fade_px, 1e-3)))

    def extend(self, values: np.ndarray, fade_px: float | None, relax_px: float | None = None,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """values: (H, W, C) float32, meaningful on the covered pixels -> (H, W, C) float32,
        or only its (x0, y0, x1, y1) ``box`` when given."""
        x0, y0, x1, y1 = box if box is not None else (0, 0, values.shape[1], values.shape[0])
        h, w, c = y1 - y0, x1 - x0, values.shape[2]
        if self.empty:
            return np.zeros((h, w, c), dtype=np.float32)
        index = self.index.reshape(self.dist.shape)[y0:y1, x0:x1]
        # np.take is several times faster than fancy indexing here; covered pixels index
        # themselves, so they keep their values exactly through the relax and fade below
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, c)
        near = np.take(flat, index.reshape(-1), axis=0).reshape(h, w, c)
        relax_px = relax_px if relax_px is not None else (fade_px / 2.0 if fade_px else 0.0)
        if relax_px and relax_px > 0.5:
            blurred = cv2.GaussianBlur(near, (0, 0), relax_px / 2.0).reshape(h, w, c)
            near += (blurred - near) * smoothstep(self.dist[y0:y1, x0:x1] / relax_px)[..., None]
        if fade_px is not None:
            near *= self._weight(fade_px, box)[..., None]
        return near

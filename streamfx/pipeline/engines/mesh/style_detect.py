"""Is a reference a photo or a stylised image, and which look matches it?

Measured on the reference's face box (or the whole image when it has no trackable
face), resampled so the face is ``SIDE`` pixels across:

* ``chroma``: the 90th percentile of Lab chroma (pop-art and painted faces are far more
  saturated than any skin in a photo); ``grey``: share of nearly colourless pixels;
* ``flat``: share of pixels whose lightness gradient is under half a grey level: flat
  fills.  A photo's skin always carries grain (2-8 % flat on the shared photos), a cartoon
  is mostly fills (45-60 %), painted dabs lie between;
* ``paper`` / ``ink``: shares of near-white and near-black pixels (a monochrome drawing is
  mostly paper, an engraving or ink drawing carries much black).

The thresholds were set on the shared test references, the shared photos and the engine's
own looks applied to those photos; ``tests/engines/test_mesh_style_detect.py`` holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 256


@dataclass(frozen=True)
class LookCues:
    chroma: float
    grey: float
    flat: float
    paper: float
    ink: float

    def rounded(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GlobalLook:
    """The look a reference asks for: ``kind`` (photo, cartoon, sketch, engraving or oil), ``amount`` 0..1 how strongly it
    is applied, and the cues it was read from."""

    kind: str
    amount: float
    cues: LookCues


def measure(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> LookCues:
    """Cues of an RGB uint8 image (H, W, 3), inside ``box`` (x0, y0, x1, y1) if given."""
    if box is not None:
        x0, y0, x1, y1 = box
        image = image[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)]
    h, w = image.shape[:2]
    k = SIDE / max(h, w, 1)
    small = cv2.resize(image, (max(int(w * k), 8), max(int(h * k), 8)), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) / 8.0
    return LookCues(chroma=float(np.percentile(chroma, 90)), grey=float((chroma < 6.0).mean()),
                    flat=float((grad < 0.5).mean()), paper=float((lab[..., 0] > 88).mean()),
                    ink=float((lab[..., 0] < 18).mean()))


def classify(cues: LookCues) -> GlobalLook:
    """The matching look for the cues (see the module docstring)."""
    c = cues
    if c.grey > 0.85:  # monochrome
        if c.ink > 0.05:
            return GlobalLook("engraving", 0.85, c)
        if c.paper > 0.25:
            return GlobalLook("sketch", 0.85, c)
        return GlobalLook("photo", 0.0, c)  # a black-and-white photo: its colours carry it
    if c.flat > 0.4 or c.chroma > 50:
        return GlobalLook("cartoon", 0.45, c)
    if c.flat > 0.15:
        return GlobalLook("oil", 0.6, c)
    return GlobalLook("photo", 0.0, c)


def detect(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> GlobalLook:
    return classify(measure(image, box))

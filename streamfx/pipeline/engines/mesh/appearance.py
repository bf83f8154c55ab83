"""Reference edits: the caller keeps their own features and takes the reference's look.

Preparing a reference (once per prompt, cached by the engine): its face is tracked with
the same 478-point mesh and unwrapped into the shared UV atlas, where it is read by region
(``reference.read_regions``: skin, lips, eye surroundings, brows; occluders, shadows,
teeth and the eyes themselves rejected), and its global look is read from the whole face
(``style_detect``: photo, cartoon, sketch, engraving or oil).  A reference without a
trackable face still gives its look and the colours of its image centre, at half weight.

Per frame, on the grid: the caller's region colours (moving averages, ``skin.CallerState``)
are mapped to the reference's, region by region, with an affine map per Lab channel: the
mean moves to the reference's and the spread is scaled towards it, so the caller's own
eyes, brow shape, mouth, wrinkles and lighting stay where they are.  Lightness shifts past
``L_KNEE`` are halved.  The RGB change is upsampled and added through the edit's alpha
(``skin.edit_alpha``: the face, and the caller's skin around it, ears and neck included),
then the global look is blended over the same area.  ``strength`` scales the alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .config import MeshEngineConfig
from .geometry import Grid
from .looks import FILTERS, look_scale
from .masks import face_boxes, resample_box
from .raster import Raster
from .reference import RegionStats, image_colours, read_regions
from .regions import BROWS, EYE_AROUND, LIPS, NAMES, SKIN, atlas_raster
from .skin import CallerState, edit_alpha, read_caller, shrink
from .style_detect import GlobalLook
from .style_detect import detect as detect_look
from .topology import RenderMesh, facing_cos, render_mesh, with_skirt

L_KNEE = 30.0  # lightness shifts beyond this are halved: the kept eyes and teeth do not stand out like lamps
NO_FACE_PALETTE = 0.5  # how fully a reference without a face gives its colours (its image centre's)
# per-channel (L, a, b) limits of the contrast gain from the caller's spread to the reference's
GAIN_LIMITS = np.array([[0.7, 1.4], [0.4, 1.6], [0.4, 1.6]], np.float32)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float32 Lab (L 0..100)."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


@dataclass(frozen=True)
class ReferenceAppearance:
    """A prepared reference: the Lab statistics of its face regions (``regions``; without a
    trackable face, its image centre's colours as the skin's), its global ``look`` and how
    fully its colours are taken (``palette_weight``: 1 from a face, less from an image)."""

    name: str
    regions: dict[int, RegionStats]
    look: GlobalLook
    face_found: bool

    kind = "reference"

    @property
    def palette_weight(self) -> float:
        return 1.0 if self.face_found else NO_FACE_PALETTE

    def note(self) -> dict[str, Any]:
        """What the caller is told along with the prompt's ack."""
        out: dict[str, Any] = {"look": self.look.kind, "regions": [NAMES[k] for k in sorted(self.regions)]}
        if not self.face_found:
            out["note"] = (f"no face found in the reference; only its global look ({self.look.kind}) "
                           "and colours are applied")
        return out

    def apply(self, roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, strength: float,
              cfg: MeshEngineConfig, regions: np.ndarray, state: CallerState) -> np.ndarray:
        return transfer(roi, raster, grid, mesh, self, strength, cfg, regions, state)


def unwrap(image: np.ndarray, landmarks: np.ndarray, cfg: MeshEngineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Reference RGB uint8 (H, W, 3) and its (478, 3) landmarks -> its face in the UV atlas:
    (A, A, 3) float32 Lab and (A, A) bool, the texels it shows (facing the camera, inside the image)."""
    mesh = render_mesh()
    atlas = atlas_raster(cfg.atlas_size)
    verts = with_skirt(landmarks, mesh)
    pos = atlas.interpolate(verts[:, :2], mesh.tris)
    texture = cv2.remap(image, pos[..., 0], pos[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    visible = facing_cos(verts, mesh) >= cfg.min_visible_cos
    h, w = image.shape[:2]
    inside = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    return to_lab(texture), atlas.covered & visible[np.maximum(atlas.tri, 0)] & inside


def prepare(image: np.ndarray, landmarks: np.ndarray | None, name: str, cfg: MeshEngineConfig) -> ReferenceAppearance:
    """Read a reference once per prompt: its regions (when it has a tracked face) and its look."""
    if landmarks is None:
        h, w = image.shape[:2]
        centre = to_lab(image[h // 4:h - h // 4, w // 4:w - w // 4]).reshape(-1, 3)
        return ReferenceAppearance(name, {SKIN: image_colours(centre)}, detect_look(image), False)
    texture, valid = unwrap(image, landmarks, cfg)
    regions = read_regions(texture, valid)
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    return ReferenceAppearance(name, regions, detect_look(image, (x0, y0, x1, y1)), True)


def _gain(ref: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per-channel contrast gain from the caller's spread to the reference's, limited."""
    g = ref / np.maximum(own, 1e-3)
    return np.clip(g, GAIN_LIMITS[:, 0], GAIN_LIMITS[:, 1]).astype(np.float32)


def region_map(ref: RegionStats, own: tuple[np.ndarray, np.ndarray], weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The affine Lab map (gain (3,), offset (3,)), ``c -> c * gain + offset``, that moves a
    caller region with statistics ``own`` (mean, std) to the reference's ``ref``: the mean
    to the reference's (lightness shifts past ``L_KNEE`` halved), the spread scaled towards
    it; ``weight`` < 1 goes only that part of the way."""
    mean, std = own
    centre = ref.mean.astype(np.float32).copy()
    shift = float(ref.mean[0] - mean[0])
    if abs(shift) > L_KNEE:  # a far lighter or darker reference: the rest of the shift at half rate
        centre[0] = mean[0] + np.sign(shift) * (L_KNEE + 0.5 * (abs(shift) - L_KNEE))
    gain = _gain(ref.std, std)
    offset = centre - mean * gain
    return 1.0 - weight + weight * gain, weight * offset


REGIONS = (SKIN, LIPS, EYE_AROUND, BROWS)


def transfer(roi: np.ndarray, raster: Raster, grid: Grid, mesh: RenderMesh, ref: ReferenceAppearance,
             strength: float, cfg: MeshEngineConfig, regions: np.ndarray, state: CallerState) -> np.ndarray:
    """Put ``ref``'s look on the caller in ``roi`` (h, w, 3) uint8, in place, and return it
    (see the module docstring). ``regions``: (gh, gw, 3) the lips, eye-surroundings and
    brow weights on the grid (``regions.vertex_regions`` interpolated; 0 off the mesh)."""
    view = read_caller(roi, raster, mesh, grid, cfg, regions)
    caller_rgb, lab, features, w = view.rgb, view.lab, view.features, regions
    # the caller's statistics, from every other grid pixel (plenty); the region cores count most
    ws = w[::2, ::2]
    measure = np.empty((*ws.shape[:2], 4), np.float32)
    measure[..., 0] = (1.0 - features[::2, ::2]) * (view.face[::2, ::2] > 0.5)
    np.multiply(ws, ws, out=measure[..., 1:])
    own = state.update(np.ascontiguousarray(lab[::2, ::2]).reshape(-1, 3), measure.reshape(-1, 4), REGIONS)
    if SKIN not in own:
        return roi
    alpha = edit_alpha(raster, mesh, grid, cfg, lab, own[SKIN], features, view.face) * float(strength)
    boxes = face_boxes(alpha, grid)
    if boxes is None:
        return roi
    gbox, box = boxes
    gx0, gy0, gx1, gy1 = gbox
    maps = np.zeros((2, 4, 3), np.float32)  # (gain, offset) per region; identity where nothing is known
    maps[0] = 1.0
    for k, region in enumerate(REGIONS):
        source = region if region in ref.regions and region in own else SKIN  # else: follows the skin
        if source in ref.regions:
            maps[:, k] = region_map(ref.regions[source], own[source], ref.palette_weight)
    c = lab[gy0:gy1, gx0:gx1]
    mix = np.concatenate([1.0 - features[gy0:gy1, gx0:gx1, None], w[gy0:gy1, gx0:gx1]], axis=-1)
    target = c * (mix @ maps[0]) + mix @ maps[1]  # open eyes and mouth: alpha is 0 there
    delta = (cv2.cvtColor(target, cv2.COLOR_Lab2RGB) - caller_rgb[gy0:gy1, gx0:gx1]) * (255.0 * alpha[gy0:gy1, gx0:gx1])[..., None]
    x0, y0, x1, y1 = box
    # the change is rounded to int16 before it is upsampled: resizing and adding integers to
    # the frame is less than half the cost of float (measured), for at most 1 level of error
    small = np.round(_with_look(roi, delta, alpha, gbox, box, grid, ref.look, cfg)).astype(np.int16)
    full = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    np.clip(roi[y0:y1, x0:x1] + full, 0, 255, out=full)
    roi[y0:y1, x0:x1] = full
    return roi


def _with_look(roi: np.ndarray, delta: np.ndarray, alpha: np.ndarray, gbox, box, grid: Grid, look: GlobalLook,
               cfg: MeshEngineConfig) -> np.ndarray:
    """The colour change ``delta`` (on the grid rectangle ``gbox``) plus the global look's
    change, both at the look's working resolution (the face ``reference_look_face_px`` across) over the
    frame rectangle ``box``: the look filters the recoloured face there and only its change
    is upsampled, so the caller's finest detail stays and the cost does not grow with the
    frame size. A photo reference has no look: then just the colour change, resampled."""
    x0, y0, x1, y1 = box
    styled = look.kind != "photo" and look.amount > 0
    k = min(look_scale(look.kind if styled else "", grid.face_px * grid.scale[0], cfg.reference_look_face_px), 1.0)
    size = (max(int(round((x1 - x0) * k)), 8), max(int(round((y1 - y0) * k)), 8))
    colour = resample_box(delta, gbox, grid, box, size)
    if not styled:
        return colour
    small = shrink(roi[y0:y1, x0:x1], size).astype(np.float32)
    edited = np.clip(small + colour, 0.0, 255.0)
    change = FILTERS[look.kind](edited.astype(np.uint8)).astype(np.float32) - edited
    a = resample_box(alpha[gbox[1]:gbox[3], gbox[0]:gbox[2]], gbox, grid, box, size)
    return colour + change * (a * float(look.amount))[..., None]

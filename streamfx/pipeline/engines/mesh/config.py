"""Typed settings of the weight-free ``mesh`` engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ....face import FaceConfig


@dataclass(frozen=True)
class MeshEngineConfig:
    """Everything the mesh engine can be tuned with.

    Distances given as fractions are relative to the face size ``F`` (the larger side of
    the landmarks' bounding box), so nothing depends on the frame resolution.
    """

    face: FaceConfig = field(default_factory=FaceConfig)
    # --- re-posing
    max_rotation_deg: float = 25.0  # the largest yaw / pitch change the live texture supports
    yaw_gain: float = 1.2  # the mesh turns this much more than asked, as the rest of the head does not turn (see geometry)
    pivot_depth: float = 0.0  # rotation centre on the head's z axis, in head units (0 = canonical origin)
    mirror_cos: tuple[float, float] = (0.15, 0.45)  # vertices seen more obliquely than this borrow their mirror's texture
    mirror_full_deg: float = 5.0  # the mirror blend ramps in from min_rotation_deg to this rotation (no pop, less work)
    mirror_border: float = 0.06  # the mirror blend reaches this far past the mesh border, in F
    fade: float = 0.2  # the displacement around the face falls to zero over this many F
    min_rotation_deg: float = 0.25  # smaller pose changes are not rendered (follow mode is exact)
    # --- dense maps
    grid_face_px: int = 64  # the face is rasterised at this many grid pixels across
    # --- reference edits (regions, skin, look: see appearance.py)
    atlas_size: int = 256  # side of the UV atlas a reference's face is read in
    edge_feather: float = 0.04  # soft inner border of the edited face region, in F
    opening_margin: float = 0.0  # open eyes / mouth are kept with this margin, in F (0: the lips are edited to their edge)
    min_visible_cos: float = 0.25  # reference triangles seen more obliquely are not read
    # --- looks (no reference)
    look_face_px: int = 112  # the named looks are computed with the face this many pixels across
    reference_look_face_px: int = 96  # a reference's look, blended at part strength over its colours: coarser, cheaper
    # --- prompts
    styles_dir: Path | None = None  # None: streamfx.styles.default_styles_dir()
    prompt_cache: int = 8  # prepared references kept for reuse across callers

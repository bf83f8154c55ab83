"""Typed settings for face tracking, smoothing, alignment and compositing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter parameters (Casiez et al. 2012).

    ``min_cutoff`` (Hz) sets the smoothing at rest (lower = less jitter, more lag);
    ``beta`` raises the cutoff with speed (higher = less lag in motion).  Speeds are
    measured in face sizes per second, so the values do not depend on the frame size.
    """

    min_cutoff: float = 1.0
    beta: float = 4.0
    d_cutoff: float = 1.0


@dataclass(frozen=True)
class FaceConfig:
    """Everything :class:`~streamfx.face.tracking.FaceTracker` can be tuned with."""

    # Detection / landmarks
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    detect_every: int = 30  # frames between full-range detections while tracking (face count, switches)
    max_process_side: int = 1280  # larger frames are downscaled before the models see them
    roi_size: int = 256  # side of the upscaled crop used for small faces
    mesh_min_face: float = 0.22  # faces at least this fraction of the short frame side use mesh tracking
    # Identity policy
    switch_margin: float = 1.5  # another face must score this many times higher ...
    switch_debounce: int = 3  # ... in this many consecutive detections to take over
    # Loss handling
    hold_seconds: float = 0.3  # keep the last state this long after the face is lost
    # Smoothing
    landmark_filter: OneEuroConfig = OneEuroConfig()
    pose_filter: OneEuroConfig = OneEuroConfig(min_cutoff=1.5, beta=0.5)
    smooth: bool = True

"""What a caller asks for: the prompt, the pose mode, the quality preset, bypass.

These are plain values that the control channel parses (``streamfx.server.control``)
and every engine reads.  They carry no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

PoseModeName = Literal["follow", "frontal", "offset", "fixed"]
POSE_MODES: tuple[str, ...] = ("follow", "frontal", "offset", "fixed")
MAX_POSE_DEG = 60.0


@dataclass(frozen=True)
class PoseMode:
    """Target head pose.

    ``follow``: the frame's own pose (an edit only). ``frontal``: yaw = pitch = 0.
    ``offset``: live pose plus (yaw_deg, pitch_deg). ``fixed``: absolute (yaw_deg, pitch_deg).
    Angles are in degrees, 0 = looking into the camera, +yaw = the head turned to its left.
    """

    mode: PoseModeName = "follow"
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0

    def target(self, live_yaw_deg: float, live_pitch_deg: float) -> tuple[float, float]:
        """The (yaw, pitch) in degrees to render at, given the live pose."""
        if self.mode == "follow":
            return live_yaw_deg, live_pitch_deg
        if self.mode == "frontal":
            return 0.0, 0.0
        if self.mode == "offset":
            return live_yaw_deg + self.yaw_deg, live_pitch_deg + self.pitch_deg
        return self.yaw_deg, self.pitch_deg


@dataclass(frozen=True)
class Prompt:
    """An edit prompt: a reference image (RGB uint8) or a named preset/style.

    ``key`` identifies the prompt so that engines can cache per-prompt work
    (e.g. 3DPE's reference tokens) and notice a change.
    """

    kind: Literal["image", "preset"]
    name: str
    image: Optional[np.ndarray] = field(default=None, compare=False, repr=False)
    key: str = ""


@dataclass
class Controls:
    """Per-caller settings, changed by control messages between frames."""

    prompt: Optional[Prompt] = None
    pose: PoseMode = field(default_factory=PoseMode)
    quality: str = "auto"
    bypass: bool = False
    strength: float = 1.0

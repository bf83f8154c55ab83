"""The camera's settings, kept from one start to the next in the user's config folder.

What the control page changes (prompt, pose, strength, quality, bypass, the microphone's
offset) is written to ``camera.json`` in :func:`~streamfx.user_dirs.config_dir` after each
change; a reference image (uploaded, or generated from a text) is kept beside it as
``camera-reference.png``, so the next start shows the same edit. A settings file that cannot
be read is reported in one line and replaced by the defaults: it never stops the camera.
On start, what the command line asks for (a flag that differs from its default) wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .. import log
from ..pipeline.controls import MAX_POSE_DEG, POSE_MODES, Controls, PoseMode, Prompt
from ..server.control import MAX_MIC_OFFSET_MS
from ..user_dirs import config_dir

logger = log.get(__name__)
SETTINGS_FILE, REFERENCE_FILE = "camera.json", "camera-reference.png"
REFERENCE = "(reference image)"  # ``prompt`` when the saved reference image is the prompt


@dataclass(frozen=True)
class CameraSettings:
    prompt: str | None = None      # a style name, REFERENCE, or None
    pose: str = "follow"
    yaw: float = 0.0
    pitch: float = 0.0
    quality: str = "auto"
    strength: float = 1.0
    bypass: bool = False
    mic_offset_ms: float = 0.0

    @classmethod
    def of(cls, controls: Controls, mic_offset_ms: float) -> "CameraSettings":
        prompt = controls.prompt
        name = None if prompt is None else (prompt.name if prompt.kind == "preset" else REFERENCE)
        return cls(name, controls.pose.mode, controls.pose.yaw_deg, controls.pose.pitch_deg, controls.quality,
                   controls.strength, controls.bypass, mic_offset_ms)

    def controls(self) -> Controls:
        """The controls these settings ask for, without the prompt (the pipeline sets that)."""
        return Controls(pose=PoseMode(self.pose, self.yaw, self.pitch), quality=self.quality,  # type: ignore[arg-type]
                        strength=self.strength, bypass=self.bypass)


def _checked(data: object) -> CameraSettings:
    """Settings from parsed JSON; ValueError naming the first bad field."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    known = {f.name: f for f in fields(CameraSettings)}
    settings = CameraSettings(**{k: v for k, v in data.items() if k in known})
    numbers = {"yaw": MAX_POSE_DEG, "pitch": MAX_POSE_DEG, "strength": 1.0, "mic_offset_ms": MAX_MIC_OFFSET_MS}
    for name, limit in numbers.items():
        value = getattr(settings, name)
        low = 0.0 if name == "strength" else -limit
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= limit:
            raise ValueError(f"{name} must be a number in {low:g}..{limit:g}")
    if settings.pose not in POSE_MODES:
        raise ValueError(f"pose must be one of {', '.join(POSE_MODES)}")
    if not isinstance(settings.quality, str) or not isinstance(settings.bypass, bool):
        raise ValueError("quality must be a string and bypass true or false")
    if settings.prompt is not None and not isinstance(settings.prompt, str):
        raise ValueError("prompt must be a name or null")
    return settings


class SettingsStore:
    """``camera.json`` (and the reference image) in ``folder`` (default: the config folder)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else config_dir()
        self.path = self.folder / SETTINGS_FILE
        self.reference_path = self.folder / REFERENCE_FILE
        self._reference_key: str | None = None
        self.problem: str | None = None  # why the saved settings were not used, one line

    def load(self) -> CameraSettings:
        if not self.path.exists():
            return CameraSettings()
        try:
            settings = _checked(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            self.problem = f"ignored the saved camera settings in {self.path} ({exc}); using the defaults"
            logger.warning("camera settings unreadable", extra={"path": str(self.path), "error": str(exc)})
            return CameraSettings()
        if settings.prompt == REFERENCE and not self.reference_path.exists():
            settings = replace(settings, prompt=None)
        return settings

    def save(self, settings: CameraSettings, prompt: Prompt | None = None) -> None:
        """Write ``settings`` (atomically); a reference image ``prompt`` is written once per key."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if settings.prompt == REFERENCE and prompt is not None and prompt.image is not None \
                    and prompt.key != self._reference_key:
                _write_png(self.reference_path, prompt.image)
                self._reference_key = prompt.key
            partial = self.path.with_suffix(".json.partial")
            partial.write_text(json.dumps(asdict(settings), indent=1), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError as exc:  # a full disk or a read-only folder: the camera goes on unsaved
            logger.warning("camera settings not saved", extra={"path": str(self.path), "error": str(exc)})


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("could not encode the reference image")
    partial = path.with_suffix(".png.partial")
    partial.write_bytes(data.tobytes())
    os.replace(partial, path)


def with_flags(saved: CameraSettings, flags: dict) -> CameraSettings:
    """``saved`` overridden by each command-line flag that differs from its default."""
    defaults = CameraSettings()
    return replace(saved, **{k: v for k, v in flags.items() if v != getattr(defaults, k)})

"""Per-frame orchestration: controls, engines, per-caller state and timing."""

from .controls import Controls, PoseMode, Prompt
from .engine import Engine, EngineSession, PromptError
from .timing import RollingStats, StageTimer

__all__ = ["Controls", "PoseMode", "Prompt", "Engine", "EngineSession", "PromptError",
           "RollingStats", "StageTimer"]

"""The engine interface: what turns a caller's frame into the filtered frame.

An :class:`Engine` is shared by all callers (it owns models and caches). Each caller gets
its own :class:`EngineSession`, which owns the per-caller state (prompt, temporal state).
Frames are RGB ``uint8`` arrays of shape (H, W, 3); a session returns a frame of the same
shape. Sessions time their sub-stages on the :class:`~streamfx.pipeline.timing.StageTimer`
they are handed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from .controls import Controls, Prompt
from .options import EngineOptions
from .timing import StageTimer


class PromptError(ValueError):
    """A prompt cannot be used (no face in the reference, unknown preset ...).

    The message is shown to the caller as is; the previous prompt stays active.
    """


class EngineSession(ABC):
    """Per-caller state of an engine."""

    def set_prompt(self, prompt: Prompt | None) -> dict[str, Any] | None:
        """Switch to ``prompt`` (None clears it). Raise :class:`PromptError` to refuse it;
        the previous prompt must then stay active. May return fields for the caller's ack
        (what the engine made of the prompt, e.g. ``{"look": "oil", "note": ...}``)."""
        return None

    @abstractmethod
    def process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        """Filter one RGB uint8 frame (H, W, 3) and return a frame of the same shape."""

    def face_crop(self) -> np.ndarray | None:
        """The latest aligned (512, 512, 3) RGB uint8 face crop this session saw, or None
        (no face yet, or an engine that does not align). Called off the frame path."""
        return None

    def stats(self) -> dict[str, Any]:
        """Engine-specific numbers for the caller's stats message (rates, preset ...)."""
        return {}

    def reset(self) -> None:
        """Forget temporal state (face switch, resolution change)."""

    def close(self) -> None:
        """Release per-caller resources."""


class Engine(ABC):
    """A filter implementation shared by all callers."""

    name: str = "engine"
    description: str = ""

    def presets(self) -> list[str]:
        """Named prompts (styles/looks) the browser may choose from."""
        return []

    def qualities(self) -> list[str]:
        """Quality preset names; ``auto`` lets the engine choose."""
        return ["auto"]

    def info(self) -> dict[str, Any]:
        """What the page shows about the engine."""
        return {"engine": self.name, "description": self.description,
                "presets": self.presets(), "qualities": self.qualities()}

    @abstractmethod
    def open_session(self) -> EngineSession:
        """A new per-caller session."""

    def close(self) -> None:
        """Release shared resources."""


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (e.g. no weights); the message says how to fix it."""


EngineFactory = Callable[[EngineOptions], Engine]
Readiness = Callable[[EngineOptions], "str | None"]  # None when usable, else the one-line reason
_REGISTRY: dict[str, tuple[EngineFactory, Readiness]] = {}


def _always_ready(options: EngineOptions) -> None:
    return None


def register(name: str, factory: EngineFactory, readiness: Readiness = _always_ready) -> None:
    _REGISTRY[name] = (factory, readiness)


def available() -> list[str]:
    return sorted(_REGISTRY)


def unusable_reason(name: str, options: EngineOptions = EngineOptions()) -> str | None:
    """Why ``name`` cannot run here, or None when it can (cheap: no model is loaded)."""
    return _REGISTRY[name][1](options)


def create(name: str, options: EngineOptions = EngineOptions()) -> Engine:
    if name not in _REGISTRY:
        raise KeyError(f"unknown engine {name!r}; available: {', '.join(available())}")
    factory, readiness = _REGISTRY[name]
    reason = readiness(options)
    if reason is not None:
        raise EngineUnavailable(reason)
    return factory(options)

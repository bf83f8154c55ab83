"""Engine selection: ``auto`` picks the best engine this install can run."""

from __future__ import annotations

from .. import log
from . import engine as registry
from . import engines as _builtin  # noqa: F401  (registers the built-in engines)
from .engine import Engine
from ..runtime.threads import apply_threads
from .options import EngineOptions

logger = log.get(__name__)
#: ``auto`` takes the first usable engine: 3DPE when weights are imported, else the mesh engine.
AUTO_ORDER = ("3dpe", "mesh", "overlay")


def resolve(name: str, options: EngineOptions = EngineOptions()) -> str:
    """Map ``auto`` to a concrete engine name; check that others exist."""
    if name != "auto":
        if name not in registry.available():
            raise ValueError(f"unknown engine {name!r}; available: auto, {', '.join(registry.available())}")
        return name
    for candidate in AUTO_ORDER:
        if candidate in registry.available() and registry.unusable_reason(candidate, options) is None:
            return candidate
    return "overlay"


def build_engine(name: str = "auto", options: EngineOptions = EngineOptions()) -> Engine:
    """The engine ``name`` resolves to, built with ``options``; ``--threads`` applies to the
    whole process (torch and OpenCV), whichever engine runs."""
    apply_threads(options.threads)
    chosen = resolve(name, options)
    logger.info("engine selected", extra={"requested": name, "engine": chosen})
    return registry.create(chosen, options)

"""Built-in engines. Importing this package registers them with :mod:`streamfx.pipeline.engine`."""

from ..engine import register
from .overlay import OverlayEngine

register("overlay", OverlayEngine)

__all__ = ["OverlayEngine"]

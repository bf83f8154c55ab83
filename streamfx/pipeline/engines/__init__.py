"""Built-in engines. Importing this package registers them with :mod:`streamfx.pipeline.engine`."""

from ..engine import register
from .mesh import MeshEngine
from .overlay import OverlayEngine


def _threedpe():
    from .threedpe.engine import ThreeDPEEngine

    return ThreeDPEEngine()


def _threedpe_readiness():
    from .threedpe.engine import readiness

    return readiness()


register("overlay", OverlayEngine)
register("mesh", MeshEngine)
register("3dpe", _threedpe, _threedpe_readiness)

__all__ = ["MeshEngine", "OverlayEngine"]

"""Built-in engines. Importing this package registers them with :mod:`streamfx.pipeline.engine`."""

from ..engine import register
from .mesh import MeshEngine
from .overlay import OverlayEngine


def _threedpe():
    from .threedpe.engine import ThreeDPEEngine

    return ThreeDPEEngine()


def _threedpe_readiness():
    """Cheap: looks for imported weights without importing the model code."""
    from ...models.checkpoint import GET_WEIGHTS_HINT, find_imported_weights

    return None if find_imported_weights() is not None else f"no 3DPE weights imported; {GET_WEIGHTS_HINT}"


register("overlay", OverlayEngine)
register("mesh", MeshEngine)
register("3dpe", _threedpe, _threedpe_readiness)

__all__ = ["MeshEngine", "OverlayEngine"]

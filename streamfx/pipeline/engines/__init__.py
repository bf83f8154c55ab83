"""Built-in engines. Importing this package registers them with :mod:`streamfx.pipeline.engine`."""

from ..engine import register
from ..options import EngineOptions
from .mesh import MeshEngine
from .overlay import OverlayEngine


def _threedpe(options: EngineOptions):
    from .threedpe.config import ThreeDPEConfig
    from .threedpe.engine import ThreeDPEEngine

    return ThreeDPEEngine(ThreeDPEConfig.from_options(options))


def _threedpe_readiness(options: EngineOptions):
    """Cheap: looks for imported weights without importing the model code."""
    from ...models.checkpoint import GET_WEIGHTS_HINT, find_imported_weights

    if options.random_weights_seed is not None or find_imported_weights() is not None:
        return None
    return f"no 3DPE weights imported; {GET_WEIGHTS_HINT}"


register("overlay", lambda options: OverlayEngine())
register("mesh", lambda options: MeshEngine())
register("3dpe", _threedpe, _threedpe_readiness)

__all__ = ["MeshEngine", "OverlayEngine"]

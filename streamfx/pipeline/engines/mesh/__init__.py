"""The weight-free ``mesh`` engine (the default without 3DPE weights).

    from streamfx.pipeline.engines.mesh import MeshEngine, MeshEngineConfig
    engine = MeshEngine(MeshEngineConfig())
    session = engine.open_session()
    session.set_prompt(prompt)            # PromptError keeps the previous prompt
    out = session.process(frame, controls, timer)
"""

from .config import MeshEngineConfig
from .engine import MeshEngine, MeshSession
from .looks import LOOKS

__all__ = ["LOOKS", "MeshEngine", "MeshEngineConfig", "MeshSession"]

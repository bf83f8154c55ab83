"""3DPE's renderer half: EG3D tri-plane volume rendering and super-resolution.

``TriplaneRenderer`` loads the official ``renderer_state_dict`` directly (same key names).
"""

from .cameras import camera_rays, look_at_camera
from .config import RenderingOptions
from .errors import RendererError, RenderInputError, UnknownPresetError
from .module import TriplaneRenderer
from .presets import PRESETS, RenderPreset, get_preset

__all__ = [
    "PRESETS",
    "RenderInputError",
    "RenderPreset",
    "RendererError",
    "RenderingOptions",
    "TriplaneRenderer",
    "UnknownPresetError",
    "camera_rays",
    "get_preset",
    "look_at_camera",
]

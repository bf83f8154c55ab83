"""StreamFX: a real-time 3D-aware portrait filter (3DPE) for video calls."""

__version__ = "0.1.0"

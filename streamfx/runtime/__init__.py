"""Inference runtimes: backends (ONNX Runtime, OpenVINO, TensorRT in contrib), ONNX export
and checks, the capability probe, and the engine cache in ``engines/``.

The package itself imports nothing heavy (the command line reads :mod:`.names` without
loading torch); the backend interface is re-exported lazily from :mod:`.base`.
"""

from __future__ import annotations

__all__ = ["Backend", "BackendUnavailable", "GraphSpec", "Runner", "TensorSpec", "get_backend"]


def __getattr__(name: str):
    if name in __all__:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

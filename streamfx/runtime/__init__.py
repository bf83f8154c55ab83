"""Inference runtimes: backends (ONNX Runtime, OpenVINO, TensorRT in contrib), ONNX export
and checks, and the engine cache in ``engines/``."""

from .base import Backend, BackendUnavailable, GraphSpec, Runner, TensorSpec, get_backend

__all__ = ["Backend", "BackendUnavailable", "GraphSpec", "Runner", "TensorSpec", "get_backend"]

"""The backend interface: a graph (ONNX file or torch module) in, a runner out.

A *graph* is one of the exported 3DPE pieces with static shapes (the reference encoder,
the encoder, or the renderer at one quality preset). A :class:`Backend` turns it into a
:class:`Runner`, which maps named torch tensors to named torch tensors. Backends are
found by name through :data:`BACKENDS`, as import paths, so that the core never imports
an optional backend (TensorRT lives in ``runtime/contrib``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (package or hardware missing); the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its name (e.g. ``renderer-fast``) and its static I/O."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    meta: dict = field(default_factory=dict, compare=False)


class Runner(ABC):
    spec: GraphSpec

    @abstractmethod
    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the graph. Inputs are named as in ``spec.inputs``; outputs as in ``spec.outputs``."""


def numpy_feed(inputs: dict[str, torch.Tensor]) -> dict:
    """Named torch tensors -> float32 numpy arrays, the input format of the CPU runtimes."""
    return {name: t.detach().to(torch.float32).cpu().numpy() for name, t in inputs.items()}


def package_availability(module: str, extra: str = "cpu-runtimes") -> tuple[bool, str]:
    """(True, "") when ``module`` imports, else (False, how to install it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False, f"pip install 'streamfx[{extra}]' ({module})"
    return True, ""


class Backend(ABC):
    name: str = "backend"
    #: the artefact a backend builds from an ONNX file (".onnx" for those that read it directly)
    suffix: str = ".onnx"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, the reason)."""
        return True, ""

    def build(self, onnx_path: Path, spec: GraphSpec, out_dir: Path) -> Path:
        """Turn an ONNX file into this backend's artefact (default: use the ONNX as is)."""
        return onnx_path

    @abstractmethod
    def load(self, artefact: Path, spec: GraphSpec) -> Runner:
        """A runner for a built artefact."""


BACKENDS: dict[str, str] = {
    "onnxruntime": "streamfx.runtime.ort_backend:OnnxRuntimeBackend",
    "openvino": "streamfx.runtime.openvino_backend:OpenVinoBackend",
    "tensorrt": "streamfx.runtime.contrib.trt_backend:TensorRTBackend",
}


def get_backend(name: str, **kwargs) -> Backend:
    """Instantiate a backend by name; raises :class:`BackendUnavailable` with the reason."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, cls_name = BACKENDS[name].split(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} needs a package that is not installed ({exc.name})") from None
    ok, reason = cls.availability()
    if not ok:
        raise BackendUnavailable(f"backend {name} cannot run here: {reason}")
    return cls(**kwargs)

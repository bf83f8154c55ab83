"""ONNX Runtime on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import Backend, BackendUnavailable, GraphSpec, Runner, numpy_feed, package_availability


class _OrtRunner(Runner):
    def __init__(self, session, spec: GraphSpec) -> None:
        self.session, self.spec = session, spec
        self.output_names = [o.name for o in spec.outputs]

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = numpy_feed(inputs)
        outs = self.session.run(self.output_names, feed)
        return {name: torch.from_numpy(np.asarray(v)) for name, v in zip(self.output_names, outs)}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or os.cpu_count() or 1

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return package_availability("onnxruntime")

    def load(self, artefact: Path, spec: GraphSpec) -> Runner:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(artefact), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BackendUnavailable(f"onnxruntime cannot load {artefact.name}: {str(exc).splitlines()[0]}") from None
        return _OrtRunner(session, spec)

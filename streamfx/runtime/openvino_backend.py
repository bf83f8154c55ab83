"""OpenVINO on the CPU. It reads ONNX directly and runs bf16 on AMX-capable CPUs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import Backend, BackendUnavailable, GraphSpec, Runner, numpy_feed, package_availability


class _OvRunner(Runner):
    def __init__(self, compiled, spec: GraphSpec) -> None:
        self.compiled, self.spec = compiled, spec
        self.request = compiled.create_infer_request()
        self.ports = {o.name: compiled.output(o.name) for o in spec.outputs}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = numpy_feed(inputs)
        result = self.request.infer(feed)
        # Look outputs up by port: a port may carry several tensor names (e.g. a graph output
        # that also feeds other nodes), so ``get_any_name`` need not return the output's name.
        return {o.name: torch.from_numpy(np.array(result[self.ports[o.name]])) for o in self.spec.outputs}


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, precision: str = "bf16", threads: int | None = None) -> None:
        self.precision, self.threads = precision, threads

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return package_availability("openvino")

    def load(self, artefact: Path, spec: GraphSpec) -> Runner:
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(artefact)), "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailable(f"openvino cannot load {artefact.name}: {str(exc).splitlines()[0]}") from None
        return _OvRunner(compiled, spec)

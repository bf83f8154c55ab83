"""ONNX export of torch modules with static shapes, and the comparison of a built graph with PyTorch."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

from .base import GraphSpec, Runner

OPSET = 17


def export_onnx(module: torch.nn.Module, spec: GraphSpec, path: Path, opset: int = OPSET,
                dynamic_batch: bool = False) -> Path:
    """Export ``module(*inputs)`` (inputs in ``spec.inputs`` order) to ``path`` with static shapes,
    or with a dynamic first (batch) dimension on every input and output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.zeros(t.shape, dtype=t.dtype) for t in spec.inputs)
    module = module.eval()
    names = [t.name for t in spec.inputs] + [t.name for t in spec.outputs]
    dynamic = {name: {0: "batch"} for name in names} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs], opset_version=opset,
                          do_constant_folding=True, dynamic_axes=dynamic, dynamo=False)
    return path


def compare_outputs(runner: Runner, module: torch.nn.Module, inputs: dict[str, torch.Tensor],
                    relative: bool = True) -> dict[str, float]:
    """Run a built graph and its PyTorch module on the same inputs; per output, the largest
    absolute difference, divided by the largest |expected| when ``relative``."""
    with torch.no_grad():
        expected = module(*inputs.values())
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    elif isinstance(expected, dict):
        expected = tuple(expected[o.name] for o in runner.spec.outputs)
    got = runner(**inputs)
    errors = {}
    for spec, exp in zip(runner.spec.outputs, expected):
        diff = float((got[spec.name].float().cpu() - exp.float()).abs().max())
        errors[spec.name] = diff / (float(exp.abs().max()) or 1.0) if relative else diff
    return errors

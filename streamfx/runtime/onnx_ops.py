"""Checks that an exported ONNX graph only uses what TensorRT 10 supports.

The list is the subset of TensorRT 10's ONNX operator support that a 3DPE graph can
need; an op outside it, a 5-D GridSample, ``searchsorted``-like ops, or tensor types
TensorRT cannot take (float64, strings ...) are reported. It needs only the ``onnx`` package,
so it runs on machines without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TENSORRT10_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace Div Einsum Elu Equal Erf Exp
Expand Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Identity If InstanceNormalization
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mish Mod Mul Neg Not
OneHot Or PRelu Pad Pow Range Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND Selu Shape Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh Tile TopK
Transpose Trilu Unsqueeze Where Xor
""".split())

# ONNX TensorProto element types TensorRT 10 accepts for network tensors.
_ALLOWED_TYPES = {1: "float32", 10: "float16", 16: "bfloat16", 6: "int32", 7: "int64", 9: "bool", 3: "int8", 2: "uint8"}


@dataclass(frozen=True)
class OpReport:
    ops: dict[str, int]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_tensorrt_support(path: Path) -> OpReport:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    ranks = _ranks(model)
    ops: dict[str, int] = {}
    problems: list[str] = []
    for node in _all_nodes(graph):
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        ops[key] = ops.get(key, 0) + 1
        if key not in TENSORRT10_OPS:
            problems.append(f"op {key} ({node.name}) is not supported by TensorRT 10")
        if node.op_type == "GridSample" and ranks.get(node.input[0], 4) != 4:
            problems.append(f"GridSample {node.name} is {ranks[node.input[0]]}-D; only 4-D is supported")
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        elem = value.type.tensor_type.elem_type
        if elem and elem not in _ALLOWED_TYPES:
            problems.append(f"tensor {value.name} has element type {elem}, which TensorRT cannot take")
    for init in graph.initializer:
        if init.data_type not in _ALLOWED_TYPES:
            problems.append(f"initializer {init.name} has element type {init.data_type}")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        problems.append(f"opset {opset} is below 17")
    return OpReport(ops=dict(sorted(ops.items())), problems=tuple(dict.fromkeys(problems)))


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _ranks(model) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks are best effort
        inferred = model
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


class UnsupportedGraphError(RuntimeError):
    """An ONNX graph TensorRT 10 cannot build; the message names the first offending node."""


def require_tensorrt_support(path: Path) -> OpReport:
    """:func:`check_tensorrt_support`, raising :class:`UnsupportedGraphError` on the first problem."""
    report = check_tensorrt_support(path)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise UnsupportedGraphError(f"{path.name}: {report.problems[0]}{more}; not building it for TensorRT")
    return report

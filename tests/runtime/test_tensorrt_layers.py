"""Which TensorRT layers an FP16 build pins to FP32, without TensorRT.

* On the real layer list of the renderer's **dynamic-batch** export (one ONNX export of
  ``renderer-fast`` with up to 8 rows per module): its ONNX nodes are presented as TensorRT
  layers (name, layer type, output types from ONNX shape inference, shape-tensor flags
  propagated from the shape inputs), the form :func:`pin_to_fp32` decides on.
* :func:`pin_layers` and an FP16/FP32 build on a fake TensorRT network, whose layers refuse a
  precision constraint the way TensorRT does (shape layers, int and bool outputs).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from types import SimpleNamespace

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from streamfx.runtime import GraphSpec, TensorSpec
from streamfx.runtime.contrib import trt_backend
from streamfx.runtime.contrib.trt_backend import TensorRTBackend, pin_layers
from streamfx.runtime.contrib.trt_precision import (INDEX_OUTPUT_TYPES, LayerInfo, pin_to_fp32, pinned_fp32,
                                                    precision_setup)

GRAPH = "renderer-fast"

# --- ONNX nodes as TensorRT layers -------------------------------------------------------------

#: the inputs of each op that TensorRT takes as shape tensors (dimensions, axes, counts)
SHAPE_INPUTS = {"Reshape": {1}, "Expand": {1}, "Tile": {1}, "Slice": {1, 2, 3, 4}, "ConstantOfShape": {0},
                "Range": {0, 1, 2}, "Resize": {1, 2, 3}, "Pad": {1}, "Unsqueeze": {1}, "Squeeze": {1},
                "ReduceSum": {1}, "TopK": {1}, "CumSum": {1}, "Split": {1}, "OneHot": {1}}
#: ops that read only their input's dimensions: a shape tensor out does not make the input one
DIMENSION_READERS = {"Shape", "Size"}
ELEMENT_TYPES = {TensorProto.FLOAT: "FLOAT", TensorProto.FLOAT16: "HALF", TensorProto.INT32: "INT32",
                 TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL"}
#: the TensorRT layer types the rule names (other ops keep their ONNX name, upper-cased)
LAYER_TYPES = {"Constant": "CONSTANT", "Shape": "SHAPE", "TopK": "TOPK"}


def onnx_layers(model: onnx.ModelProto) -> tuple[list[LayerInfo], dict[str, str]]:
    """(each node as a :class:`LayerInfo`, node name -> ONNX op type).

    A tensor is a shape tensor when it is a Shape's output, or when every reader takes it as
    a shape input (Reshape's input 1, Slice's 1..4, ...) or produces only shape tensors itself
    (Gather, Concat, Unsqueeze, Cast, Add, ... of dims), propagated backwards to a fixed point.
    """
    graph = onnx.shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    readers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name:
                readers[name].append((node, k))
    outputs = {o.name for o in graph.output}
    shape = {o for n in graph.node if n.op_type == "Shape" for o in n.output}

    def shape_read(reader, k: int) -> bool:
        if k in SHAPE_INPUTS.get(reader.op_type, ()):
            return True
        return reader.op_type not in DIMENSION_READERS and all(o in shape for o in reader.output)

    changed = True
    while changed:
        changed = False
        for node in graph.node:
            for out in node.output:
                if out in shape or out in outputs or not readers[out]:
                    continue
                if all(shape_read(reader, k) for reader, k in readers[out]):
                    shape.add(out)
                    changed = True
    layers = [LayerInfo(n.name, LAYER_TYPES.get(n.op_type, n.op_type.upper()),
                        tuple(ELEMENT_TYPES.get(elem.get(o, 0), f"onnx{elem.get(o, 0)}") for o in n.output),
                        tuple(o in shape for o in n.output)) for n in graph.node]
    return layers, {n.name: n.op_type for n in graph.node}


@pytest.fixture(scope="module")
def dynamic_renderer(random_model, tmp_path_factory):
    """``renderer-fast`` exported with a dynamic batch (max 8 rows), as TensorRT layers."""
    from streamfx.runtime.export import export_onnx
    from streamfx.runtime.graphs import graph_module, graph_spec

    path = export_onnx(graph_module(random_model, GRAPH), graph_spec(GRAPH, max_batch=8),
                       tmp_path_factory.mktemp("trt-layers") / "renderer-fast.onnx", dynamic_batch=True)
    return onnx_layers(onnx.load(str(path), load_external_data=False))


def _non_float(layer: LayerInfo) -> bool:
    return any(d not in ("FLOAT", "HALF") for d in layer.output_dtypes)


def test_the_dynamic_export_pins_float_volume_math_and_no_int_bool_or_shape_layer(dynamic_renderer):
    layers, op_of = dynamic_renderer
    assert all(not d.startswith("onnx") for layer in layers for d in layer.output_dtypes), "every output is typed"
    scope = [layer for layer in layers if pinned_fp32(GRAPH, layer.name)]  # the volume scope by name
    ints = [layer for layer in scope if {"INT32", "INT64"} & set(layer.output_dtypes)]
    bools = [layer for layer in scope if "BOOL" in layer.output_dtypes]
    shapes = [layer for layer in scope if any(layer.shape_outputs)]
    # the export really holds what TensorRT refuses precision constraints on, in the pinned scope
    assert len(ints) > 20 and len(bools) >= 3 and len(shapes) > 20, (len(ints), len(bools), len(shapes))
    assert {"Shape", "Gather", "Concat", "Unsqueeze"} <= {op_of[layer.name] for layer in shapes}
    assert any(layer.type == "CONSTANT" for layer in ints), "int constants sit in the scope too"

    pinned = {layer.name for layer in layers if pin_to_fp32(GRAPH, layer)}
    refused = [layer for layer in scope if any(layer.shape_outputs) or layer.type == "SHAPE"
               or (_non_float(layer) and layer.type not in INDEX_OUTPUT_TYPES)]
    assert refused and not [layer.name for layer in refused if layer.name in pinned]
    # ... while every float volume layer stays FP32
    float_math = [layer for layer in scope if layer not in refused]
    assert len(float_math) > 100 and {layer.name for layer in float_math} <= pinned
    by_op: dict[str, set[bool]] = defaultdict(set)
    for layer in layers:
        by_op[op_of[layer.name]].add(layer.name in pinned)
    for volume_op in ("GridSample", "Exp", "Log", "CumSum", "TopK"):  # TopK: the depth sort (values + indices)
        assert by_op[volume_op] == {True}, f"{volume_op} must stay FP32"
    assert {name for name, op in op_of.items() if op == "MatMul" and name.count("/") == 2} <= pinned
    heavy = [name for name, op in op_of.items() if op in ("Conv", "ConvTranspose", "MatMul", "Gemm")
             and name.startswith(("/renderer/decoder", "/renderer/superresolution/"))]
    assert len(heavy) > 10 and not set(heavy) & pinned, "decoder and super-resolution run FP16"
    assert not any(op_of[name].startswith("Conv") for name in pinned)
    assert not any(pin_to_fp32("encoder", layer) for layer in layers), "other graphs are not pinned"

    # pin_layers on these layers: TensorRT's refusals (FakeLayer) never fire, the same layers are pinned
    network = FakeNetwork(layers)
    assert pin_layers(network, GRAPH, FAKE_TRT) == len(pinned)
    assert {layer.name for layer in network.layers if layer.pinned} == pinned


# --- a fake TensorRT network -------------------------------------------------------------------

class FakeDataType:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


_DTYPES: dict[str, FakeDataType] = {}


def dtype(name: str) -> FakeDataType:
    return _DTYPES.setdefault(name, FakeDataType(name))


class FakeLayer:
    """A TensorRT layer that refuses precision constraints where TensorRT does."""

    def __init__(self, info: LayerInfo) -> None:
        self.name, self.type = info.name, SimpleNamespace(name=info.type)
        self.outputs = [SimpleNamespace(dtype=dtype(d), is_shape_tensor=s)
                        for d, s in zip(info.output_dtypes, info.shape_outputs)]
        self.num_outputs = len(self.outputs)
        self.pinned = False
        self.output_types: dict[int, FakeDataType] = {}

    def get_output(self, j: int):
        return self.outputs[j]

    @property
    def precision(self):
        raise AssertionError("pin_layers only sets the precision")

    @precision.setter
    def precision(self, value) -> None:
        if self.type.name == "SHAPE" or any(t.is_shape_tensor for t in self.outputs):
            raise RuntimeError(f"{self.name}: a shape layer can only run in INT32 precision")
        if not any(t.dtype.name in ("FLOAT", "HALF") for t in self.outputs):
            raise RuntimeError(f"{self.name}: cannot use precision {value.name} with outputs of type "
                               f"{[t.dtype.name for t in self.outputs]}")
        assert value is FAKE_TRT.float32
        self.pinned = True

    def set_output_type(self, j: int, value) -> None:
        if self.outputs[j].dtype.name not in ("FLOAT", "HALF"):
            raise RuntimeError(f"{self.name}: output {j} is {self.outputs[j].dtype.name}")
        self.output_types[j] = value


class FakeNetwork:
    def __init__(self, infos) -> None:
        self.layers = [FakeLayer(i) for i in infos]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


FAKE_TRT = SimpleNamespace(float32=dtype("FLOAT"), float16=dtype("HALF"))

#: a tiny renderer network: (name, type, output types, shape-tensor flags), pinned or not
TINY = [
    (LayerInfo("/renderer/Shape", "SHAPE", ("INT64",), (True,)), False),
    (LayerInfo("/renderer/Gather_2", "GATHER", ("INT64",), (True,)), False),
    (LayerInfo("/renderer/Concat_1", "CONCATENATION", ("INT64",), (True,)), False),
    (LayerInfo("/renderer/Cast_3", "CAST", ("FLOAT",), (True,)), False),           # a float dim (Resize scales)
    (LayerInfo("/renderer/Constant_7", "CONSTANT", ("INT64",), (False,)), False),
    (LayerInfo("/renderer/Less", "ELEMENTWISE", ("BOOL",), (False,)), False),
    (LayerInfo("/renderer/Assert", "ASSERTION", (), ()), False),
    (LayerInfo("/renderer/Reshape_4", "SHUFFLE", ("FLOAT",), (False,)), True),      # float data, shape input 1
    (LayerInfo("/renderer/Constant_8", "CONSTANT", ("FLOAT",), (False,)), True),   # the sample depths
    (LayerInfo("/renderer/TopK", "TOPK", ("FLOAT", "INT32"), (False, False)), True),
    (LayerInfo("/renderer/GridSample", "GRID_SAMPLE", ("FLOAT",), (False,)), True),
    (LayerInfo("/renderer/decoder/MatMul", "MATRIX_MULTIPLY", ("FLOAT",), (False,)), False),
    (LayerInfo("/encoder/Exp", "UNARY", ("FLOAT",), (False,)), False),
]


def test_pin_layers_sets_fp32_on_float_layers_only():
    network = FakeNetwork([info for info, _ in TINY])
    assert pin_layers(network, GRAPH, FAKE_TRT) == sum(pin for _, pin in TINY)
    assert {layer.name: layer.pinned for layer in network.layers} == {info.name: pin for info, pin in TINY}
    topk = next(layer for layer in network.layers if layer.type.name == "TOPK")
    assert topk.output_types == {0: FAKE_TRT.float32}, "the values go FP32, the indices keep their type"
    assert all(layer.output_types == {} for layer in network.layers if not layer.pinned)
    assert pin_layers(FakeNetwork([info for info, _ in TINY]), "encoder", FAKE_TRT) == 0
    for kind in ("SHAPE", "ASSERTION", "CONDITION", "TRIP_LIMIT", "ITERATOR", "LOOP_OUTPUT"):
        # the type alone decides, whatever the outputs claim
        assert not pin_to_fp32(GRAPH, LayerInfo("/renderer/X", kind, ("FLOAT",), (False,))), kind


# --- a build on the fake network ---------------------------------------------------------------

class FakeBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.profiles: list = []
        self.progress_monitor = None

    def set_memory_pool_limit(self, pool, size) -> None:
        pass

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile) -> None:
        self.profiles.append(profile)

    def create_timing_cache(self, data: bytes):
        return SimpleNamespace(serialize=lambda: b"timing")

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> None:
        self.cache = cache

    def get_timing_cache(self):
        return self.cache


def fake_tensorrt(network: FakeNetwork, configs: list) -> SimpleNamespace:
    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> FakeNetwork:
            return network

        def create_builder_config(self) -> FakeBuilderConfig:
            configs.append(FakeBuilderConfig())
            return configs[-1]

        def create_optimization_profile(self):
            return SimpleNamespace(shapes={}, set_shape=lambda name, *shapes: None)

        def build_serialized_network(self, net, config) -> bytes:
            return b"PLAN"

    class OnnxParser:
        def __init__(self, net, logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return True

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    return SimpleNamespace(Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, IProgressMonitor=IProgressMonitor,
                           MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
                           BuilderFlag=SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY"),
                           float32=FAKE_TRT.float32, float16=FAKE_TRT.float16)


def _tiny_onnx(path):
    f = TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Relu", ["planes"], ["image"], name="/renderer/Relu")], "tiny",
                              [helper.make_tensor_value_info("planes", f, ["batch", 4])],
                              [helper.make_tensor_value_info("image", f, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_and_fp32_builds_pin_and_name_their_plans_by_precision(tmp_path, monkeypatch):
    devices = []

    @contextmanager
    def on_device(device):
        devices.append(device)
        yield

    configs: list[FakeBuilderConfig] = []
    networks = {True: FakeNetwork([info for info, _ in TINY]), False: FakeNetwork([info for info, _ in TINY])}
    monkeypatch.setattr(trt_backend, "fingerprint", lambda device=None: f"Fake GPU {device}|sm89|trt10.3.0")
    monkeypatch.setattr(trt_backend, "on_device", on_device)
    spec = GraphSpec(GRAPH, (TensorSpec("planes", (1, 4)),), (TensorSpec("image", (1, 4)),), meta={"max_batch": 4})
    onnx_path = _tiny_onnx(tmp_path / "renderer-fast.abc.onnx")
    plans = {}
    for fp16 in (True, False):
        monkeypatch.setattr(trt_backend, "_trt", lambda fp16=fp16: fake_tensorrt(networks[fp16], configs))
        plans[fp16] = TensorRTBackend(fp16=fp16, device="cuda:1").build(onnx_path, spec, tmp_path)
    assert devices == [torch.device("cuda:1")] * 2, "each build runs with its device current"
    fp16_plan, fp32_plan = plans[True], plans[False]
    assert fp16_plan != fp32_plan and fp16_plan.read_bytes() == fp32_plan.read_bytes() == b"PLAN"
    assert f".{precision_setup(True)}.b4.plan" in fp16_plan.name and ".fp32.b4.plan" in fp32_plan.name
    assert fp16_plan.name.startswith("renderer-fast.abc.Fake_GPU_cuda_1_sm89_trt10.3.0.")
    assert configs[0].flags == {"FP16", "OBEY"} and configs[1].flags == set()
    assert {layer.name for layer in networks[True].layers if layer.pinned} == {i.name for i, pin in TINY if pin}
    assert not any(layer.pinned for layer in networks[False].layers), "an FP32 build pins nothing"
    assert len(configs[0].profiles) == 1, "a dynamic batch gets its optimisation profile"

"""The TensorRT backend's logic that does not need a GPU: stream ordering of a run, the op
checker stopping a build, which layers an FP16 build pins to FP32, and the one-line refusal
where TensorRT is not installed."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper
from stream_recorder import RecordingStreamOps

from streamfx.runtime import GraphSpec, TensorSpec
from streamfx.runtime.contrib.trt_backend import TensorRTBackend
from streamfx.runtime.contrib.trt_precision import pinned_fp32
from streamfx.runtime.onnx_ops import UnsupportedGraphError
from streamfx.runtime.streams import OrderedExecution


def test_a_run_waits_for_its_inputs_and_hands_outputs_back_in_order():
    ops = RecordingStreamOps()
    order = OrderedExecution(ops)
    worker = order.stream
    for consumer in ("sessionA", "sessionB"):
        ops.set_current(consumer)
        result = order.run(lambda stream, c=consumer: ops.note("enqueue", stream, c),
                           lambda c=consumer: ops.note("collect", ops.current(), c) or c)
        assert result == consumer
    log = ops.log
    records = {e[2]: e[1] for e in log if e[0] == "record"}
    for consumer in ("sessionA", "sessionB"):
        enqueue, collect = ops.index("enqueue", worker, consumer), ops.index("collect", consumer, consumer)
        inputs = [e for e in log[:enqueue] if e[0] == "wait" and e[1] == worker and records[e[2]] == consumer]
        assert inputs, f"the worker must wait for {consumer}'s stream before executing"
        ready = [e for e in log[enqueue:collect] if e[0] == "wait" and e[1] == consumer and records[e[2]] == worker]
        assert ready, f"{consumer} must wait for the worker's stream before reading the outputs"
    # the second run may not write the buffers before the first consumer has copied them out
    released = next(e[2] for e in log[ops.index("collect", "sessionA", "sessionA"):] if e[0] == "record")
    assert records[released] == "sessionA"
    assert ops.index("wait", worker, released) < ops.index("enqueue", worker, "sessionB")


def _unsupported_graph(path):
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="/encoder/relu"),
             helper.make_node("Mystery", ["h"], ["y"], name="/encoder/head/mystery", domain="com.example")]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", f, [1, 4])],
                              [helper.make_tensor_value_info("y", f, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(path))
    return path


def test_an_unsupported_node_stops_the_build_before_tensorrt_is_needed(tmp_path):
    spec = GraphSpec("bad", (TensorSpec("x", (1, 4)),), (TensorSpec("y", (1, 4)),))
    with pytest.raises(UnsupportedGraphError) as info:
        TensorRTBackend().build(_unsupported_graph(tmp_path / "bad.onnx"), spec, tmp_path)
    message = str(info.value)
    assert "/encoder/head/mystery" in message and "com.example:Mystery" in message
    assert "\n" not in message
    assert not list(tmp_path.glob("*.plan"))


def test_fp16_builds_pin_the_volume_math_and_keep_decoder_and_superresolution_fp16(tmp_path):
    from streamfx.models import random_weights, threedpe
    from streamfx.runtime.export import export_onnx
    from streamfx.runtime.graphs import graph_module, graph_spec

    model = threedpe.from_state(random_weights.random_state_dicts(seed=1))
    path = export_onnx(graph_module(model, "renderer-fast"), graph_spec("renderer-fast"), tmp_path / "r.onnx")
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    pinned = {n.name for n in nodes if pinned_fp32("renderer-fast", n.name)}
    by_type: dict[str, set[bool]] = {}
    for n in nodes:
        by_type.setdefault(n.op_type, set()).add(n.name in pinned)
    for volume_op in ("GridSample", "Exp", "Log", "CumSum", "TopK"):  # (Softplus is also the decoder's)
        if volume_op in by_type:
            assert by_type[volume_op] == {True}, f"{volume_op} must stay FP32"
    heavy = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
             and n.name.startswith(("/renderer/decoder", "/renderer/superresolution/"))]
    assert len(heavy) > 10 and not any(n.name in pinned for n in heavy), "decoder and super-resolution run FP16"
    assert not any(n.op_type.startswith("Conv") for n in nodes if n.name in pinned)
    # the volume's own matrix products (ray rotation, compositing sums) are pinned with it
    assert {n.name for n in nodes if n.op_type == "MatMul" and n.name.count("/") == 2} <= pinned
    assert not any(pinned_fp32("encoder", n.name) for n in nodes)  # other graphs are not pinned


def test_tensorrt_commands_say_in_one_line_what_is_missing():
    from importlib.util import find_spec

    if find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; the GPU tests cover it")
    for args in (["engines", "build", "--backend", "tensorrt"],
                 ["engines", "build", "--backend", "tensorrt", "--device", "cuda"],
                 ["bench", "--backend", "tensorrt", "--device", "cuda", "--random-weights"]):
        run = subprocess.run([sys.executable, "-m", "streamfx", *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert "streamfx[tensorrt]" in lines[0], lines[0]

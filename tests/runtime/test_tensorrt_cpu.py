"""The TensorRT backend's logic that does not need a GPU: stream ordering of a run, the op
checker stopping a build, the engine cache key holding the precision setup, and the one-line
refusals where TensorRT is not installed or is not TensorRT 10. (Which layers an FP16 build
pins to FP32: test_tensorrt_layers.py.)

Not tested without a GPU: that ``TensorRTBackend(device=...)`` deserialises and runs on that
device (``torch.cuda.device`` around deserialisation, context creation and each call; the
runner's stream, output buffers and inputs there). A CPU build of torch has no CUDA devices,
streams or events to tell apart, and a fake would only repeat the code;
tests/runtime/test_tensorrt_gpu.py runs the backend on a real GPU. (That a build runs with its
device current is checked on a fake TensorRT in test_tensorrt_layers.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from stream_recorder import RecordingStreamOps

from streamfx.runtime import GraphSpec, TensorSpec
from streamfx.runtime.base import BackendUnavailable
from streamfx.runtime.contrib import trt_backend, trt_precision
from streamfx.runtime.contrib.trt_backend import TensorRTBackend
from streamfx.runtime.onnx_ops import UnsupportedGraphError
from streamfx.runtime.selection import check_tensorrt_version, installed_tensorrt_version, require_tensorrt_package
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


# --- TensorRT 10 only ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.0.1", "10.13.3.9", "10.3.0rc1", " 10.8.0.43 "])
def test_tensorrt_10_releases_are_accepted(version):
    check_tensorrt_version(version)


@pytest.mark.parametrize("version", ["11.0.0", "11.0.1", "9.3.0", "8.6.1.6", "1.0", "100.0.0", "", "ten",
                                     "10", "10abc", ".10.0", "v10.0.1", "10.0.1\n11.0.0", None])
def test_other_majors_and_garbage_are_refused_in_one_line(version):
    with pytest.raises(BackendUnavailable) as info:
        check_tensorrt_version(version)
    message = str(info.value)
    assert "\n" not in message and "needs TensorRT 10" in message and "pip install 'tensorrt>=10,<11'" in message
    if version in ("11.0.0", "9.3.0"):
        assert message.startswith(f"TensorRT {version} is not supported")


def _fake_tensorrt(root: Path, version: str, metadata: bool = True, body: str | None = None) -> Path:
    """A ``tensorrt`` package reporting ``version`` under ``root`` (with a dist-info if ``metadata``)."""
    (root / "tensorrt").mkdir(parents=True)
    (root / "tensorrt" / "__init__.py").write_text(body if body is not None else f"__version__ = {version!r}\n")
    if metadata:
        info = root / f"tensorrt-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt\nVersion: {version}\n")
        (info / "top_level.txt").write_text("tensorrt\n")
    return root


def test_the_package_check_reads_the_version_without_importing_tensorrt(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(_fake_tensorrt(tmp_path / "meta", "11.0.0",
                                                   body="raise RuntimeError('imported')\n")))
    assert installed_tensorrt_version() == "11.0.0" and "tensorrt" not in sys.modules
    with pytest.raises(BackendUnavailable, match=r"^TensorRT 11\.0\.0 is not supported: StreamFX needs TensorRT 10"):
        require_tensorrt_package("tensorrt")
    require_tensorrt_package("onnxruntime")  # other backends need no TensorRT


def test_without_metadata_the_package_check_falls_back_to_the_module(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(_fake_tensorrt(tmp_path / "module", "9.3.0", metadata=False)))
    try:
        assert installed_tensorrt_version() == "9.3.0"
        with pytest.raises(BackendUnavailable, match=r"^TensorRT 9\.3\.0 is not supported"):
            require_tensorrt_package("tensorrt")
    finally:
        sys.modules.pop("tensorrt", None)


def test_loading_the_backend_refuses_tensorrt_11_in_one_line(monkeypatch):
    from types import SimpleNamespace

    from streamfx.runtime.base import get_backend

    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="11.0.1"))
    ok, why = TensorRTBackend.availability()
    assert not ok and why.startswith("TensorRT 11.0.1 is not supported: StreamFX needs TensorRT 10")
    with pytest.raises(BackendUnavailable) as info:
        get_backend("tensorrt")
    assert "TensorRT 11.0.1 is not supported" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BackendUnavailable, match="11.0.1 is not supported"):
        trt_backend.fingerprint("cuda:0")  # nor is a plan keyed under it


def test_doctor_and_engines_build_refuse_tensorrt_11_in_one_line(tmp_path):
    env = {**os.environ, "STREAMFX_CACHE": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join(
        [str(_fake_tensorrt(tmp_path / "fake", "11.0.0")), *filter(None, [os.environ.get("PYTHONPATH")])])}
    refusal = "TensorRT 11.0.0 is not supported: StreamFX needs TensorRT 10 (pip install 'tensorrt>=10,<11')"
    build = subprocess.run([sys.executable, "-m", "streamfx", "engines", "build", "--backend", "tensorrt",
                            "--device", "cuda", "--engines-dir", str(tmp_path / "engines")],
                           capture_output=True, text=True, timeout=120, env=env)
    assert build.returncode == 2, build.stderr
    assert build.stderr.strip().splitlines() == [f"streamfx engines: {refusal}"], build.stderr
    doctor = subprocess.run([sys.executable, "-m", "streamfx", "doctor"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert doctor.returncode == 0, doctor.stderr
    assert [line for line in doctor.stdout.splitlines() if "not supported" in line] == [f"TensorRT   {refusal}"]


# --- the engine cache key --------------------------------------------------------------------


def test_the_engine_cache_key_and_plan_name_hold_the_precision_setup(monkeypatch):
    from streamfx.runtime.builder import backend_fingerprint

    seen = []
    monkeypatch.setattr(trt_backend, "fingerprint",
                        lambda device=None: seen.append(device) or "NVIDIA L4|sm89|trt10.3.0")
    fp16, fp32 = TensorRTBackend(fp16=True), TensorRTBackend(fp16=False, device="cuda:1")
    key16, key32 = backend_fingerprint("tensorrt", fp16), backend_fingerprint("tensorrt", fp32)
    assert seen == [None, torch.device("cuda:1")], "the key is the backend's own device's"
    assert key16 != key32 and key16.startswith("NVIDIA L4|sm89|trt10.3.0|") and key32.endswith("|fp32")
    onnx_path = Path("renderer-fast.0123abcd.onnx")
    name16, name32 = fp16.plan_name(onnx_path, 8), fp32.plan_name(onnx_path, 8)
    assert name16 != name32 and key16.split("|")[-1] in name16 and ".fp32." in name32
    rules = {"PIN_RULES_VERSION": "999", "FP16_SUBSCOPES": ("decoder",), "RENDERER_SCOPE": "/renderer/volume/",
             "NEVER_PINNED_TYPES": trt_precision.NEVER_PINNED_TYPES - {"SHAPE"}}
    for name, value in rules.items():
        with monkeypatch.context() as patch:
            patch.setattr(trt_precision, name, value)
            assert backend_fingerprint("tensorrt", fp16) != key16, f"a changed {name} must rebuild FP16 engines"
            assert fp16.plan_name(onnx_path, 8) != name16
            assert backend_fingerprint("tensorrt", fp32) == key32, "FP32 engines pin nothing"
    assert backend_fingerprint("tensorrt", fp16) == key16


def test_the_backend_takes_a_device():
    assert TensorRTBackend(device="cuda:1").device == torch.device("cuda", 1)
    assert TensorRTBackend().device is None  # the current CUDA device when it builds or loads
    with pytest.raises(BackendUnavailable, match="NVIDIA GPU"):
        TensorRTBackend(device="cpu")

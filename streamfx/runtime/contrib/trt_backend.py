"""TensorRT 10 engines: FP16 builds from ONNX with a timing cache, run on torch CUDA tensors.

* **Builds** check the graph first (:func:`~streamfx.runtime.onnx_ops.require_tensorrt_support`:
  an unsupported node stops the build with one line), build FP16 with the layers of
  :mod:`.trt_precision` pinned to FP32 under ``OBEY_PRECISION_CONSTRAINTS`` (only layers
  computing float data: :func:`~.trt_precision.pin_to_fp32`), and add an optimisation profile
  (1 .. max rows) when the graph was exported with a dynamic batch. The plan's name and the
  engine cache key hold the GPU, the TensorRT version and the precision setup
  (:func:`~.trt_precision.precision_setup`).
* **Runs** are ordered against the caller's stream with CUDA events and copy the outputs out
  before the buffers can be written again (see :class:`_TrtRunner`).
* **One device per backend**: ``TensorRTBackend(device=...)`` builds, deserialises and runs on
  that GPU (default: the current CUDA device when it builds or loads), whichever thread calls.
* **TensorRT 10 only** (:func:`~streamfx.runtime.selection.check_tensorrt_version`): 11
  removed the FP16 flag, precision constraints and weak typing these builds use.

Why no pycuda: torch already owns a CUDA context, an allocator and streams. Engine inputs
and outputs are torch CUDA tensors whose ``data_ptr()`` goes straight to
``set_tensor_address``, and the streams and events are torch's. A second CUDA wrapper would
add another context to keep in sync and copies through host memory.

Install with ``pip install 'streamfx[tensorrt]'`` on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from ... import log
from ..base import Backend, BackendUnavailable, GraphSpec, Runner
from ..onnx_ops import require_tensorrt_support
from ..selection import check_tensorrt_version
from ..streams import CudaStreamOps, OrderedExecution
from .trt_precision import LayerInfo, pin_to_fp32, precision_setup

logger = log.get(__name__)
_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed (pip install 'streamfx[tensorrt]')") from None
    check_tensorrt_version(getattr(trt, "__version__", ""))
    return trt


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The CUDA device ``device`` means, with its index: the current CUDA device for ``None``
    or a bare ``"cuda"`` (read when called, so a backend made before a thread picks its GPU
    still follows it)."""
    device = torch.device("cuda") if device is None else torch.device(device)
    if device.type != "cuda":
        raise BackendUnavailable(f"TensorRT runs on an NVIDIA GPU, not on {device}")
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def on_device(device: torch.device) -> AbstractContextManager:
    """``device`` as the current CUDA device inside the block: TensorRT builds, deserialises,
    makes contexts and executes on the current device."""
    return torch.cuda.device(device)


def fingerprint(device: torch.device | str | None = None) -> str:
    """GPU name, compute capability and TensorRT version of ``device`` (default: the current
    CUDA device): what an engine is only valid for."""
    trt = _trt()
    device = resolve_device(device)
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}|sm{major}{minor}|trt{trt.__version__}"


def _progress_monitor(trt, title: str):
    """A TensorRT progress monitor showing each build phase as a tqdm bar (builds take minutes).

    The class is defined here because its base class comes from the lazily imported module.
    """
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, tqdm] = {}
            self.lock = threading.Lock()

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self.lock:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{title}: {phase_name}", leave=False,
                                             position=len(self.bars))

        def step_complete(self, phase_name, step):
            with self.lock:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with self.lock:
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


class _TrtRunner(Runner):
    """One engine on one execution context. Inputs and outputs are torch CUDA tensors.

    Ordering (:class:`~streamfx.runtime.streams.OrderedExecution`): the runner's stream waits
    for the caller's stream before ``execute_async_v3``, the caller's stream waits for the
    runner's after it, and the outputs are copied out on the caller's stream before the next
    call may write the same buffers. Engines built with a dynamic batch take 1..max rows; the
    output buffers are allocated once at the largest batch.

    Everything lives on ``device`` (the engine was deserialised there): the context, the stream,
    the output buffers and the inputs, which are moved there; each call makes it the current
    CUDA device, so any thread may call.
    """

    def __init__(self, engine, spec: GraphSpec, device: torch.device) -> None:
        with on_device(device):
            self._setup(engine, spec, device)

    def _setup(self, engine, spec: GraphSpec, device: torch.device) -> None:
        trt = _trt()
        self.engine, self.spec, self.device = engine, spec, device
        self.context = engine.create_execution_context()
        self.order = OrderedExecution(CudaStreamOps(device))
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.dtypes = {n: _TORCH_DTYPES[engine.get_tensor_dtype(n).name] for n in self.names}
        self.max_batch = int(spec.meta.get("max_batch", 1))
        shapes = {t.name: (self.max_batch, *t.shape[1:]) for t in spec.inputs}
        for name in self.inputs:
            self.context.set_input_shape(name, shapes[name])
        self.out_buffers = {n: torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n],
                                           device=device) for n in self.outputs}
        for name, buf in self.out_buffers.items():
            self.context.set_tensor_address(name, buf.data_ptr())

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = inputs[self.inputs[0]].shape[0]
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"{self.spec.name}: batch {batch} is outside the engine's 1..{self.max_batch}")
        with on_device(self.device):  # the copies run on the caller's stream of this device
            feeds = {name: inputs[name].to(device=self.device, dtype=self.dtypes[name]).contiguous()
                     for name in self.inputs}
            return self.order.run(lambda stream: self._enqueue(feeds, stream), lambda: self._collect(batch))

    def _enqueue(self, feeds: dict[str, torch.Tensor], stream) -> None:
        for name, t in feeds.items():
            t.record_stream(stream)  # made on the caller's stream, read on the runner's
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.spec.name} failed")

    def _collect(self, batch: int) -> dict[str, torch.Tensor]:
        return {name: buf[:batch].clone() for name, buf in self.out_buffers.items()}


class TensorRTBackend(Backend):
    name = "tensorrt"
    suffix = ".plan"

    def __init__(self, fp16: bool = True, workspace_gb: float = 4.0, timing_cache: Path | None = None,
                 device: torch.device | str | None = None) -> None:
        """``device``: the GPU to build and run on (a string or ``torch.device``; default: the
        current CUDA device when building or loading)."""
        self.fp16, self.workspace = fp16, int(workspace_gb * (1 << 30))
        self.timing_cache = timing_cache
        if device is not None and torch.device(device).type != "cuda":
            raise BackendUnavailable(f"TensorRT runs on an NVIDIA GPU, not on {device}")
        self.device = None if device is None else torch.device(device)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _trt()
        except BackendUnavailable as exc:
            return False, str(exc)
        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible to torch"
        return True, ""

    def plan_name(self, onnx_path: Path, max_batch: int, device: torch.device | None = None) -> str:
        """``<export>.<GPU|sm|trt>.<precision setup>.b<max rows>.plan``: engines for two GPUs or
        two precision setups sharing engines/ never overwrite each other."""
        gpu = _safe(fingerprint(device if device is not None else self.device))
        return f"{onnx_path.stem}.{gpu}.{precision_setup(self.fp16)}.b{max_batch}.plan"

    def build(self, onnx_path: Path, spec: GraphSpec, out_dir: Path) -> Path:
        require_tensorrt_support(onnx_path)  # a graph TensorRT cannot take stops here, naming the node
        trt = _trt()
        device = resolve_device(self.device)
        with on_device(device):  # the builder times its tactics on the current device
            return self._build(trt, device, onnx_path, spec, out_dir)

    def _build(self, trt, device: torch.device, onnx_path: Path, spec: GraphSpec, out_dir: Path) -> Path:
        trt_logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(trt_logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = pin_layers(network, spec.name, trt)
            logger.info("layers pinned to FP32", extra={"graph": spec.name, "layers": pinned})
        max_batch = int(spec.meta.get("max_batch", 1))
        if max_batch > 1:
            profile = builder.create_optimization_profile()
            for t in spec.inputs:
                rest = tuple(t.shape[1:])
                profile.set_shape(t.name, (1, *rest), (max(1, max_batch // 2), *rest), (max_batch, *rest))
            config.add_optimization_profile(profile)
        cache_path = self.timing_cache or out_dir / f"timing-{_safe(fingerprint(device))}.cache"
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        config.progress_monitor = _progress_monitor(trt, spec.name)
        logger.warning("building TensorRT engine (this takes minutes)", extra={"graph": spec.name})
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailable(f"TensorRT failed to build {spec.name}; run with -vv for its log")
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
        out = out_dir / self.plan_name(onnx_path, max_batch, device)
        out.write_bytes(memoryview(plan))
        return out

    def load(self, artefact: Path, spec: GraphSpec) -> Runner:
        trt = _trt()
        device = resolve_device(self.device)
        with on_device(device):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(artefact.read_bytes())
            if engine is None:
                raise BackendUnavailable(f"{artefact.name} was built for another GPU or TensorRT version; rebuild it")
            return _TrtRunner(engine, spec, device)


def layer_info(layer) -> LayerInfo:
    """A TensorRT layer as the plain data :func:`~.trt_precision.pin_to_fp32` decides on."""
    outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
    return LayerInfo(layer.name, layer.type.name, tuple(t.dtype.name for t in outputs),
                     tuple(bool(t.is_shape_tensor) for t in outputs))


def pin_layers(network, graph: str, trt) -> int:
    """Pin the layers :func:`~.trt_precision.pin_to_fp32` chooses to FP32: their computation,
    and those of their outputs that are float (TopK's indices keep their type)."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not pin_to_fp32(graph, layer_info(layer)):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        count += 1
    return count


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

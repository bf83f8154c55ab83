"""What this CPU is fast at, measured: fp32 vs bf16 matrix products and convolutions.

The same build of torch runs bf16 at 7x fp32 on a CPU with AMX, at about 2-4x with
``avx512_bf16``, and at 1/65 of fp32 on an AVX2-only CPU, where bf16 is emulated. So the
precision of each stage is chosen from a short measurement on the machine at run time
(about a second, time-bounded whatever the CPU), never from where the code was written.
CPU flags are read too, but only to explain the result: on ARM, or on a CPU whose flags
we do not know, the measurement alone decides.

The result is cached per machine, torch version and thread count in the user cache
(``$STREAMFX_CACHE``, else ``$XDG_CACHE_HOME/streamfx``, else ``~/.cache/streamfx``), so only
the first use pays for it. ``STREAMFX_PRECISION=fp32|bf16`` forces every stage.

```python
caps = probe()                 # Capabilities: cpu, measured GFLOP/s, plan
caps.plan.encoder              # "fp32" or "bf16"
```
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import log

logger = log.get(__name__)

PROBE_VERSION = 1
#: bf16 is used for a stage only when it measures at least this much faster than fp32
MIN_SPEEDUP = 1.2
#: flags that explain a bf16 result (x86 and ARM names as the kernel reports them)
EXPLAINING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
                    "amx_tile", "amx_bf16", "amx_int8", "asimd", "bf16", "sve", "sve2", "i8mm")
#: environment variables that change which kernels torch and oneDNN run (part of the cache key)
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
STAGES = ("vit", "encoder", "decoder", "superres")
#: which measured kernel each stage is made of
STAGE_KERNEL = {"vit": "matmul", "encoder": "conv", "decoder": "matmul", "superres": "conv"}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str
    cores: int
    flags: tuple[str, ...]       # the explaining flags present, sorted
    torch_capability: str        # what ATen dispatches to ("AVX512", "AVX2", "DEFAULT", ...)

    def bf16_hardware(self) -> bool | None:
        """True/False where the flags tell (x86: avx512_bf16 or AMX; ARM: bf16), None if unknown."""
        if self.arch in ("x86_64", "amd64", "i686"):
            return bool({"avx512_bf16", "amx_bf16"} & set(self.flags))
        if self.arch in ("aarch64", "arm64"):
            return "bf16" in self.flags
        return None


@dataclass(frozen=True)
class Measurement:
    """GFLOP/s of the probe kernels, per precision."""

    matmul: dict[str, float]
    conv: dict[str, float]
    seconds: float

    def speedup(self, kernel: str) -> float:
        table = getattr(self, kernel)
        return table["bf16"] / max(table["fp32"], 1e-9)


@dataclass(frozen=True)
class PrecisionPlan:
    """The precision of each CPU stage, and why."""

    vit: str
    encoder: str
    decoder: str
    superres: str
    reason: str

    def dtype(self, stage: str) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(self, stage), torch.float32)

    @property
    def summary(self) -> str:
        """``fp32`` or ``bf16`` when every stage agrees, else ``mixed``."""
        chosen = {getattr(self, s) for s in STAGES}
        return chosen.pop() if len(chosen) == 1 else "mixed"

    @property
    def openvino_hint(self) -> str:
        """OpenVINO's INFERENCE_PRECISION_HINT matching the encoder's precision."""
        return "bf16" if self.encoder == "bf16" else "f32"


@dataclass(frozen=True)
class Capabilities:
    cpu: CpuInfo
    measured: Measurement
    plan: PrecisionPlan
    threads: int
    torch_version: str
    cached: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- CPU facts


def read_cpu_info() -> CpuInfo:
    """CPU model, architecture, cores and the explaining flags; works where /proc is missing."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuInfo(model=model, arch=platform.machine().lower(), cores=os.cpu_count() or 1,
                   flags=tuple(sorted(flags & set(EXPLAINING_FLAGS))),
                   torch_capability=str(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()))


# ---------------------------------------------------------------------------- measuring


Kernel = Callable[[torch.dtype, int], Callable[[], object]]  # (dtype, size divisor) -> a call


def _time_once(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _kernel_rates(make: Kernel, flops: float, budget_s: float, rounds: int = 3) -> dict[str, float]:
    """GFLOP/s in fp32 and bf16 of one kernel, the fastest of ``rounds`` interleaved rounds.

    A canary at 1/16 of the work runs first: where bf16 is emulated it is already 4x+ slower
    there, and its rates are the answer (the full size would take seconds). Interleaving the
    rounds keeps a busy machine from favouring whichever precision ran first.
    """
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    canary = {name: make(dtype, 16) for name, dtype in dtypes.items()}
    for run in canary.values():
        run()  # oneDNN builds its kernels on the first call
    small = {name: flops / 16 / _time_once(run) / 1e9 for name, run in canary.items()}
    if small["bf16"] * 4 < small["fp32"]:
        return {name: round(rate, 2) for name, rate in small.items()}
    runs = {name: make(dtype, 1) for name, dtype in dtypes.items()}
    best = {name: 0.0 for name in runs}
    for name, run in list(runs.items()):
        took = _time_once(run)
        if took > budget_s:  # one call already says enough
            best[name] = flops / took / 1e9
            del runs[name]
    for _ in range(rounds):
        for name, run in runs.items():
            count, start = 0, time.perf_counter()
            while True:
                run()
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= budget_s / rounds:
                    break
            best[name] = max(best[name], flops * count / elapsed / 1e9)
    return {name: round(rate, 2) for name, rate in best.items()}


def _matmul(dtype: torch.dtype, divisor: int) -> Callable[[], object]:
    """ViT-sized: 394 tokens (two images) x 768 x 768, rows divided by ``divisor``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(max(394 // divisor, 8), 768, generator=gen).to(dtype)
    b = torch.randn(768, 768, generator=gen).to(dtype)
    return lambda: torch.mm(a, b)


def _conv(dtype: torch.dtype, divisor: int) -> Callable[[], object]:
    """Encoder-sized: a 128 -> 128 channel 3x3 conv at 32x32 (area / ``divisor``)."""
    gen = torch.Generator().manual_seed(0)
    side = max(int(32 / divisor ** 0.5), 4)
    x = torch.randn(1, 128, side, side, generator=gen).to(dtype)
    w = torch.randn(128, 128, 3, 3, generator=gen).to(dtype)
    return lambda: F.conv2d(x, w, padding=1)


def measure(budget_s: float = 0.2) -> Measurement:
    """Time fp32 and bf16 on a ViT-sized matmul and an encoder-sized convolution (about 1 s)."""
    started = time.perf_counter()
    with torch.inference_mode():
        matmul = _kernel_rates(_matmul, 2.0 * 394 * 768 * 768, budget_s)
        conv = _kernel_rates(_conv, 2.0 * 128 * 128 * 9 * 32 * 32, budget_s)
    return Measurement(matmul=matmul, conv=conv, seconds=round(time.perf_counter() - started, 2))


def choose_plan(measured: Measurement, cpu: CpuInfo, forced: str | None = None) -> PrecisionPlan:
    """bf16 for a stage only where its kernel measured at least :data:`MIN_SPEEDUP` x fp32."""
    if forced is not None:
        if forced not in PRECISIONS:
            raise ValueError(f"STREAMFX_PRECISION must be one of {', '.join(PRECISIONS)}, got {forced!r}")
        return PrecisionPlan(**{s: forced for s in STAGES}, reason=f"forced by STREAMFX_PRECISION={forced}")
    fast = {k: measured.speedup(k) >= MIN_SPEEDUP for k in ("matmul", "conv")}
    chosen = {s: "bf16" if fast[STAGE_KERNEL[s]] else "fp32" for s in STAGES}
    parts = [f"bf16 {measured.speedup(k):.2f}x fp32 on {k}" for k in ("matmul", "conv")]
    hardware = cpu.bf16_hardware()
    if hardware is False:
        parts.append("no bf16 instructions in the CPU flags (emulated)")
    elif hardware:
        parts.append("bf16 instructions present (" + ", ".join(f for f in cpu.flags if "bf16" in f) + ")")
    limits = [f"{v}={os.environ[v]}" for v in ISA_VARIABLES if os.environ.get(v)]
    if limits:
        parts.append("kernels limited by " + " ".join(limits))
    return PrecisionPlan(**chosen, reason="; ".join(parts))


# ---------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    if os.environ.get("STREAMFX_CACHE"):
        return Path(os.environ["STREAMFX_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamfx"


def cache_key(cpu: CpuInfo, threads: int) -> str:
    facts = {"cpu": asdict(cpu), "torch": torch.__version__, "threads": threads, "version": PROBE_VERSION,
             "env": {v: os.environ.get(v, "") for v in ISA_VARIABLES}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _read_cached(path: Path) -> Measurement | None:
    try:
        data = json.loads(path.read_text())
        return Measurement(matmul=dict(data["matmul"]), conv=dict(data["conv"]), seconds=float(data["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(path: Path, measured: Measurement) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(measured)))
        tmp.replace(path)
    except OSError as exc:  # a read-only home still gets a plan, just not a cached one
        logger.info("capability probe not cached", extra={"path": str(path), "error": str(exc)})


_memo: dict[tuple[str, str | None], Capabilities] = {}


def probe(refresh: bool = False) -> Capabilities:
    """The measured capabilities of this machine (cached on disk and in the process)."""
    cpu, threads = read_cpu_info(), torch.get_num_threads()
    key = cache_key(cpu, threads)
    forced = os.environ.get("STREAMFX_PRECISION") or None
    if forced == "auto":
        forced = None
    if not refresh and (key, forced) in _memo:
        return _memo[(key, forced)]
    path = cache_dir() / "probe" / f"{key}.json"
    measured = None if refresh else _read_cached(path)
    cached = measured is not None
    if measured is None:
        measured = measure()
        _write_cached(path, measured)
    caps = Capabilities(cpu=cpu, measured=measured, plan=choose_plan(measured, cpu, forced), threads=threads,
                        torch_version=torch.__version__, cached=cached)
    _memo[(key, forced)] = caps
    logger.info("capability probe", extra={"plan": caps.plan.summary, "reason": caps.plan.reason,
                                           "cached": cached})
    return caps

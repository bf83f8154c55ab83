"""Which execution path and precision run where: the backend a name means on a device,
a cheap check that it can load, and the precision plan of each path.

``auto`` is ``torch-cuda`` on an NVIDIA GPU, ``torch-fp32`` on other GPUs, and on a CPU
``hybrid`` when OpenVINO is installed, else ``torch``, each CPU stage in the precision the
capability probe (:mod:`.probe`) measured fastest.
"""

from __future__ import annotations

import re

import torch

from .base import BackendUnavailable
from .names import GPU_BACKENDS, GRAPH_BACKENDS
from .probe import STAGES, PrecisionPlan, probe

#: chosen by benchmarks/bench_3dpe.py: with OpenVINO, hybrid is the fastest CPU path measured,
#: in bf16 (AVX-512 + bf16) and in fp32 (an AVX2-only CPU) alike
DEFAULT_CPU_BACKEND = "hybrid"
ALL_FP32 = PrecisionPlan(**{s: "fp32" for s in STAGES}, reason="the float32 reference path")
ALL_BF16 = PrecisionPlan(**{s: "bf16" for s in STAGES}, reason="bf16 asked for (torch-bf16)")


TENSORRT_MISSING = ("backend tensorrt needs TensorRT 10, which is not installed: "
                    "pip install 'streamfx[tensorrt]' on a machine with an NVIDIA GPU")
#: the one TensorRT major version StreamFX builds and runs engines with
TENSORRT_MAJOR = 10
TENSORRT_INSTALL = "pip install 'tensorrt>=10,<11'"
_VERSION = re.compile(r"(\d+)\.\d+[\w.+-]*")


def check_tensorrt_version(version: str) -> None:
    """:class:`BackendUnavailable` (one line) unless ``version`` is a TensorRT 10 release.

    TensorRT 9 and older lack the named-tensor API (``execute_async_v3``, ``set_tensor_address``);
    TensorRT 11 removed ``BuilderFlag.FP16``, ``OBEY_PRECISION_CONSTRAINTS`` and weak typing,
    which the FP16 builds with FP32-pinned layers rely on. The one rule for ``streamfx doctor``,
    ``streamfx engines build`` and loading the backend.
    """
    text = str(version).strip()
    match = _VERSION.fullmatch(text)
    if match is None:
        raise BackendUnavailable(f"TensorRT reports the version {text[:40]!r}, which StreamFX cannot read: "
                                 f"it needs TensorRT {TENSORRT_MAJOR} ({TENSORRT_INSTALL})")
    if int(match.group(1)) != TENSORRT_MAJOR:
        raise BackendUnavailable(f"TensorRT {text} is not supported: StreamFX needs TensorRT {TENSORRT_MAJOR} "
                                 f"({TENSORRT_INSTALL})")


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version: from the package metadata where there is one (without
    importing TensorRT, which loads the CUDA libraries), else from the module; None if neither
    tells (a broken install: loading the backend then says what is wrong)."""
    from importlib import metadata

    owners = ["tensorrt"]  # the pip meta package, or NVIDIA's own wheel
    try:  # the wheel that holds the module (tensorrt_cu12_bindings, ...) where the meta package is absent
        owners += metadata.packages_distributions().get("tensorrt", [])
    except Exception:  # noqa: BLE001 - a malformed distribution elsewhere is no reason to stop
        pass
    for owner in owners:
        try:
            return metadata.version(owner)
        except Exception:  # noqa: BLE001 - PackageNotFoundError, or metadata without a version
            continue
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - a module that fails to import is reported when the backend loads
        return None


def require_tensorrt_package(backend: str) -> None:
    """For ``tensorrt``: :class:`BackendUnavailable` naming the extra when the package is missing,
    or saying that the installed version is not TensorRT 10 (checked before the device, so that
    the one line says what to install)."""
    from importlib.util import find_spec

    if backend != "tensorrt":
        return
    if find_spec("tensorrt") is None:
        raise BackendUnavailable(TENSORRT_MISSING)
    version = installed_tensorrt_version()
    if version is not None:
        check_tensorrt_version(version)


def resolve_backend(backend: str = "auto", device: torch.device | str = "cpu") -> str:
    """The backend ``backend`` means on ``device``: ``auto`` is ``torch-cuda`` on a CUDA GPU,
    ``torch-fp32`` on other GPUs, and on the CPU ``hybrid`` when OpenVINO is installed, else
    ``torch``. A backend that cannot run on the device is a :class:`BackendUnavailable`."""
    kind = torch.device(device).type
    if kind == "cuda":
        if backend == "auto":
            return "torch-cuda"
        if backend not in GPU_BACKENDS:
            raise BackendUnavailable(f"backend {backend} runs on the CPU; with a CUDA device choose "
                                     f"{', '.join(GPU_BACKENDS)} (or pass --device cpu)")
        return backend
    if kind != "cpu":  # mps: the plain torch path only
        if backend not in ("auto", "torch-fp32"):
            raise BackendUnavailable(f"on {kind} only the torch-fp32 path runs (untested); got backend {backend}")
        return "torch-fp32"
    if backend in ("torch-cuda", "tensorrt"):
        raise BackendUnavailable(f"backend {backend} needs an NVIDIA GPU: pass --device cuda")
    if backend != "auto":
        return backend
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return DEFAULT_CPU_BACKEND


def check_backend(backend: str, device: torch.device | str) -> None:
    """Cheap start-up check that ``backend`` can load on ``device`` (no model is built):
    :class:`BackendUnavailable` with one line if not."""
    device = torch.device(device)
    if backend == "torch-cuda":
        try:
            torch.zeros(1, device=device).add_(1)
            from importlib import import_module

            import_module("streamfx.runtime.contrib.torch_cuda")
        except Exception as exc:  # noqa: BLE001 - a broken driver or install is one line too
            raise BackendUnavailable(f"torch-cuda cannot run on {device}: {str(exc).splitlines()[0]}") from None
    elif backend in GRAPH_BACKENDS:
        from .base import get_backend

        get_backend(backend)  # raises with the reason (package or hardware missing)
    elif backend == "hybrid":
        from .base import get_backend

        get_backend("openvino")


def plan_for(backend: str) -> PrecisionPlan:
    """The precision of each stage on ``backend`` (the probe's plan where it decides)."""
    if backend in ("torch-fp32", "onnxruntime"):
        return ALL_FP32
    if backend == "torch-bf16":
        return ALL_BF16
    return probe().plan

"""``--device auto|cpu|cuda|cuda:N|mps``: which processor runs inference, checked up front.

``auto`` takes the first CUDA GPU when torch sees one, else the CPU. Asking for a device
that is not there is a :class:`DeviceUnavailable` with one line saying why; nothing falls
back to the CPU quietly (a filter that silently drops to 1 frame/s costs users days).
``mps`` (Apple GPUs) is selectable and runs the plain torch path; it is untested.
"""

from __future__ import annotations

import torch

from .names import DEVICE_HELP


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used here; the message is one line."""


def _cuda_missing(name: str) -> DeviceUnavailable:
    build = (f"CUDA {torch.version.cuda} build" if torch.version.cuda
             else "a CPU-only build: install a CUDA build of torch, see the README's GPU section")
    return DeviceUnavailable(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__} ({build}); "
                             "use --device cpu")


def resolve_device(name: str | None = "auto") -> torch.device:
    """The torch device ``name`` means here; :class:`DeviceUnavailable` if it is not usable."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise _cuda_missing(name)
        index = 0 if name == "cuda" else name.split(":", 1)[1]
        if not str(index).isdigit() or int(index) >= torch.cuda.device_count():
            raise DeviceUnavailable(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA GPU(s), "
                                    f"numbered 0..{torch.cuda.device_count() - 1}")
        return torch.device(f"cuda:{int(index)}")
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise DeviceUnavailable("--device mps: torch reports no Apple GPU (MPS) here; use --device cpu")
        return torch.device("mps")
    raise DeviceUnavailable(f"--device {name}: unknown device; choose {DEVICE_HELP}")


def describe_device(device: torch.device) -> dict:
    """Name, memory and compute capability of a device, for info, stats and ``doctor``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return {"device": str(device), "name": "Apple GPU (MPS)" if device.type == "mps" else "CPU"}

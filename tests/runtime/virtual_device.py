"""A second device on a CPU-only machine, for catching tensors made on the wrong device.

On a CPU every tensor lives on the CPU, so a forgotten ``.to(device)`` costs nothing and no
test can see it. Here the model's device is ``meta``, but nothing runs on meta: a tensor
"on the device" is a :class:`OnDevice` wrapper that reports ``device == meta`` and holds a
real CPU tensor, and every op on it computes on that CPU tensor. A dispatch mode
(:class:`VirtualDevice`) catches what a CUDA run would:

* every op gets tensors of one device only (0-dim CPU scalars aside, as CUDA allows): a CPU
  tensor meeting a device tensor raises :class:`DeviceMismatch`, naming the op;
* ``.to(meta)`` and factory calls with ``device=meta`` make device tensors, ``.cpu()`` makes
  a CPU tensor again, and ``.numpy()`` of a device tensor fails (as on CUDA);
* a real meta tensor (made where the mode is not active, e.g. on another thread without
  ``.to()`` of a device tensor) raises too.

Why it can catch a leak: the mode sees every op below autograd with the real arguments,
before any kernel's own device check (meta kernels often skip those), so a CPU tensor that
should have been moved reaches the mode next to a device tensor and fails the test.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing
from torch.utils._pytree import tree_map

DEVICE = torch.device("meta")
_to_copy = torch.ops.aten._to_copy.default
_MOVES = (torch.ops.aten._to_copy, torch.ops.aten.to)


class DeviceMismatch(AssertionError):
    """An op mixed tensors of two devices."""


class OnDevice(torch.Tensor):
    """A tensor on the virtual device: ``device`` says meta, :attr:`inner` holds the values."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        with torch.inference_mode(False):  # a plain tensor, also when made under inference mode (views need it)
            return torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(),
                                                       storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                       device=DEVICE, requires_grad=inner.requires_grad)

    def __init__(self, inner: torch.Tensor) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"OnDevice({self.inner!r})"

    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return OnDevice(inner_tensors["inner"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _is_device(target) -> bool:
    return target is not None and torch.device(target).type == DEVICE.type


def _dispatch(func, args, kwargs):
    if func is torch.ops.aten._has_compatible_shallow_copy_type.default:  # Module.to's question, no compute
        return type(args[0]) is type(args[1])
    devices: set[str] = set()

    def look(t):
        if isinstance(t, OnDevice):
            devices.add("device")
        elif isinstance(t, torch.Tensor):
            if t.device.type == DEVICE.type:
                raise DeviceMismatch(f"{func}: a real meta tensor (made outside the virtual device) reached an op")
            if t.dim() > 0:
                devices.add(str(t.device))
        return t

    tree_map(look, (args, kwargs))
    target = kwargs.get("device")
    if func.overloadpacket in _MOVES:  # (under inference mode ``to`` itself reaches the mode)
        source = args[0]
        inner = source.inner if isinstance(source, OnDevice) else source
        if func.overloadpacket is torch.ops.aten.to:  # to(self, [device,] dtype, ...): keep the dtype
            dtypes = [a for a in args[1:] if isinstance(a, torch.dtype)]
            target = target or next((a for a in args[1:] if isinstance(a, (torch.device, str))), None)
            rest = {"dtype": kwargs.get("dtype", dtypes[0] if dtypes else None)}
            rest = {k: v for k, v in rest.items() if v is not None}
        else:
            rest = {k: v for k, v in kwargs.items() if k not in ("device", "non_blocking", "pin_memory")}
        out = _to_copy(inner, **rest)
        if target is not None and not _is_device(target):
            return out                      # to the host
        return OnDevice(out) if (_is_device(target) or isinstance(source, OnDevice)) else out
    if len(devices) > 1:
        raise DeviceMismatch(f"{func}: tensors on {sorted(devices)} in one op (a tensor was not moved to the device)")
    on_device = "device" in devices or _is_device(target)
    if not on_device:
        return func(*args, **kwargs)
    a, k = tree_map(lambda t: t.inner if isinstance(t, OnDevice) else t, (args, kwargs))
    if "device" in k:
        k["device"] = torch.device("cpu")
    out = func(*a, **k)
    wrap = (lambda t: OnDevice(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnDevice) else t)
    return return_and_correct_aliasing(func, args, kwargs, tree_map(wrap, out))  # views stay views of their base


class VirtualDevice(TorchDispatchMode):
    """Active in a thread: ``.to(meta)`` and factories on meta make :class:`OnDevice` tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})

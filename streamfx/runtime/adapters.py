"""Low-rank adapters (LoRA) applied per sample on one shared base model: callers with
different style packs share a batch, row i gets ``adapters[i]`` through forward hooks, and
the base weights are never modified. Keys are module paths relative to the model given.

```python
with per_sample(model.encoder, [style_a, None, style_b]):   # one entry per batch row
    planes = model.encode(x, tokens)                        # x (3, 3, 512, 512)
```

A FastEncoder keeps the LiveEncoder paths of every default target (:func:`remap_for` for
the others). Exported graphs run no hooks: export :meth:`LowRankAdapter.merged_into`.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AdapterError(ValueError):
    """An adapter does not fit the model, its tensors or the batch (one line)."""


@contextlib.contextmanager
def _plain() -> Iterator[None]:
    """Normal (not inference, no-grad) tensors, usable later in any mode."""
    with torch.inference_mode(False), torch.no_grad():
        yield


@dataclass(frozen=True, eq=False)
class LowRankUpdate:
    """delta(x) = scale * up(down(x)) beside one module, rank r.

    * ``nn.Linear(in, out)``: down (r, in), up (out, r); x (..., in) -> (..., out).
    * ``nn.Conv2d(cin, cout, k)``, groups 1: down (r, cin, kh, kw) is a conv with the module's
      stride/padding/dilation, up (cout, r, 1, 1) a 1x1 conv; x (B, cin, H, W) -> (B, cout, H', W').
    """

    down: torch.Tensor
    up: torch.Tensor
    scale: float = 1.0
    _cast: dict = field(default_factory=dict, init=False, repr=False)  # (dtype, device) -> (down, scale*up)

    def __post_init__(self) -> None:
        d, u = tuple(self.down.shape), tuple(self.up.shape)
        if len(d) not in (2, 4) or len(u) != len(d) or u[1] != d[0] or u[2:] not in ((), (1, 1)):
            raise AdapterError(f"inconsistent low-rank update: down {d}, up {u}")

    def validate(self, where: str, module: nn.Module) -> None:
        r, w = self.down.shape[0], getattr(module, "weight", None)
        if isinstance(module, nn.Linear):
            want = ((r, w.shape[1]), (w.shape[0], r))
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
            want = ((r, *w.shape[1:]), (w.shape[0], r, 1, 1))
        else:
            raise AdapterError(f"{where}: {type(module).__name__} is not nn.Linear or an ungrouped zero-padded nn.Conv2d")
        got = (tuple(self.down.shape), tuple(self.up.shape))
        if got != want:
            raise AdapterError(f"{where}: down {got[0]} / up {got[1]} do not fit {module} (need {want[0]} / {want[1]})")

    def delta(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """The update's term of ``module(x)`` in x's dtype/device (weights cast once, cached)."""
        down, up = self.cast(x.device, x.dtype)
        if isinstance(module, nn.Linear):
            return F.linear(F.linear(x, down), up)
        return F.conv2d(F.conv2d(x, down, None, module.stride, module.padding, module.dilation), up)

    def cast(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(down, scale * up) on ``device`` in ``dtype``, made once and kept."""
        key = (dtype, torch.device(device))
        if key not in self._cast:
            with _plain():
                self._cast[key] = (self.down.to(device, dtype), (self.up.float() * self.scale).to(device, dtype))
        return self._cast[key]

    def dense(self) -> torch.Tensor:
        """scale * up @ down in float64, the weight's shape: (out, in) or (cout, cin, kh, kw)."""
        return torch.einsum("or,r...->o...", self.up.flatten(1).double(), self.down.double()) * self.scale


@dataclass(frozen=True, eq=False)
class LowRankAdapter:
    """A named set of updates keyed by module path (as in ``model.named_modules()``)."""

    name: str
    updates: dict[str, LowRankUpdate]

    def check(self, model: nn.Module) -> None:
        """AdapterError unless every key names a fitting nn.Linear / nn.Conv2d of ``model``."""
        modules = dict(model.named_modules())
        for key, update in self.updates.items():
            if key not in modules:
                raise AdapterError(f"adapter {self.name!r}: no module {key!r} in {type(model).__name__}")
            update.validate(f"adapter {self.name!r}, module {key!r}", modules[key])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LowRankAdapter:
        return LowRankAdapter(self.name, {k: LowRankUpdate(u.down.to(device, dtype), u.up.to(device, dtype), u.scale)
                                          for k, u in self.updates.items()})

    def prepare(self, device: torch.device | str, dtypes: tuple[torch.dtype, ...]) -> LowRankAdapter:
        """Make the device copies :meth:`LowRankUpdate.delta` reads (see :meth:`LowRankUpdate.cast`)
        now, so that no encode makes them on its own stream; returns ``self``."""
        for update in self.updates.values():
            for dtype in dtypes:
                update.cast(device, dtype)
        return self

    def scaled(self, factor: float) -> LowRankAdapter:
        """The same updates at ``factor`` times their scale (tensors shared)."""
        return LowRankAdapter(self.name, {k: LowRankUpdate(u.down, u.up, u.scale * factor) for k, u in self.updates.items()})

    def num_parameters(self) -> int:
        return sum(u.down.numel() + u.up.numel() for u in self.updates.values())

    def merged_into(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` with W + scale * up @ down folded in (``model`` untouched)."""
        self.check(model)
        merged = copy.deepcopy(model)
        modules = dict(merged.named_modules())
        with torch.no_grad():
            for key, update in self.updates.items():
                w = modules[key].weight
                modules[key].weight = nn.Parameter((w.double() + update.dense().to(w.device)).to(w.dtype), w.requires_grad)
        return merged

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``<module>.lora_down``, ``<module>.lora_up``, ``<module>.alpha_scale`` (0-d float64)."""
        return {f"{k}.{s}": t for k, u in self.updates.items() for s, t in
                (("lora_down", u.down), ("lora_up", u.up), ("alpha_scale", torch.tensor(u.scale, dtype=torch.float64)))}

    @classmethod
    def from_state_dict(cls, name: str, tensors: dict[str, torch.Tensor]) -> LowRankAdapter:
        """Inverse of :meth:`state_dict`; AdapterError on a missing or unexpected tensor."""
        if bad := [k for k in tensors if k.rpartition(".")[2] not in ("lora_down", "lora_up", "alpha_scale") or "." not in k]:
            raise AdapterError(f"adapter {name!r}: unexpected tensor {bad[0]!r}")
        t, modules = tensors, dict.fromkeys(k.rpartition(".")[0] for k in tensors)
        try:
            return cls(name, {m: LowRankUpdate(t[f"{m}.lora_down"], t[f"{m}.lora_up"], float(t[f"{m}.alpha_scale"]))
                              for m in modules})
        except KeyError as missing:
            raise AdapterError(f"adapter {name!r}: missing tensor {missing.args[0]!r}") from None


def save_adapter(adapter: LowRankAdapter, path: str | Path) -> None:
    """Write ``adapter.state_dict()`` as safetensors, the name in the metadata."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}, str(path), {"name": adapter.name})


def load_adapter(path: str | Path, name: str | None = None) -> LowRankAdapter:
    """Read a :func:`save_adapter` file; ``name`` defaults to the stored name (else the file stem)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors, stored = {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {}).get("name")
    return LowRankAdapter.from_state_dict(name or stored or Path(path).stem, tensors)


def random_adapter(model: nn.Module, targets: list[str], rank: int, seed: int, scale: float = 1.0,
                   std: float = 0.02) -> LowRankAdapter:
    """Seeded N(0, std^2) down and up (float32, CPU) for each target: tests and benchmarks."""
    generator, modules, updates = torch.Generator().manual_seed(seed), dict(model.named_modules()), {}
    for key in targets:
        if (w := getattr(modules.get(key), "weight", None)) is None:
            raise AdapterError(f"random adapter: no weighted module {key!r} in {type(model).__name__}")
        updates[key] = LowRankUpdate(torch.randn(rank, *w.shape[1:], generator=generator) * std,
                                     torch.randn(w.shape[0], rank, *(1, 1)[:w.ndim - 2], generator=generator) * std, scale)
    adapter = LowRankAdapter(f"random-r{rank}-s{seed}", updates)
    adapter.check(model)
    return adapter


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row indices -> maximal [start, stop) runs of consecutive rows."""
    runs: list[list[int]] = []
    for i in rows:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


def _hook(key: str, plan: list[tuple[LowRankUpdate, list[tuple[int, int]]]], batch: int) -> Callable:
    """Forward hook: per adapter, delta of its rows of x at once, added to its rows of y in
    place. Rows are gathered with cat and scattered by runs of views (index_add_ is ~100x
    slower on a CPU, index_select drops channels-last)."""

    def hook(module: nn.Module, args: tuple, y: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if x.shape[0] != batch:
            raise AdapterError(f"module {key!r}: batch of {x.shape[0]} but {batch} adapter entries")
        for update, runs in plan:
            rows = x[runs[0][0]:runs[0][1]] if len(runs) == 1 else torch.cat([x[a:b] for a, b in runs])
            delta, at = update.delta(rows, module), 0
            for a, b in runs:
                y[a:b].add_(delta[at:at + b - a])
                at += b - a
        return y

    return hook


@contextlib.contextmanager
def per_sample(model: nn.Module, adapters: Sequence[LowRankAdapter | None]) -> Iterator[None]:
    """Within the block, row i of every batch (B = len(adapters), checked at each hooked call)
    through ``model`` gets ``adapters[i]`` (None: the base). Rows sharing an adapter run
    together; all-None registers nothing; hooks are removed on exit. The hooks live on the
    model: one thread at a time per model (nested blocks add up)."""
    distinct = list({id(a): a for a in adapters if a is not None}.values())
    for adapter in distinct:
        adapter.check(model)
    plans: dict[str, list[tuple[LowRankUpdate, list[tuple[int, int]]]]] = {}
    for adapter in distinct:
        rows = _runs([i for i, a in enumerate(adapters) if a is adapter])
        for key, update in adapter.updates.items():
            plans.setdefault(key, []).append((update, rows))
    modules, handles = dict(model.named_modules()), []
    try:
        for key, plan in plans.items():
            handles.append(modules[key].register_forward_hook(_hook(key, plan, len(adapters))))
        yield
    finally:
        for handle in handles:
            handle.remove()


def default_targets(encoder: nn.Module) -> list[str]:
    """What the official recipe trains (3dpe ``training/coach.py`` optimises ``Final_encoder``
    and ``Ref_encoder``): each nn.Linear and ungrouped nn.Conv2d under ``final.`` and
    ``fusion.`` (not the depth-wise Mix-FFN conv). LiveEncoder and FastEncoder alike."""
    targets = [name for name, m in encoder.named_modules() if name.startswith(("final.", "fusion."))
               and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1))]
    if not targets:
        raise AdapterError(f"{type(encoder).__name__} has no final./fusion. modules: not a 3DPE encoder")
    return targets


def remap_for(adapter: LowRankAdapter, module: nn.Module) -> LowRankAdapter:
    """``adapter`` (LiveEncoder keys) for ``module``: a FastEncoder names ``branch_high.convs.N``
    ``branch_high.rest.N-1`` and folds ``trunk.stem`` and ``branch_high.convs.0`` (no update
    there); all other paths are the same. Checked against ``module``."""
    from ..models.encoder.fast import FastEncoder

    if isinstance(module, FastEncoder):
        updates = {}
        for key, update in adapter.updates.items():
            if key in ("trunk.stem", "branch_high.convs.0"):
                raise AdapterError(f"adapter {adapter.name!r}: {key!r} is coordinate-folded in FastEncoder")
            high = re.fullmatch(r"branch_high\.convs\.(\d+)", key)
            updates[f"branch_high.rest.{int(high[1]) - 1}" if high else key] = update
        if list(updates) != list(adapter.updates):
            adapter = LowRankAdapter(adapter.name, updates)
    adapter.check(module)
    return adapter

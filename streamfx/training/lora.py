"""Trainable low-rank adapters on a frozen encoder, saved as a
:class:`~streamfx.runtime.adapters.LowRankAdapter` (the format packs ship and the live
engine applies per caller).

For each target ``nn.Linear`` / ``nn.Conv2d`` W, a forward hook adds
``scale * up(down(x))``: ``down`` (r, in[, kh, kw]) starts random (N(0, 1/fan_in)), ``up``
(out, r[, 1, 1]) starts at zero, so training starts exactly at the base model. ``full=True``
trains a dense update of every target weight instead (``--full``); it is saved in the same
format with ``down`` = the update and ``up`` = the identity (rank = out channels). Biases
and norms stay frozen in both modes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.adapters import LowRankAdapter, LowRankUpdate


def _delta(x: torch.Tensor, module: nn.Module, down: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        y = F.linear(x, down)
        return y if up is None else F.linear(y, up)
    y = F.conv2d(x, down, None, module.stride, module.padding, module.dilation)
    return y if up is None else F.conv2d(y, up)


class TrainableAdapter(nn.Module):
    """The trainable factors of every target of ``encoder`` (module paths, as in
    :func:`~streamfx.runtime.adapters.default_targets`)."""

    def __init__(self, encoder: nn.Module, targets: list[str], rank: int, full: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not full and rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        modules = dict(encoder.named_modules())
        self.targets, self.rank, self.full = list(targets), rank, full
        self.down, self.up = nn.ParameterList(), nn.ParameterList()
        for key in self.targets:
            w = modules[key].weight
            if full:
                self.down.append(nn.Parameter(torch.zeros_like(w, dtype=torch.float32)))
                continue
            fan_in = w[0].numel()
            self.down.append(nn.Parameter(torch.randn(rank, *w.shape[1:], generator=generator) / fan_in ** 0.5))
            self.up.append(nn.Parameter(torch.zeros(w.shape[0], rank, *(1, 1)[:w.ndim - 2])))

    def factors(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.down[i], (None if self.full else self.up[i])

    @contextlib.contextmanager
    def applied(self, encoder: nn.Module) -> Iterator[None]:
        """Within the block, every call of a target module adds its trainable update."""
        modules, handles = dict(encoder.named_modules()), []

        def hook_for(i: int):
            def hook(module: nn.Module, args: tuple, y: torch.Tensor) -> torch.Tensor:
                down, up = self.factors(i)
                x = args[0]
                return y + _delta(x, module, down.to(x.dtype), None if up is None else up.to(x.dtype))
            return hook

        try:
            for i, key in enumerate(self.targets):
                handles.append(modules[key].register_forward_hook(hook_for(i)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def export(self, name: str) -> LowRankAdapter:
        """A detached float32 copy in the pack format."""
        updates = {}
        for i, key in enumerate(self.targets):
            down, up = self.factors(i)
            down = down.detach().float().clone()
            if up is None:
                out = down.shape[0]
                up = torch.eye(out).reshape(out, out, *(1, 1)[:down.ndim - 2])
            updates[key] = LowRankUpdate(down, up.detach().float().clone(), 1.0)
        return LowRankAdapter(name, updates)

    def load_from(self, adapter: LowRankAdapter) -> None:
        """Take the factors of a saved adapter of the same targets and rank (``--resume``)."""
        if list(adapter.updates) != self.targets:
            raise ValueError("the saved adapter has other targets")
        with torch.no_grad():
            for i, key in enumerate(self.targets):
                update = adapter.updates[key]
                self.down[i].copy_(update.down * update.scale if self.full else update.down)
                if not self.full:
                    self.up[i].copy_(update.up * update.scale)

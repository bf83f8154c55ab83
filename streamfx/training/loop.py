"""The fine-tuning loop: a style's adapter from a few pairs, within a step count or a time
budget, resumable (see :mod:`streamfx.training` and ``streamfx styles train``).

```python
trainer = Trainer(model, pairs, reference_rgb, TrainConfig(steps=200, seed=0))
result = trainer.run(on_step=print)          # TrainResult: adapter, losses, held-out errors
```

Each step takes one training pair (a seeded shuffle per epoch), runs the reference fusion
and tri-plane head with the trainable adapter on the pair's frozen features, renders the
edit at the photo's camera and, for the multi-view terms, at a seeded random camera, and
takes an AdamW step. With 4 pairs or more, the last pair by name is held out and its image
error (L1 at the photo's camera against the ``after`` photo) is reported before and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..models import threedpe
from ..runtime.adapters import LowRankAdapter, default_targets
from .lora import TrainableAdapter
from .losses import LossWeights, total_loss
from .pairs import Pair
from .targets import PreparedPair, prepare_pair, random_camera

HELD_OUT_FROM = 4  # pairs needed before one is held out


@dataclass(frozen=True)
class TrainConfig:
    steps: int | None = None          # stop after this many steps (with minutes: whichever first)
    minutes: float | None = None      # stop when this much time has passed
    rank: int = 16                    # chosen by benchmarks/bench_finetune.py (README, Styles)
    full: bool = False                # a dense update of every target instead of low rank
    lr: float | None = None           # AdamW; default 1e-3 low rank, 5e-5 full (the official rate)
    seed: int = 0
    render: str = "full"              # render preset of the image terms
    weights: LossWeights = field(default_factory=LossWeights)
    device: str = "cpu"
    precision: str = "fp32"           # "bf16": the encoder part under bf16 autocast
    save_every_s: float = 60.0        # resumable state at least this often

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (5e-5 if self.full else 1e-3)


@dataclass
class StepInfo:
    step: int
    total: int | None
    loss: float
    elapsed_s: float
    eta_s: float | None


@dataclass
class TrainResult:
    adapter: LowRankAdapter
    steps: int
    seconds: float
    losses_before: dict[str, float]
    losses_after: dict[str, float]
    heldout: str | None
    heldout_before: float | None
    heldout_after: float | None
    interrupted: bool = False


class Trainer:
    def __init__(self, model: threedpe.ThreeDPE, pairs: list[Pair], reference_rgb: np.ndarray, config: TrainConfig,
                 name: str = "style", lpips=None, identity=None,
                 progress: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.config, self.name, self.clock = config, name, clock
        self.device = torch.device(config.device)
        self.autocast = torch.bfloat16 if config.precision == "bf16" else None
        self.model = model.to(self.device).float().eval().requires_grad_(False)
        self.lpips = lpips.to(self.device) if lpips is not None else None
        self.identity = identity.to(self.device) if identity is not None else None
        self.source_pairs = sorted(pairs, key=lambda p: p.name)
        names = [p.name for p in self.source_pairs]
        self.heldout = names[-1] if len(pairs) >= HELD_OUT_FROM else None
        say = progress or (lambda message: None)
        w = config.weights
        needs_planes = w.tri > 0 or w.depth > 0 or w.mv > 0
        prepared = []
        for i, pair in enumerate(self.source_pairs):
            say(f"preparing pair {i + 1}/{len(pairs)}: {pair.name}")
            prepared.append(prepare_pair(self.model, pair, config.render, self.device, self.autocast,
                                         target_planes=needs_planes))
        self.train_pairs = [p for p in prepared if p.name != self.heldout]
        self.heldout_pair = next((p for p in prepared if p.name == self.heldout), None)
        with torch.no_grad():
            self.tokens = self.model.vit(threedpe.prepare_reference(reference_rgb).to(self.device))
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.targets = default_targets(self.model.encoder)
        self.adapter = TrainableAdapter(self.model.encoder, self.targets, config.rank, config.full,
                                        generator=torch.Generator().manual_seed(config.seed)).to(self.device)
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=config.learning_rate)
        self.step, self.seconds, self._order = 0, 0.0, []
        self.losses_before: dict[str, float] = {}
        self.heldout_before: float | None = None

    # -- one forward -------------------------------------------------------------------
    def _planes(self, pair: PreparedPair) -> torch.Tensor:
        enc = self.model.encoder
        with self.adapter.applied(enc), torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                                       enabled=self.autocast is not None):
            return enc.final(enc.fusion(pair.high, self.tokens), pair.features).float()

    def _loss(self, pair: PreparedPair, mv_camera: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        w, render = self.config.weights, self.model.renderer
        planes = self._planes(pair)
        needs_photo = (w.image > 0 or w.raw > 0 or w.depth > 0 or (w.lpips > 0 and self.lpips is not None)
                       or (w.id > 0 and self.identity is not None))
        edit = render(planes, pair.camera, self.config.render) if needs_photo else {}
        mv_edit = mv_target = None
        if mv_camera is not None and w.mv > 0 and pair.planes is not None:
            with torch.no_grad():
                mv_target = render(pair.planes, mv_camera, self.config.render)
            mv_edit = render(planes, mv_camera, self.config.render)
        return total_loss(planes, pair.planes, edit, pair.photo_target(), w, mv_edit, mv_target,
                          self.lpips, self.identity)

    @torch.no_grad()
    def evaluate(self, pairs: list[PreparedPair]) -> dict[str, float]:
        """Mean of each term over ``pairs`` (multi-view at seeded cameras, the same every call)."""
        generator, sums = torch.Generator().manual_seed(12345), {}
        for pair in pairs:
            _, terms = self._loss(pair, random_camera(generator, self.device))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / len(pairs)
        return {k: round(v, 6) for k, v in sums.items()}

    @torch.no_grad()
    def heldout_error(self) -> float | None:
        """Image L1 of the held-out pair at its photo's camera against its ``after`` photo."""
        pair = self.heldout_pair
        if pair is None:
            return None
        image = self.model.renderer(self._planes(pair), pair.camera, self.config.render)["image"]
        return round(float(F.l1_loss(image, pair.image)), 6)

    # -- the loop ------------------------------------------------------------------------
    def _next_pair(self) -> PreparedPair:
        if not self._order:
            self._order = torch.randperm(len(self.train_pairs), generator=self.generator).tolist()
        return self.train_pairs[self._order.pop()]

    def train_step(self) -> float:
        pair = self._next_pair()
        mv = random_camera(self.generator, self.device) if self.config.weights.mv > 0 else None
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self._loss(pair, mv)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _done(self, elapsed: float) -> bool:
        """Whether the step count or the time budget (``elapsed``: seconds trained in all) is reached."""
        c = self.config
        if c.steps is not None and self.step >= c.steps:
            return True
        return c.minutes is not None and elapsed >= c.minutes * 60

    def run(self, on_step: Callable[[StepInfo], None] | None = None,
            save: Callable[["Trainer"], None] | None = None) -> TrainResult:
        """Train until the step count or time budget; ``save(self)`` at least every
        ``save_every_s`` and on Ctrl-C (then the result is marked ``interrupted``). Evaluating
        the losses before and after is not part of the time budget."""
        if not self.losses_before:
            self.losses_before = self.evaluate(self.train_pairs)
            self.heldout_before = self.heldout_error()
        clock = self.clock
        started, base_seconds, interrupted = clock(), self.seconds, False
        last_save = started
        try:
            while not self._done(base_seconds + clock() - started):
                loss = self.train_step()
                now = clock()
                self.seconds = base_seconds + now - started
                if on_step is not None:
                    on_step(StepInfo(self.step, self.config.steps, loss, self.seconds, self._eta(self.seconds)))
                if save is not None and now - last_save >= self.config.save_every_s:
                    save(self)
                    last_save = clock()
        except KeyboardInterrupt:
            interrupted = True
        self.seconds = base_seconds + clock() - started
        if save is not None:
            save(self)
        return TrainResult(self.adapter.export(self.name), self.step, self.seconds, self.losses_before,
                           self.evaluate(self.train_pairs), self.heldout, self.heldout_before, self.heldout_error(),
                           interrupted)

    def _eta(self, elapsed: float) -> float | None:
        c, per_step = self.config, elapsed / max(self.step, 1)
        left = [] if c.steps is None else [(c.steps - self.step) * per_step]
        if c.minutes is not None:
            left.append(max(c.minutes * 60 - elapsed, 0.0))
        return min(left) if left else None

    # -- resumable state -----------------------------------------------------------------
    def state(self) -> dict:
        """Everything :meth:`load_state` needs (tensors and plain values only: it is read back
        with ``torch.load(weights_only=True)``)."""
        return {"step": self.step, "seconds": self.seconds, "adapter": self.adapter.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "order": list(self._order), "losses_before": dict(self.losses_before),
                "heldout_before": self.heldout_before, "signature": self.signature()}

    def signature(self) -> dict:
        c = self.config
        return {"rank": c.rank, "full": c.full, "targets": len(self.targets), "render": c.render,
                "pairs": [p.name for p in self.train_pairs], "heldout": self.heldout, "seed": c.seed}

    def load_state(self, state: dict) -> None:
        if state.get("signature") != self.signature():
            raise ValueError("the saved training state is of other settings or pairs "
                             f"(saved {state.get('signature')}, now {self.signature()}); start again without --resume")
        self.adapter.load_state_dict(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step, self.seconds, self._order = int(state["step"]), float(state["seconds"]), list(state["order"])
        self.losses_before, self.heldout_before = dict(state["losses_before"]), state["heldout_before"]


def save_state(trainer: Trainer, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(trainer.state(), tmp)
    tmp.replace(path)


def load_state(path: Path) -> dict:
    """A :func:`save_state` file, read with the restricted (weights-only) unpickler."""
    return torch.load(path, map_location="cpu", weights_only=True)

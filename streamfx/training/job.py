"""One ``streamfx styles train`` run: pairs in, a style pack out (``STYLES/NAME/``).

The pack gets ``reference.png`` (``--ref``, else the first pair's aligned ``after``),
``adapter.safetensors`` and ``style.json`` (base weights sha256, steps, loss settings, losses
before and after, minutes, device). The resumable state is ``NAME/.train-state.pt``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models import threedpe
from ..styles import StyleLibrary
from ..styles.pack import write_pack
from .loop import StepInfo, TrainConfig, Trainer, TrainResult, load_state, save_state
from .pairs import load_pairs, read_image

STATE_FILE = ".train-state.pt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class JobError(ValueError):
    """The run cannot start (one line)."""


@dataclass(frozen=True)
class StyleJob:
    name: str
    pairs: Path
    styles_dir: Path
    config: TrainConfig
    ref: Path | None = None
    aligned: bool = False
    resume: bool = False
    lpips: Path | None = None
    identity: Path | None = None

    @property
    def folder(self) -> Path:
        return self.styles_dir / self.name


def auto_precision(device: torch.device) -> str:
    """bf16 where it is measured faster (the capability probe on a CPU; bf16-capable GPUs), else fp32."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    from ..runtime.probe import probe

    return probe().plan.encoder


def check_job(job: StyleJob) -> None:
    """Refuse, before any heavy work, what cannot run: a bad name, a name taken by another
    style, a pack that exists (without ``--resume``), ``--resume`` with nothing to resume."""
    if not _NAME.match(job.name):
        raise JobError(f"style name {job.name!r}: use letters, digits, '_', '-' or '.' (at most 64)")
    styles = StyleLibrary(job.styles_dir)
    taken = {s.name: s for s in styles.styles().values()} if job.styles_dir.is_dir() else {}
    other = taken.get(job.name)
    if other is not None and other.folder is None:
        raise JobError(f"{other.reference} already names a style {job.name!r}; choose another name")
    state = job.folder / STATE_FILE
    if job.resume and not state.is_file():
        raise JobError(f"nothing to resume: {state} does not exist")
    if not job.resume and job.folder.exists():
        raise JobError(f"{job.folder} exists; pass --resume to continue its training, or choose another name")


def _criteria(job: StyleJob):
    from .criteria import load_identity, load_lpips

    lpips = load_lpips(job.lpips) if job.lpips is not None and job.config.weights.lpips > 0 else None
    identity = load_identity(job.identity) if job.identity is not None and job.config.weights.id > 0 else None
    return lpips, identity


def run_job(job: StyleJob, model: threedpe.ThreeDPE, say: Callable[[str], None],
            on_step: Callable[[StepInfo], None] | None = None) -> tuple[TrainResult, Path]:
    """Train and write the pack; a Ctrl-C saves what was learnt (``result.interrupted``)."""
    check_job(job)
    pairs = load_pairs(job.pairs, job.aligned, progress=say)
    reference = read_image(job.ref) if job.ref is not None else pairs[0].after
    base_sha = threedpe.weights_sha256(model)
    lpips, identity = _criteria(job)
    trainer = Trainer(model, pairs, reference, job.config, job.name, lpips, identity, progress=say)
    job.folder.mkdir(parents=True, exist_ok=True)
    state_path = job.folder / STATE_FILE
    if job.resume:
        trainer.load_state(load_state(state_path))
        say(f"resuming at step {trainer.step}")
    started = time.time()
    result = trainer.run(on_step, save=lambda t: save_state(t, state_path))
    meta = {
        "kind": "trained",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "base_sha256": base_sha,
        "adapter": {"file": "adapter.safetensors", "rank": None if job.config.full else job.config.rank,
                    "full": job.config.full, "targets": len(trainer.targets),
                    "parameters": result.adapter.num_parameters()},
        "training": {
            "steps": result.steps, "minutes": round(result.seconds / 60, 2),
            "this_run_minutes": round((time.time() - started) / 60, 2),
            "device": str(trainer.device), "precision": job.config.precision,
            "render": job.config.render, "learning_rate": job.config.learning_rate, "seed": job.config.seed,
            "loss_weights": {**job.config.weights.as_dict(), "lpips": job.config.weights.lpips if lpips else 0.0,
                             "id": job.config.weights.id if identity else 0.0},
            "pairs": [p.name for p in pairs], "heldout": result.heldout,
            "losses_before": result.losses_before, "losses_after": result.losses_after,
            "heldout_image_l1_before": result.heldout_before, "heldout_image_l1_after": result.heldout_after,
            "interrupted": result.interrupted,
        },
    }
    write_pack(job.folder, np.ascontiguousarray(reference), meta, result.adapter)
    return result, job.folder

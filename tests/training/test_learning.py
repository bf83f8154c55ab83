"""Fine-tuning learns: a teacher (the base plus a known low-rank change in the trainable
modules) makes the pairs, and training from the base moves held-out outputs toward it.

With random weights only the image terms at the photo's camera are coherent (a random
encoder does not reconstruct a photo), so these runs train with image and raw only.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from streamfx.models import threedpe
from streamfx.training.job import StyleJob, auto_precision, run_job
from streamfx.training.loop import TrainConfig, Trainer
from streamfx.training.pairs import load_pairs
from streamfx.training.teacher import IMAGE_ONLY, make_teacher, teacher_after

pytestmark = pytest.mark.slow
PRESET = "fastest"


def _teacher_pairs(model, read_rgb, folder, count):
    """``folder/before`` = real faces, ``folder/after`` = the teacher's render of each at its
    photo's camera (the camera the pairs loader tracks), with the reference of style_1."""
    teacher = make_teacher(model)
    for i in range(1, count + 1):
        face = read_rgb(f"faces/ffhq_{i}.png")
        for side in ("before", "after"):
            (folder / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(face).save(folder / side / f"face{i}.png")
    reference = read_rgb("styles/style_1.png")
    for pair in load_pairs(folder):
        after = teacher_after(model, teacher, pair.before, pair.camera, reference, PRESET)
        Image.fromarray(after).save(folder / "after" / f"{pair.name}.png")


def test_training_moves_held_out_outputs_halfway_to_the_teacher(random_model, read_rgb, tmp_path):
    sha = threedpe.weights_sha256(random_model)
    _teacher_pairs(random_model, read_rgb, tmp_path / "pairs", 5)
    # rank 8 learns this rank-4 change fastest in the first steps (benchmarks/bench_finetune.py curves)
    config = TrainConfig(steps=8, rank=8, lr=3e-3, seed=0, render=PRESET, weights=IMAGE_ONLY,
                         precision=auto_precision(torch.device("cpu")))
    # the reference: the one the teacher's pairs were made with
    Image.fromarray(read_rgb("styles/style_1.png")).save(tmp_path / "ref.png")
    job = StyleJob("teacher", tmp_path / "pairs", tmp_path / "styles", config, ref=tmp_path / "ref.png")
    result, folder = run_job(job, random_model, say=lambda m: None)
    assert result.heldout == "face5" and result.steps == 8
    assert result.heldout_after <= 0.5 * result.heldout_before, (result.heldout_before, result.heldout_after)
    assert result.losses_after["image"] < result.losses_before["image"]
    assert threedpe.weights_sha256(random_model) == sha, "training must not change the base weights"
    import json

    meta = json.loads((folder / "style.json").read_text())
    assert meta["base_sha256"] == sha and meta["training"]["steps"] == 8
    assert meta["training"]["heldout_image_l1_after"] == result.heldout_after
    assert meta["training"]["loss_weights"]["tri"] == 0 and meta["training"]["render"] == PRESET


def _small_trainer(model, pairs, reference, steps):
    config = TrainConfig(steps=steps, seed=3, render=PRESET, weights=IMAGE_ONLY, lr=3e-3,
                         precision=auto_precision(torch.device("cpu")))
    return Trainer(model, pairs, reference, config)


@pytest.mark.full  # a long check (make test-full); make test stays within 15 minutes
def test_interrupt_saves_and_resume_continues_exactly(random_model, inverted_pairs, tmp_path):
    from streamfx.training.loop import load_state, save_state

    pairs = load_pairs(inverted_pairs)
    reference = pairs[0].after
    straight = _small_trainer(random_model, pairs, reference, 2).run()

    first = _small_trainer(random_model, pairs, reference, 2)
    state = tmp_path / "state.pt"

    def ctrl_c(info):
        if info.step == 1:
            raise KeyboardInterrupt

    stopped = first.run(on_step=ctrl_c, save=lambda t: save_state(t, state))
    assert stopped.interrupted and stopped.steps == 1 and state.is_file()
    second = _small_trainer(random_model, pairs, reference, 2)
    second.load_state(load_state(state))
    resumed = second.run()
    assert resumed.steps == 2 and not resumed.interrupted
    for key, update in straight.adapter.updates.items():
        assert torch.allclose(update.up, resumed.adapter.updates[key].up, atol=1e-6), key
        assert torch.allclose(update.down, resumed.adapter.updates[key].down, atol=1e-6), key
    assert any(u.up.abs().max() > 0 for u in straight.adapter.updates.values()), "it trained"
    other = _small_trainer(random_model, pairs[:1] + pairs[:1], reference, 2)  # other pairs
    with pytest.raises(ValueError, match="other settings or pairs"):
        other.load_state(load_state(state))


@pytest.mark.full  # a long check (make test-full); make test stays within 15 minutes
def test_the_time_budget_counts_each_second_once_across_saves(random_model, inverted_pairs):
    """With a state save after every step, training still runs its whole budget (a fake clock
    of 1 s per reading; saving once counted the time before the save twice)."""
    ticks = iter(range(10_000))
    config = TrainConfig(minutes=0.1, save_every_s=0.0, seed=3, render=PRESET, weights=IMAGE_ONLY,
                         precision=auto_precision(torch.device("cpu")))
    pairs = load_pairs(inverted_pairs)
    trainer = Trainer(random_model, pairs, pairs[0].after, config, clock=lambda: float(next(ticks)))
    saves = []
    result = trainer.run(save=lambda t: saves.append(t.seconds))
    assert 6.0 <= result.seconds <= 8.0, result.seconds  # the 6 s budget, and at most one step past it
    assert len(saves) == result.steps + 1 and saves == sorted(saves)

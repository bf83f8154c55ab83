"""``streamfx styles train|list`` and ``streamfx edit --style`` end to end (random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from streamfx.cli import main

pytestmark = pytest.mark.slow
FAST = ["--random-weights", "0", "--render", "fastest", "--loss", "image=1,raw=1,tri=0,mv=0,depth=0", "-q"]


@pytest.fixture()
def pairs(inverted_pairs):
    return inverted_pairs


def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err


def test_train_writes_a_pack_that_lists_and_refuses_a_second_run(pairs, tmp_path, capsys):
    styles = tmp_path / "styles"
    argv = ["styles", "train", "demo", "--pairs", str(pairs), "--steps", "1", "--styles", str(styles), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained 1 steps" in out and "no held-out pair" in out and f"wrote {styles / 'demo'}/" in out
    meta = json.loads((styles / "demo" / "style.json").read_text())
    assert meta["format"] == "streamfx-style/1" and meta["kind"] == "trained" and len(meta["base_sha256"]) == 64
    t = meta["training"]
    assert t["steps"] == 1 and t["device"] == "cpu" and t["render"] == "fastest" and t["pairs"] == ["f1", "f2"]
    assert set(t["losses_before"]) == set(t["losses_after"]) == {"image", "raw"}
    assert t["loss_weights"] == {"tri": 0.0, "image": 1.0, "raw": 1.0, "depth": 0.0, "mv": 0.0, "lpips": 0.0, "id": 0.0}
    assert Image.open(styles / "demo" / "reference.png").size == (512, 512)  # the first aligned 'after'
    assert (styles / "demo" / "adapter.safetensors").stat().st_size < 4 * 2**20
    assert main(["styles", "list", "--styles", str(styles)]) == 0
    listed = capsys.readouterr().out
    assert "demo" in listed and "trained" in listed and "1 steps" in listed
    _one_line_error(capsys, argv, "exists; pass --resume")
    assert main([*argv[:5], "--steps", "2", "--resume", *argv[7:]]) == 0  # resume to 2 steps in all
    assert json.loads((styles / "demo" / "style.json").read_text())["training"]["steps"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--loss", "gan=1"], "NAME=WEIGHT"),
    (["--render", "ultra"], "unknown render preset"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--resume"], "nothing to resume"),
    (["--loss", "lpips=0.8"], "--lpips PATH"),
])
def test_bad_options_are_one_line_before_any_weights_load(pairs, tmp_path, capsys, extra, message):
    argv = ["styles", "train", "x", "--pairs", str(pairs), "--styles", str(tmp_path / "s"), "--weights",
            str(tmp_path / "missing.pt"), "-q", *extra]
    _one_line_error(capsys, argv, message)


def test_bad_pairs_and_names_are_one_line(pairs, tmp_path, capsys):
    (pairs / "after" / "f2.png").unlink()
    base = ["--styles", str(tmp_path / "s"), "--random-weights", "0", "-q"]
    no_weights = ["--styles", str(tmp_path / "s"), "--weights", str(tmp_path / "missing.pt"), "-q"]
    _one_line_error(capsys, ["styles", "train", "x", "--pairs", str(pairs), *no_weights], "has no match in")  # first
    _one_line_error(capsys, ["styles", "train", "../up", "--pairs", str(pairs), *base], "use letters, digits")
    (tmp_path / "s").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "s" / "x.png")
    _one_line_error(capsys, ["styles", "train", "x", "--pairs", str(pairs), *base], "already names a style 'x'")


@pytest.mark.full  # a long check (make test-full); make test stays within 15 minutes
def test_edit_with_a_style_uses_its_adapter(tmp_path, read_rgb, capsys):
    """--style NAME of a trained pack edits with the pack's adapter; a pack without one is
    exactly --ref of its reference image."""
    import torch

    from streamfx.models import threedpe
    from streamfx.models.encoder import LiveEncoder
    from streamfx.models.random_weights import random_state_dicts
    from streamfx.runtime.adapters import default_targets, random_adapter
    from streamfx.styles.pack import write_pack

    sha = threedpe.weights_sha256(threedpe.from_state(random_state_dicts(0)))
    with torch.device("meta"):
        shapes = LiveEncoder()
    reference = read_rgb("styles/style_2.png")
    adapter = random_adapter(shapes.to_empty(device="cpu"), default_targets(shapes), rank=4, seed=7, std=0.13)
    styles = tmp_path / "styles"
    write_pack(styles / "trained", reference, {"base_sha256": sha}, adapter)
    write_pack(styles / "plain", reference, {})
    photo = str(tmp_path.parent / "photo.png")
    Image.fromarray(read_rgb("faces/ffhq_3.png")).save(photo)
    common = ["--random-weights", "0", "--preset", "fastest", "--styles", str(styles)]
    outputs = {}
    for name, prompt in (("trained", ["--style", "trained"]), ("plain", ["--style", "Plain"]),
                         ("ref", ["--ref", str(styles / "plain" / "reference.png")])):
        path = tmp_path / f"{name}.png"
        assert main(["edit", photo, *prompt, "-o", str(path), *common]) == 0, capsys.readouterr().err
        outputs[name] = np.asarray(Image.open(path)).astype(int)
    assert np.array_equal(outputs["plain"], outputs["ref"])
    assert np.abs(outputs["trained"] - outputs["ref"]).mean() > 2, "the adapter changes the edit"
    _one_line_error(capsys, ["edit", photo, "--style", "nope", "-o", str(tmp_path / "n.png"), *common], "no style")
    write_pack(styles / "other", reference, {"base_sha256": "0" * 64}, adapter)
    _one_line_error(capsys, ["edit", photo, "--style", "other", "-o", str(tmp_path / "o.png"), *common],
                    "trained on other 3DPE weights")

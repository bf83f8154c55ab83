"""``streamfx weights random``: random weights in the official format, which import like the real ones."""

from __future__ import annotations

import torch

from streamfx.cli import main
from streamfx.models import threedpe
from streamfx.models.checkpoint import validate
from streamfx.models.random_weights import random_state_dicts


def test_weights_random_writes_an_official_checkpoint_that_imports(tmp_path, capsys):
    out = tmp_path / "random-3dpe.pt"
    assert main(["weights", "random", str(out), "--seed", "5"]) == 0
    assert "streamfx weights import" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    validate(state, source=str(out))
    expected = random_state_dicts(5)
    for entry in expected:
        assert set(state[entry]) == set(expected[entry])
        assert all(torch.equal(state[entry][k], expected[entry][k]) for k in expected[entry])
    first = next(iter(expected["encoder_state_dict"]))
    other = random_state_dicts(6)["encoder_state_dict"][first]
    assert not torch.equal(state["encoder_state_dict"][first], other), "the seed matters"
    assert main(["weights", "import", str(out), "--out", str(tmp_path / "imported"), "-q"]) == 0
    model = threedpe.load(tmp_path / "imported")
    assert torch.equal(model.renderer.const, expected["renderer_state_dict"]["const"])


def test_weights_random_refuses_a_folder_in_one_line(tmp_path, capsys):
    assert main(["weights", "random", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a folder" in err

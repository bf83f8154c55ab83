"""Official-format checkpoints: loading, ``streamfx weights import``, and one-line errors
for truncated files, wrong key sets and wrong shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from streamfx.cli import main as cli_main
from streamfx.models import checkpoint, threedpe
from streamfx.models.checkpoint import CheckpointError
from streamfx.models.checkpoint_spec import CHECKPOINT_SPEC
from streamfx.models.keymap import encoder_key

KEYS_TSV = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "3dpe_checkpoint_keys.tsv"


def _tsv_rows() -> list[tuple[str, str, tuple[int, ...], str]]:
    rows = []
    for line in KEYS_TSV.read_text().splitlines()[1:]:
        entry, key, shape, kind = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((entry, key, dims, kind))
    return rows


def test_packaged_spec_matches_reference_table(shared_file):
    shared_file(KEYS_TSV)
    assert list(CHECKPOINT_SPEC) == _tsv_rows()


def test_keymap_covers_every_module_weight():
    with torch.device("meta"):
        model = threedpe.ThreeDPE()
    mapped = [encoder_key(k) for k in checkpoint.expected_shapes("encoder_state_dict")]
    used = [k for k in mapped if k is not None]
    assert len(used) == len(set(used))
    assert set(used) == {k for k in model.state_dict() if not k.startswith("renderer.")}
    dropped = {k for k, m in zip(checkpoint.expected_shapes("encoder_state_dict"), mapped) if m is None}
    assert dropped and all(k.startswith(("encoder.layer3.", "encoder.layer4.")) for k in dropped)


def _assert_loaded(model: threedpe.ThreeDPE, state) -> None:
    own = model.state_dict()
    for key, tensor in state["encoder_state_dict"].items():
        target = encoder_key(key)
        if target is not None:
            assert torch.equal(own[target], tensor), key
    for key, tensor in state["renderer_state_dict"].items():
        assert torch.equal(own[f"renderer.{key}"], tensor), key


def _one_line_cli_error(capsys, argv: list[str], *fragments: str) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_official_checkpoint_loads(official_ckpt, random_state):
    model = threedpe.load(official_ckpt, device="cpu", dtype=torch.float32)
    _assert_loaded(model, random_state)
    tokens = model.reference_tokens(torch.zeros(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 768) and torch.isfinite(tokens).all()


def test_weights_import_cli(official_ckpt, random_state, tmp_path, capsys):
    out = tmp_path / "weights"
    try:
        assert cli_main(["weights", "import", str(official_ckpt), "--out", str(out), "--quiet"]) == 0
        assert "imported" in capsys.readouterr().out
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["sha256"] == checkpoint.sha256_file(out / "3dpe.safetensors")
        assert manifest["source"]["sha256"] == checkpoint.sha256_file(official_ckpt)
        assert manifest["shapes"]["encoder/encoder.conv1.weight"] == [64, 5, 7, 7]
        assert len(manifest["shapes"]) == len(CHECKPOINT_SPEC)
        state = checkpoint.read_imported(out, verify_hash=True)
        for entry in checkpoint.ENTRIES:
            assert all(torch.equal(t, random_state[entry][k]) for k, t in state[entry].items())
        _assert_loaded(threedpe.load(out), random_state)
        assert cli_main(["weights", "info", str(out)]) == 0
    finally:
        for f in out.glob("*"):
            f.unlink()


def test_imported_weights_are_found(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMFX_HOME", str(tmp_path))
    assert checkpoint.find_imported_weights() is None
    with pytest.raises(threedpe.WeightsNotFoundError, match="streamfx weights import"):
        threedpe.load(None)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "3dpe.safetensors").write_bytes(b"")
    (tmp_path / "weights" / "manifest.json").write_text("{}")
    assert checkpoint.find_imported_weights() == tmp_path / "weights"


def test_truncated_checkpoint(official_ckpt, tmp_path, capsys):
    bad = tmp_path / "3dpe.pt"
    size = official_ckpt.stat().st_size
    try:
        with open(official_ckpt, "rb") as src, open(bad, "wb") as dst:
            dst.write(src.read(size // 2))
        with pytest.raises(CheckpointError, match="truncated") as info:
            threedpe.load(bad)
        assert "\n" not in str(info.value)
        _one_line_cli_error(capsys, ["weights", "import", str(bad), "--out", str(tmp_path / "w"), "-q"],
                            "truncated", str(bad))
        assert not (tmp_path / "w" / "3dpe.safetensors").exists()
    finally:
        bad.unlink(missing_ok=True)


def test_truncated_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "3dpe.safetensors"
    save_file({"encoder/x": torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.read_imported(path)


def _save_variant(random_state, path: Path, entry: str, drop: str | None = None,
                  add: str | None = None, reshape: tuple[str, torch.Tensor] | None = None) -> None:
    variant = {e: dict(sd) for e, sd in random_state.items()}
    if drop:
        del variant[entry][drop]
    if add:
        variant[entry][add] = torch.zeros(3)
    if reshape:
        variant[entry][reshape[0]] = reshape[1]
    torch.save(variant, path)


def test_wrong_key_set(random_state, tmp_path, capsys):
    bad = tmp_path / "3dpe.pt"
    try:
        _save_variant(random_state, bad, "encoder_state_dict",
                      drop="Final_encoder.block.attn.sr.weight", add="Final_encoder.block.attn.extra")
        with pytest.raises(CheckpointError) as info:
            checkpoint.read_official(bad)
        message = str(info.value)
        assert "\n" not in message
        assert "wrong key set" in message and "1 missing keys: Final_encoder.block.attn.sr.weight" in message
        assert "1 unexpected keys: Final_encoder.block.attn.extra" in message
        _one_line_cli_error(capsys, ["weights", "import", str(bad), "--out", str(tmp_path / "w"), "-q"],
                            "Final_encoder.block.attn.sr.weight")
    finally:
        bad.unlink(missing_ok=True)


def test_wrong_shape(random_state, tmp_path, capsys):
    bad = tmp_path / "3dpe.pt"
    try:
        _save_variant(random_state, bad, "renderer_state_dict", reshape=("decoder.net.0.weight", torch.zeros(64, 16)))
        with pytest.raises(CheckpointError) as info:
            threedpe.load(bad)
        message = str(info.value)
        assert "\n" not in message
        assert "renderer_state_dict.decoder.net.0.weight has shape 64x16, expected 64x32" in message
        _one_line_cli_error(capsys, ["weights", "import", str(bad), "--out", str(tmp_path / "w"), "-q"],
                            "decoder.net.0.weight", "64x16")
    finally:
        bad.unlink(missing_ok=True)


def test_pickled_code_is_refused(tmp_path):
    """A checkpoint that needs a full unpickler is rejected, never executed."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "3dpe.pt"
    torch.save({"encoder_state_dict": Payload(), "renderer_state_dict": {}}, bad, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights-only"):
        checkpoint.read_official(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        checkpoint.read_official(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        checkpoint.read_official(tmp_path / "empty.pt")

"""The style library and style packs: one format, duplicates refused, adapters checked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from streamfx.runtime.adapters import default_targets, random_adapter, save_adapter
from streamfx.styles import StyleError, StyleLibrary, match_name
from streamfx.styles.pack import load_style_adapter, write_pack


@pytest.fixture()
def folder(tmp_path, testdata):
    shutil.copy(testdata / "styles/style_1.png", tmp_path / "clown.png")
    return tmp_path


@pytest.fixture(scope="module")
def encoder_shapes():
    from streamfx.models.encoder import LiveEncoder

    torch.manual_seed(0)
    return LiveEncoder()


def _reference():
    return np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))


def test_images_and_packs_are_listed_by_name(folder, encoder_shapes):
    adapter = random_adapter(encoder_shapes, default_targets(encoder_shapes)[:2], rank=2, seed=0)
    write_pack(folder / "statue", _reference(), {"kind": "trained", "base_sha256": "ab" * 32}, adapter)
    write_pack(folder / "made", _reference(), {"kind": "reference"})
    (folder / "notes.txt").write_text("not a style")
    (folder / "empty").mkdir()  # a folder without style.json is not a style
    library = StyleLibrary(folder)
    assert library.names() == ["clown", "made", "statue"]
    styles = library.styles()
    assert [styles[n].kind for n in ("clown", "made", "statue")] == ["image", "pack", "trained"]
    assert library.image("statue").shape == (64, 64, 3)
    assert styles["statue"].base_sha256 == "ab" * 32
    loaded = load_style_adapter(styles["statue"], "ab" * 32, encoder_shapes)
    assert set(loaded.updates) == set(adapter.updates)
    assert torch.equal(loaded.updates[next(iter(adapter.updates))].down, next(iter(adapter.updates.values())).down)


def test_two_styles_with_one_name_are_refused_in_one_line(folder):
    shutil.copy(folder / "clown.png", folder / "clown.jpg")
    write_pack(folder / "statue", _reference(), {})
    shutil.copy(folder / "clown.png", folder / "statue.webp")
    library = StyleLibrary(folder)
    assert library.names() == ["clown", "statue"]  # listed once: using the name is what is refused
    for name, files in (("clown", "clown.jpg and clown.png"), ("statue", "statue/ and statue.webp")):
        with pytest.raises(StyleError) as info:
            library.style(name)
        message = str(info.value)
        assert f"two styles named {name!r}" in message and files in message and "\n" not in message
    with pytest.raises(StyleError, match="two styles named"):
        library.styles()


def test_a_broken_pack_is_refused_when_used_and_the_rest_still_work(folder):
    (folder / "broken").mkdir()
    (folder / "broken" / "style.json").write_text("{not json")
    (folder / "alien").mkdir()
    (folder / "alien" / "style.json").write_text('{"format": "something-else"}')
    library = StyleLibrary(folder)
    assert library.image("clown").shape[2] == 3
    with pytest.raises(StyleError, match="not readable JSON"):
        library.image("broken")
    with pytest.raises(StyleError, match="not a streamfx-style/1 file"):
        library.style("alien")
    write_pack(folder / "noref", _reference(), {})
    (folder / "noref" / "reference.png").unlink()
    with pytest.raises(StyleError, match="cannot read reference.png"):
        library.image("noref")


def test_adapters_are_checked_like_weights(folder, encoder_shapes, tmp_path):
    targets = default_targets(encoder_shapes)
    good = random_adapter(encoder_shapes, targets[:2], rank=2, seed=0)
    style = write_pack(folder / "statue", _reference(), {"base_sha256": "ab" * 32}, good)
    with pytest.raises(StyleError, match=r"trained on other 3DPE weights \(base abababababab\.\.\., these are cdcdcdcdcdcd"):
        load_style_adapter(style, "cd" * 32, encoder_shapes)
    # shapes that do not fit the encoder
    from streamfx.runtime.adapters import LowRankAdapter, LowRankUpdate

    wrong = LowRankAdapter("x", {targets[0]: LowRankUpdate(torch.zeros(2, 7, 3, 3), torch.zeros(5, 2, 1, 1))})
    save_adapter(wrong, style.adapter_path)
    with pytest.raises(StyleError, match="do not fit"):
        load_style_adapter(style, "ab" * 32, encoder_shapes)
    # not a safetensors file
    style.adapter_path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StyleError, match="not a readable safetensors adapter"):
        load_style_adapter(style, "ab" * 32, encoder_shapes)
    plain = write_pack(folder / "made", _reference(), {})
    with pytest.raises(StyleError, match="has no adapter.safetensors"):
        load_style_adapter(plain, None, encoder_shapes)


def test_pack_files_are_complete_and_readable(folder):
    import os
    import stat

    style = write_pack(folder / "made", _reference(), {"kind": "reference"})
    for name in ("reference.png", "style.json"):
        mode = stat.S_IMODE(os.stat(style.folder / name).st_mode)
        assert mode & 0o044, f"{name} is private ({oct(mode)})"
    assert not [p for p in style.folder.iterdir() if p.name.endswith(".tmp")]


def test_names_match_exactly_then_case_insensitively_then_closest():
    names = ["Clown", "statue"]
    assert match_name("clown", names, fuzzy=False) == "Clown"
    assert match_name("statu", names, fuzzy=True) == "statue"
    with pytest.raises(StyleError, match="known: Clown, statue"):
        match_name("statu", names, fuzzy=False)

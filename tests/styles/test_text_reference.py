"""``streamfx styles create NAME --text ...``: a photo edited by an InstructPix2Pix pipeline
becomes a style pack. A tiny random pipeline (``tiny_ip2p``) runs the real diffusers code
path on the CPU; its images are noise, so these tests check plumbing, never looks."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from streamfx.cli import main
from streamfx.styles import StyleLibrary
from streamfx.styles import text as text_mod
from streamfx.styles.text import EXTRA_HINT, TextModelError, align_photo, generate_reference, load_text_model

PROMPT = "bronze statue"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if any(importlib.util.find_spec(name) is None for name in ("diffusers", "transformers")):
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("the text extra (diffusers, transformers) is missing; `make test` installs it")
        pytest.skip("the text extra (diffusers, transformers) is not installed")
    from tiny_ip2p import build_tiny_ip2p

    return build_tiny_ip2p(tmp_path_factory.mktemp("models") / "tiny-ip2p")


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return load_text_model(tiny_model, "cpu")


@pytest.fixture(scope="module")
def photo(testdata):
    return testdata / "faces/ffhq_3.png"


def _create(name, photo, model, styles, *extra):
    return main(["styles", "create", name, "--text", PROMPT, "--photo", str(photo), "--text-model", str(model),
                 "--styles", str(styles), *extra])


def _one_line_error(capsys, argv_result, message):
    assert argv_result == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err


def test_create_writes_a_text_pack_of_the_aligned_photo(tiny_model, pipe, photo, read_rgb, tmp_path, capsys):
    styles = tmp_path / "styles"
    settings = ["--steps", "2", "--seed", "3", "--guidance", "5", "--image-guidance", "1.2"]
    assert _create("statue", photo, tiny_model, styles, *settings) == 0
    captured = capsys.readouterr()
    assert f"wrote {styles / 'statue'}/" in captured.out
    assert "diffusion" in captured.err and "2/2" in captured.err  # the tqdm bar, on stderr
    reference = np.asarray(Image.open(styles / "statue" / "reference.png"))
    assert reference.shape == (512, 512, 3) and reference.dtype == np.uint8
    meta = json.loads((styles / "statue" / "style.json").read_text())
    assert meta["format"] == "streamfx-style/1" and meta["kind"] == "text" and meta["text"] == PROMPT
    assert meta["model"]["path"] == str(tiny_model.resolve())
    assert meta["model"]["class"] == "StableDiffusionInstructPix2PixPipeline" and meta["model"]["diffusers"]
    assert (meta["seed"], meta["steps"], meta["guidance"], meta["image_guidance"]) == (3, 2, 5.0, 1.2)
    assert meta["device"] == "cpu" and meta["seconds"] >= 0
    # the pack is the model's edit of the photo (ffhq_3 is an EG3D crop: used as it is) with those settings
    expected = generate_reference(pipe, read_rgb("faces/ffhq_3.png"), PROMPT, steps=2, guidance=5.0,
                                  image_guidance=1.2, seed=3)
    assert np.array_equal(reference, expected)
    assert StyleLibrary(styles).style("statue").kind == "pack"
    assert main(["styles", "list", "--styles", str(styles)]) == 0 and "statue" in capsys.readouterr().out


def test_the_seed_decides_the_image_and_progress_counts_steps(pipe, read_rgb):
    crop = read_rgb("faces/ffhq_3.png")
    calls = []
    first = generate_reference(pipe, crop, PROMPT, steps=3, seed=7, progress=lambda k, n: calls.append((k, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert np.array_equal(first, generate_reference(pipe, crop, PROMPT, steps=3, seed=7))
    other = generate_reference(pipe, crop, PROMPT, steps=3, seed=8)
    assert np.abs(first.astype(int) - other).mean() > 1.0
    assert not np.array_equal(first, generate_reference(pipe, crop, "statue", steps=3, seed=7))  # the text counts
    for scales in ({"guidance": 3.0}, {"image_guidance": 3.0}):  # and so do both guidance scales
        assert not np.array_equal(first, generate_reference(pipe, crop, PROMPT, steps=3, seed=7, **scales))


def test_photos_are_aligned_and_crops_used_as_they_are(photo, read_rgb, tmp_path):
    face = read_rgb("faces/ffhq_3.png")
    assert np.array_equal(align_photo(photo), face)
    wide = np.full((700, 900, 3), 90, np.uint8)  # the face at 60% in a larger photo
    wide[150:457, 300:607] = np.asarray(Image.fromarray(face).resize((307, 307), Image.BICUBIC))
    Image.fromarray(wide).save(tmp_path / "wide.jpg")
    aligned = align_photo(tmp_path / "wide.jpg")
    assert aligned.shape == (512, 512, 3) and np.abs(aligned.astype(int) - face).mean() < 25


@pytest.fixture()
def no_model_load(monkeypatch):
    """Refusals that must come before the model loads: loading fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(text_mod, "load_text_model", refuse)


@pytest.mark.parametrize("case, message", [
    ("steps", "--steps must be at least 1"),
    ("name", "style name '../up'"),
    ("taken", "a style 'statue' already exists"),
    ("missing-model", "StreamFX never downloads models"),
    ("not-a-pipeline", "is not a diffusers pipeline folder (no model_index.json)"),
    ("no-face", "no face found in"),
    ("unreadable", "not a readable image"),
])
def test_refusals_are_one_line_before_the_model_loads(tiny_model, photo, tmp_path, capsys, no_model_load,
                                                      case, message):
    styles, model, name, extra = tmp_path / "styles", tiny_model, "statue", []
    styles.mkdir()
    if case == "steps":
        extra = ["--steps", "0"]
    elif case == "name":
        name = "../up"
    elif case == "taken":
        Image.new("RGB", (64, 64)).save(styles / "statue.png")
    elif case == "missing-model":
        model = tmp_path / "nowhere"
    elif case == "not-a-pipeline":
        model = tmp_path / "junk"
        model.mkdir()
        (model / "weights.bin").write_bytes(b"\0" * 16)
    elif case == "no-face":
        photo = tmp_path / "grey.png"
        Image.new("RGB", (512, 512), (128, 128, 128)).save(photo)
    elif case == "unreadable":
        photo = tmp_path / "notes.png"
        photo.write_text("not an image")
    _one_line_error(capsys, _create(name, photo, model, styles, *extra), message)
    assert not (styles / name).exists() or case == "taken"


def test_a_broken_pipeline_folder_is_one_line(tiny_model, photo, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps(json.loads((tiny_model / "model_index.json").read_text())))
    _one_line_error(capsys, _create("statue", photo, broken, tmp_path / "styles", "-q"),
                    f"{broken} is not a loadable InstructPix2Pix pipeline folder")
    assert not (tmp_path / "styles" / "statue").exists()


def test_without_the_text_extra_the_command_says_how_to_get_it(photo, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"  # any pipeline folder: the extra is checked before the photo and the model
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionInstructPix2PixPipeline"}')
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails
    _one_line_error(capsys, _create("statue", photo, model, tmp_path / "styles"), EXTRA_HINT)
    with pytest.raises(TextModelError, match="pip install 'streamfx\\[text\\]'"):
        load_text_model(model, "cpu")


class _FakePipe:
    """What generate_reference uses of a pipeline, returning ``images`` (1, H, W, 3) float."""

    device, num_timesteps = "cpu", 1

    def __init__(self, images):
        self.images = images

    def __call__(self, *args, callback_on_step_end=None, **kwargs):
        callback_on_step_end(self, 0, 999, {})
        return type("Out", (), {"images": self.images})()


def test_other_sizes_are_resized_and_nans_refused():
    crop = np.zeros((512, 512, 3), np.uint8)
    out = generate_reference(_FakePipe(np.full((1, 256, 320, 3), 0.5, np.float32)), crop, PROMPT)
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8 and abs(int(out.mean()) - 128) <= 1
    with pytest.raises(TextModelError, match="NaN"):
        generate_reference(_FakePipe(np.full((1, 512, 512, 3), np.nan, np.float32)), crop, PROMPT)
    with pytest.raises(TextModelError, match="512, 512, 3"):
        generate_reference(_FakePipe(None), crop[:256], PROMPT)

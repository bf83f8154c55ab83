"""Live text prompts on the loopback server: a style name wins; with ``text_model`` a reference
is generated from the caller's face in the background (progress, then a "generated" ack; a
newer text replaces one in work); without one, the closest name or an error that says how to
enable text. A tiny random InstructPix2Pix pipeline runs the real diffusers path on the CPU."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rtc_client import Client

from streamfx.pipeline.engines.mesh.engine import MeshEngine

pytestmark = pytest.mark.slow


def face_track(photo: Path, fps: int = 10):
    """A camera that shows one face photo (its index stamped above it) in a 480x360 frame."""
    from benchmarks.server_harness import stamp_track_class

    frame = np.full((360, 480, 3), 90, np.uint8)
    frame[100:320, 130:350] = np.asarray(Image.open(photo).convert("RGB").resize((220, 220), Image.Resampling.BILINEAR))
    return stamp_track_class()(480, 360, fps, [frame])


@dataclass
class _TextEdit:
    """What a generated reference becomes here: the tiny model draws noise (no face for the
    mesh engine to unwrap), so it is applied as a named no-op edit the stats show."""

    name: str
    kind = "text"

    def apply(self, roi, *args, **kwargs):
        return roi


class TextMesh(MeshEngine):
    def prepare(self, prompt):
        if prompt is not None and prompt.kind == "image" and prompt.name.startswith("text: "):
            return _TextEdit(prompt.name.removeprefix("text: "))
        return super().prepare(prompt)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    if any(importlib.util.find_spec(name) is None for name in ("diffusers", "transformers")):
        pytest.skip("the text extra (diffusers, transformers) is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "styles"))
    from tiny_ip2p import build_tiny_ip2p

    return build_tiny_ip2p(tmp_path_factory.mktemp("models") / "tiny-ip2p")


async def _wait_for(client, predicate, what: str, after: int = 0, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in client.got.messages[after:] if predicate(m)]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s; got {[m['type'] for m in client.got.messages[after:]]}")


async def _call(server, track) -> Client:
    client = Client(track)
    await client.connect(server.base)
    await asyncio.wait_for(client.channel_open.wait(), 10)
    return client


def _send(client, **msg) -> int:
    n = len(client.got.messages)
    client.channel.send(json.dumps({"type": "prompt", **msg}))
    return n


def _is_ack(m):
    return m["type"] == "ack" and m["for"] == "prompt"


async def test_text_generates_in_background_and_newest_wins(server_factory, tiny_model, testdata):
    server = await server_factory(engine=TextMesh(), text_model=tiny_model, text_steps=6)
    client = await _call(server, face_track(testdata / "faces" / "ffhq_1.png"))
    try:
        n = _send(client, preset="cartoon")
        await _wait_for(client, lambda m: m == {"type": "ack", "for": "prompt"}, "preset ack", n)
        await _wait_for(client, lambda m: m["type"] == "stats" and m.get("face") == "tracking", "a tracked face", n)

        # a text: progress, the old prompt on screen meanwhile, then the generated ack
        n = _send(client, text="bronze statue")
        ack = await _wait_for(client, _is_ack, "generated ack", n, timeout=60)
        got = client.got.messages[n:]
        assert ack["generated"] is True and ack["text"] == "bronze statue" and not ack["cached"]
        assert ack["thumbnail"].startswith("data:image/jpeg;base64,")
        steps = [m for m in got if m["type"] == "progress"]
        assert steps and all(m["for"] == "prompt" and m["of"] == 6 for m in steps)
        assert steps[-1]["step"] == 6 and got.index(steps[-1]) < got.index(ack)
        before = [m["edit"] for m in got[:got.index(ack)] if m["type"] == "stats"]
        assert before and set(before) == {"look:cartoon"}, "the old prompt stays until the new one is ready"
        await _wait_for(client, lambda m: m["type"] == "stats" and m["edit"] == "text:bronze statue",
                        "stats of the generated prompt", n)

        # the same text again: this caller's cache, no generation
        n = _send(client, text="bronze statue")
        ack = await _wait_for(client, _is_ack, "cached ack", n)
        assert ack["cached"] and not any(m["type"] == "progress" for m in client.got.messages[n:])

        # a second text while the first generates replaces it: only the newest is applied
        n = _send(client, text="statue one")
        await _wait_for(client, lambda m: m["type"] == "progress", "progress of the first", n)
        _send(client, text="statue two")
        error = await _wait_for(client, lambda m: m["type"] == "error", "the replaced one's answer", n, timeout=60)
        assert "replaced" in error["message"]
        ack = await _wait_for(client, _is_ack, "ack of the newest", n, timeout=60)
        assert ack["text"] == "statue two"
        await _wait_for(client, lambda m: m["type"] == "stats" and m["edit"] == "text:statue two", "its stats", n)
        await asyncio.sleep(1.5)
        assert not any(_is_ack(m) and m.get("text") == "statue one" for m in client.got.messages[n:])
        assert [m for m in client.got.messages if m["type"] == "stats"][-1]["edit"] == "text:statue two"

        # an exact or case-insensitive name wins without generating
        n = _send(client, text="CARTOON")
        ack = await _wait_for(client, _is_ack, "name ack", n)
        assert ack == {"type": "ack", "for": "prompt"}
        assert not any(m["type"] == "progress" for m in client.got.messages[n:])
    finally:
        await client.close()


async def test_text_without_a_face_is_refused(server_factory, client_factory, tiny_model):
    server = await server_factory(engine=MeshEngine(), text_model=tiny_model, text_steps=2)
    client = client_factory()  # grey frames: never a face
    await client.connect(server.base)
    await asyncio.wait_for(client.channel_open.wait(), 10)
    await client.wait_frames(3)
    n = _send(client, text="bronze statue")
    error = await _wait_for(client, lambda m: m["type"] == "error", "error", n)
    assert error["message"] == "no face to edit yet: look at the camera and try again"


async def test_text_without_a_model_picks_the_closest_name_or_says_how(server_factory, client_factory):
    server = await server_factory(engine=MeshEngine())
    client = client_factory()
    await client.connect(server.base)
    await asyncio.wait_for(client.channel_open.wait(), 10)
    n = _send(client, text="cartoons")
    ack = await _wait_for(client, _is_ack, "fuzzy ack", n)
    assert ack == {"type": "ack", "for": "prompt", "chose": "cartoon"}
    n = _send(client, text="Cartoon")
    assert await _wait_for(client, _is_ack, "name ack", n) == {"type": "ack", "for": "prompt"}
    n = _send(client, text="zebra stripes xq")
    error = await _wait_for(client, lambda m: m["type"] == "error", "error", n)
    assert "cartoon" in error["message"] and "start the server with --text-model DIR; see the README" in error["message"]


def test_serve_checks_the_text_model_folder_up_front(tmp_path):
    import argparse

    from streamfx.cli import CliError
    from streamfx.cli.serve import text_model_from_args

    assert text_model_from_args(argparse.Namespace(text_model=None, text_steps=20)) is None
    for folder, says in ((tmp_path / "missing", "is not a folder"), (tmp_path, "no model_index.json")):
        with pytest.raises(CliError, match=says) as refused:
            text_model_from_args(argparse.Namespace(text_model=folder, text_steps=20))
        assert "\n" not in str(refused.value)
    with pytest.raises(CliError, match="--text-steps must be at least 1"):
        text_model_from_args(argparse.Namespace(text_model=None, text_steps=0))

"""On the loopback server with the weight-free ``mesh`` engine, a caller's reference upload is
answered with what the engine made of it: the look and the regions it read, and, for a
reference without a trackable face, a note that only its global look is applied."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rtc_client import Client

from streamfx.pipeline.engines.mesh import MeshEngine, MeshEngineConfig

pytestmark = pytest.mark.slow


def data_url(image: np.ndarray) -> str:
    """A JPEG data URL small enough for one data-channel message."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


async def _ack(client, after: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in client.got.messages[after:]:
            if m["type"] in ("ack", "error") and m.get("for", "prompt") == "prompt":
                return m
        await asyncio.sleep(0.05)
    raise AssertionError("no answer to the prompt")


async def test_reference_ack_says_what_was_read(server_factory, client_factory, testdata):
    engine = MeshEngine(MeshEngineConfig(styles_dir=Path("/nonexistent/streamfx-styles")))
    server = await server_factory(engine=engine)
    client: Client = client_factory()
    try:
        await client.connect(server.base)
        await asyncio.wait_for(client.channel_open.wait(), 10)
        style = np.asarray(Image.open(testdata / "styles" / "style_6.png").convert("RGB").resize((320, 320)))
        n = len(client.got.messages)
        client.channel.send(json.dumps({"type": "prompt", "image": data_url(style)}))
        ack = await _ack(client, n)
        assert ack["type"] == "ack" and ack["look"] == "photo" and "note" not in ack
        assert {"skin", "lips"} <= set(ack["regions"])

        painting = np.full((256, 256, 3), (200, 150, 60), np.uint8)  # no face: only its look and colours
        painting[::8] = (40, 60, 140)
        n = len(client.got.messages)
        client.channel.send(json.dumps({"type": "prompt", "image": data_url(painting)}))
        ack = await _ack(client, n)
        assert ack["type"] == "ack" and "no face found in the reference" in ack["note"]
        assert ack["regions"] == ["skin"]
    finally:
        engine.close()

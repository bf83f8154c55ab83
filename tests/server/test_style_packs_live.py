"""A live caller selects a trained style pack by name on the loopback server; two callers
hold two packs at once, and a pack made for other weights is refused to its caller alone."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_with_packs(tmp_path_factory, testdata):
    import numpy as np
    from PIL import Image

    from streamfx.models import threedpe
    from streamfx.models.random_weights import random_state_dicts
    from streamfx.pipeline.engines.threedpe.config import ThreeDPEConfig
    from streamfx.pipeline.engines.threedpe.engine import ThreeDPEEngine
    from streamfx.runtime.adapters import default_targets, random_adapter
    from streamfx.styles.pack import write_pack

    model = threedpe.from_state(random_state_dicts(0))
    folder = tmp_path_factory.mktemp("styles")
    reference = np.asarray(Image.open(testdata / "styles/style_1.png").convert("RGB"))
    targets = default_targets(model.encoder)
    sha = threedpe.weights_sha256(model)
    for name, seed, base in (("alpha", 1, sha), ("beta", 2, sha), ("foreign", 3, "0" * 64)):
        write_pack(folder / name, reference, {"kind": "trained", "base_sha256": base},
                   random_adapter(model.encoder, targets, rank=2, seed=seed))
    engine = ThreeDPEEngine(ThreeDPEConfig(backend="torch", styles_dir=folder), model=model)
    yield engine
    engine.close()


async def _wait_for(client, predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in client.got.messages if predicate(m)]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s; got {[m['type'] for m in client.got.messages]}")


async def test_callers_select_packs_by_name(server_factory, client_factory, engine_with_packs):
    server = await server_factory(engine=engine_with_packs)
    a, b = client_factory(), client_factory()
    for client in (a, b):
        await client.connect(server.base)
        await asyncio.wait_for(client.channel_open.wait(), 10)
    a.channel.send(json.dumps({"type": "hello"}))
    info = await _wait_for(a, lambda m: m["type"] == "info", "info")
    assert {"alpha", "beta", "foreign"} <= set(info["presets"])
    a.channel.send(json.dumps({"type": "prompt", "preset": "alpha"}))
    b.channel.send(json.dumps({"type": "prompt", "preset": "beta"}))
    for client, name in ((a, "alpha"), (b, "beta")):
        await _wait_for(client, lambda m: m == {"type": "ack", "for": "prompt"}, "ack")
        stats = await _wait_for(client, lambda m: m["type"] == "stats" and m.get("style_adapter") == name,
                                f"stats with the {name} adapter")
        assert stats["caller"] == client.caller_id
    b.channel.send(json.dumps({"type": "prompt", "preset": "foreign"}))
    error = await _wait_for(b, lambda m: m["type"] == "error", "error")
    assert "trained on other 3DPE weights" in error["message"] and "\n" not in error["message"]
    n = len(b.got.messages)
    later = await _wait_for(b, lambda m: m["type"] == "stats" and b.got.messages.index(m) >= n, "later stats")
    assert later["style_adapter"] == "beta", "the refused prompt leaves the caller's pack in place"
    stats_a = [m for m in a.got.messages if m["type"] == "stats"][-1]
    assert stats_a["style_adapter"] == "alpha"

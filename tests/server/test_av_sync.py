"""The caller's audio comes back in sync with its filtered video, as a receiver plays it.

A real aiortc caller sends a face with a flash and a click at the same instant every second
(benchmarks/av_sync.py); what returns is mapped through the server's RTCP sender reports
onto one clock, as a browser does before playing. EBU R37: audio -40 ms (early) .. +60 ms
(late). Once with the mesh engine, once with a 150 ms stand-in (3DPE's latency on a CPU),
which without the delay line would play the voice about 150 ms before the lips. A WHEP
viewer of the mesh session is measured the same way.
"""

from __future__ import annotations

import pytest

from benchmarks.av_sync import measure, stand_in
from streamfx.pipeline.engines.mesh import MeshEngine

WINDOW = (-40.0, 60.0)


@pytest.mark.parametrize("engine", ["mesh", "sleep150"])
async def test_voice_and_lips_play_within_the_lip_sync_window(server_factory, engine):
    server = await server_factory(engine=MeshEngine() if engine == "mesh" else stand_in(0.15))
    result = await measure(server.base, seconds=8.0, state=server.state, skip_s=3.0, whep=engine == "mesh")
    offsets = result["offsets_ms"]
    assert len(offsets) >= 3, result
    assert all(WINDOW[0] <= o <= WINDOW[1] for o in offsets), result
    if engine == "mesh":  # a WHEP viewer of the same session gets the voice, in sync as well
        seen = result["whep"]["offsets_ms"]
        assert len(seen) >= 2 and all(WINDOW[0] <= o <= WINDOW[1] for o in seen), result
    if engine == "sleep150":  # the delay line did the work: the voice waited for the video
        assert result["audio_delay_ms"] > 130, result

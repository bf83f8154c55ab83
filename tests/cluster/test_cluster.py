"""Callers placed on a real Ray cluster by free slots, refused when it is full, moved when a
node is lost, and every slot given back however a call ends (loopback only)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCSessionDescription
from cluster_caller import ClusterCaller, Refused
from cluster_env import ADMIN, SLOTS, TOKEN

pytestmark = pytest.mark.slow


async def _place(front_door, n: int) -> list[ClusterCaller]:
    callers = [ClusterCaller(front_door.base, TOKEN) for _ in range(n)]
    for c in callers:   # one at a time: the order of placement is Ray's, not a race of ours
        await c.offer_once()
    return callers


async def _close(callers) -> None:
    await asyncio.gather(*(c.close() for c in callers))


async def test_seven_callers_six_placed_two_per_node_the_seventh_refused(ray_cluster, front_door):
    total = SLOTS * len(ray_cluster.servers)
    assert ray_cluster.wait_free(total) == total == 6
    callers = await _place(front_door, 6)
    try:
        per_node = collections.Counter(c.node for c in callers)
        assert sorted(per_node.values()) == [2, 2, 2], per_node
        seventh = ClusterCaller(front_door.base, TOKEN)
        with pytest.raises(Refused) as refused:
            await seventh.offer_once()
        assert refused.value.status == 503 and refused.value.retry_after is not None
        assert "no free slot" in refused.value.reason
        assert ray_cluster.free() == 0
        for c in callers:
            await c.wait_frames(3)
        # the page's control socket at the front door: relayed to the node, answered from it
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{front_door.base.replace('http', 'ws')}/ws?caller={callers[0].caller_id}",
                                       headers={"X-StreamFX-Token": TOKEN}) as ws:
                await ws.send_str(json.dumps({"type": "strength", "value": 0.5}))
                await ws.send_str("{not json")
                seen = []
                while not {"ack", "error"} <= {m["type"] for m in seen}:
                    got = await asyncio.wait_for(ws.receive(), 10)
                    assert got.type == aiohttp.WSMsgType.TEXT, (got, seen)
                    seen.append(json.loads(got.data))
            with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
                await http.ws_connect(f"{front_door.base.replace('http', 'ws')}/ws?caller=nobody",
                                      headers={"X-StreamFX-Token": TOKEN})
            assert unknown.value.status == 404
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{front_door.base}/api/info", headers={"X-StreamFX-Token": TOKEN}) as resp:
                info = await resp.json()
        assert info["cluster"] == {"nodes": 3, "slots": 6, "free": 0} and info["callers"] == 6
        assert front_door.state.counts["refused"] == 1 and front_door.state.demand.waiting() == 1
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{front_door.base}/metrics", headers={"X-StreamFX-Token": ADMIN}) as resp:
                metrics = await resp.text()
        assert "streamfx_cluster_nodes 3" in metrics and metrics.count("streamfx_cluster_slots_free{") == 3
        assert 'streamfx_front_door_offers_total{outcome="refused"} 1' in metrics
        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamfx", "cluster", "status", "--address", ray_cluster.cluster.address, "--json",
            stdout=asyncio.subprocess.PIPE)
        view = json.loads((await asyncio.wait_for(status.communicate(), 60))[0])
        assert sorted((n["slots"], n["free"], n["callers"]) for n in view["nodes"]) == [(2, 0, 2)] * 3
    finally:
        await _close(callers)
    # hung up: every slot comes back
    assert ray_cluster.wait_free(6) == 6


async def test_a_lost_nodes_callers_wait_for_room_and_resume_on_a_new_node(ray_cluster, front_door):
    assert ray_cluster.wait_free(6) == 6
    callers = await _place(front_door, 6)
    try:
        for c in callers:
            await c.wait_frames(3)
        head = ray_cluster.cluster.head_node.node_id
        victim_id = next(nid for nid in ray_cluster.servers if nid != head)
        victim = (await ray_cluster.servers[victim_id].stats.remote())["node"]
        moved = [c for c in callers if c.node == victim]
        stayed = [c for c in callers if c.node != victim]
        assert len(moved) == 2
        lost_at = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, ray_cluster.remove, victim_id)

        # told, and no room: they wait (503 with Retry-After, offered again)
        deadline = time.monotonic() + 15
        while not all(c.refusals for c in moved):
            assert time.monotonic() < deadline, [c.events for c in moved]
            await asyncio.sleep(0.1)
        assert all(any(e["event"] == "node-lost" for e in c.events) for c in moved)
        assert all(c.refusals[-1].status == 503 for c in moved)

        # a node is added: both stream again there, within 30 s
        added = await ray_cluster.add_node_process()
        new_name = (await ray_cluster.servers[added].stats.remote())["node"]
        deadline = time.monotonic() + 30
        while not all(len(c.nodes) == 2 for c in moved):
            assert time.monotonic() < deadline, [(c.nodes, c.events) for c in moved]
            await asyncio.sleep(0.1)
        assert [c.nodes[-1] for c in moved] == [new_name] * 2
        for c in moved:
            await c.wait_frames(3, timeout_s=30 - (time.monotonic() - lost_at), after=c.placed_at)
        resumed = time.monotonic()
        for c in stayed:   # the others kept streaming through it
            assert c.largest_gap(lost_at, resumed) < 2.0, c.node
            assert c.nodes == [c.node]
        assert front_door.state.counts["nodes_lost"] == 1
    finally:
        await _close(callers)
    assert ray_cluster.wait_free(6) == 6


async def test_bad_input_is_refused_and_takes_no_slot(ray_cluster, front_door):
    assert ray_cluster.wait_free(6) == 6
    good = {"X-StreamFX-Token": TOKEN}
    cases = [
        ({}, json.dumps({"sdp": "v=0\r\nm=video", "type": "offer"}), 401),           # no token
        ({**good, "Host": "evil.example"}, json.dumps({"sdp": "x", "type": "offer"}), 421),
        (good, "not json", 400),
        (good, json.dumps({"sdp": "no media lines", "type": "offer"}), 400),
        (good, json.dumps({"sdp": "v=0\r\nm=video " + "x" * 70_000, "type": "offer"}), 413),
        (good, json.dumps({"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer"}), 400),  # unusable
    ]
    async with aiohttp.ClientSession() as http:
        for headers, body, status in cases:
            async with http.post(f"{front_door.base}/offer", data=body, headers=headers) as resp:
                assert resp.status == status, (status, await resp.text())
                assert "error" in await resp.json()
            assert ray_cluster.wait_free(6, timeout_s=5) == 6, status


async def test_whip_and_whep_through_the_front_door_take_and_give_back_a_slot(ray_cluster, front_door):
    """WHIP is placed like /offer (query controls applied on the node); WHEP and DELETE reach
    the session's node; a bad query control is a 400 that keeps no slot."""
    from benchmarks.av_sync import SyncViewer
    from rtc_client import Client, PatternTrack

    assert ray_cluster.wait_free(6) == 6
    publisher = Client(PatternTrack(160, 120, fps=8))
    viewer = SyncViewer()
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    try:
        await publisher.pc.setLocalDescription(await publisher.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{front_door.base}/whip?strength=2", data=publisher.pc.localDescription.sdp,
                                 headers=auth) as resp:
                assert resp.status == 400 and "strength" in (await resp.json())["error"]
            assert ray_cluster.wait_free(6, timeout_s=5) == 6
            async with http.post(f"{front_door.base}/whip?strength=0.5", data=publisher.pc.localDescription.sdp,
                                 headers=auth) as resp:
                assert resp.status == 201, await resp.text()
                location, answer = resp.headers["Location"], await resp.text()
            await publisher.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            session = location.rsplit("/", 1)[1]
            assert ray_cluster.wait_free(5) == 5
            seen = await viewer.watch(front_door.base, session, TOKEN)
            deadline = time.monotonic() + 20
            while viewer.playout.frames < 5:
                assert time.monotonic() < deadline, "the WHEP viewer got no frames through the front door"
                await asyncio.sleep(0.1)
            async with http.delete(f"{front_door.base}{seen}", headers=auth) as resp:
                assert resp.status == 200
            async with http.delete(f"{front_door.base}{location}", headers=auth) as resp:
                assert resp.status == 200
            async with http.delete(f"{front_door.base}{location}", headers=auth) as resp:
                assert resp.status == 404
        assert ray_cluster.wait_free(6, timeout_s=10) == 6
    finally:
        await viewer.close()
        await publisher.close()


async def test_an_answered_caller_that_never_connects_gives_its_slot_back(ray_cluster, front_door):
    """A peer that vanishes after its answer: the node drops it after its connect timeout."""
    assert ray_cluster.wait_free(6) == 6
    caller = ClusterCaller(front_door.base, TOKEN)
    await caller.offer_once()
    await caller.client.pc.close()  # gone before ICE could connect... or just after
    assert ray_cluster.wait_free(6, timeout_s=15) == 6
    await caller.close()


def ray_cluster_name(actor) -> str:
    import ray

    return ray.get(actor.stats.remote())["node"]


async def test_a_killed_front_door_gives_back_the_slots_it_held(ray_cluster):
    """Slots fate-share with the front door that reserved them: when it dies, Ray removes them
    with its job and the nodes end those calls (their pages offer again through another)."""
    assert ray_cluster.wait_free(6) == 6
    env = {**os.environ, "STREAMFX_ICE_LOOPBACK": "1"}
    process = subprocess.Popen([sys.executable, "-m", "streamfx", "serve", "--cluster", ray_cluster.cluster.address,
                                "--port", "0", "--token", TOKEN], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, process.stdout.readline), 60)
        base = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)
        callers = [ClusterCaller(base, TOKEN) for _ in range(2)]
        await _wait_until_up(base)
        for c in callers:
            await c.offer_once()
        for c in callers:
            await c.wait_frames(3)
        assert ray_cluster.free() == 4
        process.kill()
        process.wait(timeout=10)
        assert await asyncio.get_running_loop().run_in_executor(None, ray_cluster.wait_free, 6, 30.0) == 6
        deadline = time.monotonic() + 10   # each node sees its slots gone within a watch interval
        while sum([(await s.stats.remote())["callers"] for s in ray_cluster.servers.values()]):
            assert time.monotonic() < deadline, "the nodes kept calls whose front door died"
            await asyncio.sleep(0.2)
        await _close(callers)
    finally:
        if process.poll() is None:
            process.kill()


async def _wait_until_up(base: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "the front door did not come up"
            await asyncio.sleep(0.2)


@pytest.mark.full  # Chromium and a node killed and added: make test-full
async def test_the_page_moves_its_call_when_its_node_is_lost(ray_cluster, front_door, tmp_path):
    """web_client/call.js in headless Chromium: node-lost on the front door's socket, a new
    offer on its own, the call resumed on another node (then a node is added back)."""
    from playwright.async_api import async_playwright

    from ray.util.placement_group import placement_group, remove_placement_group

    from benchmarks.browser_roundtrip import CHROMIUM, FLAGS
    from streamfx.cluster.config import SLOT
    from benchmarks.common import TESTDATA
    from streamfx.io.y4m import write_y4m_from_video

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed")
    assert ray_cluster.wait_free(6) == 6
    y4m = tmp_path / "camera.y4m"
    write_y4m_from_video(TESTDATA / "video" / "head_turn_1.mp4", y4m, canvas=(320, 240), scale=0.4)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=FLAGS + [f"--use-file-for-fake-video-capture={y4m}"])
        try:
            # the head's slots taken (only the head has "test_head"): the page lands on a node we can kill
            head_full = placement_group([{SLOT: SLOTS, "test_head": 1}], strategy="STRICT_PACK")
            assert head_full.wait(timeout_seconds=10)
            page = await browser.new_page()
            await page.goto(f"{front_door.base}/?token={TOKEN}&autostart&w=320&h=240")
            await page.wait_for_function("window.streamfx.node && window.streamfx.framesReceived > 5", timeout=60_000)
            first = await page.evaluate("window.streamfx.node")
            victim = next(nid for nid, a in ray_cluster.servers.items() if ray_cluster_name(a) == first)
            remove_placement_group(head_full)
            before = await page.evaluate("window.streamfx.framesReceived")
            await asyncio.get_running_loop().run_in_executor(None, ray_cluster.remove, victim)
            await page.wait_for_function(
                f"window.streamfx.node && window.streamfx.node !== {json.dumps(first)} "
                f"&& window.streamfx.framesReceived > {before} + 10", timeout=30_000)
            notices = await page.evaluate("window.streamfx.notices.map(n => n.text)")
            assert any("moved to node" in n for n in notices), notices
            moves = await page.evaluate("window.streamfx.moves")
            assert len(moves) == 1 and "was lost" in moves[0], moves   # told by the front door, not ICE's timeout
            await page.evaluate("stop()")   # hang up: the node gives the slot back at once
        finally:
            await browser.close()
    await ray_cluster.add_node_process()   # the drain test after this one wants three nodes


async def test_a_draining_node_takes_no_new_call_and_keeps_its_own(ray_cluster, front_door):
    """Last of the tests on the cluster: Ray's drain is not undone."""
    from streamfx.cluster import node as nodes

    assert ray_cluster.wait_free(6) == 6
    first = await _place(front_door, 1)
    try:
        target = next(nid for nid, a in ray_cluster.servers.items()
                      if ray_cluster_name(a) == first[0].node)
        running = await asyncio.get_running_loop().run_in_executor(None, nodes.drain, ray_cluster.servers[target],
                                                                   target)
        assert running == 1
        later = await _place(front_door, 4)   # every other free slot, none of them on the drained node
        assert all(c.node != first[0].node for c in later)
        with pytest.raises(Refused):
            await ClusterCaller(front_door.base, TOKEN).offer_once()
        await first[0].wait_frames(3, after=time.monotonic())   # its own call goes on
        await _close(later)
    finally:
        await _close(first)
    deadline = time.monotonic() + 10
    while (stats := await ray_cluster.servers[target].stats.remote())["callers"]:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.1)
    assert stats["draining"]   # idle and drained: `streamfx node` stops here, Ray's autoscaler may remove it


@pytest.mark.parametrize("command", [["node", "--address", "127.0.0.1:1", "--engine", "mesh"],
                                     ["serve", "--cluster", "127.0.0.1:1", "--port", "0"]])
def test_an_unreachable_cluster_is_one_line_not_a_hang(command):
    """Ray retries an unreachable head for minutes; the commands say so at once (exit code 2)."""
    out = subprocess.run([sys.executable, "-m", "streamfx", *command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("streamfx ")]
    assert len(lines) == 1 and "nothing answers at 127.0.0.1:1" in lines[0], out.stderr[-2000:]

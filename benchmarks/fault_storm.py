"""Fault storm: what a storm of bad input costs the callers who behave.

    python -m benchmarks.fault_storm [--engine mesh] [--before 20] [--after 20]
    python -m benchmarks.fault_storm --quick      # a smaller storm, < 1 min in all

A real server (``python -m streamfx serve --ice-loopback``) and 2 streaming callers, each
its own process. Their frames/s are measured for ``--before`` seconds, then the storm runs
(all parts at once), then ``--after`` seconds more:

* 50 callers join (connect, first frame) and leave, one after another;
* 200 malformed and 200 oversized (300 KiB) control messages, half on the data channel of
  a storm peer, half on ``/ws`` (malformed: one socket per streaming caller; oversized: a
  new socket each, which the server may close with 1009);
* 50 prompt images on the storm peer: corrupt ones, small valid ones, and 40-Mpixel PNGs
  (about 115 KB each, a second of decoding each);
* a peer that vanishes (its UDP sockets close, nothing is sent) and an offer whose answer
  is never used.

Reported: each streaming caller's fps during and after the storm over before (goal >= 0.9),
``/api/info`` p99 latency from a separate prober process (goal < 100 ms), the server's loop
lag p99 (goal < 50 ms), how every storm message was answered, and when the vanished and the
never-connected callers were removed. JSON and a PNG plot under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

from benchmarks.server_harness import (Child, HarnessCaller, Refused, ServerProcess, add_stream_args, corrupt_images,
                                       finish_stream_args, huge_png, machine, malformed_messages, oversized_message,
                                       percentiles, png_bytes, prompt_image, save_results, start_caller)


def _count(replies: list[dict]) -> dict:
    out: dict[str, int] = {}
    for r in replies:
        out[r.get("type", "?")] = out.get(r.get("type", "?"), 0) + 1
    return out


async def _await_replies(caller: HarnessCaller, start: int, n: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(caller.replies) - start < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return caller.replies[start:start + n]


async def ws_replies(ws, n: int, timeout: float, into: list[dict] | None = None) -> list[dict]:
    """Up to ``n`` replies (JSON, stats aside) from WebSocket ``ws`` within ``timeout`` seconds,
    appended to ``into`` as they come (kept if the socket closes meanwhile)."""
    replies = [] if into is None else into
    deadline = time.monotonic() + timeout
    while len(replies) < n and time.monotonic() < deadline:
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.get("type") != "stats":
            replies.append(msg)
    return replies


async def _ws_batch(url: str, messages: list[str | bytes], timeout: float) -> dict:
    """Send ``messages`` on one socket; count the replies (stats aside)."""
    import websockets

    replies: list[dict] = []
    closed = None
    try:
        async with websockets.connect(url, max_size=None) as ws:
            for m in messages:
                await ws.send(m)
            await ws_replies(ws, len(messages), timeout, into=replies)
    except websockets.ConnectionClosed as exc:
        closed = exc.rcvd.code if exc.rcvd else "no close frame"
    except Exception as exc:  # noqa: BLE001 - e.g. refused with 429: reported
        closed = f"{type(exc).__name__}: {exc}"[:120]
    return {"sent": len(messages), "replies": _count(replies), "closed": closed}


async def _ws_oversized(url: str, message: str, timeout: float = 10.0) -> str:
    import websockets

    try:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(message)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if msg.get("type") != "stats":
                    return msg.get("type", "?")
            return "unanswered"
    except websockets.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code}" if exc.rcvd else "closed"
    except asyncio.TimeoutError:
        return "unanswered"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}"


async def storm(args, base: str, target_ids: list[str], storm_peer: HarnessCaller, log: dict) -> None:
    ws_base = base.replace("http", "ws")
    rng = random.Random(5)
    size = args.size

    async def vanish() -> None:
        peer = HarnessCaller(size, 10, read_stamps=False)
        try:
            await peer.connect(base)
            await asyncio.wait_for(peer.first_frame.wait(), 20)
        except (Refused, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001
            log["vanish"] = {"error": str(exc)[:200]}
            await peer.close()
            return
        peer.vanish()
        log["vanish"] = {"caller": peer.caller_id, "at": time.time()}
        log["_vanished_peer"] = peer

    async def half_open() -> None:
        import aiohttp

        peer = HarnessCaller(size, 10, read_stamps=False)
        await peer.pc.setLocalDescription(await peer.pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/offer", json={"sdp": peer.pc.localDescription.sdp, "type": "offer"}) as r:
                body = await r.json(content_type=None)
        log["half_open"] = {"status": r.status, "caller": body.get("caller"), "at": time.time()}
        log["_half_peer"] = peer  # kept, never given the answer

    async def join_leave() -> None:
        outcome = {"joined": 0, "refused": 0, "failed": 0, "refusals": [], "seconds": []}
        for _ in range(args.joins):
            began = time.monotonic()
            peer = HarnessCaller(size, 10, read_stamps=False)
            try:
                await peer.connect(base)
                await asyncio.wait_for(peer.first_frame.wait(), 15)
                outcome["joined"] += 1
                outcome["seconds"].append(round(time.monotonic() - began, 3))
            except Refused as exc:
                outcome["refused"] += 1
                outcome["refusals"] = (outcome["refusals"] + [f"{exc.status} {exc.error}"])[-3:]
                await asyncio.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - counted
                outcome["failed"] += 1
                outcome["refusals"] = (outcome["refusals"] + [f"{type(exc).__name__}: {exc}"[:100]])[-3:]
            finally:
                await peer.close()
        outcome["seconds"] = percentiles(outcome["seconds"])
        log["join_leave"] = outcome

    async def messages() -> None:
        # prompt images first (the storm peer's rate-limit bucket is full: most get decoded)
        n_huge = max(1, args.images // 5)
        n_corrupt = args.images * 2 // 5
        n_small = args.images - n_huge - n_corrupt
        huge = prompt_image(await asyncio.get_running_loop().run_in_executor(None, huge_png))
        images = ([huge] * n_huge + corrupt_images(rng, n_corrupt)
                  + [prompt_image(png_bytes(64, 64, rng)) for _ in range(n_small)])
        rng.shuffle(images)
        start = len(storm_peer.replies)
        for m in images:
            storm_peer.send(m)
        replies = await _await_replies(storm_peer, start, len(images), timeout=60)
        log["images"] = {"sent": len(images), "huge_40mpx": n_huge, "corrupt": n_corrupt, "small_valid": n_small,
                         "replies": _count(replies), "unanswered": len(images) - len(replies),
                         "errors_cover_corrupt": _count(replies).get("error", 0) >= n_corrupt}
        # malformed + oversized on the data channel
        half_bad, half_big = args.malformed // 2, args.oversized // 2
        storm_peer.allow_oversized()
        start = len(storm_peer.replies)
        bad = malformed_messages(half_bad)
        for m in bad:
            storm_peer.send(m)
        big = oversized_message()
        for i in range(half_big):  # at most 2 in flight: a burst of tens of MB overflows the UDP socket on a
            storm_peer.send(big)   # busy CPU and SCTP's retransmission backoff then stalls the channel
            await _await_replies(storm_peer, start, half_bad + i - 1, timeout=15)
        replies = await _await_replies(storm_peer, start, half_bad + half_big, timeout=60)
        log["data_channel"] = {"sent": half_bad + half_big, "replies": _count(replies),
                               "unanswered": half_bad + half_big - len(replies)}
        # malformed on /ws: one socket per streaming caller
        rest = malformed_messages(args.malformed - half_bad)
        per = [rest[i::len(target_ids)] for i in range(len(target_ids))]
        results = await asyncio.gather(*(_ws_batch(f"{ws_base}/ws?caller={cid}", batch, 30)
                                         for cid, batch in zip(target_ids, per)))
        log["ws_malformed"] = results
        # oversized on /ws: a new socket each
        outcomes: dict[str, int] = {}
        for i in range(args.oversized - half_big):
            o = await _ws_oversized(f"{ws_base}/ws?caller={target_ids[i % len(target_ids)]}", big)
            outcomes[o] = outcomes.get(o, 0) + 1
        log["ws_oversized"] = outcomes

    await asyncio.gather(vanish(), half_open(), join_leave(), messages())


def _fps_window(children: dict[str, Child], lo: float, hi: float) -> dict[str, float | None]:
    out = {}
    for cid, child in children.items():
        rows = [x for x in child.lines if x.get("event") == "sample" and lo <= x["t"] <= hi]
        frames, dt = sum(x["frames_window"] for x in rows), sum(x["dt"] for x in rows)
        out[cid] = round(frames / dt, 2) if dt else None
    return out


def _removed_after(prober: Child, caller: str | None, since: float | None) -> float | None:
    """Seconds from ``since`` to the first /metrics without ``caller`` (None: never seen removed)."""
    if not caller or since is None:
        return None
    for line in prober.lines:
        if line.get("event") == "metrics" and line.get("status") == 200 and line["t"] >= since \
                and caller not in line.get("callers", {}):
            return round(line["t"] - since, 2)
    return None


async def run(args) -> dict:
    logs = args.json.parent / "logs" / "fault_storm"
    server = ServerProcess(args.engine, ["--max-callers", str(args.max_callers)], log_path=logs / "server.log")
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    children: list[Child] = []
    log: dict = {}
    storm_peer: HarnessCaller | None = None
    try:
        prober = await Child("probe", ["probe", "--base", server.base, "--interval", "0.2", "--metrics-every", "5"],
                             logs / "probe.log").start()
        children.append(prober)
        callers: dict[str, Child] = {}
        for i in range(args.callers):
            child, event = await start_caller(server.base, logs, i, args.fps, args.size, args.source)
            children.append(child)
            if not event or event.get("event") != "connected":
                raise RuntimeError(f"streaming caller {i} was not admitted: {event}")
            callers[event["caller"]] = child
        storm_peer = HarnessCaller(args.size, 5, read_stamps=False)  # the storm's data channel, in the baseline
        await storm_peer.connect(server.base)
        await asyncio.wait_for(storm_peer.channel_open.wait(), 20)
        await asyncio.sleep(1.0 if args.quick else 3.0)  # settle
        t_before = time.time()
        await asyncio.sleep(args.before)
        t_storm = time.time()
        await storm(args, server.base, list(callers), storm_peer, log)
        t_storm_end = time.time()
        await asyncio.sleep(args.after)
        t_end = time.time()
        # the vanished / never-connected callers: wait for their removal a while longer if needed
        deadline = time.monotonic() + args.removal_wait
        while time.monotonic() < deadline:
            gone = _removed_after(prober, log.get("vanish", {}).get("caller"), log.get("vanish", {}).get("at"))
            half = _removed_after(prober, log.get("half_open", {}).get("caller"), log.get("half_open", {}).get("at"))
            if gone is not None and half is not None:
                break
            await asyncio.sleep(1.0)
        server_alive = server.alive()
    finally:
        for peer in (storm_peer, log.pop("_vanished_peer", None), log.pop("_half_peer", None)):
            if peer is not None:
                await peer.close()
        for child in children:
            await child.stop()
        code = await asyncio.get_running_loop().run_in_executor(None, server.stop)

    before = _fps_window(callers, t_before, t_storm)
    during = _fps_window(callers, t_storm, t_storm_end)
    after = _fps_window(callers, t_storm_end, t_end)
    ratios = {cid: {"during": round(during[cid] / before[cid], 3) if before[cid] and during[cid] is not None else None,
                    "after": round(after[cid] / before[cid], 3) if before[cid] and after[cid] is not None else None}
              for cid in callers}
    all_ratios = [v for r in ratios.values() for v in r.values()]
    probes = [p for p in prober.lines if p.get("event") == "info"]
    storm_probes = [p for p in probes if p["t"] >= t_storm]
    info_ms = [p["ms"] for p in storm_probes if p.get("status") == 200]
    failed = [p for p in probes if p.get("status") != 200]
    lags = [p["loop_lag_ms"] for p in storm_probes if p.get("loop_lag_ms") is not None]
    info_p = percentiles(info_ms)
    lag_p99 = max(lags) if lags else None  # the server's own p99 over the last minute, at its worst
    errors_during = {cid: [e for x in child.lines if x.get("event") == "sample" for e in x.get("new_errors", [])]
                     for cid, child in callers.items()}
    summary = {
        "fps": {"before": before, "during": during, "after": after, "ratio": ratios, "goal": ">= 0.9",
                "pass": bool(all_ratios) and all(r is not None and r >= 0.9 for r in all_ratios)},
        "api_info_ms_storm_and_after": info_p | {"goal_p99": "< 100 ms", "failed_probes": len(failed),
                                                 "pass": info_p.get("p99") is not None and info_p["p99"] < 100
                                                 and not failed},
        "loop_lag_p99_ms": {"max_reported": lag_p99, "goal": "< 50 ms",
                            "pass": lag_p99 is not None and lag_p99 < 50},
        "vanished_removed_after_s": _removed_after(prober, log.get("vanish", {}).get("caller"),
                                                   log.get("vanish", {}).get("at")),
        "never_connected_removed_after_s": _removed_after(prober, log.get("half_open", {}).get("caller"),
                                                          log.get("half_open", {}).get("at")),
        "streaming_callers_errors": {cid: e[:5] for cid, e in errors_during.items() if e},
        "server_alive": server_alive, "server_exit_code": code,
        "storm_seconds": round(t_storm_end - t_storm, 2),
    }
    summary["pass"] = (summary["fps"]["pass"] and summary["api_info_ms_storm_and_after"]["pass"]
                       and summary["loop_lag_p99_ms"]["pass"] and server_alive)
    series = {cid: [{"t": round(x["t"] - t_before, 2), "fps": x["fps"]} for x in child.lines
                    if x.get("event") == "sample" and x["t"] >= t_before] for cid, child in callers.items()}
    probe_series = [{"t": round(p["t"] - t_before, 2), "ms": p["ms"], "status": p.get("status"),
                     "loop_lag_ms": p.get("loop_lag_ms"), "callers": p.get("callers")} for p in probes
                    if p["t"] >= t_before]
    return {"benchmark": "fault_storm", "machine": machine(),
            "config": {k: (f"{v[0]}x{v[1]}" if k == "size" else str(v) if isinstance(v, Path) else v)
                       for k, v in vars(args).items()} | {"server_info": server.info},
            "windows_s": {"before": [0, round(t_storm - t_before, 2)],
                          "storm": [round(t_storm - t_before, 2), round(t_storm_end - t_before, 2)],
                          "after": [round(t_storm_end - t_before, 2), round(t_end - t_before, 2)]},
            "storm": log, "summary": summary, "series": series, "probes": probe_series}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for cid, rows in data["series"].items():
        axes[0].plot([r["t"] for r in rows], [r["fps"] for r in rows], label=f"caller {cid[:6]}")
    axes[0].set_ylabel("frames/s back")
    axes[0].legend(fontsize=7)
    probes = data["probes"]
    axes[1].plot([p["t"] for p in probes], [p["ms"] for p in probes], lw=0.8)
    axes[1].axhline(100, color="red", ls="--", lw=1, label="100 ms goal (p99)")
    axes[1].set_ylabel("/api/info ms")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    axes[2].plot([p["t"] for p in probes], [p["loop_lag_ms"] for p in probes], lw=0.8)
    axes[2].axhline(50, color="red", ls="--", lw=1, label="50 ms goal")
    axes[2].set_ylabel("loop lag p99 ms")
    axes[2].set_xlabel("seconds")
    axes[2].legend(fontsize=7)
    lo, hi = data["windows_s"]["storm"]
    for a in axes:
        a.axvspan(lo, hi, color="red", alpha=0.08)
    s = data["summary"]
    ratios = [v for r in s["fps"]["ratio"].values() for v in r.values() if v is not None]
    fig.suptitle(f"StreamFX fault storm ({data['config']['engine']}): fps ratio min "
                 f"{min(ratios) if ratios else None}, /api/info p99 {s['api_info_ms_storm_and_after'].get('p99')} ms, "
                 f"loop lag p99 {s['loop_lag_p99_ms']['max_reported']} ms: {'PASS' if s['pass'] else 'FAIL'}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_args(parser)
    parser.add_argument("--callers", type=int, default=2)
    parser.add_argument("--before", type=float, default=20.0, help="seconds measured before the storm")
    parser.add_argument("--after", type=float, default=20.0, help="seconds measured after it")
    parser.add_argument("--joins", type=int, default=50)
    parser.add_argument("--malformed", type=int, default=200)
    parser.add_argument("--oversized", type=int, default=200)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--max-callers", type=int, default=8, help="passed to the server (storm peers need room)")
    parser.add_argument("--removal-wait", type=float, default=40.0,
                        help="extra seconds to wait for the vanished peer's removal (ICE consent: ~30 s)")
    parser.add_argument("--quick", action="store_true", help="a smaller storm, short windows: < 1 min")
    args = parser.parse_args(argv)
    if args.quick:
        args.before, args.after, args.joins = 6.0, 5.0, 4
        args.malformed, args.oversized, args.images, args.removal_wait = 40, 10, 6, 0.0
    finish_stream_args(args, "fault_storm")
    data = asyncio.run(run(args))
    save_results(args, data, plot)
    s = data["summary"]
    print(f"fault storm ({args.engine}, storm {s['storm_seconds']} s):")
    for cid, r in s["fps"]["ratio"].items():
        print(f"  caller {cid[:6]}: fps before {s['fps']['before'][cid]}, during {s['fps']['during'][cid]} "
              f"(x{r['during']}), after {s['fps']['after'][cid]} (x{r['after']}); goal >= 0.9")
    info = s["api_info_ms_storm_and_after"]
    print(f"  /api/info during+after: p50 {info.get('p50')} p99 {info.get('p99')} ms (goal < 100), "
          f"failed probes {info['failed_probes']}")
    print(f"  loop lag p99: {s['loop_lag_p99_ms']['max_reported']} ms (goal < 50)")
    st = data["storm"]
    print(f"  join/leave {st.get('join_leave')}")
    print(f"  images {st.get('images')}")
    print(f"  data channel {st.get('data_channel')}; /ws malformed {st.get('ws_malformed')}; "
          f"/ws oversized {st.get('ws_oversized')}")
    print(f"  vanished peer removed after {s['vanished_removed_after_s']} s; never-connected offer removed after "
          f"{s['never_connected_removed_after_s']} s")
    print(f"  overall: {'PASS' if s['pass'] else 'FAIL'}")
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load: callers from 1 upward, each its own process, until the server refuses one with 503.

    python -m benchmarks.load [--engine mesh] [--fps 15] [--size 320x240] [--window 10] [--max 12]
    python -m benchmarks.load --quick          # < 1 min: --max-callers 2 on the server, short windows

A real server (``python -m streamfx serve --ice-loopback``; its own admission decides, or
``--max-callers N``). One caller more at a time (``python -m benchmarks.server_harness
caller``); after ``--settle`` seconds every caller's frames/s and round trip (a frame's
stamped index sent -> the same index back, so decode + filter + encode + both networks +
jitter buffers) are measured over ``--window`` seconds, with the server-added latency from
``/metrics`` and the admission capacity from ``/api/info``. It stops at the first 503 (or
``--max`` callers) and reports the refusal's one-line reason.

Goal: at every admitted count, the callers' round-trip p95 within 2x the single caller's.
Caller processes share the machine's cores with the server, so on a small machine part of
what grows with the count is the callers' own encoding and decoding.

JSON and a PNG plot under ``benchmarks/results/`` (``load.json``, ``load.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from benchmarks.server_harness import (Child, ServerProcess, add_stream_args, finish_stream_args, machine, mean,
                                       percentiles, save_results, start_caller)


def _measure(callers: dict[str, Child], prober: Child, lo: float, hi: float) -> dict:
    rows = {}
    all_rtt: list[float] = []
    for cid, child in callers.items():
        samples = [x for x in child.lines if x.get("event") == "sample" and lo <= x["t"] <= hi]
        frames, dt = sum(x["frames_window"] for x in samples), sum(x["dt"] for x in samples)
        rtt = [v for x in samples for v in x["rtt_ms"]]
        all_rtt += rtt
        server = (samples[-1].get("server") or {}) if samples else {}
        rows[cid] = {"fps": round(frames / dt, 2) if dt else None, "rtt_ms": percentiles(rtt, (50, 95)),
                     "server_latency_ms": server.get("latency_ms"), "server_fps_out": server.get("fps_out"),
                     "errors": samples[-1]["errors"] if samples else None,
                     "connection": samples[-1]["connection"] if samples else None}
    metrics = [p for p in prober.lines if p.get("event") == "metrics" and p.get("status") == 200 and lo <= p["t"] <= hi]
    for cid, m in (metrics[-1]["callers"] if metrics else {}).items():
        if cid in rows:
            rows[cid]["server_latency_ms"] = {"p50": m.get("latency_p50_ms"), "p95": m.get("latency_p95_ms")}
    infos = [p for p in prober.lines if p.get("event") == "info" and lo <= p["t"] <= hi]
    fps = [r["fps"] for r in rows.values() if r["fps"] is not None]
    return {"callers": len(callers), "per_caller": rows, "rtt_ms": percentiles(all_rtt, (50, 95)),
            "fps_mean": mean(fps), "fps_min": min(fps) if fps else None,
            "capacity": infos[-1].get("capacity") if infos else None,
            "loop_lag_ms": infos[-1].get("loop_lag_ms") if infos else None,
            "api_info_ms": percentiles([p["ms"] for p in infos if p.get("status") == 200])}


async def run(args) -> dict:
    logs = args.json.parent / "logs" / "load"
    extra = ["--max-callers", str(args.max_callers)] if args.max_callers else []
    server = ServerProcess(args.engine, extra, log_path=logs / "server.log")
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    children: list[Child] = []
    steps: list[dict] = []
    refusal = None
    try:
        prober = await Child("probe", ["probe", "--base", server.base, "--interval", "0.5", "--metrics-every", "2"],
                             logs / "probe.log").start()
        children.append(prober)
        callers: dict[str, Child] = {}
        for n in range(1, args.max + 1):
            child, event = await start_caller(server.base, logs, n, args.fps, args.size, args.source)
            children.append(child)
            if not event or event.get("event") != "connected":
                refusal = {"at_caller": n, **(event or {"event": "no answer", "log": child.log_tail(300)})}
                print(f"  caller {n}: {refusal.get('event')} {refusal.get('status', '')} {refusal.get('error', '')}",
                      flush=True)
                break
            callers[event["caller"]] = child
            await asyncio.sleep(args.settle)
            lo = time.time()
            await asyncio.sleep(args.window)
            step = _measure(callers, prober, lo, time.time())
            steps.append(step)
            print(f"  {n} caller(s): fps mean {step['fps_mean']} min {step['fps_min']}, round trip p50 "
                  f"{step['rtt_ms']['p50']} p95 {step['rtt_ms']['p95']} ms, capacity {step['capacity']}", flush=True)
    finally:
        for child in children:
            await child.stop()
        code = await asyncio.get_running_loop().run_in_executor(None, server.stop)
    single = steps[0]["rtt_ms"]["p95"] if steps else None
    for step in steps:
        p95 = step["rtt_ms"]["p95"]
        step["rtt_p95_over_single"] = round(p95 / single, 3) if single and p95 is not None else None
    ok = bool(steps) and all(s["rtt_p95_over_single"] is not None and s["rtt_p95_over_single"] <= 2.0 for s in steps)
    summary = {"admitted": len(steps), "refused": refusal, "single_caller_rtt_p95_ms": single,
               "goal": "round-trip p95 of admitted callers within 2x the single caller's", "pass": ok,
               "refused_with_503": bool(refusal and refusal.get("status") == 503), "server_exit_code": code}
    return {"benchmark": "load", "machine": machine(),
            "config": {"engine": args.engine, "fps": args.fps, "size": f"{args.size[0]}x{args.size[1]}",
                       "source": args.source, "window_s": args.window, "settle_s": args.settle, "max": args.max,
                       "max_callers": args.max_callers, "server_info": server.info},
            "summary": summary, "steps": steps}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = data["steps"]
    n = [s["callers"] for s in steps]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(n, [s["rtt_ms"]["p50"] for s in steps], "o-", label="round trip p50")
    ax1.plot(n, [s["rtt_ms"]["p95"] for s in steps], "o-", label="round trip p95")
    single = data["summary"]["single_caller_rtt_p95_ms"]
    if single:
        ax1.axhline(2 * single, color="red", ls="--", lw=1, label="2x single-caller p95")
    ax1.set_xlabel("callers")
    ax1.set_ylabel("ms")
    ax1.legend(fontsize=7)
    ax2.plot(n, [s["fps_mean"] for s in steps], "o-", label="mean")
    ax2.plot(n, [s["fps_min"] for s in steps], "o-", label="min")
    ax2.axhline(data["config"]["fps"], color="grey", ls=":", lw=1, label="camera fps")
    ax2.set_xlabel("callers")
    ax2.set_ylabel("frames/s back per caller")
    ax2.legend(fontsize=7)
    refused = data["summary"]["refused"]
    note = f"refused caller {refused['at_caller']} ({refused.get('status')})" if refused else "no refusal"
    fig.suptitle(f"StreamFX load ({data['config']['engine']}): {note}: "
                 f"{'PASS' if data['summary']['pass'] else 'FAIL'}", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xticks(n or [1])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_args(parser)
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured at each count")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after a caller joins before measuring")
    parser.add_argument("--max", type=int, default=12, help="stop here if the server never refuses")
    parser.add_argument("--max-callers", type=int, default=None, help="passed to the server (default: its admission)")
    parser.add_argument("--quick", action="store_true", help="--max-callers 2 (unless given), short windows: < 1 min")
    args = parser.parse_args(argv)
    if args.quick:
        args.window, args.settle, args.max = 5.0, 2.0, 3
        args.max_callers = args.max_callers or 2
    finish_stream_args(args, "load")
    data = asyncio.run(run(args))
    save_results(args, data, plot)
    s = data["summary"]
    print(f"load ({args.engine}): {s['admitted']} caller(s) admitted; refused: "
          f"{(s['refused'] or {}).get('status')} {(s['refused'] or {}).get('error')}")
    for step in data["steps"]:
        print(f"  {step['callers']}: round trip p95 {step['rtt_ms']['p95']} ms (x{step['rtt_p95_over_single']} of one "
              f"caller), fps mean {step['fps_mean']}")
    print(f"  goal (p95 within 2x of one caller): {'PASS' if s['pass'] else 'FAIL'}")
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: a real server and N caller peers (each its own process) for many minutes.

    python -m benchmarks.soak --minutes 10 [--callers 4] [--engine mesh] [--fps 15] [--size 320x240]
    python -m benchmarks.soak --quick          # about 50 s in all: a smoke check of the whole path

Starts ``python -m streamfx serve --engine E --ice-loopback`` and N callers
(``python -m benchmarks.server_harness caller``: the head-turn clip when the test data is
there, else a grey pattern, each frame stamped with its index). Every ``--interval`` seconds
it samples the server's RSS (psutil, else /proc/PID/status), each caller's frames/s and
round trip (stamp sent -> the same stamp back), the server-added latency (``/metrics``, else
the caller's stats), the event-loop lag and the ``/api/info`` latency (a separate prober
process, every 0.5 s).

Goals (the summary says pass/fail for each): RSS growth after the first minute < 5 %; the
last minute's fps and server latency within 10 % of the second minute's (latency: or within
1 ms, below which 10 % is timer noise); no errors (no ``error`` message, no refused or
dropped caller, every probe answered). With ``--quick`` the "minute" is a third of the run.

Writes JSON (``benchmarks/results/soak.json``) and a PNG plot next to it, and prints where.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from benchmarks.server_harness import (Child, ServerProcess, add_stream_args, finish_stream_args, machine, mean,
                                       percentiles, save_results, start_caller)

LATENCY_SLACK_MS = 1.0


def _window(series: list[dict], lo: float, hi: float) -> list[dict]:
    return [s for s in series if lo <= s["t"] < hi]


def summarize(series: list[dict], duration: float, minute: float, errors: list[str], refused: list[dict],
              probes: list[dict], server_alive: bool, final_connections: dict[str, str]) -> dict:
    """The goals of the soak, from the samples."""
    out: dict = {"minute_s": minute}
    ref = next((s for s in series if s["t"] >= minute and s.get("rss_mb")), None)
    last = next((s for s in reversed(series) if s.get("rss_mb")), None)
    if ref and last:
        growth = (last["rss_mb"] - ref["rss_mb"]) / ref["rss_mb"] * 100
        out["rss"] = {"after_first_minute_mb": ref["rss_mb"], "last_mb": last["rss_mb"], "growth_pct": round(growth, 2),
                      "goal": "< 5 %", "pass": growth < 5.0}
    second, final = _window(series, minute, 2 * minute), _window(series, duration - minute, duration + 1)
    callers = sorted({c for s in series for c in s["callers"]})
    fps_rows, lat_rows = {}, {}
    for caller in callers:
        f2 = mean(s["callers"][caller]["fps"] for s in second if caller in s["callers"])
        fl = mean(s["callers"][caller]["fps"] for s in final if caller in s["callers"])
        fps_rows[caller] = {"second_minute": f2, "last_minute": fl,
                            "ratio": round(fl / f2, 3) if f2 and fl is not None else None}
        l2 = mean(s["callers"][caller].get("server_latency_p50_ms") for s in second if caller in s["callers"])
        ll = mean(s["callers"][caller].get("server_latency_p50_ms") for s in final if caller in s["callers"])
        r2 = mean(s["callers"][caller].get("rtt_p95_ms") for s in second if caller in s["callers"])
        rl = mean(s["callers"][caller].get("rtt_p95_ms") for s in final if caller in s["callers"])
        lat_rows[caller] = {"server_p50_second_minute_ms": l2, "server_p50_last_minute_ms": ll,
                            "ratio": round(ll / l2, 3) if l2 and ll is not None else None,
                            "rtt_p95_second_minute_ms": r2, "rtt_p95_last_minute_ms": rl}
    fps_ok = bool(fps_rows) and all(r["ratio"] is not None and abs(r["ratio"] - 1) <= 0.10 for r in fps_rows.values())
    lat_ok = bool(lat_rows) and all(
        r["ratio"] is not None and (abs(r["ratio"] - 1) <= 0.10
                                    or abs(r["server_p50_last_minute_ms"] - r["server_p50_second_minute_ms"])
                                    <= LATENCY_SLACK_MS)
        for r in lat_rows.values())
    out["fps"] = {"per_caller": fps_rows, "goal": "last minute within 10 % of the second", "pass": fps_ok}
    out["latency"] = {"per_caller": lat_rows, "goal": f"server p50, last minute within 10 % (or {LATENCY_SLACK_MS:g} ms) "
                      "of the second", "pass": lat_ok}
    failed_probes = [p for p in probes if p.get("status") != 200]
    info_ms = [p["ms"] for p in probes if p.get("status") == 200]
    lags = [p.get("loop_lag_ms") for p in probes if p.get("loop_lag_ms") is not None]
    out["api_info_ms"] = percentiles(info_ms)
    out["loop_lag_p99_ms_max"] = max(lags) if lags else None
    dropped = {c: state for c, state in final_connections.items() if state != "connected"}
    out["errors"] = {"error_messages": errors[:20], "n_error_messages": len(errors), "refused": refused,
                     "failed_probes": len(failed_probes), "server_alive": server_alive, "callers_not_connected": dropped,
                     "pass": not errors and not refused and not failed_probes and server_alive and not dropped}
    out["pass"] = all(out[k]["pass"] for k in ("rss", "fps", "latency", "errors") if k in out) and "rss" in out
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = data["series"]
    t = [s["t"] / 60 for s in series]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    ax = axes[0][0]
    ax.plot(t, [s.get("rss_mb") for s in series], color="tab:blue")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title("memory")
    callers = sorted({c for s in series for c in s["callers"]})
    for caller in callers:
        pts = [(s["t"] / 60, s["callers"][caller]) for s in series if caller in s["callers"]]
        axes[0][1].plot([p[0] for p in pts], [p[1]["fps"] for p in pts], label=caller[:6])
        axes[1][0].plot([p[0] for p in pts], [p[1].get("server_latency_p50_ms") for p in pts], label=f"{caller[:6]} server p50")
        axes[1][0].plot([p[0] for p in pts], [p[1].get("rtt_p95_ms") for p in pts], ls="--", label=f"{caller[:6]} round trip p95")
    axes[0][1].set_ylabel("frames/s back")
    axes[0][1].set_title("per-caller fps")
    axes[0][1].legend(fontsize=7)
    axes[1][0].set_ylabel("ms")
    axes[1][0].set_title("latency")
    axes[1][0].legend(fontsize=6)
    ax = axes[1][1]
    ax.plot(t, [s.get("loop_lag_ms") for s in series], label="loop lag p99 (server)")
    ax.plot(t, [s.get("info_ms_max") for s in series], label="/api/info max in window")
    ax.set_ylabel("ms")
    ax.set_title("server responsiveness")
    ax.legend(fontsize=7)
    for a in axes[1]:
        a.set_xlabel("minutes")
    minute = data["summary"]["minute_s"] / 60
    for row in axes:
        for a in row:
            a.axvspan(minute, 2 * minute, color="green", alpha=0.06)
            a.axvspan(t[-1] - minute if t else 0, t[-1] if t else 0, color="orange", alpha=0.06)
    verdict = "PASS" if data["summary"].get("pass") else "FAIL"
    fig.suptitle(f"StreamFX soak: {data['config']['callers']} callers, {data['config']['engine']}, "
                 f"{data['config']['minutes']:g} min: {verdict}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


async def soak(args: argparse.Namespace) -> dict:
    logs = args.json.parent / "logs" / "soak"
    extra = ["--max-callers", str(args.max_callers)] if args.max_callers else []
    server = ServerProcess(args.engine, extra, log_path=logs / "server.log")
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    children: list[Child] = []
    refused: list[dict] = []
    try:
        prober = await Child("probe", ["probe", "--base", server.base, "--interval", "0.5", "--metrics-every", "2"],
                             logs / "probe.log").start()
        children.append(prober)
        callers: dict[str, Child] = {}
        for i in range(args.callers):
            child, event = await start_caller(server.base, logs, i, args.fps, args.size, args.source)
            children.append(child)
            if event and event.get("event") == "connected":
                callers[event["caller"]] = child
            else:
                refused.append(event or {"event": "no answer", "log": child.log_tail(300)})
        if not callers:
            raise RuntimeError(f"no caller was admitted: {refused}")
        duration = args.minutes * 60
        minute = 60.0 if duration >= 180 else duration / 3
        began_wall = time.time()
        began = time.monotonic()
        series: list[dict] = []
        seen = {cid: 0 for cid in callers}
        probe_seen = 0
        next_tick = began + args.interval
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            now = time.monotonic()
            sample: dict = {"t": round(now - began, 2), "callers": {}}
            rss = server.rss()
            sample["rss_mb"] = round(rss / 2**20, 2) if rss else None
            new_probes = prober.lines[probe_seen:]
            probe_seen = len(prober.lines)
            infos = [p for p in new_probes if p.get("event") == "info"]
            metrics = [p for p in new_probes if p.get("event") == "metrics" and p.get("status") == 200]
            if infos:
                ok = [p["ms"] for p in infos if p.get("status") == 200]
                sample["info_ms_max"] = max(ok) if ok else None
                sample["info_failed"] = sum(p.get("status") != 200 for p in infos)
                sample["loop_lag_ms"] = infos[-1].get("loop_lag_ms")
                sample["capacity"] = infos[-1].get("capacity")
            per_metrics = metrics[-1]["callers"] if metrics else {}
            for cid, child in callers.items():
                lines = [x for x in child.lines[seen[cid]:] if x.get("event") == "sample"]
                seen[cid] = len(child.lines)
                if not lines:
                    continue
                frames = sum(x["frames_window"] for x in lines)
                dt = sum(x["dt"] for x in lines)
                rtt = [v for x in lines for v in x["rtt_ms"]]
                server_lat = (lines[-1].get("server") or {}).get("latency_ms") or {}
                m = per_metrics.get(cid, {})
                row = {"fps": round(frames / dt, 2) if dt else None, "rtt_p50_ms": percentiles(rtt)["p50"],
                       "rtt_p95_ms": percentiles(rtt)["p95"], "errors": lines[-1]["errors"],
                       "connection": lines[-1]["connection"],
                       "server_latency_p50_ms": m.get("latency_p50_ms", server_lat.get("p50")),
                       "server_latency_p95_ms": m.get("latency_p95_ms", server_lat.get("p95")),
                       "server_fps": m.get("fps", (lines[-1].get("server") or {}).get("fps_out"))}
                sample["callers"][cid] = row
            series.append(sample)
            if args.progress:
                fps = ", ".join(f"{r['fps']}" for r in sample["callers"].values())
                print(f"  t={sample['t']:6.0f} s  rss={sample['rss_mb']} MB  fps=[{fps}]  lag={sample.get('loop_lag_ms')} ms",
                      flush=True)
            if now - began >= duration or not server.alive():
                break
            next_tick += args.interval
        errors = [e for child in callers.values() for x in child.lines if x.get("event") == "sample"
                  for e in x.get("new_errors", [])]
        final_connections = {cid: next((x["connection"] for x in reversed(child.lines) if x.get("event") == "sample"),
                                       "never sampled") for cid, child in callers.items()}
        server_alive = server.alive()
        probes = [p for p in prober.lines if p.get("event") == "info" and p["t"] >= began_wall]
    finally:
        for child in children:
            await child.stop()
        code = await asyncio.get_running_loop().run_in_executor(None, server.stop)
    summary = summarize(series, duration, minute, errors, refused, probes, server_alive, final_connections)
    summary["server_exit_code"] = code
    return {"benchmark": "soak", "machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                                time.localtime(began_wall)),
            "config": {"minutes": args.minutes, "callers": args.callers, "engine": args.engine, "fps": args.fps,
                       "size": f"{args.size[0]}x{args.size[1]}", "source": args.source, "interval_s": args.interval,
                       "max_callers": args.max_callers, "server_info": server.info},
            "summary": summary, "series": series}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_args(parser)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-callers", type=int, default=None, help="passed to the server (default: its own)")
    parser.add_argument("--quick", action="store_true", help="30 s, 2 callers, 2 s samples: a smoke check (< 1 min)")
    parser.add_argument("--progress", action="store_true", help="print each sample")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.interval, args.callers = 0.5, 2.0, min(args.callers, 2)
    finish_stream_args(args, "soak")
    data = asyncio.run(soak(args))
    save_results(args, data, plot)
    s = data["summary"]
    print(f"soak: {len(data['series'])} samples over {args.minutes:g} min, {args.callers} callers, engine {args.engine}")
    if "rss" in s:
        print(f"  RSS {s['rss']['after_first_minute_mb']} -> {s['rss']['last_mb']} MB ({s['rss']['growth_pct']:+.2f} %, "
              f"goal < 5 %): {'pass' if s['rss']['pass'] else 'FAIL'}")
    for cid, row in s["fps"]["per_caller"].items():
        lat = s["latency"]["per_caller"][cid]
        print(f"  caller {cid[:6]}: fps {row['second_minute']} -> {row['last_minute']} (x{row['ratio']}), server p50 "
              f"{lat['server_p50_second_minute_ms']} -> {lat['server_p50_last_minute_ms']} ms, round trip p95 "
              f"{lat['rtt_p95_second_minute_ms']} -> {lat['rtt_p95_last_minute_ms']} ms")
    print(f"  fps goal: {'pass' if s['fps']['pass'] else 'FAIL'}; latency goal: {'pass' if s['latency']['pass'] else 'FAIL'}; "
          f"errors: {'none' if s['errors']['pass'] else s['errors']}")
    print(f"  /api/info ms {s['api_info_ms']}, loop lag p99 (max reported) {s['loop_lag_p99_ms_max']} ms")
    print(f"  overall: {'PASS' if s['pass'] else 'FAIL'}")
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

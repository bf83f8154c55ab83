"""``/metrics``: the server's numbers in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from typing import Iterable


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _line(name: str, value: float | int | None, **labels: str) -> str | None:
    if value is None:
        return None
    label = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return f"{name}{{{label}}} {float(value):g}" if label else f"{name} {float(value):g}"


def render(callers: Iterable[dict], capacity: int | None, loop_lag_ms: float, engine_state: str) -> str:
    """Text for ``callers`` (each a caller summary: ``caller``, ``fps_out``, ``dropped``,
    ``frames_out``, ``errors``, ``latency_ms``), the admission capacity and the loop lag."""
    callers = list(callers)
    families = [
        ("streamfx_up", "gauge", "1 when the engine is ready", [_line("streamfx_up", engine_state == "ready")]),
        ("streamfx_callers", "gauge", "connected callers", [_line("streamfx_callers", len(callers))]),
        ("streamfx_capacity", "gauge", "callers the measured cost admits (absent: not measured yet)",
         [_line("streamfx_capacity", capacity)]),
        ("streamfx_loop_lag_ms", "gauge", "event-loop lag p99 over the last minute, ms",
         [_line("streamfx_loop_lag_ms", loop_lag_ms)]),
        ("streamfx_caller_fps", "gauge", "filtered frames per second sent to the caller",
         [_line("streamfx_caller_fps", c.get("fps_out"), caller=c["caller"]) for c in callers]),
        ("streamfx_frames_total", "counter", "filtered frames sent",
         [_line("streamfx_frames_total", c.get("frames_out"), caller=c["caller"]) for c in callers]),
        ("streamfx_frames_dropped_total", "counter", "frames dropped because a newer one arrived",
         [_line("streamfx_frames_dropped_total", c.get("dropped"), caller=c["caller"]) for c in callers]),
        ("streamfx_frame_errors_total", "counter", "frames the engine failed on",
         [_line("streamfx_frame_errors_total", c.get("errors"), caller=c["caller"]) for c in callers]),
        ("streamfx_latency_ms", "gauge", "server-added latency per frame, ms",
         [_line("streamfx_latency_ms", (c.get("latency_ms") or {}).get(key), caller=c["caller"], quantile=q)
          for c in callers for key, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"))]),
    ]
    out: list[str] = []
    for name, kind, help_text, lines in families:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        out += [line for line in lines if line is not None]
    return "\n".join(out) + "\n"

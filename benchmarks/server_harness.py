"""Shared pieces of the server benchmarks (``soak``, ``fault_storm``, ``load``).

* :class:`ServerProcess`: a real ``python -m streamfx serve --ice-loopback`` in its own
  process (its RSS is read with psutil when installed, else from ``/proc/PID/status``).
* Caller peers, each in its own process, and an ``/api/info`` prober in its own process,
  so that what they measure is not slowed down by the benchmark's own event loop::

      python -m benchmarks.server_harness caller --base http://127.0.0.1:PORT [--fps 15] [--size 320x240]
      python -m benchmarks.server_harness probe --base http://127.0.0.1:PORT [--interval 0.2]

  Both print one JSON object per line on stdout. A caller prints ``connected`` (with its
  caller id), or ``refused`` (HTTP status and error) and exits with code 3; then a
  ``sample`` every ``--report-s`` seconds: frames back, fps, the round-trip times of that
  window (each frame carries its index as black/white blocks, read back from the returned
  frame), control messages received (``error`` ones listed), the server's own stats from
  the data channel; ``closed`` when SIGTERM/SIGINT ends it. The prober prints one line per
  ``/api/info`` request (status, milliseconds, ``loop_lag_ms``, ``callers``, ``capacity``)
  and, every ``--metrics-every`` probes, the parsed ``/metrics``.
* :class:`HarnessCaller`: the aiortc peer used by the caller process and, in-process, by
  the storm (join/leave callers, a control-message target, a peer that vanishes).
* The storm's payloads: malformed and oversized control messages, corrupt, small and
  40-Mpixel prompt images.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import RESULTS, TESTDATA, machine, percentiles, write_json  # noqa: F401 (re-exported)

PYTHON = sys.executable
BITS = 10  # the frame index as 10 blocks of 24x24 (tests/server/rtc_client.py uses the same code)
VIDEO = TESTDATA / "video" / "head_turn_1.mp4"


# -- small utilities ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (psutil when installed, else /proc/PID/status VmRSS)."""
    try:
        import psutil  # type: ignore

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process is gone
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def http_get(url: str, timeout: float = 2.0) -> tuple[int | None, bytes, float]:
    """(status or None when there was no answer, body, milliseconds)."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (OSError, ValueError):
        body, status = b"", None
    return status, body, (time.perf_counter() - began) * 1e3


_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> {metric name: [(labels, value), ...]} (comments skipped)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, value))
    return out


def metrics_by_caller(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, dict[str, float]]:
    """Per-caller numbers from parsed ``/metrics``: fps, dropped, latency p50/p95."""
    callers: dict[str, dict[str, float]] = {}
    for labels, value in metrics.get("streamfx_caller_fps", []):
        callers.setdefault(labels.get("caller", "?"), {})["fps"] = value
    for labels, value in metrics.get("streamfx_frames_dropped_total", []):
        callers.setdefault(labels.get("caller", "?"), {})["dropped"] = value
    for labels, value in metrics.get("streamfx_latency_ms", []):
        q = labels.get("quantile")
        if q in ("0.5", "0.95", "0.99"):
            callers.setdefault(labels.get("caller", "?"), {})[f"latency_p{round(float(q) * 100)}_ms"] = value
    return callers


def metric_value(metrics: dict, name: str) -> float | None:
    values = metrics.get(name)
    return values[0][1] if values else None


# -- the server process ---------------------------------------------------------------------
class ServerProcess:
    """``python -m streamfx serve --engine E --ice-loopback --port P [extra]`` until ``stop()``."""

    def __init__(self, engine: str = "mesh", extra: list[str] | tuple[str, ...] = (), log_path: Path | None = None,
                 port: int | None = None) -> None:
        self.engine, self.extra = engine, list(extra)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or (RESULTS / "logs" / f"server_{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self, timeout: float = 180.0) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        env = dict(os.environ, STREAMFX_ICE_LOOPBACK="1")
        cmd = [PYTHON, "-m", "streamfx", "serve", "--port", str(self.port), "--engine", self.engine,
               "--ice-loopback", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            status, body, _ = http_get(f"{self.base}/api/info", timeout=2)
            if status == 200:
                self.info = json.loads(body)
                if self.info.get("state") == "ready":
                    return self
                if self.info.get("state") == "failed":
                    raise RuntimeError(f"engine failed to load: {self.info.get('error')}")
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout:.0f} s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int | None:
        return rss_bytes(self.pid) if self.alive() else None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """Ctrl-C (a clean shutdown), then a kill if it does not exit in time; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- child processes that print JSON lines ----------------------------------------------------
class Child:
    """A ``python -m benchmarks.server_harness ...`` child; its stdout JSON lines collect in ``lines``."""

    def __init__(self, name: str, args: list[str], log_path: Path, on_line: Callable[[dict], None] | None = None):
        self.name, self.args, self.log_path, self.on_line = name, args, log_path, on_line
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict] = []
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def start(self) -> "Child":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "benchmarks.server_harness", *self.args,
                                                         stdout=asyncio.subprocess.PIPE, stderr=log,
                                                         env=dict(os.environ, STREAMFX_ICE_LOOPBACK="1"))
        log.close()
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(item)
            if self.on_line is not None:
                self.on_line(item)
            self._changed.set()
        self._changed.set()

    def events(self, kind: str) -> list[dict]:
        return [x for x in self.lines if x.get("event") == kind]

    async def wait_event(self, kinds: tuple[str, ...], timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for item in self.lines:
                if item.get("event") in kinds:
                    return item
            if self.proc is not None and self.proc.returncode is not None and self._reader and self._reader.done():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except asyncio.TimeoutError:
                self._reader.cancel()
        return self.proc.returncode

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def caller_args(base: str, fps: float, size: tuple[int, int], source: str, report_s: float = 1.0,
                token: str | None = None) -> list[str]:
    args = ["caller", "--base", base, "--fps", str(fps), "--size", f"{size[0]}x{size[1]}", "--source", source,
            "--report-s", str(report_s)]
    return args + (["--token", token] if token else [])


async def start_caller(base: str, log_dir: Path, index: int, fps: float, size: tuple[int, int], source: str,
                       report_s: float = 1.0, timeout: float = 45.0) -> tuple[Child, dict | None]:
    """A caller process; returns it with its ``connected``/``refused``/``failed`` event (None: no answer)."""
    child = await Child(f"caller{index}", caller_args(base, fps, size, source, report_s),
                        log_dir / f"caller{index}.log").start()
    event = await child.wait_event(("connected", "refused", "failed"), timeout)
    return child, event


# -- the command line shared by soak, fault_storm and load ------------------------------------
def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """--engine, --fps, --size, --source (what the callers stream) and --json, --png (the results)."""
    parser.add_argument("--engine", default="mesh")
    parser.add_argument("--fps", type=float, default=15.0, help="each caller's camera rate")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--source", choices=("auto", "video", "pattern"), default="auto")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)


def finish_stream_args(args: argparse.Namespace, name: str) -> None:
    """``--size`` as (w, h); results as ``benchmarks/results/NAME[_quick].json`` and ``.png`` by default."""
    args.size = tuple(int(v) for v in args.size.split("x"))
    args.json = args.json or RESULTS / f"{name}{'_quick' if args.quick else ''}.json"
    args.png = args.png or args.json.with_suffix(".png")


def save_results(args: argparse.Namespace, data: dict, plot: Callable[[dict, Path], None]) -> None:
    write_json(args.json, data)
    plot(data, args.png)


# -- frames: the stamped camera -----------------------------------------------------------------
def stamp(frame: np.ndarray, index: int) -> None:
    """Write ``index`` into the top-left of ``frame`` as 10 blocks of 24x24 (inside a 16 px border),
    big enough to survive VP8."""
    for bit in range(BITS):
        frame[24:48, 24 + 24 * bit:48 + 24 * bit] = 255 if (index >> bit) & 1 else 0


def read_stamp(gray: np.ndarray) -> int:
    """The index from a returned frame (luma or RGB)."""
    value = 0
    for bit in range(BITS):
        if gray[30:42, 30 + 24 * bit:42 + 24 * bit].mean() > 127:
            value |= 1 << bit
    return value


def load_source(source: str, size: tuple[int, int], limit: int = 60) -> list[np.ndarray] | None:
    """Camera frames: ``video`` (the head-turn clip placed on a grey canvas, played forth and
    back), ``pattern`` (None: plain grey) or ``auto`` (the video when the test data is here)."""
    if source == "pattern" or (source == "auto" and not VIDEO.is_file()):
        return None
    import av
    import cv2

    w, h = size
    scale = 0.8 * h / 512
    frames: list[np.ndarray] = []
    with av.open(str(VIDEO)) as container:
        for frame in container.decode(video=0):
            img = frame.to_ndarray(format="rgb24")
            fh, fw = img.shape[:2]
            sw, sh = max(1, round(fw * scale)), max(1, round(fh * scale))
            small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
            canvas = np.full((h, w, 3), 120, np.uint8)
            x0, y0 = (w - sw) // 2, h - sh
            canvas[max(0, y0):y0 + sh, max(0, x0):x0 + sw] = small[max(0, -y0):, max(0, -x0):][:h, :w]
            frames.append(canvas)
            if len(frames) >= limit:
                break
    return frames + frames[-2:0:-1]  # forth and back, no jump


def stamp_track_class():
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class StampTrack(VideoStreamTrack):
        """A camera at ``fps``: grey or the clip's frames, each with its index stamped."""

        def __init__(self, width: int, height: int, fps: float, frames: list[np.ndarray] | None) -> None:
            super().__init__()
            self.width, self.height, self.fps, self.frames = width, height, fps, frames
            self.index = 0
            self.sent_at: dict[int, float] = {}
            self._start: float | None = None

        async def recv(self) -> VideoFrame:
            if self._start is None:
                self._start = time.monotonic()
            wait = self._start + self.index / self.fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:  # far behind (a busy machine): skip ahead instead of bursting
                self._start = time.monotonic() - self.index / self.fps
            if self.frames:
                img = self.frames[self.index % len(self.frames)].copy()
            else:
                img = np.full((self.height, self.width, 3), 120, np.uint8)
            code = self.index % (1 << BITS)
            stamp(img, code)
            frame = VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(self.index * 90000 / self.fps)
            frame.time_base = fractions.Fraction(1, 90000)
            self.sent_at[code] = time.monotonic()
            self.index += 1
            return frame

    return StampTrack


class Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"{status}: {error}")
        self.status, self.error = status, error


class HarnessCaller:
    """A real aiortc peer: sends a stamped camera, counts the frames that come back and their
    round trip, and keeps the control messages it receives."""

    def __init__(self, size: tuple[int, int] = (320, 240), fps: float = 15.0,
                 frames: list[np.ndarray] | None = None, read_stamps: bool = True) -> None:
        from aiortc import RTCPeerConnection

        from streamfx.server import ice

        ice.enable_loopback_candidates()
        self.pc = RTCPeerConnection(ice.rtc_configuration())
        self.track = stamp_track_class()(size[0], size[1], fps, frames)
        self.pc.addTrack(self.track)
        self.channel = self.pc.createDataChannel("control")
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.read_stamps = read_stamps
        self.caller_id: str | None = None
        self.frames = 0
        self.first_frame = asyncio.Event()
        self.messages: dict[str, int] = {}
        self.errors: list[str] = []
        self.replies: list[dict] = []     # every non-stats message, in order
        self.last_stats: dict | None = None
        self._window_frames = 0
        self._window_rtt: list[float] = []
        self._window_start = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    def _on_message(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except ValueError:
            msg = {"type": "?"}
        kind = str(msg.get("type"))
        self.messages[kind] = self.messages.get(kind, 0) + 1
        if kind == "stats":
            self.last_stats = msg
            return
        self.replies.append(msg)
        if kind == "error":
            self.errors.append(str(msg.get("message"))[:200])

    def _on_track(self, remote) -> None:
        from aiortc.mediastreams import MediaStreamError

        async def pull() -> None:
            try:
                while True:
                    frame = await remote.recv()
                    now = time.monotonic()
                    self.frames += 1
                    self._window_frames += 1
                    self.first_frame.set()
                    if self.read_stamps:
                        code = read_stamp(frame.to_ndarray(format="gray"))
                        sent = self.track.sent_at.get(code)
                        if sent is not None and 0 <= now - sent < 5.0:
                            self._window_rtt.append((now - sent) * 1e3)
            except MediaStreamError:
                pass

        self._tasks.append(asyncio.ensure_future(pull()))

    async def connect(self, base: str, token: str | None = None, timeout: float = 30.0) -> dict:
        import aiohttp
        from aiortc import RTCSessionDescription

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        headers = {"X-StreamFX-Token": token} if token else {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.post(f"{base}/offer", json=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                if resp.status != 200:
                    raise Refused(resp.status, str((answer or {}).get("error")))
        self.caller_id = answer["caller"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return answer

    def take_window(self) -> dict:
        now = time.monotonic()
        dt = max(now - self._window_start, 1e-6)
        rtt = self._window_rtt
        out = {"frames_window": self._window_frames, "fps": round(self._window_frames / dt, 2),
               "rtt_ms": [round(v, 1) for v in rtt], "dt": round(dt, 3)}
        self._window_frames, self._window_rtt, self._window_start = 0, [], now
        return out

    def send(self, text: str | bytes) -> None:
        self.channel.send(text)

    def allow_oversized(self) -> None:
        """Let this peer send data-channel messages over the size the server advertises
        (a hostile client ignores ``a=max-message-size``)."""
        if self.pc.sctp is not None:
            self.pc.sctp._remote_max_message_size = 0  # 0: no limit

    def vanish(self) -> None:
        """The peer disappears without a word: its UDP sockets close, nothing is sent (no DTLS
        close_notify, no SCTP ABORT, no RTCP BYE). The server only notices by ICE consent
        checks going unanswered (or its own liveness timeout)."""
        seen = set()
        for transport in [t.sender.transport for t in self.pc.getTransceivers()] + \
                         ([self.pc.sctp.transport] if self.pc.sctp is not None else []):
            if transport is None:
                continue
            connection = transport.transport._connection
            if id(connection) in seen:
                continue
            seen.add(id(connection))
            task = getattr(connection, "_query_consent_task", None)
            if task is not None:
                task.cancel()
            for protocol in list(connection._protocols):
                if getattr(protocol, "transport", None) is not None:
                    protocol.transport.close()
        self.track.stop()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), 10)
        except Exception:  # noqa: BLE001 - a vanished peer may not close cleanly; it is gone anyway
            pass


# -- the caller process ---------------------------------------------------------------------
def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def caller_main(args: argparse.Namespace) -> int:
    size = tuple(int(v) for v in args.size.split("x"))
    frames = load_source(args.source, size)
    caller = HarnessCaller(size, args.fps, frames)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await caller.connect(args.base, args.token)
    except Refused as exc:
        _emit({"event": "refused", "status": exc.status, "error": exc.error, "t": time.time()})
        await caller.close()
        return 3
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _emit({"event": "failed", "error": f"{type(exc).__name__}: {exc}"[:300], "t": time.time()})
        await caller.close()
        return 1
    _emit({"event": "connected", "caller": caller.caller_id, "t": time.time(),
           "source": "video" if frames else "pattern"})
    began = time.monotonic()
    seen_errors = 0
    caller.take_window()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), args.report_s)
        except asyncio.TimeoutError:
            pass
        window = caller.take_window()
        stats = caller.last_stats or {}
        _emit({"event": "sample", "t": time.time(), "caller": caller.caller_id, "frames": caller.frames,
               "sent": caller.track.index, **window, "errors": len(caller.errors),
               "new_errors": caller.errors[seen_errors:seen_errors + 5], "connection": caller.pc.connectionState,
               "server": {k: stats.get(k) for k in ("fps_out", "latency_ms", "dropped", "errors", "frames_out",
                                                    "queued")}})
        seen_errors = len(caller.errors)
        if args.seconds and time.monotonic() - began >= args.seconds:
            break
    await caller.close()
    _emit({"event": "closed", "t": time.time(), "frames": caller.frames, "errors": len(caller.errors),
           "messages": caller.messages})
    return 0


async def probe_main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        status, body, ms = await loop.run_in_executor(None, http_get, f"{args.base}/api/info", args.timeout)
        line: dict[str, Any] = {"event": "info", "t": time.time(), "status": status, "ms": round(ms, 2)}
        if status == 200:
            try:
                info = json.loads(body)
                line |= {k: info.get(k) for k in ("state", "callers", "capacity", "loop_lag_ms")}
            except ValueError:
                line["status"] = "bad json"
        _emit(line)
        n += 1
        if args.metrics_every and n % args.metrics_every == 0:
            status, body, ms = await loop.run_in_executor(None, http_get, f"{args.base}/metrics", args.timeout)
            line = {"event": "metrics", "t": time.time(), "status": status, "ms": round(ms, 2)}
            if status == 200:
                parsed = parse_prometheus(body.decode(errors="replace"))
                line |= {"callers_n": metric_value(parsed, "streamfx_callers"),
                         "loop_lag_ms": metric_value(parsed, "streamfx_loop_lag_ms"),
                         "callers": metrics_by_caller(parsed)}
            _emit(line)
        next_at += args.interval
        delay = next_at - time.monotonic()
        if delay < 0:
            next_at = time.monotonic()
            delay = 0
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass
    return 0


# -- storm payloads ------------------------------------------------------------------------------
def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def prompt_image(data: bytes | str) -> str:
    url = data if isinstance(data, str) else data_url(data)
    return json.dumps({"type": "prompt", "image": url})


def png_bytes(width: int, height: int, rng: random.Random | None = None, mode: str = "RGB") -> bytes:
    from PIL import Image

    if rng is None:
        image = Image.new(mode, (width, height), (120, 90, 60) if mode == "RGB" else 0)
    else:
        arr = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (height, width, 3), np.uint8)
        image = Image.fromarray(arr)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=9)
    return out.getvalue()


_HUGE: dict[tuple[int, int], bytes] = {}


def huge_png(width: int = 6400, height: int = 6250) -> bytes:
    """A plain RGB PNG of width x height (default 40 Mpixel, about 115 KB: it fits a control
    message, and decoding it costs the server about a second of CPU)."""
    if (width, height) not in _HUGE:
        _HUGE[(width, height)] = png_bytes(width, height)
    return _HUGE[(width, height)]


def corrupt_images(rng: random.Random, n: int) -> list[str]:
    """``n`` prompt messages whose image cannot be used (each must get an ``error``)."""
    good = png_bytes(64, 64, rng)
    makers = [
        lambda: prompt_image(bytes(rng.randrange(256) for _ in range(2000))),          # random bytes
        lambda: prompt_image(good[: len(good) // 2]),                                   # truncated PNG
        lambda: prompt_image(good[:33] + bytes(rng.randrange(256) for _ in range(200))),  # header + junk
        lambda: prompt_image(b"\xff\xd8\xff\xe0" + bytes(300)),                       # a JPEG header, no image
        lambda: prompt_image("data:image/png;base64,@@@@" + "A" * 100),                # not base64
        lambda: prompt_image("data:image/png," + "A" * 100),                            # not a base64 data URL
        lambda: prompt_image(png_bytes(8, 8, rng)),                                      # too small
        lambda: prompt_image(""),                                                        # empty
    ]
    return [makers[i % len(makers)]() for i in range(n)]


MALFORMED: list[str | bytes] = [
    "{not json", "", "[]", "null", '"hello"', "42", "[" * 50 + "]" * 50, '{"type": 5}', '{"no": "type"}',
    '{"type": "nope"}', '{"type": "pose", "mode": "sideways"}', '{"type": "pose", "mode": ["follow"]}',
    '{"type": "pose", "yaw": "left"}', '{"type": "pose", "yaw": 1e999}', '{"type": "pose", "pitch": NaN}',
    '{"type": "pose", "yaw": 500}', '{"type": "strength", "value": 7}', '{"type": "strength", "value": true}',
    '{"type": "strength"}', '{"type": "bypass", "on": "yes"}', '{"type": "quality", "preset": ""}',
    '{"type": "quality", "preset": "no-such-quality"}', '{"type": "quality", "preset": ' + json.dumps("q" * 500) + "}",
    '{"type": "prompt"}', '{"type": "prompt", "image": 5}', '{"type": "prompt", "image": "http://example.com/x.png"}',
    '{"type": "prompt", "image": "data:image/png;base64,@@@"}', '{"type": "prompt", "preset": ["a"]}',
    '{"type": "prompt", "text": ""}', '{"type": "prompt", "clear": "yes"}',
    b"\xff\xfe\x00garbage", b'{"type": "hello"', "\x00\x01\x02",
    # found by the fuzz test: numbers too large for a float, nesting deeper than the recursion limit
    '{"type": "strength", "value": ' + "9" * 400 + "}", "[" * 100_000,
]


def malformed_messages(n: int) -> list[str | bytes]:
    return [MALFORMED[i % len(MALFORMED)] for i in range(n)]


def oversized_message(nbytes: int = 300 * 1024) -> str:
    """A prompt message over the 256 KiB control limit (its data URL alone is ``nbytes``)."""
    return json.dumps({"type": "prompt", "image": "data:image/png;base64," + "A" * nbytes})


# -- shared summary helpers -----------------------------------------------------------------------
def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="StreamFX benchmark helpers (caller peer, /api/info prober)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("caller", help="one caller peer streaming a stamped camera; JSON lines on stdout")
    c.add_argument("--base", required=True)
    c.add_argument("--fps", type=float, default=15.0)
    c.add_argument("--size", default="320x240")
    c.add_argument("--source", choices=("auto", "video", "pattern"), default="auto")
    c.add_argument("--report-s", type=float, default=1.0)
    c.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until SIGTERM)")
    c.add_argument("--token", default=None)
    p = sub.add_parser("probe", help="GET /api/info every --interval s; JSON lines on stdout")
    p.add_argument("--base", required=True)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--metrics-every", type=int, default=5, help="GET /metrics every N probes (0: never)")
    args = parser.parse_args(argv)
    if args.cmd == "caller":
        from streamfx.server import ice

        ice.enable_loopback_candidates()
        return asyncio.run(caller_main(args))
    return asyncio.run(probe_main(args))


if __name__ == "__main__":
    sys.exit(main())

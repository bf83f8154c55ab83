"""A throwaway Janus VideoRoom behind Debian's simple-whip-server, reachable from this host only.

``JanusRoom`` starts Debian's ``janus`` (VideoRoom plugin; HTTP and WebSocket transports, both
on 127.0.0.1) with a private config in a temporary folder, and meetecho's simple-whip-server
(Node.js), which talks to Janus over the WebSocket transport; it creates one WHIP endpoint that
publishes into one VideoRoom room. A WHIP client POSTs its offer to :attr:`JanusRoom.whip_url`
(with ``Authorization: Bearer <token>``); the test then asks Janus itself, over its HTTP API,
what the room holds, and subscribes to the publisher with an aiortc peer::

    async with JanusRoom() as room:
        ...  # publish to room.whip_url with room.token
        publisher = await room.wait_for_publisher()
        kinds = {s["type"] for s in await room.publisher_streams()}   # {"audio", "video"}
        got = await room.subscribe_frames(10, timeout=20)
        assert got.video_frames >= 10 and got.audio_frames > 0

Leaving the ``async with`` block (also on an error) kills both processes and removes the
temporary folder; the processes also die with the Python process (``setpriv --pdeathsig``), and a
folder a killed process left behind goes at the next start.

Finding simple-whip-server: the Debian package (``/usr/share/simple-whip-server``), or a copy
unpacked by ``unpack_whip_server.sh`` (``$STREAMFX_WHIP_SERVER_ROOT``, else
``~/.cache/streamfx/simple-whip-server``) where ``apt-get install simple-whip-server`` is
impossible (NodeSource's ``nodejs`` conflicts with Debian's ``libnode108``). Its config file is
a fixed ``src/config.js``, and it listens on all interfaces; a small ``node -r`` preload makes it
load our config instead and bind 127.0.0.1 on a free port, without changing its files.

ICE: Janus 1.1 never gathers candidates on a loopback interface (``janus_ice_setup_local`` in
ice.c skips ``IFF_LOOPBACK``), so ``ice_enforce_list = "lo"`` matches nothing and libnice falls back
to every other address, IPv6 included. Instead Janus gets ``ice_enforce_list = <one IPv4 address
of an interface that is up>`` (:func:`ice_address`): both peers then meet on that address, and
packets between two addresses of one host never leave it (the kernel routes them through ``lo``).
No STUN, no TURN, half-trickle (candidates travel in the SDP). The HTTP and WebSocket transports
and the WHIP API listen on 127.0.0.1 only. Nothing here needs root.
"""

from __future__ import annotations

import asyncio
import fcntl
import glob
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aiohttp
import ifaddr   # aioice's dependency (aiortc's ICE), lists interfaces and their addresses
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

JANUS = shutil.which("janus")
NODE = shutil.which("node") or shutil.which("nodejs")
SERVER_JS = "usr/share/simple-whip-server/src/server.js"
# Where node looks for Debian's node-* packages, below / or an unpacked root.
NODE_DIRS = ("usr/share/nodejs", "usr/lib/nodejs", "usr/lib/x86_64-linux-gnu/nodejs",
             "usr/lib/aarch64-linux-gnu/nodejs")

# Loads our config.js instead of the package's fixed src/config.js (a symlink to /etc), binds the
# REST API to 127.0.0.1 (the server passes only a port to listen()) and prints the bound port.
_PRELOAD_JS = r"""
const Module = require('module'), http = require('http'), path = require('path');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, parent, ...rest) {
  if (request === './config.js' && parent && path.basename(parent.filename) === 'server.js')
    return process.env.WHIP_SERVER_CONFIG;
  return resolve.call(this, request, parent, ...rest);
};
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (port, ...rest) {
  if (typeof port !== 'number') return listen.call(this, port, ...rest);
  this.once('listening', () => console.log('WHIP REST API bound to 127.0.0.1:' + this.address().port));
  return listen.call(this, port, '127.0.0.1', ...rest);
};
"""


def janus_lib_dir() -> Path | None:
    """The folder holding Janus's ``plugins/`` and ``transports/`` (Debian: /usr/lib/<triplet>/janus)."""
    for pattern in ("/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus"):
        for path in sorted(glob.glob(pattern)):
            if (Path(path) / "plugins" / "libjanus_videoroom.so").exists():
                return Path(path)
    return None


def whip_server_root() -> Path | None:
    """The root below which ``usr/share/simple-whip-server/src/server.js`` lives: an unpacked copy
    named by ``$STREAMFX_WHIP_SERVER_ROOT``, the installed package, or the default unpacked copy."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamfx" / "simple-whip-server"
    roots = [os.environ["STREAMFX_WHIP_SERVER_ROOT"]] if os.environ.get("STREAMFX_WHIP_SERVER_ROOT") else []
    for root in map(Path, [*roots, "/", cache]):
        if (root / SERVER_JS).is_file():
            return root
    return None


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (SO_REUSEADDR: a TIME_WAIT left there is not)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _interface_flags(name: str) -> int:
    """The kernel's flags of an interface as getifaddrs() reports them (IFF_RUNNING included,
    which /sys/class/net/*/flags leaves out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        reply = fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH14x", name.encode()[:15], 0))   # SIOCGIFFLAGS
    return struct.unpack("16sH14x", reply)[1]


def ice_address() -> str | None:
    """An IPv4 address of a non-loopback interface that is up and running (what Janus's ICE can
    gather on), or None where there is only ``lo``."""
    up, running, loopback = 0x1, 0x40, 0x8
    for adapter in ifaddr.get_adapters():
        try:
            flags = _interface_flags(adapter.name)
        except OSError:
            continue
        if flags & loopback or flags & (up | running) != up | running:
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("169.254."):
                return ip.ip
    return None


def missing() -> str | None:
    """Why :class:`JanusRoom` cannot run here (for ``pytest.mark.skipif``), or None."""
    if JANUS is None or janus_lib_dir() is None:
        return "Janus with its VideoRoom plugin is not installed (apt-get install janus)"
    if NODE is None:
        return "node is not installed (apt-get install nodejs)"
    if whip_server_root() is None:
        return ("simple-whip-server is not installed (apt-get install simple-whip-server, or "
                "tests/interop/unpack_whip_server.sh where NodeSource's nodejs blocks it)")
    if ice_address() is None:
        return ("no network interface but lo is up, and Janus 1.1 never gathers ICE candidates on "
                "loopback interfaces (ice.c skips IFF_LOOPBACK)")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DIR_PREFIX = "streamfx-janus-"


def _remove_stale_dirs() -> None:
    """Remove temporary folders left by JanusRooms whose Python process was killed (their
    children died with it, see ``_DIE_WITH_PARENT``, but nothing could remove the folder)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*-*"):
        pid = path.name[len(_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:   # alive, someone else's
            pass


# Children get SIGKILL when the thread that started them dies (PR_SET_PDEATHSIG), so a killed test
# run leaves no Janus behind. setpriv is util-linux's (Essential in Debian); a preexec_fn would
# do the same but is not safe with threads (aiortc's codecs run some).
_DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


class JanusError(RuntimeError):
    pass


class _PortTaken(Exception):
    pass


class _Process:
    """A child process whose stdout and stderr go to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen([*_DIE_WITH_PARENT, *argv], stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> JanusError:
        state = f"exited with {self.popen.returncode}" if self.popen.poll() is not None else "still running"
        return JanusError(f"{self.name} {what} ({state}); last lines of {self.log.name}:\n{self.tail() or '(empty)'}")

    def stop(self, grace_s: float = 3.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Subscription:
    """What :meth:`JanusRoom.subscribe_frames` received through Janus."""

    offer_media: list[str]                  # the m= lines of Janus's offer, e.g. ["audio", "video"]
    video_frames: int = 0
    audio_frames: int = 0
    last_video: np.ndarray | None = None    # the last decoded video frame, (H, W, 3) uint8 RGB
    elapsed_s: float = 0.0


class JanusApi:
    """One Janus session on the HTTP transport, with one VideoRoom handle and an event long-poll."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.session: int | None = None
        self.handle: int | None = None
        self._events: list[dict[str, Any]] = []

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": secrets.token_hex(6)}
        async with self.http.post(f"{self.base}{path}", json=body) as resp:
            reply = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"Janus {body['janus']} failed: {reply['error']}")
        return reply

    async def __aenter__(self) -> "JanusApi":
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        reply = await self._post(f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        self.handle = reply["data"]["id"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            try:
                await self._post(f"/{self.session}", {"janus": "destroy"})
            except (aiohttp.ClientError, JanusError):
                pass

    async def request(self, body: dict[str, Any], jsep: dict[str, str] | None = None) -> dict[str, Any]:
        """A synchronous VideoRoom request (``listparticipants``, ``exists``…): the plugin's data."""
        message = {"janus": "message", "body": body, **({"jsep": jsep} if jsep else {})}
        reply = await self._post(f"/{self.session}/{self.handle}", message)
        if reply.get("janus") == "ack":   # an asynchronous request: the caller waits for its event
            return {}
        data = reply["plugindata"]["data"]
        if "error" in data:
            raise JanusError(f"VideoRoom {body['request']} failed: {data['error']}")
        return data

    async def event(self, want: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The next event (``GET /janus/<session>?maxev=1`` long-polls) for which ``want`` is true;
        raises on a VideoRoom error event or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                data = event.get("plugindata", {}).get("data", {})
                if "error" in data:
                    raise JanusError(f"VideoRoom error event: {data['error']}")
                if want(event):
                    self._events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no such Janus event in {timeout:.0f} s; got {self._events}")
            try:
                async with self.http.get(f"{self.base}/{self.session}", params={"maxev": "1"},
                                         timeout=aiohttp.ClientTimeout(total=left)) as resp:
                    got = await resp.json(content_type=None)
            except asyncio.TimeoutError:
                continue
            for event in got if isinstance(got, list) else [got]:
                if event.get("janus") != "keepalive":
                    self._events.append(event)


class JanusRoom:
    """Janus (VideoRoom) + simple-whip-server on free 127.0.0.1 ports, with one WHIP endpoint.

    Use as ``async with JanusRoom() as room`` (or ``await start()`` / ``await stop()``).
    ``token=None`` makes an endpoint that takes no Authorization header.
    """

    def __init__(self, room: int = 1234, endpoint: str = "interop", token: str | None = "interop-token",
                 start_timeout_s: float = 15.0, debug_level: int = 4) -> None:
        self.room, self.endpoint, self.token = room, endpoint, token
        self.start_timeout_s, self.debug_level = start_timeout_s, debug_level
        self.janus_http = self.whip_base = ""
        self.ice_ip = ""                      # the address Janus gathers ICE candidates on
        self.timings: dict[str, float] = {}   # seconds: "janus", "whip_server", "endpoint", "stop"
        self._dir: Path | None = None
        self._janus: _Process | None = None
        self._whip: _Process | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def whip_url(self) -> str:
        """The WHIP endpoint a client POSTs its SDP offer to."""
        return f"{self.whip_base}/whip/endpoint/{self.endpoint}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def __aenter__(self) -> "JanusRoom":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        reason = missing()
        if reason:
            raise JanusError(reason)
        _remove_stale_dirs()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-"))
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            await self._start_janus()
            await self._start_whip_server()
            await self._create_endpoint()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Kill both processes and remove the temporary folder; safe to call twice."""
        started = time.monotonic()
        for process in (self._whip, self._janus):
            if process is not None:
                process.stop()
        if self._janus is not None:
            self.timings["stop"] = time.monotonic() - started
        self._whip = self._janus = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _write_janus_config(self, http_port: int, ws_port: int) -> Path:
        """Janus's configs folder. Plugin and transport folders hold links to just the VideoRoom
        plugin and the HTTP and WebSocket transports, so nothing else loads; no loggers, no event
        handlers, no STUN, ICE on :attr:`ice_ip` only, half-trickle (candidates travel in the SDP)."""
        assert self._dir is not None
        lib = janus_lib_dir()
        assert lib is not None
        folders = {name: self._dir / name for name in ("conf", "plugins", "transports", "events", "loggers")}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        for kind, name in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so"),
                           ("transports", "libjanus_websockets.so")):
            if not (folders[kind] / name).is_symlink():
                (folders[kind] / name).symlink_to(lib / kind / name)
        conf = folders["conf"]
        (conf / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{conf}"
    plugins_folder = "{folders['plugins']}"
    transports_folder = "{folders['transports']}"
    events_folder = "{folders['events']}"
    loggers_folder = "{folders['loggers']}"
    debug_level = {self.debug_level}
    debug_colors = false
    session_timeout = 60
}}
media: {{
}}
nat: {{
    ice_enforce_list = "{self.ice_ip}"
    ignore_mdns = true
    full_trickle = false
    nice_debug = false
}}
plugins: {{
}}
transports: {{
}}
loggers: {{
}}
events: {{
    broadcast = false
}}
""")
        (conf / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    ip = "127.0.0.1"
    port = {http_port}
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
""")
        (conf / "janus.transport.websockets.jcfg").write_text(f"""general: {{
    json = "compact"
    ws = true
    ws_ip = "127.0.0.1"
    ws_port = {ws_port}
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
""")
        (conf / "janus.plugin.videoroom.jcfg").write_text(f"""general: {{
}}
room-{self.room}: {{
    description = "streamfx interop"
    publishers = 4
    bitrate = 1000000
    fir_freq = 10
    audiocodec = "opus"
    videocodec = "vp8"
}}
""")
        return conf

    async def _start_janus(self, attempts: int = 3) -> None:
        """Start Janus on two free ports. Should one be taken between :func:`free_port` and Janus's
        bind, that transport fails and Janus runs on without it: then start again on new ports."""
        assert self._dir is not None and self._http is not None and JANUS is not None
        started = time.monotonic()
        self.ice_ip = ice_address() or ""

        async def ready() -> bool:
            if "could not be initialized" in self._janus.tail(200):   # a transport did not start,
                raise _PortTaken                                       # and Janus runs on without it
            async with self._http.get(f"{self.janus_http}/info", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                info = await resp.json(content_type=None)
            return "janus.plugin.videoroom" in info["plugins"] and "janus.transport.websockets" in info["transports"]

        for attempt in range(attempts):
            http_port, self._ws_port = free_port(), free_port()
            conf = self._write_janus_config(http_port, self._ws_port)
            self._janus = _Process("janus", [JANUS, "-F", str(conf), "--disable-colors"], self._dir / "janus.log",
                                   cwd=self._dir)   # a core dump (see below) goes with the folder
            self.janus_http = f"http://127.0.0.1:{http_port}/janus"
            try:
                await self._wait(self._janus, ready, "did not answer on its HTTP API with VideoRoom and WebSockets")
                break
            except (_PortTaken, JanusError):
                self._janus.stop()
                # Janus 1.1.2 sometimes segfaults instead when its HTTP port is taken
                if not (_listening(http_port) or _listening(self._ws_port)):
                    raise
                if attempt == attempts - 1:
                    raise self._janus.failure(f"found its HTTP or WebSocket port taken {attempts} times")
        self.timings["janus"] = time.monotonic() - started

    async def _start_whip_server(self) -> None:
        assert self._dir is not None and self._http is not None and NODE is not None
        started = time.monotonic()
        root = whip_server_root()
        assert root is not None
        config, preload = self._dir / "whip-config.js", self._dir / "whip-preload.js"
        config.write_text(f"""module.exports = {{
    janus: {{ address: 'ws://127.0.0.1:{self._ws_port}' }},
    port: 0,              // any free port; the preload binds 127.0.0.1 and prints it
    rest: '/whip',
    allowTrickle: true,
    strictETags: false,
    iceServers: []
}};
""")
        preload.write_text(_PRELOAD_JS)
        node_path = [str(Path(base) / d) for base in dict.fromkeys([str(root), "/"]) for d in NODE_DIRS]
        env = {**os.environ, "WHIP_SERVER_CONFIG": str(config), "NODE_PATH": os.pathsep.join(node_path),
               "DEBUG": "whip:*,-whip:debug,janus:*,-janus:debug,-janus:vdebug", "DEBUG_COLORS": "0"}
        self._whip = _Process("simple-whip-server", [NODE, "-r", str(preload), str(root / SERVER_JS), "--no-color"],
                              self._dir / "whip-server.log", env=env, cwd=self._dir)

        async def ready() -> bool:
            found = re.search(r"WHIP REST API bound to 127\.0\.0\.1:(\d+)", self._whip.tail(200))
            if not found:   # it binds only once it has a Janus session
                return False
            self.whip_base = f"http://127.0.0.1:{found[1]}"
            async with self._http.get(f"{self.whip_base}/whip/healthcheck", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                return resp.status == 200

        await self._wait(self._whip, ready, "did not connect to Janus and answer /whip/healthcheck")
        self.timings["whip_server"] = time.monotonic() - started

    async def _create_endpoint(self) -> None:
        assert self._http is not None
        started = time.monotonic()
        body: dict[str, Any] = {"id": self.endpoint, "room": self.room}
        if self.token:
            body["token"] = self.token
        async with self._http.post(f"{self.whip_base}/whip/create", json=body) as resp:
            if resp.status != 200:
                assert self._whip is not None
                raise self._whip.failure(f"refused POST /whip/create with {resp.status} {await resp.text()!r}")
        self.timings["endpoint"] = time.monotonic() - started

    async def _wait(self, process: _Process, ready: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if process.popen.poll() is not None:
                raise process.failure("exited at start")
            try:
                if await ready():
                    return
            except (aiohttp.ClientError, ValueError, KeyError, asyncio.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise process.failure(f"{what} within {self.start_timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    def logs(self) -> str:
        """Both processes' log tails (for assertion messages)."""
        return "\n".join(f"--- {p.name}:\n{p.tail()}" for p in (self._janus, self._whip) if p is not None)

    # -- what Janus sees -----------------------------------------------------------------------

    def _api(self) -> JanusApi:
        if self._http is None:
            raise JanusError("JanusRoom is not started")
        return JanusApi(self._http, self.janus_http)

    async def participants(self) -> list[dict[str, Any]]:
        """VideoRoom ``listparticipants``: ``[{"id", "display", "publisher": bool, "talking"?}]``."""
        async with self._api() as api:
            return (await api.request({"request": "listparticipants", "room": self.room}))["participants"]

    async def wait_for_publisher(self, timeout: float = 15.0) -> dict[str, Any]:
        """The first participant with ``publisher: true`` (its PeerConnection is up)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in await self.participants() if p.get("publisher")]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no publisher in room {self.room} after {timeout:.0f} s\n{self.logs()}")
            await asyncio.sleep(0.1)

    async def publisher_streams(self, publisher: int | None = None) -> list[dict[str, Any]]:
        """The streams of a publisher (default: the first) as VideoRoom describes them to a new
        participant: ``[{"type": "audio"|"video", "mid", "mindex", "codec", ...}]``.

        ``listparticipants`` carries no streams, so this joins the room as a (non-publishing)
        publisher and reads the ``publishers`` list of its ``joined`` event."""
        async with self._api() as api:
            await api.request({"request": "join", "ptype": "publisher", "room": self.room, "display": "probe"})
            joined = await api.event(lambda e: e.get("plugindata", {}).get("data", {}).get("videoroom") == "joined",
                                     timeout=10)
        publishers = joined["plugindata"]["data"].get("publishers", [])
        for p in publishers:
            if publisher is None or p["id"] == publisher:
                return p.get("streams", [])
        raise JanusError(f"no publisher {publisher or ''} in room {self.room}: {publishers}")

    async def subscribe_frames(self, n_video: int = 10, timeout: float = 20.0, feed: int | None = None) -> Subscription:
        """Subscribe to a publisher (default: the first) through Janus with an aiortc peer, and count
        what arrives until ``n_video`` video frames and one audio frame came, or ``timeout``."""
        if feed is None:
            feed = (await self.wait_for_publisher(timeout))["id"]
        started = time.monotonic()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tasks: list[asyncio.Task[None]] = []
        async with self._api() as api:
            try:
                await api.request({"request": "join", "ptype": "subscriber", "room": self.room,
                                   "streams": [{"feed": feed}]})
                attached = await api.event(lambda e: "jsep" in e, timeout=10)
                offer = attached["jsep"]["sdp"]
                got = Subscription(offer_media=re.findall(r"^m=(\w+)", offer, flags=re.M))
                last: list[VideoFrame] = []

                async def pull(track: MediaStreamTrack) -> None:
                    try:
                        while True:
                            frame = await track.recv()
                            if track.kind == "video":
                                got.video_frames += 1
                                last[:] = [frame]
                            else:
                                got.audio_frames += 1
                    except MediaStreamError:
                        pass

                pc.on("track", lambda track: tasks.append(asyncio.ensure_future(pull(track))))
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await api.request({"request": "start"}, jsep={"type": "answer", "sdp": pc.localDescription.sdp})
                deadline = started + timeout
                while (got.video_frames < n_video or got.audio_frames == 0) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                got.elapsed_s = time.monotonic() - started
                if last:
                    got.last_video = last[0].to_ndarray(format="rgb24")
                return got
            finally:
                await pc.close()
                for task in tasks:
                    task.cancel()

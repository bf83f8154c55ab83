"""Run Debian's ``whip-client`` (meetecho's simple-whip-client, GStreamer webrtcbin) in tests.

Why it aborts as installed (bookworm, ``simple-whip-client 0.0~git20230131-1``): the binary
links libsoup 2.4 for its HTTP, and its own webrtc stack pulls libsoup 3 in through a chain of
*libraries* (not optional plugins)::

    libgstwebrtc.so -> libgstwebrtcnice-1.0 -> libnice.so.10 -> libgupnp-igd-1.0.so.4
                    -> libgupnp-1.6 -> libsoup-3.0   => "libsoup2 symbols detected ..."

(``LD_DEBUG=libs,files whip-client ...`` shows it). A private plugin set alone does not help:
the webrtc plugin itself needs libnice. libnice only uses gupnp-igd for UPnP port mapping, and
it copes with ``gupnp_simple_igd_thread_new()`` returning NULL ("Error creating UPnP Simple IGD
agent": no UPnP, no UPnP timeout). So :func:`prepare` compiles a four-function stub
``libgupnp-igd-1.0.so.4`` (needs only libc, and ``cc``) into a temporary folder and puts that
folder first on ``LD_LIBRARY_PATH`` of the whip-client process only; nothing on the system
changes. It also gives the process a private plugin folder (symlinks to just the plugins
below) and a private registry file, so that no other plugin (souphttpsrc, adaptivedemux2,
hardware decoders) can be autoplugged or loaded, and the user's registry cache is not touched.

Where this 2023 whip-client differs from RFC 9725 (or from what one might expect), as seen
against this server (an aiohttp middleware logged each request) and in its source:

* DTLS: webrtcbin 1.22 always makes an RSA certificate and offers ``a=setup:actpass``. If the
  answer says ``a=setup:active`` (aiortc's choice), GStreamer is the DTLS server and aiortc's
  client hello offers only ECDHE-ECDSA suites: "no shared cipher", "DTLS failed", the client
  DELETEs and exits. whip-client has no option to change that; the server has to answer
  ``a=setup:passive`` (RFC 5763 lets the answerer pick either). ``GST_DEBUG=*:1`` below puts
  GStreamer's ERROR lines, the SSL one included, into the log.
* Trickle: without ``-n`` it POSTs its offer before gathering even starts (no candidates), then
  sends them all in one ``PATCH`` (``application/trickle-ice-sdpfrag``: ufrag/pwd, a fake
  ``m=video 9 RTP/AVP 0``, ``a=mid``, the candidates, ``a=end-of-candidates``) 100 ms later; the
  405 this server answers is only a logged warning, and ICE still completes (aiortc learns
  GStreamer's address from its checks). With ``-n`` (used here) every candidate is in the
  offer and no PATCH is sent.
* ETag / If-Match: with no ``ETag`` in the 201 it warns "No ETag header" and sends no
  ``If-Match``; its source sends the ETag as ``If-Match`` on every later request (the DELETE
  too) when there is one.
* ``Location``: the relative ``/whip/<id>`` is resolved against the endpoint (logged as
  "Resource URL: http://..."); a Location is taken as absolute if it contains "http" anywhere.
* Teardown: one ``DELETE`` on the resource URL on SIGINT/SIGTERM (sent from inside the signal
  handler), on EOS reaching the element named by ``-e``, or when ICE/DTLS fails; anything but
  200 is a logged warning (a 404 when the server has already dropped a failed session), and it
  exits 0 either way. SIGKILL leaves the session to the server's own timeouts.
* Token: ``Authorization: Bearer <token>`` on the POST, the PATCH and the DELETE, as the RFC
  says; a 401 is just "HTTP error" and exit (no ``WWW-Authenticate`` handling).
* One offer only: no renegotiation, no ICE restart; ``Link: rel="ice-server"`` is read only
  with ``-f``, from an OPTIONS request. It refuses to start unless the plugins opus, vpx, nice,
  webrtc, dtls, srtp, rtpmanager, videotestsrc and audiotestsrc are registered, whatever the
  pipelines use, and it cuts each of ``-V`` and ``-A`` at about 1 KiB.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

WHIP_CLIENT = shutil.which("whip-client")

# plugin file stem (libgst<stem>.so) -> what needs it
PLUGINS = {
    # whip-client's start-up check (plugin names) and webrtcbin's own elements
    "coreelements": "filesrc, queue, clocksync, valve, capsfilter",
    "webrtc": "webrtcbin", "nice": "nicesrc/nicesink", "dtls": "dtlssrtpenc/dec",
    "srtp": "srtpenc/dec", "rtpmanager": "rtpbin, rtpfunnel", "rtp": "rtpvp8pay, rtpopuspay",
    "sctp": "data channel transport (webrtcbin links libgstsctp)",
    "vpx": "vp8enc", "opus": "opusenc",
    "videotestsrc": "start-up check", "audiotestsrc": "the tone",
    # decoding the clip
    "playback": "decodebin", "typefindfunctions": "decodebin's typefind", "isomp4": "qtdemux",
    "videoparsersbad": "h264parse", "openh264": "openh264dec (in plugins-bad, unlike avdec_h264)",
    "videoconvertscale": "videoconvert", "audioconvert": "audioconvert", "audioresample": "audioresample",
}

_STUB_C = r"""
/* libgupnp-igd stub: libnice treats a NULL igd as "no UPnP" (never casts or uses it). */
void *gupnp_simple_igd_thread_new(void) { return 0; }
unsigned long gupnp_simple_igd_get_type(void) { return 0; }
void gupnp_simple_igd_add_port(void) {}
void gupnp_simple_igd_remove_port_local(void) {}
"""


class Unavailable(RuntimeError):
    """whip-client cannot run here (the message says why: a test skips with it)."""


def plugin_dir() -> Path | None:
    """The system's GStreamer 1.0 plugin folder (the one holding coreelements)."""
    for pattern in ("/usr/lib/*/gstreamer-1.0", "/usr/lib64/gstreamer-1.0", "/usr/lib/gstreamer-1.0"):
        for found in sorted(glob.glob(pattern)):
            if (Path(found) / "libgstcoreelements.so").exists():
                return Path(found)
    return None


def prepare(workdir: Path) -> dict[str, str]:
    """The environment for a whip-client that starts here: builds the stub and the private
    plugin folder under ``workdir``. Raises :class:`Unavailable` when something is missing."""
    if WHIP_CLIENT is None:
        raise Unavailable("whip-client not installed (apt-get install simple-whip-client)")
    system = plugin_dir()
    if system is None:
        raise Unavailable("no GStreamer 1.0 plugin folder found")
    missing = [p for p in PLUGINS if not (system / f"libgst{p}.so").exists()]
    if missing:
        raise Unavailable(f"GStreamer plugins missing: {', '.join(missing)} "
                          "(gstreamer1.0-plugins-base/good/bad, gstreamer1.0-nice)")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Unavailable("no C compiler to build the libgupnp-igd stub that keeps libsoup 3 out")
    lib, plugins = workdir / "lib", workdir / "plugins"
    lib.mkdir(parents=True, exist_ok=True)
    plugins.mkdir(exist_ok=True)
    (lib / "stub.c").write_text(_STUB_C)
    built = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libgupnp-igd-1.0.so.4",
                            "-o", str(lib / "libgupnp-igd-1.0.so.4"), str(lib / "stub.c")],
                           capture_output=True, text=True, timeout=60)
    if built.returncode != 0:
        raise Unavailable(f"could not build the libgupnp-igd stub: {built.stderr.strip()[:300]}")
    for p in PLUGINS:
        link = plugins / f"libgst{p}.so"
        if not link.exists():
            link.symlink_to(system / f"libgst{p}.so")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GST_", "LD_PRELOAD"))}
    env.update({
        "LD_LIBRARY_PATH": os.pathsep.join([str(lib), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]),
        "GST_PLUGIN_SYSTEM_PATH_1_0": str(plugins), "GST_PLUGIN_SYSTEM_PATH": str(plugins),
        "GST_PLUGIN_PATH_1_0": "", "GST_PLUGIN_PATH": "",
        "GST_REGISTRY_1_0": str(workdir / "registry.bin"), "GST_REGISTRY": str(workdir / "registry.bin"),
        "GST_DEBUG": "*:1", "GST_DEBUG_NO_COLOR": "1",   # GStreamer's ERROR lines only (the DTLS ones)
    })
    return env


def video_from_file(path: str | Path, *, eos_name: str = "video_eos", ssrc: int = 1,
                    start_s: float = 1.0) -> str:
    """``-V``: a clip decoded and sent as VP8 in real time; ``clocksync`` holds the first frame
    until ``start_s`` after the pipeline starts, so the clip is not spent on ICE and DTLS (0.5
    to 1.5 s here, the latter with both cores busy). EOS passes the ``valve`` named
    ``eos_name`` last: ``-e eos_name`` makes whip-client send its DELETE and exit once every
    frame is out. (whip-client swaps that element's sink-pad event handler for the default
    one: a valve loses nothing by it; a capsfilter then warns "Sticky event misordering", and
    a ``tee`` there cannot be linked to webrtcbin at all.)"""
    return (f"filesrc location={path} ! decodebin ! videoconvert ! "
            f"vp8enc deadline=1 keyframe-max-dist=25 ! rtpvp8pay pt=96 ssrc={ssrc} ! "
            f"clocksync ts-offset={int(start_s * 1e9)} ! queue ! "
            f"application/x-rtp,media=video,encoding-name=VP8,payload=96 ! valve name={eos_name}")


def tone(freq: int = 440, *, ssrc: int = 2) -> str:
    """``-A``: a live sine as Opus."""
    return (f"audiotestsrc is-live=true wave=sine freq={freq} ! audioconvert ! audioresample ! "
            f"opusenc ! rtpopuspay pt=111 ssrc={ssrc} ! queue ! "
            "application/x-rtp,media=audio,encoding-name=OPUS,payload=111")


def command(url: str, *, token: str | None = None, video: str | None = None, audio: str | None = None,
            eos_name: str | None = None, trickle: bool = False) -> list[str]:
    """The whip-client command line (log level 5 = verbose; no colours)."""
    assert WHIP_CLIENT is not None
    args = [WHIP_CLIENT, "-u", url, "-o", "-L", "-l", "5"]
    if not trickle:
        args.append("-n")
    for flag, value in (("-t", token), ("-V", video), ("-A", audio), ("-e", eos_name)):
        if value is not None:
            args += [flag, value]
    return args


@dataclass
class Run:
    returncode: int
    log: str
    timed_out: bool   # it had to be stopped (SIGTERM, then SIGKILL after 5 s)


async def run(args: list[str], env: dict[str, str], timeout_s: float, log: list[str] | None = None) -> Run:
    """Run whip-client until it exits or ``timeout_s`` passes (then SIGTERM, which makes it send
    its DELETE, and SIGKILL 5 s later); returns the exit status and the whole log. ``log``, if
    given, receives the lines as they come (to show what happened when a test fails early)."""
    lines = [] if log is None else log
    proc = await asyncio.create_subprocess_exec(*args, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def read() -> None:
        async for line in proc.stdout:
            lines.append(line.decode(errors="replace"))

    reading = asyncio.ensure_future(read())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
    except BaseException:   # the test was cancelled: never leave the process behind
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    finally:
        await asyncio.wait([reading], timeout=5)
    return Run(proc.returncode, "".join(lines), timed_out)

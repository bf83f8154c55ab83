"""The sender's clock, read from its RTCP sender reports, as a receiver that syncs would.

Every WebRTC sender reports, a few times a second, which RTP timestamp of a stream belongs
to which instant of its own wall clock (RTCP SR: an NTP time and an RTP time). Mapping a
frame's RTP timestamp through its stream's reports puts the audio and the video of one
sender on one clock; that is how a browser lines up lips and voice, and how
:mod:`streamfx.server.audio_track` delays the caller's audio to its filtered video. The
mapping is fitted to the last reports (``window``; the clock rate taken as nominal): their
``median`` offset, roughly what WebRTC's receivers compute (a regression over the last
reports), or their ``earliest``, the capture clock of a sender that stamps reports when it
sends (aiortc does: a report is never earlier than the capture, only later, by an encode,
a stall, a burst at the start), which the server uses for its callers.

aiortc has no public hook for received reports: :meth:`SenderReports.tap` wraps one
receiver's ``_handle_rtcp_packet`` (the method its DTLS transport calls for every RTCP
packet routed to that receiver), records the report and passes the packet on unchanged.
aiortc also hands out frames with ``pts = RTP timestamp - the stream's first`` (its
``TimestampMapper``, unwrapped to 64 bits); the origin is read from the receiver's mapper.
:func:`hold_audio` shortens the audio jitter buffer of one receiver (aiortc holds 4 frames,
80 ms, before it releases the oldest). All three are private to aiortc (pinned in
``pyproject.toml``); the A/V sync test fails if they change.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from statistics import median

from aiortc.rtp import RtcpSrPacket


@dataclass(frozen=True)
class Report:
    ntp_s: float   # the sender's wall clock, seconds
    rtp: int       # the RTP timestamp it pairs with
    rate: int      # the stream's RTP clock rate


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32


def rtp_delta(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps that may have wrapped."""
    return ((a - b + 2**31) % 2**32) - 2**31


class SenderReports:
    """The newest sender report of each tapped stream, by kind (``"audio"``, ``"video"``)."""

    def __init__(self, window: int = 20, fit: str = "median") -> None:
        self.window, self.fit = window, {"median": median, "earliest": min}[fit]
        self.recent: dict[str, deque[Report]] = {}
        self._receivers: dict[str, object] = {}

    def tap(self, receiver, kind: str, rate: int) -> None:
        """Record the reports that reach ``receiver`` (an aiortc RTCRtpReceiver)."""
        original = receiver._handle_rtcp_packet
        self._receivers[kind] = receiver

        async def handle(packet) -> None:
            if isinstance(packet, RtcpSrPacket):
                self.record(kind, Report(ntp_seconds(packet.sender_info.ntp_timestamp),
                                         packet.sender_info.rtp_timestamp, rate))
            await original(packet)

        receiver._handle_rtcp_packet = handle

    def tap_track(self, pc, track) -> bool:
        """Tap the receiver of a remote ``track`` of ``pc``; False if it has none."""
        for receiver in pc.getReceivers():
            if receiver.track is track:
                self.tap(receiver, track.kind, 48000 if track.kind == "audio" else 90000)
                return True
        return False

    def record(self, kind: str, report: Report) -> None:
        self.recent.setdefault(kind, deque(maxlen=self.window)).append(report)

    def ready(self, *kinds: str) -> bool:
        """Whether each of ``kinds`` has a report and has delivered a frame."""
        return all(k in self.recent and self._origin(k) is not None for k in kinds)

    def _origin(self, kind: str) -> int | None:
        mapper = getattr(self._receivers.get(kind), "_RTCRtpReceiver__timestamp_mapper", None)
        return getattr(mapper, "_origin", None)

    def _offset(self, kind: str, near_pts: int) -> float | None:
        """Sender seconds at pts 0 of ``kind`` (pts near ``near_pts``), fitted to the recent
        reports; None before a report and a frame."""
        origin = self._origin(kind)
        if origin is None or kind not in self.recent:
            return None
        raw = (near_pts + origin) % 2**32
        return self.fit([r.ntp_s - (near_pts + rtp_delta(r.rtp, raw)) / r.rate for r in self.recent[kind]])

    def sender_time(self, kind: str, pts: int) -> float | None:
        """The sender's wall-clock instant of a received frame, or None before it is known."""
        offset = self._offset(kind, pts)
        return None if offset is None else offset + pts / self.recent[kind][-1].rate

    def pts_at(self, kind: str, sender_s: float, near_pts: int) -> float | None:
        """The (fractional) pts of ``kind`` captured at ``sender_s``; ``near_pts``: a recent pts."""
        offset = self._offset(kind, near_pts)
        return None if offset is None else (sender_s - offset) * self.recent[kind][-1].rate


def hold_audio(pc, track, frames: int) -> None:
    """Let the receiver of remote audio ``track`` release a frame once ``frames`` more are in
    (aiortc's default is 4: 80 ms of lag that the video would have to wait for)."""
    for receiver in pc.getReceivers():
        buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if receiver.track is track and buffer is not None and hasattr(buffer, "_prefetch"):
            buffer._prefetch = frames

"""The caller's audio, sent back in step with its filtered video.

The filter delays video (tens of ms with ``mesh``, a few hundred with 3DPE on a CPU); the
voice must wait as long, or the lips run behind it. :class:`SyncedAudioTrack` writes the
caller's audio into one :class:`~streamfx.io.audio_delay.AudioDelayLine` and sends 20 ms
blocks on its own steady clock, each read from the instant the video being sent now was
captured.

**One clock for both.** Times of capture come from the sender's RTCP reports
(:mod:`.sender_reports`): a browser, OBS or GStreamer stamps audio and video on one wall
clock, so ``send time - capture time`` of each filtered frame is the delay the audio needs,
whatever each stream spent in jitter buffers on the way in. Until both streams have a
report (about the first second), arrival times stand in; when the reports come, the delay
line re-anchors once, with a crossfade. Audio that is itself later than the video (it
arrives after its jitter buffer, 60-80 ms in aiortc) is sent as soon as it is whole:
the read never waits on the future.

Every receiver gets both tracks on the sender clock of this server (aiortc stamps RTP and
RTCP from the send time), so browsers, which sync by those reports, and receivers that
don't, which play by arrival, both get the voice on the lips.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from statistics import median

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .. import log
from ..io.audio_delay import AudioDelayLine
from .sender_reports import SenderReports

logger = log.get(__name__)
RATE, BLOCK = 48000, 960  # what WebRTC's Opus carries: 48 kHz, 20 ms
# Where in EBU R37's window (-40 ms early .. +60 ms late) the voice is aimed: its centre.
# aiortc's reports stamp video when it is sent, after the VP8 encode, so receivers see the
# video up to one encode (10-30 ms on two busy cores) later than the frame left this track.
AIM_S = 0.010
TIME_BASE = fractions.Fraction(1, RATE)


class SyncedAudioTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, source: MediaStreamTrack, reports: SenderReports | None = None,
                 window: int = 60, aim_s: float = AIM_S) -> None:
        super().__init__()
        self.source, self.reports, self.aim = source, reports, aim_s
        self.line = AudioDelayLine(RATE, 2)
        self.basis = "arrival"
        self._delays: deque[float] = deque(maxlen=window)   # video: send - capture, s
        self._lags: deque[float] = deque(maxlen=150)       # audio: whole at - capture of its end, s
        self._last_pos = 0                 # the newest source position (frame pts at 48 kHz)
        self._anchor: float | None = None  # arrival basis: earliest ``arrival - position / RATE``
        self._resampler: av.AudioResampler | None = None
        self._start: float | None = None
        self._sent = 0                     # blocks sent
        self.delay_s: float | None = None  # how long the audio waits in the line (for stats)
        self._task = asyncio.ensure_future(self._read())

    # -- the two clocks -------------------------------------------------------------------
    def _sender_basis(self) -> bool:
        return self.reports is not None and self.reports.ready("audio", "video")

    def _check_basis(self) -> None:
        basis = "sender" if self._sender_basis() else "arrival"
        if basis != self.basis:
            self.basis = basis
            self._delays.clear()
            self._lags.clear()
            logger.debug("audio sync on the sender's clock")

    def video_sent(self, pts: int | None, received: float, sent: float) -> None:
        """Told as each filtered frame has gone out (``pts``: the caller's; ``received``, its
        arrival, and ``sent``: ``time.perf_counter()``, the clock of this whole track)."""
        self._check_basis()
        captured = self.reports.sender_time("video", pts) if self.basis == "sender" and pts is not None else None
        if captured is not None:
            self._delays.append(sent - captured)
        else:
            self._delays.append(sent - received)

    def _capture_of(self, position: float) -> float | None:
        """The capture instant of a source position, on the current basis."""
        if self.basis == "sender":
            return self.reports.sender_time("audio", round(position))
        return None if self._anchor is None else self._anchor + position / RATE

    def _position_at(self, capture: float) -> float | None:
        if self.basis == "sender":
            return self.reports.pts_at("audio", capture, self._last_pos)
        return (capture - self._anchor) * RATE

    # -- in -------------------------------------------------------------------------------
    def _samples(self, frame: av.AudioFrame) -> list[tuple[int, np.ndarray]]:
        """(pts at 48 kHz, samples (n, 2) int16) for one incoming frame."""
        if frame.format.name == "s16" and frame.sample_rate == RATE and frame.layout.name in ("stereo", "mono"):
            data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            pts = frame.pts if frame.time_base in (None, TIME_BASE) else round(frame.pts * frame.time_base * RATE)
            return [(pts, data)]
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        return [(f.pts, f.to_ndarray().reshape(-1, 2)) for f in self._resampler.resample(frame) if f.pts is not None]

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                if frame.pts is None:
                    continue
                for pts, data in self._samples(frame):
                    self._write(pts, data, time.perf_counter())
        except MediaStreamError:
            pass
        except Exception:  # noqa: BLE001 - the audio stops; the video and the call go on
            logger.exception("audio reader stopped")

    def _write(self, position: int, data: np.ndarray, arrived: float) -> None:
        self._last_pos = position
        self.line.write(position, data)
        end = position + len(data)
        early = arrived - end / RATE
        self._anchor = early if self._anchor is None else min(self._anchor, early)
        self._check_basis()
        captured = self._capture_of(end)
        if captured is not None:
            self._lags.append(arrived - captured)

    # -- out ------------------------------------------------------------------------------
    def _target(self, now: float) -> float | None:
        """The source position the block sent at ``now`` starts at; None before any video."""
        if not self._delays or self.line.end is None or self._anchor is None:
            return None
        delay = median(self._delays) + self.aim
        if self._lags:  # audio later than the video: as late as it must be, no later
            # (its 80th percentile: a stall of the loop, a burst of late frames, must not hold
            # the voice back for the whole window; what arrives later still plays, a block late)
            lag = sorted(self._lags)[int(0.8 * (len(self._lags) - 1))] + BLOCK / RATE
            delay = max(delay, lag)
            self.delay_s = delay - lag
        return self._position_at(now - delay)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        behind = time.perf_counter() - (self._start + self._sent * BLOCK / RATE)
        if behind > 0.1:  # a stalled loop: skip the blocks it missed, so pts keep step with the clock
            self._sent += int(behind * RATE / BLOCK)
        due = self._start + self._sent * BLOCK / RATE
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._task.done() and self.line.end is None:
            self.stop()
            raise MediaStreamError
        target = self._target(due)
        if target is None:
            data = np.zeros((BLOCK, 2), np.int16)
        else:
            data = self.line.read(target, BLOCK)
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self._sent * BLOCK, TIME_BASE
        self._sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._task.cancel()

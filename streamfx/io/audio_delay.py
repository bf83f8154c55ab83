"""One audio delay line: samples go in at their source positions, come out later, and the
delay follows its target without clicks.

The line knows nothing of clocks. Its writer says where each block belongs on the source's
sample timeline (``write(start, samples)``); its reader asks, once per output block, which
source position that block should start at (``read(target, n)``). The reader's position
advances by ``n`` samples per block, nudged towards ``target`` by at most ``max_slew`` of a
block (a 1 % speed change, below what a listener hears as pitch), so a moving target (the
video's latency as it changes) bends the audio instead of cutting it. A jump larger than
``jump_s`` (a stream that starts late, a clock that was re-anchored) is taken at once with a
short crossfade. What was never written (a gap, the future) reads as silence.

Used by the server's returned audio (:mod:`streamfx.server.audio_track`) and meant for the
virtual microphone, where the source is the local microphone.
"""

from __future__ import annotations

import numpy as np


class AudioDelayLine:
    """A ring of ``capacity_s`` seconds of int16 samples, shape ``(frames, channels)``."""

    def __init__(self, rate: int = 48000, channels: int = 2, capacity_s: float = 4.0,
                 max_slew: float = 0.01, jump_s: float = 0.03, fade_s: float = 0.005) -> None:
        self.rate, self.channels = rate, channels
        self.size = int(capacity_s * rate)
        self.max_slew, self.jump = max_slew, int(jump_s * rate)
        self.fade = max(1, int(fade_s * rate))
        self._ring = np.zeros((self.size, channels), np.float32)
        self._written = np.zeros(self.size, bool)
        self.end: int | None = None   # one past the newest written source position
        self.position: float | None = None  # where the next read starts

    # -- writing --------------------------------------------------------------------------
    def write(self, start: int, samples: np.ndarray) -> None:
        """Samples ``(n, channels)`` (int16 or float in -1..1) that begin at source position ``start``."""
        data = np.asarray(samples)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] != self.channels:
            data = np.repeat(data[:, :1], self.channels, axis=1) if data.shape[1] == 1 else data[:, :self.channels]
        if data.dtype == np.int16:
            data = data.astype(np.float32) / 32768.0
        n = len(data)
        if n == 0:
            return
        if n > self.size:
            start, data, n = start + n - self.size, data[-self.size:], self.size
        if self.end is not None and start > self.end:  # a gap: what lies between is silence
            self._clear(self.end, min(start, self.end + self.size))
        index = (start + np.arange(n)) % self.size
        self._ring[index] = data
        self._written[index] = True
        self.end = max(self.end or start + n, start + n)

    def _clear(self, begin: int, stop: int) -> None:
        index = np.arange(begin, stop) % self.size
        self._ring[index] = 0.0
        self._written[index] = False

    # -- reading --------------------------------------------------------------------------
    def read(self, target: float, n: int) -> np.ndarray:
        """``n`` output samples (int16), starting near source position ``target``."""
        if self.position is None or abs(target - self.position) > self.jump:
            previous = self.position
            self.position = float(target)
            block = self._take(self.position, n, n)
            if previous is not None:  # crossfade from where the old position would have gone
                old = self._take(previous, self.fade, self.fade)
                ramp = np.linspace(0.0, 1.0, self.fade, dtype=np.float32)[:, None]
                block[:self.fade] = old * (1 - ramp) + block[:self.fade] * ramp
            span = float(n)
        else:
            span = n + float(np.clip(target - self.position, -self.max_slew * n, self.max_slew * n))
            block = self._take(self.position, span, n)
        self.position += span
        return np.clip(block * 32768.0, -32768, 32767).astype(np.int16)

    def _take(self, start: float, span: float, n: int) -> np.ndarray:
        """``n`` samples covering source positions ``start .. start + span`` (linear interpolation),
        silence where nothing was written; advances nothing."""
        where = start + np.arange(n) * (span / n)
        left = np.floor(where).astype(np.int64)
        frac = (where - left).astype(np.float32)[:, None]
        a, b = self._at(left), self._at(left + 1)
        return a * (1 - frac) + b * frac

    def _at(self, positions: np.ndarray) -> np.ndarray:
        out = np.zeros((len(positions), self.channels), np.float32)
        if self.end is None:
            return out
        valid = (positions < self.end) & (positions >= self.end - self.size)
        index = positions[valid] % self.size
        ok = self._written[index]
        rows = np.flatnonzero(valid)[ok]
        out[rows] = self._ring[index[ok]]
        return out

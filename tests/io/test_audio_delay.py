"""The one audio delay line (server audio sync, virtual microphone): exact delays, smooth
changes of delay, silence where nothing was written."""

from __future__ import annotations

import numpy as np

from streamfx.io.audio_delay import AudioDelayLine

RATE, N = 48000, 960


def tone(start: int, n: int, hz: float = 440.0) -> np.ndarray:
    t = (start + np.arange(n)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 16000).astype(np.int16)[:, None].repeat(2, axis=1)


def test_a_fixed_delay_returns_the_samples_exactly_that_late():
    line = AudioDelayLine(RATE, 2)
    marks = np.zeros((RATE, 2), np.int16)
    marks[12000] = 20000                                  # a click at source position 12000
    for start in range(0, RATE, N):
        line.write(start, marks[start:start + N])
    # output block k (played at k*N) starts at source k*N - 4800: a 100 ms delay
    out = np.concatenate([line.read(start - 4800, N) for start in range(0, RATE, N)])
    assert int(np.argmax(np.abs(out[:, 0]))) == 12000 + 4800
    assert out[12000 + 4800, 0] > 19000 and not out[:4800].any()


def test_a_moving_target_bends_the_audio_without_a_click():
    line = AudioDelayLine(RATE, 2)
    for start in range(0, 4 * RATE, N):
        line.write(start, tone(start, N))
    target, out = 24000.0, []
    for _ in range(100):                                    # the delay shrinks by 20 ms over 2 s
        out.append(line.read(target, N))
        target += N + 9.6
    wave = np.concatenate(out)[:, 0].astype(np.float64)
    steps = np.abs(np.diff(wave))
    # a 440 Hz tone at 16000 changes by at most ~920 per sample; a cut would jump far more
    assert steps.max() < 1000, steps.max()
    assert abs(line.position - target) < 50                # it followed (1 % of a block per block)


def test_a_large_jump_crossfades_and_lands_on_the_target():
    line = AudioDelayLine(RATE, 2)
    for start in range(0, 2 * RATE, N):
        line.write(start, tone(start, N))
    line.read(0, N)
    block = line.read(RATE // 2, N)                       # 0.5 s ahead: taken at once
    assert line.position == RATE // 2 + N
    expected = tone(RATE // 2, N)
    assert np.abs(block[line.fade:].astype(int) - expected[line.fade:]).max() < 3


def test_gaps_and_the_future_read_as_silence():
    line = AudioDelayLine(RATE, 2)
    line.write(0, tone(0, N))
    line.write(3 * N, tone(3 * N, N))                     # two frames lost in between
    assert line.read(0, N).any()
    assert not line.read(N, N).any()
    assert not line.read(2 * N, N).any()
    assert line.read(3 * N, N).any()
    assert not line.read(4 * N, N).any()                  # not written yet


def test_a_gap_after_the_ring_wrapped_is_silence_not_old_audio():
    line = AudioDelayLine(RATE, 2, capacity_s=0.1)        # 4800 samples
    for start in range(0, 4800, N):
        line.write(start, tone(start, N))
    line.write(4800 + 2 * N, tone(4800 + 2 * N, N))       # lost: 4800 .. 4800 + 2N
    assert not line.read(4800, N).any() and not line.read(4800 + N, N).any()

"""A head-turn clip with sound, for pushes that carry audio: the test video (no audio of its
own) muxed with a tone that clicks once a second."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"
CLIP = TESTDATA / "video" / "head_turn_1.mp4"


def write_clip(path: Path, rate: int = 48000) -> Path:
    with av.open(str(CLIP)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
        fps = src.streams.video[0].average_rate or Fraction(25)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        seconds = len(frames) / float(fps)
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.2 * np.sin(2 * np.pi * 440 * t)
        tone[(t % 1.0) < 0.004] = 0.9                      # a click each second
        samples = tone.astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start:start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path

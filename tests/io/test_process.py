"""``streamfx process``: real video in, decodable filtered video out (frames, size, fps, audio)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamfx.cli import main
from streamfx.io import MediaError, VideoWriter, process_video
from streamfx.pipeline.engines.overlay import BORDER_RGB
from streamfx.pipeline.processor import CallerPipeline
from streamfx.pipeline.select import build_engine

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
HEAD_TURN = TESTDATA / "video" / "head_turn_1.mp4"


def probe(path: Path) -> dict:
    """Decode a whole file: frame count, size, rate, video pts, first frames, audio info."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames, pts = [], []
        for frame in container.decode(video):
            pts.append(frame.pts)
            if len(frames) < 3:
                frames.append(frame.to_ndarray(format="rgb24"))
            count = len(pts)
        info = {"count": count, "size": (video.codec_context.width, video.codec_context.height),
                "fps": video.average_rate, "pts": pts, "frames": frames, "audio": None}
    if audio is not None:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(stream))
            info["audio"] = {"codec": stream.codec_context.name, "seconds": samples / stream.codec_context.sample_rate}
    return info


@pytest.fixture(scope="module")
def sine_clip(tmp_path_factory) -> Path:
    """A 2 s clip: 64x48 video at 25 fps and a 440 Hz sine in AAC (48 kHz mono)."""
    path = tmp_path_factory.mktemp("clips") / "sine.mp4"
    rate, seconds = 48000, 2.0
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        for i in range(int(25 * seconds)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 5) % 256, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        t = np.arange(int(rate * seconds)) / rate
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        for start in range(0, pcm.size, 1024):
            chunk = av.AudioFrame.from_ndarray(pcm[None, start:start + 1024], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = rate, start
            container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["process", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_head_turn_keeps_frames_size_fps_and_shows_the_border(tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code, stdout, _ = run_cli(capsys, str(HEAD_TURN), "-o", str(out), "--engine", "overlay")
    assert code == 0
    assert "60 frames" in stdout and "ms/frame" in stdout
    src, dst = probe(HEAD_TURN), probe(out)
    assert dst["count"] == src["count"] == 60
    assert dst["size"] == src["size"] == (512, 512)
    assert dst["fps"] == src["fps"] == 25
    assert all(b > a for a, b in zip(dst["pts"], dst["pts"][1:])), "pts must increase"
    for frame in dst["frames"]:
        corner = frame[2:10, 2:10].reshape(-1, 3).mean(axis=0)
        assert np.abs(corner - BORDER_RGB).max() < 30, corner
        centre = frame[200:300, 200:300].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - BORDER_RGB).max() > 60, "the picture itself is not magenta"


@pytest.mark.parametrize("suffix", [".webm", ".y4m", ".mkv"])
def test_other_containers_decode(tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    result = process_video(HEAD_TURN, out, CallerPipeline(build_engine("overlay")).filter_at, max_frames=10)
    assert result.frames == 10
    info = probe(out)
    assert info["count"] == 10 and info["size"] == (512, 512) and info["fps"] == 25


def test_audio_is_copied_into_mp4(tmp_path, sine_clip):
    out = tmp_path / "out.mp4"
    result = process_video(sine_clip, out, CallerPipeline(build_engine("overlay")).filter_at)
    assert result.audio == "aac (copied)"
    info = probe(out)
    assert info["count"] == 50
    assert info["audio"]["codec"] == "aac"
    assert info["audio"]["seconds"] == pytest.approx(2.0, abs=0.1)


def test_audio_is_reencoded_when_the_container_needs_it(tmp_path, sine_clip):
    out = tmp_path / "out.webm"  # WebM cannot hold AAC
    result = process_video(sine_clip, out, CallerPipeline(build_engine("overlay")).filter_at)
    assert result.audio.endswith("(re-encoded)")
    info = probe(out)
    assert info["count"] == 50
    assert info["audio"]["codec"] in ("opus", "libopus")
    assert info["audio"]["seconds"] == pytest.approx(2.0, abs=0.1)


def test_no_audio_flag_leaves_audio_out(tmp_path, sine_clip, capsys):
    out = tmp_path / "out.mp4"
    code, _, _ = run_cli(capsys, str(sine_clip), "-o", str(out), "--no-audio", "--engine", "overlay")
    assert code == 0
    assert probe(out)["audio"] is None


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_input_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    line = _one_line_error(*run_cli(capsys, str(missing), "-o", str(tmp_path / "o.mp4")))
    assert "not found" in line and "missing.mp4" in line


def test_non_video_input_is_one_line(tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 10)
    line = _one_line_error(*run_cli(capsys, str(text), "-o", str(tmp_path / "o.mp4")))
    assert "notes.mp4" in line
    assert not (tmp_path / "o.mp4").exists()


def test_audio_only_input_is_one_line(tmp_path, capsys):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    line = _one_line_error(*run_cli(capsys, str(wav), "-o", str(tmp_path / "o.mp4")))
    assert "no video stream" in line


@pytest.mark.parametrize("name, expect", [("no_such_dir/o.mp4", "does not exist"), ("o.gif", "unsupported")])
def test_bad_output_is_one_line(tmp_path, capsys, name, expect):
    line = _one_line_error(*run_cli(capsys, str(HEAD_TURN), "-o", str(tmp_path / name)))
    assert expect in line


def test_unknown_preset_is_one_line(tmp_path, capsys):
    line = _one_line_error(*run_cli(capsys, str(HEAD_TURN), "-o", str(tmp_path / "o.mp4"),
                                    "--engine", "overlay", "--prompt", "no-such-look"))
    assert "no-such-look" in line


def test_writer_timestamps_increase_and_partial_files_are_removed(tmp_path):
    out = tmp_path / "w.mp4"
    with VideoWriter(out, 32, 32, Fraction(30000, 1001)) as writer:
        for t in (0.0, 0.0, 0.01, 0.5, None):  # repeats and gaps still give increasing pts
            writer.write(np.zeros((32, 32, 3), np.uint8), t)
    pts = probe(out)["pts"]
    assert len(pts) == 5 and all(b > a for a, b in zip(pts, pts[1:]))
    broken = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(broken, 32, 32, 25) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert not broken.exists()
    with pytest.raises(MediaError):
        VideoWriter(tmp_path / "x.avi", 32, 32, 25)


def test_mp4_falls_back_to_mpeg4_without_libx264(tmp_path, monkeypatch):
    import streamfx.io.encoding as encoding

    real = encoding.has_encoder
    monkeypatch.setattr(encoding, "has_encoder", lambda name: name != "libx264" and real(name))
    out = tmp_path / "fallback.mp4"
    process_video(HEAD_TURN, out, CallerPipeline(build_engine("overlay")).filter_at, max_frames=8)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert probe(out)["count"] == 8

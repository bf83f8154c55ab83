"""Carrying an input audio stream into an output file: copied, or re-encoded if it must be."""

from __future__ import annotations

from fractions import Fraction

import av

from .. import log

logger = log.get(__name__)


def _codec_name(stream: av.audio.stream.AudioStream) -> str:
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _encoder_rate(codec: str, rate: int) -> int:
    rates = av.codec.Codec(codec, "w").audio_rates
    return rate if not rates or rate in rates else 48000


class AudioTrack:
    """One audio stream of an output container, fed with the input's packets.

    ``copy`` mode remuxes the packets when the container can hold the codec; ``encode``
    mode decodes them and encodes to the first of ``targets`` the container accepts.
    Timestamps are shifted by ``offset_s`` seconds, the same shift as the video's.
    """

    def __init__(self, container: av.container.OutputContainer, source: av.audio.stream.AudioStream,
                 targets: tuple[str, ...], offset_s: float = 0.0) -> None:
        self.container, self.source = container, source
        self.offset_s = offset_s
        name = _codec_name(source)
        supported = container.supported_codecs
        if name in supported:
            self.mode = "copy"
            self.stream = container.add_stream_from_template(source)
            self.codec = name
        else:
            self.mode = "encode"
            codec = next((c for c in targets if _encodable(c, supported)), None)
            if codec is None:
                raise LookupError(f"no encoder among {', '.join(targets)} for {name} audio")
            self.codec = codec
            rate = _encoder_rate(self.codec, source.codec_context.sample_rate or 48000)
            self.stream = container.add_stream(self.codec, rate=rate)
            layout = source.codec_context.layout
            self.stream.layout = layout.name if layout.nb_channels <= 2 else "stereo"
        self.packets = 0
        logger.info("audio", extra={"mode": self.mode, "from": name, "to": self.codec})

    def describe(self) -> str:
        return f"{self.codec} (copied)" if self.mode == "copy" else f"{self.codec} (re-encoded)"

    def feed(self, packet: av.Packet) -> None:
        """One demuxed packet of the source stream (a flush packet is fine)."""
        if self.mode == "copy":
            if packet.dts is None or packet.size == 0:
                return
            shift = round(self.offset_s / packet.time_base)
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts -= shift
            packet.stream = self.stream
            self.container.mux(packet)
            self.packets += 1
            return
        for frame in packet.decode():
            if frame.pts is not None:
                frame.pts = round((frame.time - self.offset_s) * frame.sample_rate)
            frame.time_base = Fraction(1, frame.sample_rate)
            self._mux(self.stream.encode(frame))

    def flush(self) -> None:
        if self.mode == "encode":
            self._mux(self.stream.encode(None))

    def _mux(self, packets: list) -> None:
        self.container.mux(packets)
        self.packets += len(packets)


def _encodable(name: str, supported: set[str]) -> bool:
    try:
        codec = av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001
        return False
    return (getattr(codec, "canonical_name", None) or codec.name) in supported

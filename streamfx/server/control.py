"""The control protocol: JSON messages on the ``control`` data channel and on ``/ws``.

Client to server (one JSON object per message)::

    {"type": "hello"}                                   -> {"type": "info", ...engine info}
    {"type": "prompt", "preset": "clown"}               a named preset/style
    {"type": "prompt", "text": "bronze statue"}         text: a style name (exact or any case); else a
                                                        reference generated from the caller's face
                                                        (--text-model); else the closest name
    {"type": "prompt", "image": "data:image/png;base64,..."}  a reference image
    {"type": "prompt", "clear": true}
    {"type": "pose", "mode": "follow|frontal|offset|fixed", "yaw": 10, "pitch": -5}
    {"type": "quality", "preset": "auto"}
    {"type": "bypass", "on": true}
    {"type": "strength", "value": 0.7}
    {"type": "mic_offset", "ms": 40}                    the camera's virtual microphone: added to the
                                                        measured delay, -200..200 ms

Server to client: ``{"type": "stats", ...}`` about once a second, ``{"type": "ack", "for": T}``
after a change took effect, ``{"type": "error", "for": T, "message": "..."}`` when it did not.
A text prompt's ack may add ``"chose": NAME`` (the closest name) or ``"text": ..., "generated":
true`` (and a ``"thumbnail"`` data URL); while it generates, ``{"type": "progress", "for":
"prompt", "step": k, "of": n}``. A prompt's ack also carries what the engine made of it,
where it says: the ``mesh`` engine adds ``"look"`` (the global look it read from a
reference), ``"regions"`` (the face regions it took colours from) and, for a reference
without a trackable face, a ``"note"`` saying only its global look is applied.

:func:`parse` validates a message completely and returns a typed command; applying it is
the session's job (``streamfx.server.session``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Literal, Union

from ..pipeline.controls import MAX_POSE_DEG, POSE_MODES, PoseMode
from ..pipeline.prompts import ReferenceError, ReferenceLimits, decode_data_url


class ControlError(ValueError):
    """A malformed control message; the text is sent back to the client."""


@dataclass(frozen=True)
class Hello:
    pass


@dataclass(frozen=True)
class SetPromptImage:
    data: bytes


@dataclass(frozen=True)
class SetPromptName:
    name: str
    fuzzy: bool  # True for free text: a name, else a generated reference, else the closest name


@dataclass(frozen=True)
class ClearPrompt:
    pass


@dataclass(frozen=True)
class SetControl:
    """A caller setting that takes effect on the next frame (``Controls`` field ``name``):
    ``pose`` (PoseMode), ``quality`` (preset name), ``bypass`` (bool) or ``strength`` (0..1)."""

    name: Literal["pose", "quality", "bypass", "strength"]
    value: Union[PoseMode, str, bool, float]


@dataclass(frozen=True)
class SetMicOffset:
    """A manual offset (ms) on the virtual microphone's delay, for a call app's own latency."""

    ms: float


MAX_MIC_OFFSET_MS = 200.0
Command = Union[Hello, SetPromptImage, SetPromptName, ClearPrompt, SetControl, SetMicOffset]


def parse(text: str | bytes, max_bytes: int, reference: ReferenceLimits = ReferenceLimits()) -> Command:
    if len(text) > max_bytes:
        raise ControlError(f"message of {len(text)} bytes is over the {max_bytes}-byte limit")
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ControlError("message is not valid JSON") from None
    except RecursionError:
        raise ControlError("message is nested too deeply") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ControlError('message must be a JSON object with a string "type"')
    kind = msg["type"]
    if kind == "hello":
        return Hello()
    if kind == "prompt":
        return _prompt(msg, reference)
    if kind == "pose":
        mode = msg.get("mode", "follow")
        if mode not in POSE_MODES:
            raise ControlError(f"pose mode must be one of {', '.join(POSE_MODES)}")
        return SetControl("pose", PoseMode(mode, _angle(msg, "yaw"), _angle(msg, "pitch")))
    if kind == "quality":
        return SetControl("quality", _short_string(msg, "preset"))
    if kind == "bypass":
        if not isinstance(msg.get("on"), bool):
            raise ControlError('bypass needs "on": true or false')
        return SetControl("bypass", msg["on"])
    if kind == "strength":
        return SetControl("strength", _number(msg, "value", 0.0, 1.0))
    if kind == "mic_offset":
        return SetMicOffset(_number(msg, "ms", -MAX_MIC_OFFSET_MS, MAX_MIC_OFFSET_MS))
    raise ControlError(f"unknown message type {kind[:40]!r}")


def _prompt(msg: dict, reference: ReferenceLimits) -> Command:
    if msg.get("clear") is True:
        return ClearPrompt()
    if "image" in msg:
        if not isinstance(msg["image"], str):
            raise ControlError("prompt image must be a data URL string")
        try:
            return SetPromptImage(decode_data_url(msg["image"], reference))
        except ReferenceError as exc:
            raise ControlError(str(exc)) from None
    if "preset" in msg:
        return SetPromptName(_short_string(msg, "preset"), fuzzy=False)
    if "text" in msg:
        return SetPromptName(_short_string(msg, "text"), fuzzy=True)
    raise ControlError('prompt needs "image", "preset", "text" or "clear"')


def _short_string(msg: dict, key: str, max_len: int = 120) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ControlError(f'"{key}" must be a non-empty string of at most {max_len} characters')
    return value.strip()


def _number(msg: dict, key: str, lo: float, hi: float, default: float | None = None) -> float:
    value = msg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f'"{key}" must be a number')
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float
        raise ControlError(f'"{key}" must be between {lo:g} and {hi:g}') from None
    if not math.isfinite(value):
        raise ControlError(f'"{key}" must be a number')
    if not lo <= value <= hi:
        raise ControlError(f'"{key}" must be between {lo:g} and {hi:g}')
    return float(value)


def _angle(msg: dict, key: str) -> float:
    return _number(msg, key, -MAX_POSE_DEG, MAX_POSE_DEG, default=0.0)


def encode(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), default=str)

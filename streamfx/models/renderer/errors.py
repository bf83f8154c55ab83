"""Errors raised by the tri-plane renderer, each with a one-line message."""

from __future__ import annotations


class RendererError(ValueError):
    """Base class of renderer errors (bad input, unknown preset)."""


class RenderInputError(RendererError):
    """A tensor given to the renderer has the wrong shape or dtype."""


class UnknownPresetError(RendererError):
    """A render preset name that is not in ``PRESETS``."""

"""Trained style packs for the 3DPE engine: each pack's adapter, read once and checked.

An adapter is read when a caller first selects its pack, checked against the encoder's
shapes and the sha256 of the weights in use, and kept until the pack's files change (a
retrained pack is picked up by the next prompt that names it). It applies to the callers
that selected it only (see :mod:`streamfx.runtime.adapters`).
"""

from __future__ import annotations

import threading

import torch

from ....runtime.adapters import LowRankAdapter
from ....styles import StyleLibrary
from ....styles.pack import load_style_adapter

_SHAPES: torch.nn.Module | None = None


def _encoder_shapes() -> torch.nn.Module:
    """A LiveEncoder on the meta device: the shapes an adapter must fit, without memory."""
    global _SHAPES
    if _SHAPES is None:
        from ....models.encoder import LiveEncoder

        with torch.device("meta"):
            _SHAPES = LiveEncoder()
    return _SHAPES


class PackAdapters:
    def __init__(self, styles: StyleLibrary, base_sha256: str | None) -> None:
        self.styles = styles
        self.base_sha256 = base_sha256
        self._cache: dict[str, tuple[tuple, LowRankAdapter]] = {}
        self._lock = threading.Lock()

    def version(self, name: str) -> str:
        """A stamp of the pack's adapter file (changes when it is rewritten)."""
        path = self.styles.style(name).adapter_path
        if path is None:
            return "-"
        stat = path.stat()
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def adapter(self, name: str) -> LowRankAdapter | None:
        """The adapter of style ``name`` (None for a style without one). Raises
        :class:`~streamfx.styles.StyleError` (one line) when it does not fit these weights."""
        style = self.styles.style(name)
        if style.adapter_path is None:
            return None
        stamp = (str(style.adapter_path), self.version(name))
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        adapter = load_style_adapter(style, self.base_sha256, _encoder_shapes())
        with self._lock:
            self._cache[name] = (stamp, adapter)
        return adapter

"""Named styles: a folder of reference images, each named by its file stem.

``--styles DIR`` (or ``STREAMFX_STYLES``) points at it; the default is
``~/.config/streamfx/styles`` (``$XDG_CONFIG_HOME`` respected). Text prompts select a style
by name: an exact or case-insensitive match, else the closest name.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np

from .engine import PromptError
from .prompts import ReferenceLimits, decode_reference

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def default_styles_dir() -> Path:
    if os.environ.get("STREAMFX_STYLES"):
        return Path(os.environ["STREAMFX_STYLES"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "streamfx" / "styles"


def match_name(text: str, names: list[str], fuzzy: bool = True) -> str:
    """The name ``text`` selects: exact, then case-insensitive, then (fuzzy) the closest
    or a containing name. Raises :class:`PromptError` listing the known names."""
    if text in names:
        return text
    lowered = {n.lower(): n for n in names}
    key = text.strip().lower()
    if key in lowered:
        return lowered[key]
    if fuzzy and key:
        close = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.4)
        if close:
            return lowered[close[0]]
        for low, name in lowered.items():
            if low in key or key in low:
                return name
    raise PromptError(f"no style or preset matches {text!r}; known: {', '.join(names) or 'none'}")


class StyleLibrary:
    def __init__(self, folder: Path | None = None, limits: ReferenceLimits = ReferenceLimits()) -> None:
        self.folder = folder if folder is not None else default_styles_dir()
        self.limits = limits

    def _files(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(self.folder.iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}

    def names(self) -> list[str]:
        return list(self._files())

    def image(self, name: str) -> np.ndarray:
        path = self._files().get(name)
        if path is None:
            raise PromptError(f"style {name!r} is not in {self.folder}")
        return decode_reference(path.read_bytes(), self.limits)

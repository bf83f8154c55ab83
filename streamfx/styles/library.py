"""The style library: a folder of named styles (single images and packs, see :mod:`streamfx.styles`).

``--styles DIR`` (or ``STREAMFX_STYLES``) points at it; the default is
``styles`` in the config folder (:func:`streamfx.user_dirs.config_dir`: ``~/.config/streamfx``). Text prompts select a style
by name: an exact or case-insensitive match, else the closest name.

The folder is read again on each call (a pack written by ``streamfx styles train`` shows up
without a restart). Calls come with prompts and listings, never per frame.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np

from .images import ReferenceError, ReferenceLimits, decode_reference
from ..user_dirs import config_dir
from .pack import ADAPTER_FILE, REFERENCE_FILE, STYLE_FILE, Style, StyleError, read_style_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def default_styles_dir() -> Path:
    if os.environ.get("STREAMFX_STYLES"):
        return Path(os.environ["STREAMFX_STYLES"]).expanduser()
    return config_dir() / "styles"


def match_name(text: str, names: list[str], fuzzy: bool = True) -> str:
    """The name ``text`` selects: exact, then case-insensitive, then (fuzzy) the closest
    or a containing name. Raises :class:`StyleError` listing the known names."""
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
    raise StyleError(f"no style or preset matches {text!r}; known: {', '.join(names) or 'none'}")


def _entry(path: Path) -> Style | None:
    """The style at ``path`` (an image file or a pack folder), None for anything else."""
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return Style(path.stem, path)
    if path.is_dir() and (path / STYLE_FILE).is_file():
        adapter = path / ADAPTER_FILE
        return Style(path.name, path / REFERENCE_FILE, folder=path,
                     adapter_path=adapter if adapter.is_file() else None, meta=read_style_json(path))
    return None


class StyleLibrary:
    def __init__(self, folder: Path | None = None, limits: ReferenceLimits = ReferenceLimits()) -> None:
        self.folder = folder if folder is not None else default_styles_dir()
        self.limits = limits

    def _scan(self) -> tuple[dict[str, Style], dict[str, str]]:
        """(styles by name, one-line refusal by name for names that two entries share)."""
        found: dict[str, Style] = {}
        clashes: dict[str, str] = {}
        if not self.folder.is_dir():
            return found, clashes
        for path in sorted(self.folder.iterdir()):
            try:
                style = None if path.name.startswith(".") else _entry(path)
            except StyleError as exc:  # listed, and refused when used
                style, clashes[path.name] = Style(path.name, path / REFERENCE_FILE, folder=path), str(exc)
            if style is None:
                continue
            if style.name in found:
                clashes[style.name] = (f"two styles named {style.name!r} in {self.folder}: "
                                       f"{_shown(found[style.name])} and {_shown(style)}; rename or remove one")
                continue
            found[style.name] = style
        return found, clashes

    def styles(self) -> dict[str, Style]:
        """Every style in the folder by name. Raises :class:`StyleError` (one line) when two
        entries share a name (``x.png`` and ``x.jpg``, or ``x.png`` and ``x/``) or a pack's
        ``style.json`` is unreadable: :meth:`problems` lists them all."""
        found, clashes = self._scan()
        if clashes:
            raise StyleError(next(iter(clashes.values())))
        return found

    def problems(self) -> dict[str, str]:
        """One line per style name that cannot be used (shared name, unreadable pack)."""
        return self._scan()[1]

    def names(self) -> list[str]:
        """The style names, for listing and matching (a shared name once: using it is refused)."""
        return list(self._scan()[0])

    def style(self, name: str) -> Style:
        found, clashes = self._scan()
        if name in clashes:
            raise StyleError(clashes[name])
        if name not in found:
            raise StyleError(f"style {name!r} is not in {self.folder}")
        return found[name]

    def image(self, name: str) -> np.ndarray:
        """The reference image of style ``name``, RGB uint8 (long side at most 1024)."""
        style = self.style(name)
        try:
            return decode_reference(style.reference.read_bytes(), self.limits)
        except OSError as exc:
            raise StyleError(f"style {name!r}: cannot read {style.reference.name} ({exc.strerror or exc})") from None
        except ReferenceError as exc:
            raise StyleError(f"style {name!r}: {exc}") from None


def _shown(style: Style) -> str:
    return f"{style.folder.name}/" if style.folder is not None else style.reference.name

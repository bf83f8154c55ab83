"""Style packs: a folder ``NAME/`` with ``reference.png``, ``style.json`` and, for a trained
style, ``adapter.safetensors`` (a low-rank adapter of the 3DPE encoder, a few MB).

``style.json`` says what made the style::

    {"format": "streamfx-style/1", "name": "demo", "kind": "trained",
     "base_sha256": "<sha256 of the base 3DPE weights the adapter was trained on>",
     "adapter": {"file": "adapter.safetensors", "rank": 8, "targets": 16, "parameters": 403712, "full": false},
     "training": {"steps": ..., "minutes": ..., "device": ..., "loss_weights": {...},
                  "losses_before": {...}, "losses_after": {...}, ...}}

Loading an adapter is checked like weights: safetensors only, the shapes against the model,
and the base sha256 against the weights in use; each problem is one line
(:class:`StyleError`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "streamfx-style/1"
REFERENCE_FILE = "reference.png"
STYLE_FILE = "style.json"
ADAPTER_FILE = "adapter.safetensors"
MAX_STYLE_JSON = 1 << 20


class StyleError(ValueError):
    """A style cannot be used (unknown, duplicate, unreadable, not for these weights): one line."""


@dataclass(frozen=True)
class Style:
    """A named style: its reference image and, for a trained pack, its adapter."""

    name: str
    reference: Path
    folder: Path | None = None
    adapter_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return "trained" if self.adapter_path is not None else ("pack" if self.folder is not None else "image")

    @property
    def base_sha256(self) -> str | None:
        return self.meta.get("base_sha256")


def read_style_json(folder: Path) -> dict[str, Any]:
    path = folder / STYLE_FILE
    try:
        if path.stat().st_size > MAX_STYLE_JSON:
            raise StyleError(f"style {folder.name!r}: {STYLE_FILE} is larger than {MAX_STYLE_JSON} bytes")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StyleError(f"style {folder.name!r}: {STYLE_FILE} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StyleError(f"style {folder.name!r}: {STYLE_FILE} is not a {FORMAT} file")
    return meta


def _readable(path: Path | str) -> None:
    """The usual file mode (0666 less the umask), not the private one of a temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pack(folder: Path, reference_rgb: np.ndarray, meta: dict[str, Any], adapter=None) -> Style:
    """Write (or replace) the pack ``folder``: ``reference.png``, ``adapter.safetensors`` when
    ``adapter`` (a :class:`~streamfx.runtime.adapters.LowRankAdapter`) is given, and
    ``style.json`` last, so that a pack with a ``style.json`` is complete. Each file is
    replaced atomically."""
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(reference_rgb)).save(buffer, format="PNG")
    _atomic_write(folder / REFERENCE_FILE, buffer.getvalue())
    if adapter is not None:
        from ..runtime.adapters import save_adapter

        tmp = folder / f".{ADAPTER_FILE}.tmp"
        save_adapter(adapter, tmp)
        _readable(tmp)
        os.replace(tmp, folder / ADAPTER_FILE)
    meta = {"format": FORMAT, "name": folder.name, **meta}
    _atomic_write(folder / STYLE_FILE, (json.dumps(meta, indent=2, sort_keys=False) + "\n").encode())
    return Style(folder.name, folder / REFERENCE_FILE, folder,
                 folder / ADAPTER_FILE if (folder / ADAPTER_FILE).is_file() else None, meta)


def load_style_adapter(style: Style, base_sha256: str | None, encoder):
    """The style's :class:`~streamfx.runtime.adapters.LowRankAdapter`, checked against the
    ``encoder`` it will run on and the sha256 of the weights in use (None: not checked)."""
    from ..runtime.adapters import AdapterError, load_adapter

    if style.adapter_path is None:
        raise StyleError(f"style {style.name!r} has no {ADAPTER_FILE}")
    wanted = style.base_sha256
    if base_sha256 is not None and wanted != base_sha256:
        raise StyleError(f"style {style.name!r} was trained on other 3DPE weights (base {str(wanted)[:12]}..., "
                         f"these are {base_sha256[:12]}...); train it again on these weights")
    try:
        adapter = load_adapter(style.adapter_path, name=style.name)
        adapter.check(encoder)
    except AdapterError as exc:
        raise StyleError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise StyleError(f"style {style.name!r}: {ADAPTER_FILE} is not a readable safetensors adapter "
                         f"({type(exc).__name__})") from None
    return adapter

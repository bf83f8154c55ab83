"""Every entry of the official 3DPE checkpoint ``3dpe.pt``: (entry, key, shape, kind).

The table ships inside the package as ``checkpoint_keys.tsv`` (the reference table of
EzioBy/3dpe's ``Live3DEditingEncoder(in_channels=5, mode="LT", encoder_name="resnet34",
encoder_depth=3, use_bn=False)`` and ``TriplaneRenderer(img_resolution=512)``), so that
validation works without the reference files. ``kind`` is ``parameter`` or ``buffer``; a
shape of ``()`` (``scalar`` in the file) is a scalar.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KeyRow = tuple[str, str, tuple[int, ...], str]


def parse_key_table(text: str) -> list[KeyRow]:
    """Rows (entry, key, shape, kind) of a key table: tab-separated, ``64x5x7x7`` shapes, a header row."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry, key, shape, kind = line.split("\t")
        if not entry.endswith("state_dict"):  # the header row
            continue
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((entry, key, dims, kind))
    return rows


def read_key_table(path: str | Path) -> list[KeyRow]:
    """Rows of a key table file such as the reference ``3dpe_checkpoint_keys.tsv``."""
    return parse_key_table(Path(path).read_text())


CHECKPOINT_SPEC: tuple[KeyRow, ...] = tuple(
    parse_key_table(resources.files(__package__).joinpath("checkpoint_keys.tsv").read_text()))

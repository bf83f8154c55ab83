"""The engine cache's pruning policy, without any file access: which artefacts a prune
removes and why (:func:`plan`), the size cap and its units. :class:`~.engine_cache.EngineCache`
applies a plan under its manifest lock.

Order: manifest entries whose file is gone; files no entry owns, once older than
:data:`ORPHAN_GRACE_S` (a build writes its file before recording it); artefacts of other
weights (``keep_weights``); then the least recently used artefacts (the artefact's mtime,
touched on every cache hit) until the folder fits the cap, sparing ``protect`` and
anything used within ``keep_recent_s``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

ALWAYS_KEPT = ("README.md", "manifest.lock", "manifest.json")
MAX_GB_ENV = "STREAMFX_ENGINES_MAX_GB"
DEFAULT_MAX_GB = 8.0
KEEP_RECENT_S = 600.0     # automatic eviction spares artefacts used in the last 10 minutes
ORPHAN_GRACE_S = 3600.0   # an unowned file younger than this may be a build in progress
TOUCH_EVERY_S = 60.0      # a hit re-touches its artefact at most this often
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of ``"123"``, ``"500M"``, ``"8G"``, ``"2.5GiB"`` (binary units: 1K = 1024); ValueError if bad."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"bad size {text!r}: give bytes or a number with K, M, G or T (e.g. 500M, 8G, 2.5G)")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def max_bytes_from_env() -> int | None:
    """The size cap from ``$STREAMFX_ENGINES_MAX_GB`` (GiB, default 8); None when it is 0 (no cap)."""
    raw = os.environ.get(MAX_GB_ENV, "").strip()
    try:
        gib = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        gib = -1.0
    if not math.isfinite(gib) or gib < 0:
        raise ValueError(f"{MAX_GB_ENV}={raw!r} is not a size in GiB (e.g. 8, 2.5; 0 = no cap)")
    return int(gib * (1 << 30)) or None


@dataclass(frozen=True)
class Removed:
    """One thing :meth:`EngineCache.prune` removed (or would remove)."""

    reason: str   # "missing" (entry without its file), "orphan" (file no entry owns), "weights", "lru", "all"
    name: str     # the file; the entry's slug for "missing"
    bytes: int
    entries: tuple[str, ...] = ()  # manifest slugs dropped with it
    files: tuple[str, ...] = ()    # files deleted (the artefact and its sidecars)


@dataclass
class PruneReport:
    bytes_before: int
    bytes_after: int
    max_bytes: int | None
    dry_run: bool = False
    removed: list[Removed] = field(default_factory=list)
    spared_recent: int = 0  # artefacts above the cap kept because they were used recently

    @property
    def over_cap(self) -> bool:
        return self.max_bytes is not None and self.bytes_after > self.max_bytes


@dataclass
class _Unit:
    """One artefact file with its sidecars and every manifest entry that points at it."""

    file: str
    slugs: list[str]
    files: list[str]
    bytes: int
    last_used: float  # the artefact's mtime: written at build, touched on every hit


def entry_files(entry: dict, present: Iterable[str]) -> list[str]:
    """The files of ``present`` that ``entry`` owns: its ``file``, listed ``files`` and conventional sidecars.
    (No prefix matching: a TensorRT plan's name starts with its ONNX export's slug.)"""
    name = entry["file"]
    stem, ext = os.path.splitext(name)
    candidates = [name, *entry.get("files", ()), name + ".data"] + ([stem + ".bin"] if ext == ".xml" else [])
    present = set(present)
    return [f for f in dict.fromkeys(candidates) if f in present]


def weights_of(entries: dict) -> dict[str, str | None]:
    """slug -> the weights digest an entry was built from: an export's ``key.onnx_sha256``; for a
    backend artefact, that of the export whose sha256 (or file, ``onnx``) it was built from."""
    exports = [e for e in entries.values() if e["key"]["backend"] == "onnx"]
    by_sha = {e.get("sha256"): e["key"]["onnx_sha256"] for e in exports}
    by_file = {e["file"]: e["key"]["onnx_sha256"] for e in exports}
    return {slug: e["key"]["onnx_sha256"] if e["key"]["backend"] == "onnx"
            else by_sha.get(e["key"]["onnx_sha256"]) or by_file.get(e.get("onnx"))
            for slug, e in entries.items()}


def _units(entries: dict, files: dict[str, tuple[int, float]]) -> list[_Unit]:
    """Group entries by artefact file (their files must exist); a sidecar is never another entry's artefact."""
    artefacts = {e["file"] for e in entries.values()}
    units: dict[str, _Unit] = {}
    for slug, entry in entries.items():
        name = entry["file"]
        unit = units.setdefault(name, _Unit(name, [], [], 0, files[name][1]))
        unit.slugs.append(slug)
        for f in entry_files(entry, files):
            if f not in unit.files and (f == name or f not in artefacts):
                unit.files.append(f)
                unit.bytes += files[f][0]
    return list(units.values())


def _stale_units(units: list[_Unit], entries: dict, keep_weights: tuple[str, ...], root: Path) -> list:
    """("weights", unit) for each artefact not built from weights matching a ``keep_weights`` prefix."""
    if not keep_weights:
        return []
    prefixes = tuple(p.lower() for p in keep_weights)
    weights = weights_of(entries)
    for prefix in prefixes:
        if not any((w or "").startswith(prefix) for w in weights.values()):
            raise ValueError(f"no engine in {root} was built from weights {prefix} (see: streamfx engines list)")
    return [("weights", u) for u in units if not any((weights.get(s) or "").startswith(prefixes) for s in u.slugs)]


def _orphan(name: str, age_s: float, everything: bool) -> bool:
    """Whether an unowned file goes: with ``everything`` all but README.md, the manifest and its lock; else not
    the manifest, TensorRT timing caches, hidden files, or anything younger than the grace period."""
    if everything:
        return name not in ALWAYS_KEPT
    if name in ALWAYS_KEPT or name.startswith((".", "timing-")):
        return False
    return age_s >= ORPHAN_GRACE_S


def plan(entries: dict, files: dict[str, tuple[int, float]], now: float, max_bytes: int | None,
         dry_run: bool = False, *, keep_weights: tuple[str, ...] = (), everything: bool = False,
         keep_recent_s: float = 0.0, protect: set[str] = frozenset(), root: Path = Path(".")) -> PruneReport:
    """What a prune removes, from the manifest's ``entries`` and the folder's ``files``
    (name -> (size, mtime)); nothing is touched here (see :meth:`EngineCache.prune`)."""
    report = PruneReport(sum(size for size, _ in files.values()), 0, max_bytes, dry_run)
    present = {slug: e for slug, e in entries.items() if e.get("file") in files}
    report.removed += [Removed("missing", slug, 0, (slug,)) for slug in entries if slug not in present]
    units = _units(present, files)
    doomed = [("all", u) for u in units] if everything else _stale_units(units, entries, keep_weights, root)
    owned = {f for unit in units for f in unit.files}
    report.removed += [Removed("all" if everything else "orphan", name, size, (), (name,))
                       for name, (size, mtime) in sorted(files.items())
                       if name not in owned and _orphan(name, now - mtime, everything)]
    total = report.bytes_before - sum(r.bytes for r in report.removed) - sum(u.bytes for _, u in doomed)
    if max_bytes is not None and not everything:
        gone = {u.file for _, u in doomed}
        for unit in sorted((u for u in units if u.file not in gone), key=lambda u: u.last_used):
            if total <= max_bytes:
                break
            if protect.intersection(unit.slugs) or now - unit.last_used < keep_recent_s:
                report.spared_recent += 1
                continue
            doomed.append(("lru", unit))
            total -= unit.bytes
    report.removed += [Removed(reason, u.file, u.bytes, tuple(u.slugs), tuple(u.files)) for reason, u in doomed]
    report.bytes_after = total
    return report

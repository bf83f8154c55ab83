"""The engine cache in ``engines/``: built artefacts and a manifest that says what built them.

An artefact is only reused when its key matches: the graph, its ONNX file's hash, the
backend, and the backend's hardware/version fingerprint (for TensorRT: GPU name, compute
capability and TensorRT version). Anything else rebuilds instead of crashing on load.
Several processes may build into one cache at once: the manifest is updated under a file
lock and replaced atomically.

The folder is kept under a size cap (``$STREAMFX_ENGINES_MAX_GB`` GiB, default 8; 0 turns the
automatic cap off). A cache hit marks its artefact used by touching the file's mtime (no
manifest write), and :meth:`EngineCache.prune` evicts the least recently used artefacts:
``record`` runs it when the folder grows past the cap, sparing the entry it just recorded and
anything used in the last :data:`KEEP_RECENT_S` seconds; ``streamfx engines prune`` runs it on
demand. What an entry owns is its ``file``, plus the sidecars it lists in ``files`` and the
conventional ones that exist (``<file>.data`` for ONNX external data, ``<stem>.bin`` next to an
OpenVINO ``.xml``). Entries sharing a file (an ONNX export and the ONNX Runtime/OpenVINO
entries that load it directly) are evicted together.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .. import log

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt

logger = log.get(__name__)


def default_engines_dir() -> Path:
    """``$STREAMFX_ENGINES``; else ``engines/`` of a source checkout; else the user cache."""
    if os.environ.get("STREAMFX_ENGINES"):
        return Path(os.environ["STREAMFX_ENGINES"]).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "engines"
    if (checkout / "README.md").exists():
        return checkout
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamfx" / "engines"


ENGINES_DIR = default_engines_dir()
MANIFEST = "manifest.json"
LOCK = "manifest.lock"
README = "README.md"

MAX_GB_ENV = "STREAMFX_ENGINES_MAX_GB"
DEFAULT_MAX_GB = 8.0
KEEP_RECENT_S = 600.0     # automatic eviction spares artefacts used in the last 10 minutes
ORPHAN_GRACE_S = 3600.0   # an unowned file younger than this may be a build in progress
TOUCH_EVERY_S = 60.0      # a hit re-touches its artefact at most this often
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
class CacheKey:
    graph: str
    onnx_sha256: str
    backend: str
    fingerprint: str  # e.g. "NVIDIA A10G|sm86|trt10.3.0"; "cpu" for CPU runtimes

    def slug(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.fingerprint)[:40]
        return f"{self.graph}.{self.backend}.{safe}.{h}"


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


class EngineCache:
    """The cache folder. ``max_bytes`` caps it after each ``record`` (None: ``$STREAMFX_ENGINES_MAX_GB``,
    read at each record; 0: no automatic cap)."""

    def __init__(self, root: Path = ENGINES_DIR, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {"entries": {}}

    def entry(self, key: CacheKey) -> dict | None:
        """The manifest entry of ``key`` (file, key, built, and what ``record`` added), if its file
        exists. A hit marks the artefact used (for least-recently-used eviction)."""
        entry = self.manifest()["entries"].get(key.slug())
        if entry is None or not _mark_used(self.root / entry["file"]):
            return None
        return entry

    def lookup(self, key: CacheKey) -> Path | None:
        entry = self.entry(key)
        return None if entry is None else self.root / entry["file"]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the manifest's lock file (an OS advisory lock: released if the process dies)."""
        with open(self.root / LOCK, "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows
                while True:
                    try:
                        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                        break
                    except OSError:
                        time.sleep(0.05)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                else:  # pragma: no cover - Windows
                    msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

    def _write_manifest(self, data: dict) -> None:
        """Replace the manifest atomically (a reader sees the old or the new file); hold the lock."""
        tmp = self.manifest_path.with_name(f"{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.manifest_path)

    def record(self, key: CacheKey, artefact: Path, **extra) -> None:
        """Add or replace ``key``'s entry, then evict least-recently-used artefacts if the folder
        is over the cap. Safe across processes: the read-modify-write runs under the lock, and
        the new manifest replaces the old one atomically."""
        slug = key.slug()
        with self._locked():
            data = self.manifest()
            data["entries"][slug] = {"file": artefact.name, "key": asdict(key),
                                     "built": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
            self._write_manifest(data)
            self._enforce_cap(slug)

    def path_for(self, key: CacheKey, suffix: str) -> Path:
        return self.root / f"{key.slug()}{suffix}"

    def _enforce_cap(self, just_recorded: str) -> None:
        try:
            cap = max_bytes_from_env() if self.max_bytes is None else (self.max_bytes or None)
        except ValueError as exc:
            logger.warning("engine cache: bad size cap, using the default",
                           extra={"error": str(exc), "cap_gib": DEFAULT_MAX_GB})
            cap = int(DEFAULT_MAX_GB * (1 << 30))
        try:
            if cap is None or sum(size for size, _ in self._scan().values()) <= cap:
                return
            report = self._prune_locked(cap, protect={just_recorded}, keep_recent_s=KEEP_RECENT_S)
        except OSError as exc:  # never fail a build over housekeeping
            logger.warning("engine cache: eviction failed", extra={"error": str(exc), "root": str(self.root)})
            return
        for item in report.removed:
            logger.info("engine cache: evicted", extra={"reason": item.reason, "file": item.name,
                                                        "bytes": item.bytes, "entries": list(item.entries)})
        log_at = logger.warning if report.over_cap else logger.info
        log_at("engine cache: pruned", extra={"before": human_size(report.bytes_before),
                                              "after": human_size(report.bytes_after), "cap": human_size(cap),
                                              "spared_recent": report.spared_recent})

    def prune(self, max_bytes: int | None, dry_run: bool = False, now: float | None = None, *,
              keep_weights: Iterable[str] = (), everything: bool = False, keep_recent_s: float = 0.0,
              protect: Iterable[str] = ()) -> PruneReport:
        """Drop entries whose file is missing, delete files no entry owns (orphans older than
        :data:`ORPHAN_GRACE_S`; never README.md, the manifest, its lock or TensorRT timing caches),
        then delete least-recently-used artefacts until the folder is at most ``max_bytes``
        (None: no cap), except those of ``protect`` (slugs) or used within ``keep_recent_s``.

        ``keep_weights``: weights digest prefixes (see :func:`weights_of`); artefacts built from
        other weights go first (ValueError if a prefix matches no entry). ``everything``: delete
        every file but README.md and the lock, leaving an empty manifest. ``dry_run``: only report.
        """
        with self._locked():
            return self._prune_locked(max_bytes, dry_run, now, keep_weights=tuple(keep_weights),
                                      everything=everything, keep_recent_s=keep_recent_s, protect=set(protect))

    def _scan(self) -> dict[str, tuple[int, float]]:
        """name -> (size, mtime) of the plain files in the folder."""
        found = {}
        with os.scandir(self.root) as it:
            for item in it:
                if item.is_file(follow_symlinks=False):
                    stat = item.stat(follow_symlinks=False)
                    found[item.name] = (stat.st_size, stat.st_mtime)
        return found

    def _prune_locked(self, max_bytes: int | None, dry_run: bool = False, now: float | None = None, *,
                      keep_weights: tuple[str, ...] = (), everything: bool = False, keep_recent_s: float = 0.0,
                      protect: set[str] = frozenset()) -> PruneReport:
        now = time.time() if now is None else now
        data = self.manifest()
        entries = data.setdefault("entries", {})
        files = self._scan()
        report = PruneReport(sum(size for size, _ in files.values()), 0, max_bytes, dry_run)
        present = {slug: e for slug, e in entries.items() if e.get("file") in files}
        report.removed += [Removed("missing", slug, 0, (slug,)) for slug in entries if slug not in present]
        units = _units(present, files)
        doomed = [("all", u) for u in units] if everything else _stale_units(units, entries, keep_weights, self.root)
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
        if not dry_run:
            self._apply(data, report)
        return report

    def _apply(self, data: dict, report: PruneReport) -> None:
        """Write the manifest without the removed entries first, then delete the files (a crash in
        between leaves orphans for the next prune, never an entry without its file)."""
        dropped = {slug for item in report.removed for slug in item.entries}
        if dropped:
            data["entries"] = {s: e for s, e in data["entries"].items() if s not in dropped}
            self._write_manifest(data)
        for name in (f for item in report.removed for f in item.files):
            try:
                (self.root / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # e.g. open elsewhere on Windows: the next prune retries it
                logger.warning("engine cache: cannot delete", extra={"file": name, "error": str(exc)})


def _mark_used(path: Path) -> bool:
    """Whether ``path`` exists; touch its mtime (the LRU clock) unless touched in the last minute.
    A read-only cache still works: its eviction order is then the build order."""
    try:
        if time.time() - path.stat().st_mtime > TOUCH_EVERY_S:
            os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:
        pass
    return True


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
    """Whether an unowned file goes: with ``everything`` all but README.md and the lock; else not
    the manifest, TensorRT timing caches, hidden files, or anything younger than the grace period."""
    if everything:
        return name not in (README, LOCK, MANIFEST)
    if name in (README, LOCK, MANIFEST) or name.startswith((".", "timing-")):
        return False
    return age_s >= ORPHAN_GRACE_S

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
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .. import log
from .engine_prune import DEFAULT_MAX_GB, KEEP_RECENT_S, TOUCH_EVERY_S, PruneReport, human_size, max_bytes_from_env, plan

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

def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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
        report = plan(entries, files, now, max_bytes, dry_run, keep_weights=keep_weights, everything=everything,
                      keep_recent_s=keep_recent_s, protect=protect, root=self.root)
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




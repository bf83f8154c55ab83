"""The engine cache in ``engines/``: built artefacts and a manifest that says what built them.

An artefact is only reused when its key matches: the graph, its ONNX file's hash, the
backend, and the backend's hardware/version fingerprint (for TensorRT: GPU name, compute
capability and TensorRT version). Anything else rebuilds instead of crashing on load.
Several processes may build into one cache at once: the manifest is updated under a file
lock and replaced atomically.
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
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
    import msvcrt

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
    def __init__(self, root: Path = ENGINES_DIR) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {"entries": {}}

    def entry(self, key: CacheKey) -> dict | None:
        """The manifest entry of ``key`` (file, key, built, and what ``record`` added), if its file exists."""
        entry = self.manifest()["entries"].get(key.slug())
        if entry is None or not (self.root / entry["file"]).exists():
            return None
        return entry

    def lookup(self, key: CacheKey) -> Path | None:
        entry = self.manifest()["entries"].get(key.slug())
        if entry is None:
            return None
        path = self.root / entry["file"]
        return path if path.exists() else None

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

    def record(self, key: CacheKey, artefact: Path, **extra) -> None:
        """Add or replace ``key``'s entry. Safe across processes: the read-modify-write runs under
        the lock, and the new manifest replaces the old one atomically (a reader sees the old
        or the new file, never half of one)."""
        with self._locked():
            data = self.manifest()
            data["entries"][key.slug()] = {"file": artefact.name, "key": asdict(key),
                                           "built": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
            tmp = self.manifest_path.with_name(f"{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data, indent=2))
            tmp.replace(self.manifest_path)

    def path_for(self, key: CacheKey, suffix: str) -> Path:
        return self.root / f"{key.slug()}{suffix}"

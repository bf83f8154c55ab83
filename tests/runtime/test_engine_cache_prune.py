"""The engine cache's size cap: ``EngineCache.prune``, the eviction ``record`` runs, the LRU
clock a cache hit advances, and ``streamfx engines prune``. Fake artefacts of a few KB in tmp
folders; mtimes (the LRU clock) are set explicitly so the order never depends on timing."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from streamfx.cli import main
from streamfx.runtime.engine_cache import LOCK, MANIFEST, CacheKey, EngineCache
from streamfx.runtime.engine_prune import max_bytes_from_env, parse_size

KB = 1024
HOUR = 3600.0


def put(cache: EngineCache, graph: str, *, size: int = 4 * KB, age_s: float | None = None,
        backend: str = "onnxruntime", weights: str = "sha", name: str | None = None, **extra) -> CacheKey:
    """Record a fake artefact for ``graph``; ``age_s`` sets its mtime (last use) that long ago."""
    key = CacheKey(graph, weights, backend, "cpu")
    path = cache.root / name if name else cache.path_for(key, ".onnx")
    if not path.exists():
        path.write_bytes(b"x" * size)
    if age_s is not None:
        age(path, age_s)
    cache.record(key, path, **extra)
    return key


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file())


def entries(cache: EngineCache) -> dict:
    return json.loads(cache.manifest_path.read_text())["entries"]  # fails if the manifest is not valid JSON


@pytest.fixture
def cache(tmp_path) -> EngineCache:
    """A cache without automatic eviction (the tests call prune themselves)."""
    return EngineCache(tmp_path / "engines", max_bytes=0)


def test_orphans_go_but_readme_manifest_lock_timing_caches_and_young_files_stay(cache):
    key = put(cache, "encoder", age_s=2 * HOUR)
    root = cache.root
    (root / "README.md").write_text("# engines\n")
    keep = {"README.md", MANIFEST, LOCK, cache.lookup(key).name, "timing-gpu.cache",
            "renderer.onnx.export2.abc.onnx", f"{MANIFEST}.1.2.tmp"}
    for name in ("timing-gpu.cache", "killed-build.onnx", f"{MANIFEST}.9.9.tmp"):
        (root / name).write_bytes(b"o" * KB)
        age(root / name, 2 * HOUR)
    (root / "renderer.onnx.export2.abc.onnx").write_bytes(b"y" * KB)  # an export being written right now
    (root / f"{MANIFEST}.1.2.tmp").write_bytes(b"{")

    report = cache.prune(None)

    assert sorted((r.reason, r.name) for r in report.removed) == [("orphan", "killed-build.onnx"),
                                                                 ("orphan", f"{MANIFEST}.9.9.tmp")]
    assert {p.name for p in root.iterdir()} == keep
    assert report.bytes_before - report.bytes_after == 2 * KB
    assert list(entries(cache)) == [key.slug()]


def test_entries_whose_file_is_missing_are_dropped(cache):
    kept, gone = put(cache, "encoder"), put(cache, "reference")
    cache.root.joinpath(entries(cache)[gone.slug()]["file"]).unlink()

    report = cache.prune(None)

    assert [(r.reason, r.name) for r in report.removed] == [("missing", gone.slug())]
    assert list(entries(cache)) == [kept.slug()]


def test_a_hit_marks_the_entry_used_and_the_least_recently_used_go_first(cache):
    old = put(cache, "reference", age_s=3 * HOUR)
    older = put(cache, "encoder", age_s=2 * HOUR)
    recent = put(cache, "renderer-full", age_s=1 * HOUR)
    built = entries(cache)[old.slug()]["built"]
    assert cache.lookup(old) is not None  # a hit: "old" becomes the most recently used

    assert time.time() - cache.lookup(old).stat().st_mtime < 60, "a hit must touch the artefact"
    assert entries(cache)[old.slug()]["built"] == built, "the build time stays"
    report = cache.prune(folder_bytes(cache.root) - 1)  # room for all but one artefact

    assert [(r.reason, r.entries) for r in report.removed] == [("lru", (older.slug(),))]
    assert set(entries(cache)) == {old.slug(), recent.slug()}
    assert not cache.path_for(older, ".onnx").exists()
    assert report.bytes_after <= report.max_bytes < report.bytes_before


def test_entry_hits_count_as_use_too(cache):
    a = put(cache, "a", age_s=3 * HOUR)
    b = put(cache, "b", age_s=2 * HOUR)
    assert cache.entry(a) is not None
    cache.prune(folder_bytes(cache.root) - 1)
    assert set(entries(cache)) == {a.slug()}, f"{b} was used less recently than {a}"


def test_entries_sharing_a_file_go_together_and_a_plan_is_no_sidecar_of_its_export(cache):
    export = put(cache, "encoder", backend="onnx", age_s=2 * HOUR)
    export_file = cache.path_for(export, ".onnx")
    sidecar = cache.root / (export_file.name + ".data")  # ONNX external data
    sidecar.write_bytes(b"d" * KB)
    age(sidecar, 2 * HOUR)
    runtime = put(cache, "encoder", backend="openvino", name=export_file.name, age_s=2 * HOUR)
    plan_name = f"{export_file.stem}.GPU_sm86_trt10.b1.plan"  # how the TensorRT backend names it
    plan = put(cache, "encoder", backend="tensorrt", name=plan_name, age_s=1 * HOUR)

    report = cache.prune(folder_bytes(cache.root) - 1)

    assert [(r.reason, set(r.entries), set(r.files)) for r in report.removed] == [
        ("lru", {export.slug(), runtime.slug()}, {export_file.name, sidecar.name})]
    assert list(entries(cache)) == [plan.slug()] and (cache.root / plan_name).exists()


def test_dry_run_removes_nothing(cache):
    for i in range(3):
        put(cache, f"g{i}", age_s=(i + 2) * HOUR)
    (cache.root / "killed-build.onnx").write_bytes(b"o")
    age(cache.root / "killed-build.onnx", 2 * HOUR)
    before = {p.name: (p.stat().st_mtime, p.read_bytes()) for p in cache.root.iterdir()}

    report = cache.prune(0, dry_run=True)

    assert len(report.removed) == 4 and report.dry_run
    assert {p.name: (p.stat().st_mtime, p.read_bytes()) for p in cache.root.iterdir()} == before


def test_record_evicts_the_least_recently_used_beyond_the_cap(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=0)
    size = 16 * KB
    first = put(cache, "first", size=size, age_s=3 * HOUR)
    second = put(cache, "second", size=size, age_s=2 * HOUR)
    third = put(cache, "third", size=size, age_s=1 * HOUR)
    cache.max_bytes = 3 * size + 8 * KB  # room for three artefacts and the manifest

    newest = put(cache, "newest", size=size)

    assert set(entries(cache)) == {second.slug(), third.slug(), newest.slug()}
    assert not cache.path_for(first, ".onnx").exists()


def test_record_never_evicts_what_it_recorded_or_what_was_used_in_the_last_minutes(tmp_path):
    cache = EngineCache(tmp_path, max_bytes=0)
    stale = put(cache, "stale", age_s=2 * HOUR)
    in_use = put(cache, "in-use", age_s=3 * HOUR)
    cache.lookup(in_use)  # a running process just loaded it
    cache.max_bytes = 1  # far below anything
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("streamfx.runtime.engine_cache")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        new = put(cache, "new", age_s=4 * HOUR)  # even an old file: it was just recorded
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    assert set(entries(cache)) == {in_use.slug(), new.slug()}
    evicted = [r for r in seen if r.getMessage() == "engine cache: evicted"]
    assert [(r.reason, r.entries) for r in evicted] == [("lru", [stale.slug()])]


def test_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("STREAMFX_ENGINES_MAX_GB", raising=False)
    assert max_bytes_from_env() == 8 << 30
    monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", "2.5")
    assert max_bytes_from_env() == int(2.5 * (1 << 30))
    monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", "0")
    assert max_bytes_from_env() is None, "0 turns the automatic cap off"
    monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", "lots")
    with pytest.raises(ValueError, match="STREAMFX_ENGINES_MAX_GB"):
        max_bytes_from_env()


def test_record_reads_the_cap_from_the_environment(tmp_path, monkeypatch):
    cache = EngineCache(tmp_path)
    old = put(cache, "old", age_s=2 * HOUR)
    monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", str(1 / (1 << 30)))  # 1 byte
    put(cache, "new")
    assert old.slug() not in entries(cache)


@pytest.mark.parametrize("text, expected", [("500M", 500 << 20), ("8G", 8 << 30), ("2.5G", int(2.5 * (1 << 30))),
                                            ("4096", 4096), ("10KiB", 10 << 10), ("1gb", 1 << 30)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "5P", "1.2.3M", "G"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_cli_prune_prints_what_it_removed_and_the_sizes(cache, capsys):
    old = put(cache, "old", age_s=2 * HOUR)
    new = put(cache, "new", age_s=1 * HOUR)

    cap = folder_bytes(cache.root) - 1
    assert main(["engines", "prune", "--max-size", str(cap), "--engines-dir", str(cache.root)]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("removed lru") and cache.path_for(old, ".onnx").name in out[0]
    assert out[1].startswith("size before: ") and out[2].startswith("size after: ") and "KiB" in out[1]
    assert list(entries(cache)) == [new.slug()]


def test_cli_dry_run_and_all(cache, capsys):
    for i in range(2):
        put(cache, f"g{i}", age_s=2 * HOUR)
    (cache.root / "README.md").write_text("# engines\n")
    (cache.root / "timing-gpu.cache").write_bytes(b"t")
    args = ["engines", "prune", "--all", "--engines-dir", str(cache.root)]
    names = {p.name for p in cache.root.iterdir()}

    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would remove") == 3
    assert {p.name for p in cache.root.iterdir()} == names

    assert main(args) == 0
    assert capsys.readouterr().out.count("removed") == 3
    assert {p.name for p in cache.root.iterdir()} == {"README.md", MANIFEST, LOCK}
    assert entries(cache) == {}


def test_cli_keep_weights_removes_what_other_weights_built(cache, capsys):
    mine = put(cache, "encoder", backend="onnx", weights="aaaa1111", sha256="f" * 64)
    built_from_mine = put(cache, "encoder", backend="tensorrt", weights="f" * 64, name="mine.plan")
    theirs = put(cache, "encoder", backend="onnx", weights="bbbb2222", sha256="e" * 64, name="theirs.onnx")
    built_from_theirs = put(cache, "encoder", backend="tensorrt", weights="e" * 64, name="theirs.plan")
    root = str(cache.root)

    assert main(["engines", "prune", "--keep-weights", "cccc", "--engines-dir", root]) == 2
    assert "cccc" in capsys.readouterr().err and len(entries(cache)) == 4
    assert main(["engines", "prune", "--keep-weights", "AAAA", "--engines-dir", root]) == 0

    assert set(entries(cache)) == {mine.slug(), built_from_mine.slug()}
    assert not (cache.root / "theirs.onnx").exists() and not (cache.root / "theirs.plan").exists()
    assert {theirs.slug(), built_from_theirs.slug()}.isdisjoint(entries(cache))


@pytest.mark.parametrize("argv, env", [(["--max-size", "lots"], None), (["--max-size=-5G"], None),
                                       ([], "many"), (["--all", "--max-size", "1G"], None)])
def test_cli_bad_sizes_are_one_line_errors(cache, capsys, monkeypatch, argv, env):
    if env is not None:
        monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", env)
    put(cache, "kept", age_s=2 * HOUR)

    assert main(["engines", "prune", *argv, "--engines-dir", str(cache.root)]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("streamfx engines: ") and "\n" not in err
    assert len(entries(cache)) == 1


def test_cli_list_shows_the_total_size_and_the_cap(cache, capsys, monkeypatch):
    monkeypatch.setenv("STREAMFX_ENGINES_MAX_GB", "2")
    put(cache, "encoder", size=8 * KB)
    assert main(["engines", "list", "--engines-dir", str(cache.root)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("size: ") and "KiB" in last and "cap 2.0 GiB" in last

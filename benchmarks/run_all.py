"""Run every benchmark in turn (``make bench``); each writes its JSON into benchmarks/results/.

Benchmarks run one after another, never in parallel: on a 2-core machine anything else
running at the same time makes the numbers meaningless.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

STEPS = [
    ("face stack", [sys.executable, "-m", "benchmarks.bench_face"]),
    ("mesh engine", [sys.executable, "-m", "benchmarks.bench_mesh"]),
    ("3DPE model and presets", [sys.executable, "-m", "benchmarks.bench_3dpe"]),
    ("whole pipeline", [sys.executable, "-m", "streamfx", "bench", "--engine", "overlay", "--engine", "mesh",
                        "--engine", "3dpe", "--json", str(RESULTS / "pipeline.json"),
                        "--png", str(RESULTS / "pipeline.png")]),
    ("A/V sync", [sys.executable, "-m", "benchmarks.av_sync"]),
    ("virtual microphone sync", [sys.executable, "-m", "benchmarks.virtual_mic_sync"]),
    ("browser round trip", [sys.executable, "-m", "benchmarks.browser_roundtrip", "--engine", "mesh",
                            "--png", str(RESULTS / "roundtrip.png")]),
]


def main() -> int:
    only = set(sys.argv[1:])
    failed = []
    for name, cmd in STEPS:
        if only and not any(word in name for word in only):
            continue
        if cmd[2].startswith("benchmarks.") and not (ROOT / (cmd[2].replace(".", "/") + ".py")).exists():
            continue
        print(f"== {name}", flush=True)
        if subprocess.call(cmd, cwd=ROOT) != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

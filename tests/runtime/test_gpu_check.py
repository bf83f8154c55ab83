"""``python -m benchmarks.gpu_check --device cpu --quick``: the GPU check's code path (loading, capture with
the CUDA graph stand-in, batching), on the CPU, in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_quick_on_the_cpu_writes_parity_and_stage_times(tmp_path):
    out_json = tmp_path / "gpu_check.json"
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--quick",
                          "--json", str(out_json)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["benchmark"] == "gpu_check" and data["schema"] == 1 and data["device"] == "cpu"
    (row,) = data["rows"]
    assert row["name"] == "torch-cuda" and row["precision"] == "fp32"
    # through load_accelerated on the GPU's road: batch sizes 1 and 2 captured with the graph stand-in
    assert row["graphs_captured"] == {"encoder": True, "renderer-fastest": True, "encoderx2": True,
                                      "renderer-fastestx2": True}, row["graphs_captured"]
    parity = row["parity"]
    assert parity["tokens_db"] > 80 and parity["planes_db"] > 80 and parity["image_fastest_db"] > 80, parity
    for stage in ("reference_tokens", "encode", "render_fastest"):
        assert row["stages_ms"][stage]["p50"] > 0
    assert row["full_frame_ms"]["n"] == 1 and row["sustained_fps"] > 0
    assert "torch-cuda" in out.stdout and "full frame" in out.stdout

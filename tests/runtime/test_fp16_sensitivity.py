"""``python -m benchmarks.fp16_sensitivity --quick``: the per-stage FP16 run, small enough for CI."""

from __future__ import annotations

import json
import math

from benchmarks.fp16_sensitivity import main

RENDERER_STAGES = ("rays", "lookup", "decoder", "weights", "composite", "superres", "all_but_volume", "all")


def test_quick_run_measures_every_renderer_stage_and_sees_fp16(tmp_path, testdata):
    out = tmp_path / "s.json"
    assert main(["--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "fp16_sensitivity" and data["weights"]["kind"] in ("random", "imported")
    rows = {row["stage"]: row for row in data["rows"] if row["section"] == "renderer"}

    baseline = rows["float32"]  # the float32 path rerun after nothing was patched: bit-identical
    assert baseline["max_abs_image"] == 0 and baseline["psnr_image"] is None  # null = identical
    for stage in RENDERER_STAGES:
        row = rows[stage]
        assert "unsupported" not in row, row
        assert math.isfinite(row["psnr_image"]), row
        # super-resolution does not touch image_raw: identical there (null), finite elsewhere
        assert row["psnr_raw"] is None if stage == "superres" else math.isfinite(row["psnr_raw"]), row
        assert not row["nonfinite"], row
    # fp16 is visible: every stage in fp16 moves the image, by less than a broken run would
    assert 0 < rows["all"]["max_abs_image"] < 0.1 and rows["all"]["psnr_image"] < 200
    assert any(rows[s]["psnr_image"] < 200 for s in RENDERER_STAGES)

    sections = {row["section"]: row for row in data["rows"] if row["stage"] == "whole"}
    assert math.isfinite(sections["encoder"]["psnr"]) and math.isfinite(sections["vit"]["psnr"])

"""The edit-quality benchmark (``benchmarks/bench_edit_quality.py``) runs end to end in its
quick mode and its metric helpers score an identity edit as they should."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench_edit_quality as beq

pytestmark = pytest.mark.usefixtures("testdata")  # the shared guard: skip locally, fail under CI

METRICS = set(beq.GOALS)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit_quality")
    assert beq.main(["--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "edit_quality_quick.json").read_text())


def test_quick_run_writes_sheet_and_json(quick_run):
    out, data = quick_run
    cases = data["cases"]
    assert len(cases) == 4  # 2 faces x 2 styles, no clips
    assert {c["kind"] for c in cases} == {"face"}
    with Image.open(out / "edit_quality_quick.png") as sheet:
        assert sheet.size == (4 * beq.THUMB, len(cases) * beq.THUMB)  # input | reference | follow | frontal
    for case in cases:
        assert case["refused"] in (True, False)
        if case["refused"]:
            assert case["message"]
            continue
        assert set(case["metrics"]) == METRICS, case["case"]
        for key, value in case["metrics"].items():
            assert value is None or np.isfinite(value), (case["case"], key)
        assert case["metrics"]["flicker_ratio"] is not None  # still faces have a stability figure
    assert set(data["medians"]) == METRICS
    for key, goal in data["goals"].items():
        assert {"goal", "median", "met"} <= set(goal), key
        assert isinstance(goal["met"], bool)
        assert goal["median"] == data["medians"][key]


def test_identity_edit_scores(testdata):
    frame = beq.place(beq.rgb(testdata / "faces" / "ffhq_3.png"))
    ref = beq.rgb(testdata / "styles" / "style_3.png")
    runner = beq.Runner()
    try:
        lm, lm_ref = runner.landmarks(frame), runner.landmarks(ref)
    finally:
        runner.close()
    assert lm is not None and lm_ref is not None
    regs, ref_regs = beq.regions(frame.shape, lm), beq.regions(ref.shape, lm_ref)
    for name in ("face", "skin", "lips", "cheeks", "ear_neck"):
        assert regs[name].sum() > 100, name
    assert beq.highpass_ssim(frame, frame, regs["face"]) == pytest.approx(1.0, abs=1e-9)
    assert beq.landmark_error(lm, lm) == 0.0
    assert beq.look_ratio(frame, frame, regs["skin"], ref, ref_regs["skin"]) == pytest.approx(1.0)
    assert beq.look_ratio(frame, ref_like(frame, ref, regs["skin"], ref_regs["skin"]), regs["skin"],
                          ref, ref_regs["skin"]) < 0.2
    assert beq.cheek_neck_ratio(frame, frame, regs) == pytest.approx(1.0)
    # a blurred output loses the detail the high-pass SSIM measures: the more, the lower
    scores = [beq.highpass_ssim(frame, blurred(frame, k), regs["face"]) for k in (2, 4, 8)]
    assert 1.0 > scores[0] > scores[1] > scores[2] and scores[2] < beq.SSIM_FLOOR, scores
    # the same noisy clip in and out: flicker ratio 1
    clip = beq.noisy_still(frame, n=4)
    assert beq.flicker(clip, regs["face"]) > 0.5
    assert beq.flicker(clip, regs["face"]) / beq.flicker(clip, regs["face"]) == 1.0


def blurred(frame: np.ndarray, k: int) -> np.ndarray:
    """``frame`` downsampled ``k`` times and back up (bilinear)."""
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w // k, h // k)).resize((w, h)))


def ref_like(frame: np.ndarray, ref: np.ndarray, mask: np.ndarray, ref_mask: np.ndarray) -> np.ndarray:
    """``frame`` with the region ``mask`` shifted to the reference region's mean RGB."""
    out = frame.astype(np.float64)
    out[mask] += ref[ref_mask].mean(axis=0) - out[mask].mean(axis=0)
    return np.clip(out, 0, 255).astype(np.uint8)

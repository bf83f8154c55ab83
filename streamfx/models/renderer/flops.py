"""Analytic FLOP counts of one render, per stage (multiply-add = 2 FLOPs).

Counts the dense arithmetic only (bilinear lookups, decoder, convolutions, FIR filters);
elementwise activations and compositing are left out as they are memory-bound.
"""

from __future__ import annotations

from .presets import RenderPreset, get_preset

PLANES, CHANNELS, HIDDEN, DECODER_OUT = 3, 32, 64, 33
# (in_channels, out_channels) of the two super-resolution blocks.
SR_BLOCKS = ((32, 256), (256, 128))


def _block_flops(c_in: int, c_out: int, in_res: int) -> float:
    out_res = 2 * in_res
    conv0 = 2 * in_res**2 * c_in * c_out * 9  # stride-2 transposed 3x3
    fir = 2 * (out_res + 1) ** 2 * c_out * 16  # 4x4 low-pass, depthwise
    conv1 = 2 * out_res**2 * c_out * c_out * 9
    torgb = 2 * out_res**2 * c_out * 3
    skip = 2 * out_res**2 * 3 * 16  # upsampling of the skip image
    return float(conv0 + fir + conv1 + torgb + skip)


def render_flops(preset: str | RenderPreset = "full", batch: int = 1) -> dict[str, float]:
    """FLOPs per stage: ``sample`` (tri-plane lookups), ``decoder``, ``superres``, and ``total``."""
    p = get_preset(preset)
    points = batch * p.neural_resolution**2 * p.samples_per_ray
    sample = points * PLANES * CHANNELS * 4 * 2
    decoder = points * 2 * (CHANNELS * HIDDEN + HIDDEN * DECODER_OUT)
    superres = 0.0
    if p.superres != "none":
        blocks = SR_BLOCKS if p.superres == "full" else SR_BLOCKS[:1]
        res = p.sr_input_resolution
        for c_in, c_out in blocks:
            superres += batch * _block_flops(c_in, c_out, res)
            res *= 2
    stages = {"sample": float(sample), "decoder": float(decoder), "superres": superres}
    stages["total"] = sum(stages.values())
    return stages

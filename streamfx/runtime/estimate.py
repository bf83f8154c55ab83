"""Expected 3DPE stage times on this CPU, from FLOPs counted per stage and the probe's rates.

A few seconds of measurement (the capability probe) instead of a benchmark: each stage's
FLOPs divided by the rate of the kernel it is made of, in the precision the plan chose,
times how much of that rate the stage reaches. Those fractions were measured on the
2-core Zen 4 development machine (benchmarks/bench_3dpe.py against the probe in the same
run); on other CPUs the estimate is a guide, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.renderer.flops import render_flops
from ..models.renderer.presets import PRESETS
from .probe import Capabilities

#: dense FLOPs of one encode (ResNet trunk, SegFormer, cross-attention, head) at 512x512
ENCODER_FLOPS = 441e9
#: one reference image through the MAE ViT-B/16 (197 tokens, 12 blocks)
VIT_FLOPS = 35e9
#: fraction of the probe kernel's rate each stage reaches (measured on the development machine)
EFFICIENCY = {"encoder": 0.75, "superres": 0.6, "vit": 0.6, "volume": 0.07}


@dataclass(frozen=True)
class StageEstimate:
    encode_ms: float
    render_ms: dict[str, float]       # per quality preset
    reference_ms: float               # tokens of a new reference image (once per prompt)

    def live_fps(self, preset: str) -> float:
        """Frames rendered per second in a live call (the encoder runs beside on other frames)."""
        return 1000.0 / self.render_ms[preset]

    def offline_s_per_frame(self, preset: str, keyframe_every: int = 1) -> float:
        return (self.encode_ms / keyframe_every + self.render_ms[preset]) / 1000.0

    def as_dict(self) -> dict:
        return {"encode_ms": round(self.encode_ms, 1), "reference_ms": round(self.reference_ms, 1),
                "render_ms": {k: round(v, 1) for k, v in self.render_ms.items()},
                "live_render_fps": {k: round(self.live_fps(k), 2) for k in self.render_ms},
                "offline_s_per_frame": {k: round(self.offline_s_per_frame(k), 2) for k in self.render_ms}}


def estimate(caps: Capabilities, plan=None) -> StageEstimate:
    """Expected stage times for ``plan`` (default: the probe's own plan)."""
    plan = plan or caps.plan
    rate = caps.measured

    def seconds(flops: float, stage: str, kernel: str, precision: str) -> float:
        gflops = getattr(rate, kernel)[precision] * EFFICIENCY[stage]
        return flops / max(gflops, 1e-3) / 1e9

    encode = seconds(ENCODER_FLOPS, "encoder", "conv", plan.encoder)
    reference = seconds(VIT_FLOPS, "vit", "matmul", plan.vit)
    render = {}
    for name in PRESETS:
        f = render_flops(name)
        volume = seconds(f["sample"] + f["decoder"], "volume", "matmul", plan.decoder)
        render[name] = (volume + seconds(f["superres"], "superres", "conv", plan.superres)) * 1000.0
    return StageEstimate(encode_ms=encode * 1000.0, render_ms=render, reference_ms=reference * 1000.0)


#: fraction of the measured half-precision matmul rate that 3DPE's convolutions reach on a GPU
#: (an assumption until measured: typical of cuDNN on batch-1 convolutions of this size)
GPU_EFFICIENCY = 0.35


def gpu_estimate(tflops: float) -> dict:
    """Expected encode and full-quality render on a GPU whose half-precision matmul measured
    ``tflops``: FLOPs per stage at :data:`GPU_EFFICIENCY` of that rate; volume rendering is
    memory-bound and counted as 2 ms."""
    rate = tflops * GPU_EFFICIENCY * 1e12
    encode = ENCODER_FLOPS / rate * 1e3
    render = render_flops("full")["superres"] / rate * 1e3 + 2.0
    return {"encode_ms": round(encode, 1), "render_full_ms": round(render, 1),
            "full_frame_ms": round(encode + render, 1), "assumed_efficiency": GPU_EFFICIENCY}


#: fraction of the half-precision rate the convolutions reach in batches of 4-8 (an assumption
#: until measured: batched convolutions of this size fill a GPU about twice as well as batch 1)
GPU_BATCH_EFFICIENCY = 0.6
#: volume rendering per frame inside a batch (memory-bound; a batch-1 render is latency-bound at ~2 ms)
GPU_BATCH_VOLUME_MS = 1.0


def gpu_callers_estimate(tflops: float, fps: float = 25.0, budget_ms: float = 40.0, window_ms: float = 4.0,
                         max_batch: int = 8) -> dict:
    """How many ``fps`` callers a GPU of ``tflops`` (half-precision matmul) holds at ``full``.

    Unbatched, frames take turns at the batch-1 frame time (:func:`gpu_estimate`). Batched,
    each frame costs its FLOPs at :data:`GPU_BATCH_EFFICIENCY` plus :data:`GPU_BATCH_VOLUME_MS`.
    ``n`` callers fit while their ``n`` frames fit in one period (throughput) and the last of
    them, after the window and all ``n`` frames, lands within ``budget_ms`` (latency). Batches
    hold at most ``max_batch`` frames; more callers make more batches per period.
    """
    period = 1000.0 / fps
    frame_flops = ENCODER_FLOPS + render_flops("full")["superres"]
    single = gpu_estimate(tflops)["full_frame_ms"]
    per_frame = frame_flops / (tflops * GPU_BATCH_EFFICIENCY * 1e12) * 1e3 + GPU_BATCH_VOLUME_MS
    unbatched = int(min(period, budget_ms) // single)
    batched = int(min(period, budget_ms - window_ms) // per_frame)
    return {"unbatched": unbatched, "batched": batched, "frame_ms_unbatched": round(single, 1),
            "frame_ms_in_batch": round(per_frame, 2), "batches_per_period": -(-batched // max_batch) if batched else 0,
            "assumed_batch_efficiency": GPU_BATCH_EFFICIENCY}


#: peak bytes (MiB) per batch row of each captured graph's intermediates: live tensors of one
#: call of torch-cuda's code, tracked op by op on the CPU in float32 (2026-12-07, this
#: project's random weights of the official shapes). Half precision needs less; the figures
#: are an upper bound until a GPU measures them (gpu_check's peak_memory_gib).
GRAPH_PEAK_MIB = {"encoder": 151.0, "fastest": 121.0, "fast": 160.0, "balanced": 513.0, "full": 1002.0}
#: parameters (millions) of the copies on the GPU: the ViT, the encoder and the renderer
PARAMS_M = 85.8 + 65.3 + 1.7
_MIB = 2**20


def graph_memory(presets: tuple[str, ...], batch_sizes: tuple[int, ...], precision: str = "fp16") -> dict:
    """Expected device memory of torch-cuda with CUDA graphs of these presets and batch sizes.

    All graphs share one pool, so the pool holds the largest graph's intermediates; each
    graph keeps its static outputs, and each batch size has one set of static inputs
    (shared by the renderer graphs of that size): weights + max(intermediates) + statics.
    """
    from ..models.renderer.presets import get_preset

    weight_bytes = PARAMS_M * 1e6 * (4 if precision == "fp32" else 2)
    planes = 96 * 256 * 256 * 4
    pool = static = 0.0
    for b in batch_sizes:
        static += b * (3 * 512 * 512 * 4 + 197 * 768 * 4 + planes)   # encoder in (x, tokens) and out (planes)
        static += b * (planes + 25 * 4)                               # the renderers' shared inputs
        pool = max(pool, b * GRAPH_PEAK_MIB["encoder"] * _MIB)
        for name in presets:
            p = get_preset(name)
            r = p.neural_resolution
            static += b * (3 * p.output_size**2 + 4 * r * r) * 4      # image, image_raw, image_depth
            pool = max(pool, b * GRAPH_PEAK_MIB[p.name] * _MIB)
    total = weight_bytes + pool + static
    return {"weights_bytes": int(weight_bytes), "pool_bytes": int(pool), "static_bytes": int(static),
            "total_bytes": int(total), "total_gib": round(total / 2**30, 2), "graphs": len(batch_sizes) * (1 + len(presets)),
            "batch_sizes": list(batch_sizes), "presets": list(presets)}

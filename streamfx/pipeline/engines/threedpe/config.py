"""Settings of the 3DPE engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ....face.config import FaceConfig
from ...options import EngineOptions
from .quality import QualityConfig
from .smoothing import SmoothingConfig


@dataclass(frozen=True)
class ThreeDPEConfig:
    weights: Path | None = None          # None: the imported weights (streamfx weights import)
    random_weights_seed: int | None = None  # random weights of the official shapes (demos, benchmarks, tests)
    device: str = "cpu"                  # resolved: cpu, cuda:N, mps (streamfx.runtime.devices)
    # streamfx.runtime.accelerated: auto (torch-cuda on a GPU; on the CPU hybrid with OpenVINO, else
    # torch, precision per stage from the capability probe), torch, torch-bf16, torch-fp32 (the parity path), onnxruntime,
    # openvino, tensorrt, hybrid
    backend: str = "auto"
    threads: int | None = None           # inference threads (None: all cores)
    async_encoder: bool | None = None    # None: async (keyframing) on CPU, in the frame path on GPU
    # offline (files): every frame in order, encoded every ``keyframe_every`` frames, the
    # quality fixed, so that two runs give identical output
    offline: bool = False
    keyframe_every: int = 1
    offline_quality: str = "balanced"    # what "auto" quality means offline (38 dB against full)
    max_yaw_deg: float = 45.0            # render poses are clamped to what the model supports
    max_pitch_deg: float = 30.0
    presets_best_first: tuple[str, ...] = ("full", "balanced", "fast", "fastest")
    # several callers per GPU (streamfx.runtime.batching): None = 4 ms on a GPU, off on the CPU; 0 = off
    batch_window_ms: float | None = None
    max_batch: int = 8
    frame_budget_ms: float = 40.0        # a frame whose budget leaves no time to wait goes alone
    styles_dir: Path | None = None       # named styles (default: streamfx.styles.default_styles_dir())
    quality: QualityConfig = field(default_factory=QualityConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    face: FaceConfig = field(default_factory=FaceConfig)

    @classmethod
    def from_options(cls, options: EngineOptions) -> "ThreeDPEConfig":
        return cls(device=options.device, backend=options.backend, threads=options.threads, offline=options.offline,
                   keyframe_every=options.keyframe_every, random_weights_seed=options.random_weights_seed,
                   batch_window_ms=options.batch_window_ms)

    @property
    def on_gpu(self) -> bool:
        return self.device.split(":")[0] == "cuda"

    def batch_window_on(self, accelerator: bool) -> float:
        """The batching window in ms; 0 when frames are not batched (CPU default, offline).
        ``accelerator``: whether the engine takes the GPU's road (:mod:`streamfx.runtime.device_ops`)."""
        if self.offline:
            return 0.0
        if self.batch_window_ms is not None:
            return self.batch_window_ms
        return 4.0 if accelerator else 0.0

    def keyframe_worker_on(self, accelerator: bool) -> bool:
        """Whether the encoder runs as a keyframe worker beside the renderer (live CPU calls)."""
        if self.offline:
            return False
        if self.async_encoder is not None:
            return self.async_encoder
        return not accelerator and self.device.split(":")[0] == "cpu"

    @property
    def batch_window(self) -> float:
        return self.batch_window_on(self.on_gpu)

    @property
    def keyframe_worker(self) -> bool:
        return self.keyframe_worker_on(self.on_gpu)

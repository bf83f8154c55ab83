"""Settings of the live 3DPE engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ....face.config import FaceConfig
from .quality import QualityConfig
from .smoothing import SmoothingConfig


@dataclass(frozen=True)
class ThreeDPEConfig:
    weights: Path | None = None          # None: the imported weights (streamfx weights import)
    random_weights: bool = False         # random weights of the official shapes (benchmarks, tests)
    device: str = "cpu"
    # streamfx.runtime.accelerated: auto (hybrid with OpenVINO, else torch-bf16), torch-bf16,
    # torch-fp32 (the parity path), onnxruntime, openvino, tensorrt, hybrid
    backend: str = "auto"
    async_encoder: bool | None = None    # None: async (keyframing) on CPU, in the frame path on GPU
    max_yaw_deg: float = 45.0            # render poses are clamped to what the model supports
    max_pitch_deg: float = 30.0
    presets_best_first: tuple[str, ...] = ("full", "balanced", "fast", "fastest")
    styles_dir: Path | None = None       # named styles (default: streamfx.pipeline.styles.default_styles_dir())
    quality: QualityConfig = field(default_factory=QualityConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    face: FaceConfig = field(default_factory=FaceConfig)

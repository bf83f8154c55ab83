"""The ``3dpe`` engine: the 3DPE model, shared by all callers, and one session per caller.

Per frame: track -> align -> (encode with the prompt's cached tokens -> smooth tri-planes)
-> render at the pose mode's camera -> composite. On the CPU the encoder runs as a
keyframe worker at its own rate (see ``encoder_worker``) and every frame is rendered from
the latest smoothed tri-planes at the live pose.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import torch

from .... import log
from ....face import FaceTracker, align_face, composite, label_from_degrees
from ....models import threedpe
from ....runtime.accelerated import load_accelerated
from ...controls import Controls, Prompt
from ...engine import Engine, EngineSession, PromptError
from ...styles import StyleLibrary, match_name
from ...timing import StageTimer
from .config import ThreeDPEConfig
from .encoder_worker import EncoderWorker
from .quality import AdaptiveQuality
from .smoothing import TriplaneSmoother

logger = log.get(__name__)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, S, S) in [-1, 1] -> (S, S, 3) uint8."""
    x = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


class ThreeDPEEngine(Engine):
    name = "3dpe"
    description = "3DPE: 3D-aware portrait editing from a reference image, re-posed live."

    def __init__(self, config: ThreeDPEConfig = ThreeDPEConfig(), model: threedpe.ThreeDPE | None = None) -> None:
        self.config = config
        self.styles = StyleLibrary(config.styles_dir)
        if model is None:
            if config.random_weights:
                from ....models.testing import random_state_dicts

                model = threedpe.from_state(random_state_dicts(0), device=config.device)
            else:
                model = threedpe.load(config.weights, device=config.device)
        self.model = load_accelerated(model, config.backend)
        self.backend = getattr(self.model, "backend", config.backend)

    def presets(self) -> list[str]:
        return self.styles.names()

    def qualities(self) -> list[str]:
        return ["auto", *self.config.presets_best_first]

    def info(self) -> dict:
        return {**super().info(), "backend": self.backend, "device": self.config.device}

    def tokens_for(self, prompt: Prompt) -> torch.Tensor:
        """Reference tokens, computed once per prompt key and shared by all callers."""
        image = prompt.image if prompt.kind == "image" else self.styles.image(prompt.name)
        return self.model.prompt_tokens(prompt.key, image)

    def open_session(self) -> EngineSession:
        return ThreeDPESession(self)


class ThreeDPESession(EngineSession):
    def __init__(self, engine: ThreeDPEEngine) -> None:
        self.engine = engine
        cfg = engine.config
        self.tracker = FaceTracker(cfg.face)
        self.quality = AdaptiveQuality(list(cfg.presets_best_first), cfg.quality)
        self.smoother = TriplaneSmoother(cfg.smoothing)
        self._tokens: torch.Tensor | None = None          # the prompt's tokens; None = the caller's own face
        self._own_tokens: torch.Tensor | None = None
        self._epoch = 0               # bumps on reset; the worker keeps its own in async mode
        self._smoothed_epoch = -1
        self.frame_index = 0
        self.status = "none"
        self._render_times: deque[float] = deque(maxlen=30)
        self._planes_from = -1
        use_async = cfg.async_encoder if cfg.async_encoder is not None else torch.device(cfg.device).type == "cpu"
        self.worker = EncoderWorker(self._encode_smoothed) if use_async else None
        self._sync_keyframe: torch.Tensor | None = None

    # -- prompts ------------------------------------------------------------------------
    def set_prompt(self, prompt: Prompt | None) -> None:
        """Computes tokens off the frame path; the old prompt stays until they are ready."""
        if prompt is None:
            tokens = None
        else:
            if prompt.kind == "preset":
                name = match_name(prompt.name, self.engine.presets(), fuzzy=True)
                prompt = Prompt(kind="preset", name=name, key=f"preset:{name}")
            try:
                tokens = self.engine.tokens_for(prompt)
            except (threedpe.ModelInputError, ValueError) as exc:
                raise PromptError(str(exc)) from None
        self._tokens = tokens
        self.reset_temporal()

    # -- encoding -----------------------------------------------------------------------
    def _encode_smoothed(self, crop: np.ndarray, epoch: int) -> torch.Tensor:
        model = self.engine.model
        tokens = self._tokens
        if tokens is None:
            if self._own_tokens is None:
                self._own_tokens = model.reference_tokens(threedpe.prepare_reference(crop))
            tokens = self._own_tokens
        planes = model.encode(threedpe.prepare_input(crop), tokens).float()
        if epoch != self._smoothed_epoch:
            self.smoother.reset()
            self._smoothed_epoch = epoch
        return self.smoother.update(planes, crop)

    def _keyframe(self, crop: np.ndarray, timer: StageTimer) -> torch.Tensor | None:
        if self.worker is not None:
            self.worker.submit(crop, self.frame_index)
            key = self.worker.latest()
            if key is None:
                return None
            self._planes_from = key.frame_index
            return key.planes
        with timer.stage("encode"):
            planes = self._encode_smoothed(crop, self._epoch)
        self._planes_from = self.frame_index
        return planes

    # -- per frame ----------------------------------------------------------------------
    def process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        start = time.perf_counter()
        self.frame_index += 1
        with timer.stage("track"):
            result = self.tracker.update(frame, timer.timestamp_s)
        self.status = result.status
        if result.switched:
            self.reset_temporal()
            self._own_tokens = None
        if result.face is None:
            return frame
        with timer.stage("align"):
            aligned = align_face(frame, result.face)
        planes = self._keyframe(aligned.crop, timer)
        if planes is None:
            return frame  # the first keyframe is still being encoded
        self.quality.pin(controls.quality)
        pose = result.face.pose
        yaw, pitch = controls.pose.target(pose.yaw_deg, pose.pitch_deg)
        cfg = self.engine.config
        yaw = float(np.clip(yaw, -cfg.max_yaw_deg, cfg.max_yaw_deg))
        pitch = float(np.clip(pitch, -cfg.max_pitch_deg, cfg.max_pitch_deg))
        camera = torch.from_numpy(label_from_degrees(yaw, pitch)).float()[None]
        with timer.stage("render"):
            image = self.engine.model.render(planes, camera, self.quality.current)["image"]
        rendered = to_uint8(image)
        with timer.stage("composite"):
            out = composite(frame, rendered, aligned)
        self._render_times.append(time.monotonic())
        self.quality.record((time.perf_counter() - start) * 1e3)
        return out

    def stats(self) -> dict:
        times = list(self._render_times)
        render_fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6) if len(times) > 1 else 0.0
        return {
            "face": self.status,
            "preset": self.quality.current,
            "renderer_fps": round(render_fps, 1),
            "encoder_fps": round(self.worker.rate(), 2) if self.worker else round(render_fps, 1),
            "planes_age": self.frame_index - self._planes_from if self._planes_from >= 0 else None,
            "smoothing_alpha": round(self.smoother.last_alpha, 3),
        }

    def reset_temporal(self) -> None:
        self._epoch += 1  # the smoother restarts with the next keyframe
        if self.worker is not None:
            self.worker.reset()
        self._planes_from = -1

    def reset(self) -> None:
        self.tracker.reset()
        self.reset_temporal()
        self._own_tokens = None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.tracker.close()

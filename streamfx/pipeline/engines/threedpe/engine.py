"""The ``3dpe`` engine: the 3DPE model, shared by all callers, and one session per caller.

Per frame: track -> align -> (encode with the prompt's cached tokens -> smooth tri-planes)
-> render at the pose mode's camera -> composite. In a live call on the CPU the encoder
runs as a keyframe worker at its own rate (see ``encoder_worker``) and every frame is
rendered from the latest smoothed tri-planes at the live pose. Offline (files) every
``keyframe_every``-th frame is encoded in the frame path and the quality is fixed, so the
output depends only on the input.

Presets whose renderer graph is not built yet (graph backends) never hold up a live call:
the session renders at the best ready preset (:func:`~.quality.stand_in`), the model builds
the one asked for in a background thread, and the session moves to it once it is ready.
Offline, a frame waits for the build instead, so the output never depends on timing.

``strength`` blends the reference tokens: ``own + s * (prompt - own)``, where ``own`` are the
tokens of the caller's own crop (what 3DPE reconstructs with when there is no prompt). So
0 is exactly the unedited reconstruction, 1 exactly the full edit, and in between the
encoder sees a reference part-way between the caller and the style, which changes the
look gradually rather than cross-fading two renders.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import numpy as np
import torch

from .... import log
from ....face import FaceTracker, align_face, composite, label_from_degrees
from ....models import threedpe
from ....runtime.accelerated import load_accelerated
from ....runtime.adapters import LowRankAdapter
from ....runtime.device_ops import DeviceOps, device_ops
from ....runtime.selection import resolve_backend
from ....styles import StyleLibrary, match_name
from ...controls import Controls, Prompt
from ...engine import Engine, EngineSession, PromptError
from ...timing import StageTimer
from .config import ThreeDPEConfig
from .encoder_worker import EncoderWorker
from .gpu import GpuFrames
from .packs import PackAdapters
from .quality import AdaptiveQuality, stand_in
from .smoothing import TriplaneSmoother

logger = log.get(__name__)


def _progress_line(message: str) -> None:
    """Start-up progress: a line on a terminal, a log record otherwise."""
    if sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)
    logger.info(message)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, S, S) in [-1, 1] -> (S, S, 3) uint8."""
    x = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())


class ThreeDPEEngine(Engine):
    name = "3dpe"
    description = "3DPE: 3D-aware portrait editing from a reference image, re-posed live."

    def __init__(self, config: ThreeDPEConfig = ThreeDPEConfig(), model: threedpe.ThreeDPE | None = None,
                 *, accelerated: Any = None, ops: DeviceOps | None = None) -> None:
        """``model``: the weights (default: from ``config``). ``accelerated``: an already loaded
        path (what :func:`load_accelerated` returns, e.g. with its own engine cache or fewer
        presets built up front) to use instead of loading one from ``model``. ``ops``: the
        device's streams and graphs (default: the device's own; :func:`gpu_road` walks the
        GPU's road on a CPU device, as the tests do)."""
        self.config = config
        self.styles = StyleLibrary(config.styles_dir)
        self.device = torch.device(config.device)
        self.ops = ops or getattr(accelerated, "ops", None) or device_ops(self.device)
        gpu_road = self.ops.accelerator
        backend = "torch-cuda" if gpu_road and self.device.type != "cuda" else resolve_backend(config.backend,
                                                                                               self.device)
        weights_device = self.device if backend == "torch-fp32" else "cpu"  # the others copy what they need
        window = config.batch_window_on(gpu_road)
        if accelerated is not None:
            self.model = accelerated
        else:
            if model is None:
                if config.random_weights_seed is not None:
                    from ....models.random_weights import random_state_dicts

                    model = threedpe.from_state(random_state_dicts(config.random_weights_seed), device=weights_device)
                else:
                    model = threedpe.load(config.weights, device=weights_device)
            self.model = load_accelerated(model, backend, config.presets_best_first, threads=config.threads,
                                          device=self.device, max_batch=config.max_batch if window > 0 else 1,
                                          ops=self.ops)
        if hasattr(self.model, "capture"):  # CUDA graphs, once, before any call starts
            from ....runtime.batching import batch_sizes_for

            # only what this configuration can use: its presets, and the batch sizes it can form
            self.model.capture(_progress_line, batch_sizes_for(config.max_batch) if window > 0 else (1,),
                               config.presets_best_first)
        sha = getattr(self.model, "weights_sha256", None)
        if window > 0:  # several callers per GPU: their frames share batches
            from ....runtime.batching import BatchConfig, BatchedModel, FrameBatcher

            batcher = FrameBatcher(self.model, BatchConfig(window, config.max_batch), self.ops.streams)
            self.model = BatchedModel(self.model, batcher)
        self.backend = getattr(self.model, "backend", backend)
        self.runtime = {**self.model.describe(), "device": str(self.device)}
        self.packs = PackAdapters(self.styles, sha)

    def presets(self) -> list[str]:
        return self.styles.names()

    def qualities(self) -> list[str]:
        return ["auto", *self.config.presets_best_first]

    def info(self) -> dict:
        info = {**super().info(), "backend": self.backend, "device": str(self.device),
                "precision": self.runtime["precision"], "precision_stages": self.runtime["stages"]}
        if hasattr(self.model, "batcher"):
            info["batching"] = self.model.batcher.stats()
        return info

    def encode(self, x: torch.Tensor, tokens: torch.Tensor, deadline: float | None = None,
               adapter: LowRankAdapter | None = None) -> torch.Tensor:
        """Planes of one crop, with this caller's style adapter (if any) on this caller's row
        only; batched with other callers' crops when batching is on."""
        if hasattr(self.model, "batcher"):
            return self.model.encode(x, tokens, adapter=adapter, deadline=deadline)
        if adapter is not None:
            return self.model.encode(x, tokens, adapters=[adapter])
        return self.model.encode(x, tokens)

    def render(self, planes: torch.Tensor, camera: torch.Tensor, preset, deadline: float | None = None) -> dict:
        """A render of one caller's planes; batched with other callers' when batching is on."""
        if hasattr(self.model, "batcher"):
            return self.model.render(planes, camera, preset, deadline=deadline)
        return self.model.render(planes, camera, preset)

    def ready_presets(self, presets: list[str]) -> list[str]:
        """Those of ``presets`` that render without waiting for a build. A path without
        ``ready_presets`` (``torch-cuda``) builds nothing on demand: all of them."""
        ready = getattr(self.model, "ready_presets", None)
        return list(presets) if ready is None else ready(presets)

    def prepare(self, preset: str) -> None:
        """Start building what ``preset`` needs in the background; returns at once."""
        start = getattr(self.model, "prepare", None)
        if start is not None:
            start(preset)

    def close(self) -> None:
        if hasattr(self.model, "batcher"):
            self.model.close()

    def style_for(self, prompt: Prompt) -> tuple[torch.Tensor, LowRankAdapter | None]:
        """The prompt's reference tokens (computed once per prompt key, shared by all callers)
        and, for a trained style pack, its adapter (keyed with the pack's version, so that a
        retrained pack's new reference is read)."""
        if prompt.kind == "image":
            return self.model.prompt_tokens(prompt.key, prompt.image), None
        adapter = self.prepared(self.packs.adapter(prompt.name))
        key = prompt.key if adapter is None else f"{prompt.key}|{self.packs.version(prompt.name)}"
        return self.model.prompt_tokens(key, self.styles.image(prompt.name)), adapter

    def prepared(self, adapter: LowRankAdapter | None) -> LowRankAdapter | None:
        """``adapter`` with its weights on the device, made before any session's stream reads them."""
        prepare = getattr(self.model, "prepare_adapter", None)
        return adapter if adapter is None or prepare is None else prepare(adapter)

    def open_session(self) -> EngineSession:
        return ThreeDPESession(self)


class ThreeDPESession(EngineSession):
    def __init__(self, engine: ThreeDPEEngine) -> None:
        self.engine = engine
        cfg = engine.config
        self.tracker = FaceTracker(cfg.face)
        self.quality = AdaptiveQuality(list(cfg.presets_best_first), cfg.quality)
        self._rendered: str | None = None   # the preset of the latest render
        self._building: str | None = None   # live: the preset asked for, not ready, being prepared
        self.smoother = TriplaneSmoother(cfg.smoothing)
        self._tokens: torch.Tensor | None = None          # the prompt's tokens; None = the caller's own face
        self._adapter: LowRankAdapter | None = None       # the prompt's style-pack adapter (this caller only)
        self._scaled: tuple[float, LowRankAdapter] | None = None  # the adapter at the current strength
        self._own_tokens: torch.Tensor | None = None
        self._strength = 1.0
        self._epoch = 0               # bumps on reset; the worker keeps its own in async mode
        self._smoothed_epoch = -1
        self.frame_index = 0
        self.status = "none"
        self.edited = 0               # frames the engine rendered
        self.passed = 0               # frames passed through unedited (no face, or no tri-planes yet)
        self._render_times: deque[float] = deque(maxlen=30)
        self._planes_from = -1
        self._planes: torch.Tensor | None = None  # offline and GPU: the latest keyframe's smoothed planes
        gpu_road = engine.ops.accelerator
        self.worker = EncoderWorker(self._encode_smoothed) if cfg.keyframe_worker_on(gpu_road) else None
        self.gpu = GpuFrames(engine.ops) if gpu_road else None
        self._crop_t: torch.Tensor | None = None   # GPU: this frame's crop on the device (uint8)
        self._x_t: torch.Tensor | None = None      # GPU: the same as the encoder's input
        self._deadline: float | None = None        # this frame's budget ends (monotonic s), for batching
        self._last_crop: np.ndarray | None = None  # the latest aligned crop (a reference, for text prompts)

    # -- prompts ------------------------------------------------------------------------
    def set_prompt(self, prompt: Prompt | None) -> None:
        """Computes tokens off the frame path; the old prompt stays until they are ready."""
        adapter = None
        if prompt is None:
            tokens = None
        else:
            try:
                if prompt.kind == "preset":
                    name = match_name(prompt.name, self.engine.presets(), fuzzy=False)
                    prompt = Prompt(kind="preset", name=name, key=f"preset:{name}")
                tokens, adapter = self.engine.style_for(prompt)
            except (threedpe.ModelInputError, ValueError) as exc:  # StyleError, ReferenceError among them
                raise PromptError(str(exc)) from None
        self._tokens, self._adapter, self._scaled = tokens, adapter, None
        self.reset_temporal()

    def face_crop(self) -> np.ndarray | None:
        return self._last_crop

    # -- encoding -----------------------------------------------------------------------
    def _tokens_for(self, crop: np.ndarray) -> torch.Tensor:
        """The reference tokens to encode ``crop`` with: the prompt's, blended toward the
        caller's own by ``1 - strength`` (see the module docstring)."""
        strength = self._strength
        if self._tokens is not None:  # made on the prompt thread: this stream keeps them while it reads
            streams = self.engine.ops.streams
            streams.hand_over(self._tokens, streams.current())
        if self._tokens is not None and strength >= 1.0:
            return self._tokens
        if self._own_tokens is None:
            self._own_tokens = self.engine.model.reference_tokens(threedpe.prepare_reference(crop))
        if self._tokens is None or strength <= 0.0:
            return self._own_tokens
        return torch.lerp(self._own_tokens, self._tokens, strength)

    def _adapter_now(self) -> LowRankAdapter | None:
        """The style adapter at the current strength: scaled by it, like the tokens are blended,
        so 0 is the unedited reconstruction and 1 the full trained style."""
        adapter, strength = self._adapter, self._strength
        if adapter is None or strength <= 0.0:
            return None
        if strength >= 1.0:
            return adapter
        if self._scaled is None or self._scaled[0] != strength:
            self._scaled = (strength, self.engine.prepared(adapter.scaled(strength)))
        return self._scaled[1]

    def _encode_smoothed(self, crop: np.ndarray, epoch: int) -> torch.Tensor:
        if self.gpu is not None and self._x_t is not None:  # this frame's crop, uploaded once (pinned)
            x = self._x_t
        else:
            x = threedpe.prepare_input(crop)
        planes = self.engine.encode(x, self._tokens_for(crop), self._deadline, self._adapter_now()).float()
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
        every = self.engine.config.keyframe_every
        if self._planes is None or self._planes_from < 0 or (self.frame_index - self._planes_from) >= every:
            with timer.stage("encode"):
                self._planes = self._encode_smoothed(crop, self._epoch)
            self._planes_from = self.frame_index
        return self._planes

    def _set_strength(self, strength: float) -> None:
        strength = float(min(max(strength, 0.0), 1.0))
        if strength != self._strength:
            self._strength = strength
            self.reset_temporal()  # the tri-planes of the old strength are not smoothed into the new

    # -- per frame ----------------------------------------------------------------------
    def process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        if self.gpu is None:
            return self._process(frame, controls, timer)
        ops = self.engine.ops
        with ops.bound(), ops.streams.use(self.gpu.stream):  # all of this caller's GPU work, in order
            return self._process(frame, controls, timer)

    def _process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        start = time.perf_counter()
        self._deadline = time.monotonic() + self.engine.config.frame_budget_ms / 1e3
        self.frame_index += 1
        self._set_strength(controls.strength)
        with timer.stage("track"):
            result = self.tracker.update(frame, timer.timestamp_s)
        self.status = result.status
        if result.switched:
            self.reset_temporal()
            self._own_tokens = None
        if result.face is None:
            self.passed += 1
            return frame
        with timer.stage("align"):
            aligned = align_face(frame, result.face)
            self._last_crop = aligned.crop
        if self.gpu is not None:
            self._crop_t, self._x_t = self.gpu.model_input(aligned.crop)
        planes = self._keyframe(aligned.crop, timer)
        if planes is None:
            self.passed += 1
            return frame  # the first keyframe is still being encoded
        cfg = self.engine.config
        if cfg.offline and controls.quality == "auto":
            self.quality.pin(cfg.offline_quality)
        else:
            self.quality.pin(controls.quality)
        pose = result.face.pose
        yaw, pitch = controls.pose.target(pose.yaw_deg, pose.pitch_deg)
        yaw = float(np.clip(yaw, -cfg.max_yaw_deg, cfg.max_yaw_deg))
        pitch = float(np.clip(pitch, -cfg.max_pitch_deg, cfg.max_pitch_deg))
        camera = torch.from_numpy(label_from_degrees(yaw, pitch)).float()[None].to(self.engine.device)
        preset = self.quality.current if cfg.offline else self._ready_preset(self.quality.current)
        with timer.stage("render"):
            image = self.engine.render(planes, camera, preset, self._deadline)["image"]
        self._rendered = preset
        with timer.stage("composite"):
            if self.gpu is not None and self._crop_t is not None:
                out = self.gpu.paste(frame, image, self._crop_t, aligned)
            else:
                out = composite(frame, to_uint8(image), aligned)
        self.edited += 1
        self._render_times.append(time.monotonic())
        if not cfg.offline:
            self.quality.record((time.perf_counter() - start) * 1e3, rendered=preset)
        return out

    def _ready_preset(self, wanted: str) -> str:
        """``wanted`` when it renders without waiting for a build. Otherwise starts its build in
        the background and returns the best ready preset instead (:func:`stand_in`); if none
        is ready, ``wanted`` itself (the frame then waits for the build)."""
        engine = self.engine
        if engine.ready_presets([wanted]):
            self._building = None
            return wanted
        engine.prepare(wanted)
        self._building = wanted
        return stand_in(wanted, self.quality.presets, engine.ready_presets(self.quality.presets)) or wanted

    def stats(self) -> dict:
        times = list(self._render_times)
        render_fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6) if len(times) > 1 else 0.0
        return {
            "face": self.status,
            "device": self.engine.runtime["device"],
            "backend": self.engine.runtime["backend"],
            "precision": self.engine.runtime["precision"],
            "preset": self._rendered or self.quality.current,  # what rendered (before any frame: what will)
            "preset_building": self._building,
            "strength": self._strength,
            "style_adapter": self._adapter.name if self._adapter is not None else None,
            "renderer_fps": round(render_fps, 1),
            "encoder_fps": round(self.worker.rate(), 2) if self.worker else round(render_fps, 1),
            "frames_edited": self.edited,
            "frames_passed": self.passed,
            "planes_age": self.frame_index - self._planes_from if self._planes_from >= 0 else None,
            "smoothing_alpha": round(self.smoother.last_alpha, 3),
        }

    def reset_temporal(self) -> None:
        self._epoch += 1  # the smoother restarts with the next keyframe
        if self.worker is not None:
            self.worker.reset()
        self._planes_from = -1
        self._planes = None

    def reset(self) -> None:
        self.tracker.reset()
        self.reset_temporal()
        self._own_tokens = None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        self.tracker.close()

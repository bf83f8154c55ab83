"""The ``mesh`` engine: weight-free, CPU real-time 3D-aware re-posing and appearance edits.

Per frame: track (the face stack's One-Euro-smoothed 478-point mesh), render (rotate the
mesh to the target pose, rasterise it with a depth buffer, re-render the live texture
through one dense map), edit (reference appearance or a named look), composite (paste the
working rectangle back).  Frames without a face pass through unchanged.

Re-posing moves this frame's pixels, so it is built from this frame's own (unsmoothed)
landmarks and their pose: the smoothed mesh lags a turning head by a frame or two, and
the texture it points at would then be the wrong one, leaving part of the turn in place.
Follow mode (edits only) keeps the smoothed mesh, which holds the edit still.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Union

import numpy as np

from .... import log
from ....face import Face, FaceError, FaceTracker, align_face
from ....face.pose import estimate_pose
from ...controls import Controls, Prompt
from ...engine import Engine, EngineSession, PromptError
from ....styles import StyleError, StyleLibrary, match_name
from ...timing import StageTimer
from .appearance import ReferenceAppearance, prepare
from .config import MeshEngineConfig
from .fields import smoothstep
from .geometry import PosePlan, make_grid, plan_pose
from .looks import LOOKS, Look
from .skin import CallerState
from .raster import rasterize
from .regions import vertex_regions
from .topology import facing, render_mesh, with_skirt
from .warp import mirror_weights, render

logger = log.get(__name__)

Edit = Union[ReferenceAppearance, Look]
WEIGHTS_HINT = "For the full 3DPE model, import its weights: streamfx weights import PATH/3dpe.pt"


class MeshEngine(Engine):
    name = "mesh"
    description = ("Weight-free 3D-aware re-posing and appearance edits on the tracked face mesh "
                   "(CPU, real time; rotations clamped to about +-25 degrees).")

    def __init__(self, config: MeshEngineConfig | None = None) -> None:
        self.config = config or MeshEngineConfig()
        self._lock = threading.Lock()
        self._photo_tracker: FaceTracker | None = None
        self._cache: OrderedDict[str, ReferenceAppearance] = OrderedDict()
        self.styles = StyleLibrary(self.config.styles_dir)
        render_mesh()  # build the topology once, up front

    # ------------------------------------------------------------------ presets
    def presets(self) -> list[str]:
        return list(LOOKS) + [s for s in self.styles.names() if s not in LOOKS]

    def info(self) -> dict[str, Any]:
        data = super().info()
        data.update({"max_rotation_deg": self.config.max_rotation_deg, "yaw_gain": self.config.yaw_gain,
                     "weights_hint": WEIGHTS_HINT})
        return data

    # ------------------------------------------------------------------ prompts
    def prepare(self, prompt: Prompt | None) -> Edit | None:
        """The edit a prompt asks for (heavy for references: tracking and unwrapping), cached.

        Raises :class:`PromptError` with a one-line message when the prompt cannot be used.
        """
        if prompt is None:
            return None
        if prompt.kind == "preset":
            return self._preset(prompt.name)
        if prompt.image is None:
            raise PromptError("image prompt without an image")
        return self._reference(prompt.image, prompt.name, prompt.key)

    def _preset(self, name: str) -> Edit:
        try:
            match = match_name(name, self.presets(), fuzzy=False)  # fuzzy text is the server's
            if match in LOOKS:
                return Look(match)
            image = self.styles.image(match)  # a trained pack's adapter is for 3DPE: its reference is used here
        except StyleError as exc:
            raise PromptError(str(exc)) from None
        return self._reference(image, match, f"style:{match}")

    def _reference(self, image: np.ndarray, name: str, key: str) -> ReferenceAppearance:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise PromptError("reference image must be an RGB image")
        with self._lock:
            if key and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if self._photo_tracker is None:
                self._photo_tracker = FaceTracker(self.config.face, static_image=True)
            result = self._photo_tracker.update(np.ascontiguousarray(image))
        landmarks = None if result.face is None else result.face.landmarks
        ref = prepare(image, landmarks, name, self.config)
        logger.info("reference prepared", extra={"style": name, **ref.note()})
        if key:
            with self._lock:
                self._cache[key] = ref
                while len(self._cache) > self.config.prompt_cache:
                    self._cache.popitem(last=False)
        return ref

    def open_session(self) -> "MeshSession":
        return MeshSession(self)

    def close(self) -> None:
        with self._lock:
            if self._photo_tracker is not None:
                self._photo_tracker.close()
                self._photo_tracker = None
            self._cache.clear()


def _mirror_ramp(plan: PosePlan, cfg: MeshEngineConfig) -> float:
    """0..1: how much of the mirror blend a pose change uses; small changes expose little
    of what the live frame sees edge-on, and the blend then fades in without a pop."""
    rot = plan.rotation_deg
    lo, hi = cfg.min_rotation_deg, max(cfg.mirror_full_deg, cfg.min_rotation_deg + 1e-3)
    return float(smoothstep(np.float64((rot - lo) / (hi - lo))))


def _unsmoothed(face: Face) -> Face:
    """``face`` with this frame's raw landmarks and their own pose (see the module docstring)."""
    raw = np.asarray(face.raw_landmarks, dtype=np.float32)
    return dataclasses.replace(face, landmarks=raw, pose=estimate_pose(raw))


class MeshSession(EngineSession):
    """One caller: a video face tracker, the active edit and the last frame's state."""

    def __init__(self, engine: MeshEngine) -> None:
        self.engine = engine
        self.cfg = engine.config
        self.mesh = render_mesh()
        self._regions = vertex_regions(self.cfg.atlas_size)
        self.tracker = FaceTracker(self.cfg.face)
        self._edit: Edit | None = None
        self._face = "none"
        self._clamped = False
        self._target: tuple[float, float] | None = None
        self._last_face: tuple[np.ndarray, Face] | None = None  # for face_crop(), aligned only when asked
        self._caller = CallerState()  # the caller's region colours, steady across frames

    def set_prompt(self, prompt: Prompt | None) -> dict[str, Any] | None:
        edit = self.engine.prepare(prompt)  # heavy; raises PromptError and keeps the old edit
        self._edit = edit  # one assignment: the frame thread sees either the old or the new edit
        return edit.note() if isinstance(edit, ReferenceAppearance) else None

    def face_crop(self) -> np.ndarray | None:
        last = self._last_face
        return None if last is None else align_face(last[0], last[1]).crop

    def process(self, frame: np.ndarray, controls: Controls, timer: StageTimer) -> np.ndarray:
        try:
            with timer.stage("track"):
                result = self.tracker.update(frame, timer.timestamp_s)
        except FaceError:  # not an (H, W, 3) uint8 frame: nothing to do with it
            return frame
        self._face = result.status
        face = result.face
        if face is None:
            self._clamped, self._target = False, None
            self._caller = CallerState()  # the next face may be someone else
            return frame
        if result.switched:
            self._caller = CallerState()  # another person: their own colours, not a blend with the last one's
        self._last_face = (frame, face)  # references: nothing is copied per frame
        if controls.pose.mode != "follow":
            face = _unsmoothed(face)
        edit = self._edit
        strength = float(np.clip(controls.strength, 0.0, 1.0))
        active = edit if strength > 0.0 else None
        with timer.stage("render"):
            verts = with_skirt(face.landmarks, self.mesh)
            plan = plan_pose(face, verts, controls.pose, self.cfg)
            self._clamped, self._target = plan.clamped, plan.target_deg
            if not plan.moves and active is None:
                return frame
            grid = make_grid(frame.shape[:2], self.cfg, verts, plan.target)
            if grid is None:
                return frame
            raster = rasterize(grid.to_grid(plan.target), plan.target[:, 2], self.mesh.tris, (grid.gh, grid.gw),
                               keep=facing(plan.target[:, :2], self.mesh))
            # every per-vertex attribute the frame needs, interpolated in one pass:
            # live position (2), mirror's live position (2), mirror weight (1), UV (2), regions (3)
            attrs = np.empty((len(verts), 10), np.float32)
            attrs[:, 0:2] = verts[:, :2]
            attrs[:, 2:4] = verts[self.mesh.mirror, :2]
            attrs[:, 4] = mirror_weights(verts, self.mesh, self.cfg) * _mirror_ramp(plan, self.cfg) if plan.moves else 0.0
            attrs[:, 5:7] = self.mesh.uv
            attrs[:, 7:10] = self._regions
            surface = raster.interpolate(attrs, self.mesh.tris)
            if plan.moves:
                roi = render(frame, grid, raster.covered, surface[..., 0:2], surface[..., 2:4], surface[..., 4], self.cfg)
            else:
                roi = frame[grid.y0:grid.y1, grid.x0:grid.x1].copy()
        if active is not None:
            with timer.stage("edit"):
                roi = active.apply(roi, raster, grid, self.mesh, strength, self.cfg, surface[..., 7:10], self._caller)
        with timer.stage("composite"):
            out = frame.copy()
            out[grid.y0:grid.y1, grid.x0:grid.x1] = roi
        return out

    def stats(self) -> dict[str, Any]:
        edit = self._edit
        return {
            "face": self._face,
            "pose_clamped": self._clamped,
            "target_pose_deg": [round(a, 1) for a in self._target] if self._target else None,
            "edit": f"{edit.kind}:{edit.name}" if edit is not None else None,
        }

    def reset(self) -> None:
        self.tracker.reset()
        self._caller = CallerState()
        self._face, self._clamped, self._target = "none", False, None

    def close(self) -> None:
        self.tracker.close()

"""Face tracking on video frames and photos with mediapipe's face mesh (478 points).

Video: a full-range face detector picks the face at the start and whenever tracking is
lost; the mesh then follows it frame to frame by itself (``mesh`` mode).  Faces too
small for the mesh's own detector are followed by running the mesh on an upscaled crop
around the previous landmarks (``roi`` mode).  Every ``detect_every`` frames the
detector runs again to count faces; another face takes over only if it scores (size x
centrality) ``switch_margin`` times higher in ``switch_debounce`` detections in a row.
A lost face is held for ``hold_seconds``, then the result is "none".

Photos (``static_image=True``): detector, then the mesh on a crop around the chosen
face, refined once on a crop around its own landmarks.  No smoothing.

All models ship inside the mediapipe 0.10.21 wheel; nothing is downloaded.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from .. import log
from .config import FaceConfig
from .landmarks import NUM_LANDMARKS, bbox as landmark_bbox, five_points
from .one_euro import OneEuroFilter
from .pose import estimate_pose, rotation_from_angles
from .types import Face, FaceError, HeadPose, TrackResult

os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging: errors only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = log.get(__name__)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in processing pixels
MIN_SIDE = 32  # frames smaller than this have no findable face
# photo mode: extra crops (x, y offset in crop sides, size factor) whose landmarks are averaged
PHOTO_JITTER = ((0.03, 0.0, 1.08), (-0.03, 0.02, 0.94), (0.0, -0.03, 1.0), (0.02, 0.03, 1.04))


def _mp():
    import mediapipe as mp

    return mp


def _box_size(b: Box) -> float:
    return max(b[2] - b[0], b[3] - b[1])


def _box_centre(b: Box) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])


def _same_face(a: Box, b: Box) -> bool:
    """Boxes of one face: centres closer than half a face size and similar sizes."""
    sa, sb = _box_size(a), _box_size(b)
    close = np.linalg.norm(_box_centre(a) - _box_centre(b)) < 0.5 * max(sa, sb)
    return bool(close and 0.5 < sa / max(sb, 1e-6) < 2.0)


def _score(b: Box, shape: tuple[int, int]) -> float:
    """Size x centrality: large and central faces win."""
    h, w = shape
    d = np.linalg.norm((_box_centre(b) - [w / 2, h / 2]) / [w / 2, h / 2]) / math.sqrt(2)
    return _box_size(b) * (1.0 - 0.6 * min(float(d), 1.0))


class FaceTracker:
    """Tracks one face through a video (or finds it in a photo).

    ``update(frame, timestamp_s)`` takes an (H, W, 3) uint8 RGB frame and never raises
    for such input; anything else raises :class:`FaceError`.
    """

    def __init__(self, cfg: FaceConfig | None = None, static_image: bool = False) -> None:
        self.cfg = cfg or FaceConfig()
        self.static_image = static_image
        mp = _mp()
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=self.cfg.min_detection_confidence
        )
        self._roi_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=self.cfg.min_detection_confidence,
        )
        self._video_mesh = None
        if not static_image:
            self._video_mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=self.cfg.min_detection_confidence,
                min_tracking_confidence=self.cfg.min_tracking_confidence,
            )
        self._lm_filter = OneEuroFilter(self.cfg.landmark_filter)
        self._pose_filter = OneEuroFilter(self.cfg.pose_filter)
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the tracked face and all temporal state."""
        self._mode: str | None = None  # "mesh" | "roi" | None
        self._raw: np.ndarray | None = None  # last raw landmarks, processing pixels
        self._box: Box | None = None  # last target box, processing pixels
        self._last_face: Face | None = None
        self._last_seen = -math.inf
        self._num_faces = 0
        self._since_detect = 0
        self._challenger_hits = 0
        self._lm_filter.reset()
        self._pose_filter.reset()
        if self._video_mesh is not None:
            self._video_mesh.reset()

    def close(self) -> None:
        for model in (self._detector, self._roi_mesh, self._video_mesh):
            if model is not None:
                model.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def update(self, frame: np.ndarray, timestamp_s: float = 0.0) -> TrackResult:
        """Track the face in ``frame`` (H, W, 3) uint8 RGB at ``timestamp_s`` seconds."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise FaceError(
                f"expected an (H, W, 3) uint8 RGB frame, got {getattr(frame, 'shape', type(frame).__name__)}"
                f" {getattr(frame, 'dtype', '')}".rstrip()
            )
        t = float(timestamp_s)
        try:
            return self._update(frame, t)
        except Exception as exc:  # a model failure must not take the stream down
            logger.warning("face tracking failed", extra={"error": repr(exc)})
            self._mode = None
            return self._lost(t, 0)

    # ------------------------------------------------------------------ core
    def _update(self, frame: np.ndarray, t: float) -> TrackResult:
        h, w = frame.shape[:2]
        if min(h, w) < MIN_SIDE:
            return self._lost(t, 0)
        work, f = self._prepare(frame)
        if self.static_image:
            return self._update_static(work, f)

        raw, switched = None, False
        if self._mode == "mesh":
            raw = self._mesh_landmarks(work)
            if raw is not None and self._box is not None and not _same_face(landmark_bbox(raw), self._box):
                logger.info("mesh jumped to another face; treating the target as lost")
                raw = None
                self._video_mesh.reset()
        elif self._mode == "roi" and self._raw is not None:
            raw = self._roi_landmarks(work, self._roi_from_landmarks(self._raw))

        if raw is None:
            self._mode = None
            dets = self._detect(work)
            self._num_faces, self._since_detect = len(dets), 0
            if dets:
                holding = self._last_face is not None and t - self._last_seen <= self.cfg.hold_seconds
                same = [d for d in dets if holding and self._box is not None and _same_face(d, self._box)]
                target = same[0] if same else max(dets, key=lambda d: _score(d, work.shape[:2]))
                raw = self._acquire(work, target)
                if raw is not None:
                    switched = not (holding and self._box is not None and _same_face(landmark_bbox(raw), self._box))
        else:
            self._since_detect += 1
            if self._since_detect >= self.cfg.detect_every:
                raw, switched = self._check_others(work, raw)

        if raw is None:
            return self._lost(t, self._num_faces)
        self._raw, self._box = raw, landmark_bbox(raw)
        self._num_faces = max(self._num_faces, 1)
        face = self._make_face(raw, f, t, reset=switched)
        self._last_face, self._last_seen = face, t
        return TrackResult(face=face, status="tracking", num_faces=self._num_faces, switched=switched)

    def find_landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """Raw (478, 3) landmarks of the main face of a photo (H, W, 3) uint8, or None."""
        work, f = self._prepare(image)
        raw, _ = self._find_static(work)
        if raw is not None:
            raw[:, :2] = (raw[:, :2] + 0.5) / f - 0.5
            raw[:, 2] /= f
        return raw

    def _find_static(self, work: np.ndarray) -> tuple[np.ndarray | None, list[Box]]:
        dets = self._detect(work)
        raw = None
        if dets:
            raw = self._acquire_roi(work, max(dets, key=lambda d: _score(d, work.shape[:2])))
        if raw is None:  # a face filling the frame can escape the full-range detector
            raw = self._run_mesh(self._roi_mesh, work)
        return raw, dets

    def _update_static(self, work: np.ndarray, f: float) -> TrackResult:
        raw, dets = self._find_static(work)
        if raw is None:
            return TrackResult(face=None, status="none", num_faces=len(dets))
        face = self._make_face(raw, f, 0.0, reset=True, smooth=False)
        return TrackResult(face=face, status="tracking", num_faces=max(len(dets), 1))

    def _check_others(self, work: np.ndarray, raw: np.ndarray) -> tuple[np.ndarray, bool]:
        """Periodic detection: count faces; hand over to a much better face, debounced."""
        dets = self._detect(work)
        self._since_detect = 0
        box = landmark_bbox(raw)
        others = [d for d in dets if not _same_face(d, box)]
        self._num_faces = len(others) + 1
        shape = work.shape[:2]
        best = max(others, key=lambda d: _score(d, shape)) if others else None
        if best is not None and _score(best, shape) > self.cfg.switch_margin * _score(box, shape):
            self._challenger_hits += 1
        else:
            self._challenger_hits = 0
        if best is not None and self._challenger_hits >= self.cfg.switch_debounce:
            self._challenger_hits = 0
            new = self._acquire(work, best)
            if new is not None:
                logger.info("switching to a more prominent face")
                return new, True
            # the hand-over failed: the next frame re-detects and prefers the current face
        return raw, False

    def _lost(self, t: float, num_faces: int) -> TrackResult:
        if self._last_face is not None and t - self._last_seen <= self.cfg.hold_seconds:
            return TrackResult(face=self._last_face, status="holding", num_faces=num_faces)
        if self._last_face is not None:
            self._last_face = None
            self._lm_filter.reset()
            self._pose_filter.reset()
        return TrackResult(face=None, status="none", num_faces=num_faces)

    def _make_face(self, raw: np.ndarray, f: float, t: float, reset: bool, smooth: bool = True) -> Face:
        raw_frame = raw.copy()
        raw_frame[:, :2] = (raw_frame[:, :2] + 0.5) / f - 0.5
        raw_frame[:, 2] /= f
        if reset:
            self._lm_filter.reset()
            self._pose_filter.reset()
        box = landmark_bbox(raw_frame)
        size = _box_size(box)
        if smooth and self.cfg.smooth:
            lm = self._lm_filter(raw_frame, t, scale=size)
        else:
            lm = raw_frame
        pose = estimate_pose(lm)
        if smooth and self.cfg.smooth:
            ang = self._pose_filter(np.array([pose.yaw_deg, pose.pitch_deg, pose.roll_deg]), t)
            pose = HeadPose(*map(float, ang), rotation=rotation_from_angles(*ang),
                            translation=pose.translation, scale=pose.scale)
        lm32 = lm.astype(np.float32)
        return Face(landmarks=lm32, raw_landmarks=raw_frame.astype(np.float32),
                    five_points=five_points(lm32), pose=pose, bbox=landmark_bbox(lm32))

    # ------------------------------------------------------------------ models
    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """Downscale frames larger than ``max_process_side``; returns (image, scale)."""
        side = max(frame.shape[:2])
        if side <= self.cfg.max_process_side:
            return np.ascontiguousarray(frame), 1.0
        f = self.cfg.max_process_side / side
        size = (max(1, round(frame.shape[1] * f)), max(1, round(frame.shape[0] * f)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return small, size[0] / frame.shape[1]

    def _detect(self, image: np.ndarray) -> list[Box]:
        """Full-range face detections as boxes in image pixels."""
        res = self._detector.process(image)
        h, w = image.shape[:2]
        boxes = []
        for det in res.detections or []:
            rb = det.location_data.relative_bounding_box
            x0, y0 = rb.xmin * w, rb.ymin * h
            boxes.append((x0, y0, x0 + rb.width * w, y0 + rb.height * h))
        return boxes

    @staticmethod
    def _run_mesh(mesh, image: np.ndarray) -> np.ndarray | None:
        res = mesh.process(image)
        if not res.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        pts = res.multi_face_landmarks[0].landmark
        if len(pts) < NUM_LANDMARKS:
            return None
        lm = np.array([(p.x, p.y, p.z) for p in pts], dtype=np.float64)
        lm[:, 0] = lm[:, 0] * w - 0.5
        lm[:, 1] = lm[:, 1] * h - 0.5
        lm[:, 2] *= w
        return lm

    def _mesh_landmarks(self, image: np.ndarray) -> np.ndarray | None:
        return self._run_mesh(self._video_mesh, image)

    def _acquire(self, image: np.ndarray, det: Box) -> np.ndarray | None:
        """Start tracking the face in box ``det``: mesh mode if big enough, else roi mode."""
        h, w = image.shape[:2]
        if _box_size(det) >= self.cfg.mesh_min_face * min(h, w):
            # show the video mesh only this face, so its own detector locks onto it
            self._video_mesh.reset()
            masked = np.zeros_like(image)
            x0, y0, x1, y1 = self._expand(det, 1.8, w, h)
            masked[y0:y1, x0:x1] = image[y0:y1, x0:x1]
            raw = self._run_mesh(self._video_mesh, masked)
            if raw is not None and _same_face(landmark_bbox(raw), det):
                self._mode = "mesh"
                return raw
        raw = self._acquire_roi(image, det)
        self._mode = "roi" if raw is not None else None
        return raw

    def _acquire_roi(self, image: np.ndarray, det: Box) -> np.ndarray | None:
        c = _box_centre(det)
        raw = self._roi_landmarks(image, (c[0], c[1], 2.0 * _box_size(det)))
        if raw is None:
            return None
        # second pass on a crop centred on the face's own landmarks: steadier, scale-consistent
        cx, cy, side = self._roi_from_landmarks(raw)
        refined = self._roi_landmarks(image, (cx, cy, side))
        if refined is None:
            return raw
        if not self.static_image:
            return refined
        # photos: average over a few crops of the face; the mesh's sub-pixel noise depends on the crop
        runs = [refined]
        for dx, dy, k in PHOTO_JITTER:
            lm = self._roi_landmarks(image, (cx + dx * side, cy + dy * side, side * k))
            if lm is not None:
                runs.append(lm)
        return np.mean(runs, axis=0)

    @staticmethod
    def _expand(b: Box, k: float, w: int, h: int) -> tuple[int, int, int, int]:
        c, s = _box_centre(b), _box_size(b) * k / 2
        return (max(int(c[0] - s), 0), max(int(c[1] - s), 0), min(int(c[0] + s) + 1, w), min(int(c[1] + s) + 1, h))

    @staticmethod
    def _roi_from_landmarks(lm: np.ndarray) -> tuple[float, float, float]:
        b = landmark_bbox(lm)
        c = _box_centre(b)
        return float(c[0]), float(c[1]), 1.6 * _box_size(b)

    def _roi_landmarks(self, image: np.ndarray, roi: tuple[float, float, float]) -> np.ndarray | None:
        """Run the mesh on a square crop (centre x, centre y, side) scaled to ``roi_size``."""
        cx, cy, side = roi
        if not side > 4:
            return None
        n = self.cfg.roi_size
        a = n / side
        m = np.array([[a, 0.0, n / 2 - 0.5 - a * cx], [0.0, a, n / 2 - 0.5 - a * cy]])
        crop = cv2.warpAffine(image, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        lm = self._run_mesh(self._roi_mesh, crop)
        if lm is None:
            return None
        lm[:, 0] = (lm[:, 0] - m[0, 2]) / a
        lm[:, 1] = (lm[:, 1] - m[1, 2]) / a
        lm[:, 2] /= a
        return lm

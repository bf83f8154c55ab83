"""Face tracking, EG3D alignment, head pose / camera labels and compositing.

    from streamfx.face import FaceTracker, FaceConfig, align_face, composite, pose_to_label
    tracker = FaceTracker(FaceConfig())              # FaceTracker(cfg, static_image=True) for photos
    res = tracker.update(frame_rgb_uint8, timestamp_s)
    if res.face is not None:
        aligned = align_face(frame, res.face)        # .crop (512, 512, 3), .matrix, .inverse
        label = pose_to_label(res.face.pose)         # (25,) EG3D camera label
        out = composite(frame, rendered_crop, aligned)

Angles: yaw > 0 = head turned to its own left, pitch > 0 = looking up (degrees, 0/0 =
facing the camera).  ``camera_label(theta, v)`` takes EG3D ``LookAtPoseSampler`` angles
(frontal = pi/2, pi/2); ``eg3d_angles(yaw_deg, pitch_deg)`` converts (theta = pi/2 - yaw).
"""

from __future__ import annotations

from importlib import import_module

# Names are imported on first use, so that a light user (the GPU paste, benchmarks.gpu_check)
# does not pull in mediapipe and OpenCV through this package.
_WHERE = {
    "align_face": "alignment", "eg3d_matrix": "alignment", "invert": "alignment",
    "transform_points": "alignment", "warp": "alignment",
    "composite": "compositing", "crop_head_mask": "compositing", "frame_head_mask": "compositing",
    "FaceConfig": "config", "OneEuroConfig": "config", "five_points": "landmarks", "OneEuroFilter": "one_euro",
    "camera_label": "pose", "degrees_from_eg3d": "pose", "eg3d_angles": "pose", "estimate_pose": "pose",
    "label_from_degrees": "pose", "label_to_angles": "pose", "label_to_degrees": "pose",
    "pose_from_angles": "pose", "pose_to_label": "pose", "FaceTracker": "tracking",
    "AlignedFace": "types", "Face": "types", "FaceError": "types", "HeadPose": "types", "TrackResult": "types",
}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AlignedFace", "Face", "FaceConfig", "FaceError", "FaceTracker", "HeadPose", "OneEuroConfig",
    "OneEuroFilter", "TrackResult", "align_face", "camera_label", "composite", "crop_head_mask",
    "degrees_from_eg3d", "eg3d_angles", "eg3d_matrix", "estimate_pose", "five_points", "frame_head_mask",
    "invert", "label_from_degrees", "label_to_angles", "label_to_degrees", "pose_from_angles",
    "pose_to_label", "transform_points", "warp",
]

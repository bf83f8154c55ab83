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

from .alignment import align_face, eg3d_matrix, invert, transform_points, warp
from .compositing import composite, crop_head_mask, frame_head_mask
from .config import FaceConfig, OneEuroConfig
from .landmarks import five_points
from .one_euro import OneEuroFilter
from .pose import (
    camera_label,
    degrees_from_eg3d,
    eg3d_angles,
    estimate_pose,
    label_from_degrees,
    label_to_angles,
    label_to_degrees,
    pose_from_angles,
    pose_to_label,
)
from .tracking import FaceTracker
from .types import AlignedFace, Face, FaceError, HeadPose, TrackResult

__all__ = [
    "AlignedFace", "Face", "FaceConfig", "FaceError", "FaceTracker", "HeadPose", "OneEuroConfig",
    "OneEuroFilter", "TrackResult", "align_face", "camera_label", "composite", "crop_head_mask",
    "degrees_from_eg3d", "eg3d_angles", "eg3d_matrix", "estimate_pose", "five_points", "frame_head_mask",
    "invert", "label_from_degrees", "label_to_angles", "label_to_degrees", "pose_from_angles",
    "pose_to_label", "transform_points", "warp",
]

"""Head pose and EG3D camera labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streamfx.face import (
    FaceTracker,
    camera_label,
    eg3d_angles,
    estimate_pose,
    label_from_degrees,
    label_to_angles,
    label_to_degrees,
    pose_from_angles,
    pose_to_label,
)
from streamfx.face.pose import angles_from_rotation, canonical_face, focal_from_fov, rotation_from_angles

REFERENCE = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "reference"
ANGLES = [(y, p) for y in (-35, -20, -7, 0, 12, 35) for p in (-35, -15, 0, 9, 35)]
FLIP = np.array([1.0, -1.0, -1.0])


def test_known_answer_camera():
    path = REFERENCE / "3dpe_known_answer.pt"
    if not path.is_file():
        pytest.skip("known-answer fixture missing")
    cam = torch.load(path, weights_only=True)["camera"].numpy().reshape(-1)
    ours = camera_label(math.pi / 2 + 0.3, math.pi / 2 + 0.1, focal=focal_from_fov(18.837))
    np.testing.assert_allclose(ours, cam, atol=2e-6)


def test_frontal_label():
    lab = label_from_degrees(0.0, 0.0)
    c2w = lab[:16].reshape(4, 4)
    np.testing.assert_allclose(c2w[:3, 3], [0, 0, 2.7], atol=1e-6)  # on +z, radius 2.7
    np.testing.assert_allclose(c2w[:3, 0], [1, 0, 0], atol=1e-6)  # OpenCV: x right
    np.testing.assert_allclose(c2w[:3, 1], [0, -1, 0], atol=1e-6)  # y down
    assert c2w[2, 2] < -0.99  # looking down -z at the pivot
    np.testing.assert_allclose(lab[16:].reshape(3, 3), [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], atol=1e-6)
    assert eg3d_angles(0.0, 0.0) == pytest.approx((math.pi / 2, math.pi / 2))


def test_yaw_sign_convention():
    # head turned to its own left (+yaw) = camera moved to the head's right (world -x)
    theta, _ = eg3d_angles(20.0, 0.0)
    assert theta < math.pi / 2
    assert label_from_degrees(20.0, 0.0)[3] < 0
    # looking up (+pitch) = camera below the face
    assert label_from_degrees(0.0, 15.0)[7] < 0


@pytest.mark.parametrize("yaw,pitch", ANGLES)
def test_label_round_trip(yaw, pitch):
    lab = label_from_degrees(yaw, pitch)
    assert label_to_degrees(lab) == pytest.approx((yaw, pitch), abs=1e-3)
    np.testing.assert_allclose(camera_label(*label_to_angles(lab)), lab, atol=1e-5)
    assert pose_to_label(pose_from_angles(yaw, pitch)) == pytest.approx(lab, abs=1e-6)


@pytest.mark.parametrize("yaw,pitch,roll", [(10, -20, 5), (-35, 35, -12), (0, 0, 0), (33, -4, 20)])
def test_rotation_angles_round_trip(yaw, pitch, roll):
    r = rotation_from_angles(yaw, pitch, roll)
    assert angles_from_rotation(r) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def _project(shape_cam: np.ndarray, focal_px: float | None, scale=300.0, centre=(640.0, 360.0), depth=0.0):
    """Head-frame-scaled points (x right, y up, z to viewer) -> image landmarks (x, y down, z away)."""
    pts = shape_cam * scale
    if focal_px is None:
        f = np.ones(len(pts))
    else:  # perspective: the head 'depth' pixels in front of a camera with focal 'focal_px'
        f = focal_px / (focal_px * 1.0 + depth - pts[:, 2])
        f = f / f.mean()
    img = np.stack([centre[0] + pts[:, 0] * f, centre[1] - pts[:, 1] * f, -pts[:, 2]], axis=1)
    return img


@pytest.mark.parametrize("yaw,pitch", ANGLES)
@pytest.mark.parametrize("focal", [None, 3000.0])
def test_pose_recovers_known_rotation_of_canonical_face(yaw, pitch, focal):
    shape = canonical_face() @ rotation_from_angles(yaw, pitch).T
    pose = estimate_pose(_project(shape, focal))
    assert (pose.yaw_deg, pose.pitch_deg) == pytest.approx((yaw, pitch), abs=2.0)
    assert abs(pose.roll_deg) < 2.0


@pytest.fixture(scope="module")
def real_landmarks(read_rgb):
    with FaceTracker(static_image=True) as t:
        return t.find_landmarks(read_rgb("faces/ffhq_1.png"))


@pytest.mark.parametrize("yaw,pitch", ANGLES)
@pytest.mark.parametrize("focal", [None, 3000.0])
def test_pose_recovers_known_rotation_of_real_landmarks(real_landmarks, yaw, pitch, focal):
    """A real mesh (not the canonical face): put into a known pose, projected, estimated."""
    base = estimate_pose(real_landmarks)
    cam = real_landmarks.astype(np.float64) * FLIP
    head = (cam - cam.mean(axis=0)) @ base.rotation  # the mesh in its own head frame, pixels
    posed = head @ rotation_from_angles(yaw, pitch).T
    pose = estimate_pose(_project(posed, focal, scale=1.0))
    assert (pose.yaw_deg, pose.pitch_deg) == pytest.approx((yaw, pitch), abs=2.0)

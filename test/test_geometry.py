"""Tests of e2e_depth_ros.core.geometry: cameras, projection and normal frames."""

import math
import subprocess
import sys

import numpy as np
import pytest

from e2e_depth_ros.errors import CameraError
from e2e_depth_ros.core.geometry import (
    PinholeCamera,
    camera_from_projection,
    normals_to_optical,
    project_points,
    quaternion_to_matrix,
    transform_points,
    unproject_depth,
)

# fx != fy, cx != cy, H != W, so a transposition cannot pass by symmetry.
CAMERA = PinholeCamera(width=7, height=5, fx=50.0, fy=65.0, cx=3.2, cy=1.7)


def test_scaled_camera_follows_image_procs_resize_rule():
    cam = PinholeCamera(width=640, height=480, fx=500, fy=520, cx=320, cy=240, tx=-50, ty=4)
    out = cam.scaled(320, 120)
    assert (out.width, out.height) == (320, 120)
    assert (out.fx, out.cx, out.tx) == (250, 160, -25)
    assert (out.fy, out.cy, out.ty) == (130, 60, 1)
    assert cam.fx == 500  # frozen, a new camera


def test_scaled_camera_rejects_an_empty_size():
    with pytest.raises(CameraError, match="cannot scale a camera to 0x480"):
        CAMERA.scaled(0, 480)


def test_camera_from_projection_reads_p_and_k():
    P = [[500, 0, 320, -40], [0, 520, 240, 0], [0, 0, 1, 0]]
    cam = camera_from_projection(P, 640, 480)
    assert cam == PinholeCamera(640, 480, 500, 520, 320, 240, tx=-40, ty=0)
    K = [500, 0, 320, 0, 520, 240, 0, 0, 1]
    assert camera_from_projection(K, 640, 480) == PinholeCamera(640, 480, 500, 520, 320, 240)


def test_camera_from_projection_cuts_the_roi_before_binning():
    P = [[800, 0, 650, 0], [0, 820, 470, 0], [0, 0, 1, 0]]
    cam = camera_from_projection(
        P, 1280, 960, binning_x=2, binning_y=4,
        roi_x_offset=100, roi_y_offset=40, roi_width=640, roi_height=480,
    )
    assert (cam.width, cam.height) == (320, 120)
    assert (cam.fx, cam.fy) == (400, 205)
    assert (cam.cx, cam.cy) == ((650 - 100) / 2, (470 - 40) / 4)


def test_camera_from_projection_treats_zero_binning_and_zero_roi_as_none():
    P = [[800, 0, 650, 0], [0, 820, 470, 0], [0, 0, 1, 0]]
    cam = camera_from_projection(P, 1280, 960, roi_x_offset=100, roi_width=0, roi_height=480)
    assert cam == PinholeCamera(1280, 960, 800, 820, 650, 470)


@pytest.mark.parametrize(
    "P, width, height, match",
    [
        (np.zeros(12), 640, 480, "no focal length"),
        ([1, 2, 3, 4], 640, 480, "must have 12 .* got 4"),
        ([500, 0, np.nan, 0, 500, 240, 0, 0, 1], 640, 480, "NaN or Inf"),
        ([500, 0, 320, 0, 500, 240, 0, 0, 1], 0, 480, "camera size 0x480 is empty"),
    ],
)
def test_camera_from_projection_rejects_unusable_intrinsics(P, width, height, match):
    with pytest.raises(CameraError, match=match):
        camera_from_projection(P, width, height)


def test_unproject_then_project_returns_every_pixel_on_an_asymmetric_camera():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 20.0, (CAMERA.height, CAMERA.width)).astype(np.float32)
    points = unproject_depth(depth, CAMERA)
    assert points.shape == (5, 7, 3) and points.dtype == np.float32
    uv, z = project_points(points.reshape(-1, 3), CAMERA.projection)
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width]
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], axis=1), atol=1e-4)
    np.testing.assert_allclose(z, depth.ravel())


def test_unproject_follows_the_pinhole_formula_per_axis():
    depth = np.full((CAMERA.height, CAMERA.width), 2.0, dtype=np.float32)
    points = unproject_depth(depth, CAMERA)
    assert points[4, 6, 0] == pytest.approx((6 - 3.2) * 2.0 / 50.0)
    assert points[4, 6, 1] == pytest.approx((4 - 1.7) * 2.0 / 65.0)


def test_unproject_gives_nan_points_for_invalid_depth():
    depth = np.ones((CAMERA.height, CAMERA.width), dtype=np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, 0.0, -1.0
    depth[3, 3] = np.inf
    points = unproject_depth(depth, CAMERA)
    bad = np.isnan(points).all(axis=2)
    assert bad.sum() == 4 and bad[0, 0] and bad[1, 1] and bad[2, 2] and bad[3, 3]


def test_unproject_rejects_depth_of_another_size():
    with pytest.raises(CameraError, match="depth is 5x7 but the camera is 7x5"):
        unproject_depth(np.ones((7, 5), np.float32), CAMERA)


def test_project_points_gives_nan_pixels_behind_the_camera():
    uv, z = project_points(np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), CAMERA.projection)
    assert np.isnan(uv).all() and z.tolist() == [-1.0, 0.0]


def test_project_points_applies_the_stereo_offset():
    P = PinholeCamera(7, 5, 50, 65, 3.2, 1.7, tx=-10.0).projection
    uv, _ = project_points(np.array([[0.0, 0.0, 2.0]]), P)
    assert uv[0].tolist() == pytest.approx([3.2 - 10.0 / 2.0, 1.7])


def test_quaternion_of_90_degrees_about_z_turns_x_into_y():
    s = math.sin(math.pi / 4)
    R = quaternion_to_matrix(0.0, 0.0, s, s)
    np.testing.assert_allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_quaternion_is_normalised_before_use():
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 0, 3.0), np.eye(3))


def test_quaternion_of_zero_length_is_rejected():
    with pytest.raises(CameraError, match="has no rotation"):
        quaternion_to_matrix(0, 0, 0, 0)


def test_transform_points_rotates_then_translates():
    s = math.sin(math.pi / 4)
    out = transform_points(np.array([[1.0, 0, 0]]), quaternion_to_matrix(0, 0, s, s), [0, 0, 5])
    np.testing.assert_allclose(out, [[0, 1, 5]], atol=1e-12)


def test_e2e_ft_normals_are_the_negated_prediction():
    prediction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    out = normals_to_optical(prediction, "e2e_ft")
    np.testing.assert_array_equal(out, [[0, 0, -1], [0, -1, 0]])  # wall, floor
    np.testing.assert_array_equal(normals_to_optical(prediction), out)  # the default


def test_marigold_normals_flip_y_and_z():
    prediction = np.array([[0.0, 1.0, 0.0], [0.3, 0.0, 1.0]], dtype=np.float32)
    out = normals_to_optical(prediction, "marigold")
    np.testing.assert_array_equal(out, np.array([[0, -1, 0], [0.3, 0, -1]], dtype=np.float32))
    assert out.dtype == np.float32


def test_unknown_normal_convention_is_rejected():
    with pytest.raises(ValueError, match="'e2e_ft' or 'marigold', got 'dsine'"):
        normals_to_optical(np.zeros((1, 3)), "dsine")


def test_geometry_module_imports_neither_rclpy_nor_rosbags_nor_torch():
    code = (
        "import sys, e2e_depth_ros.core.geometry; "
        "print(sorted(m for m in ('rclpy', 'rosbags', 'torch', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""The node's metric scale without LiDAR, over real rclpy: sensor depth and the ground plane.

A planted model returns the scene's true depth under an affine map (what a relative depth
model gives at best), so the metric depth the node publishes can be checked against the
ray-cast truth. No tf2 here: the ground plane comes from the static-transform fallback.
"""


import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.offline.scenes import (Box, Plane, Scene, camera_pose, matrix_to_quaternion,
                                          render_frame)
from e2e_depth_ros.ros import messages
from rig import header, planted_node_rigs

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
T0 = 1_700_000_000_000_000_000
SCENE = Scene(planes=(Plane((0.0, 0.0, 1.0), 0.0), Plane((-1.0, 0.0, 0.0), -6.0)),
              boxes=(Box((2.0, -0.4, 0.0), (2.6, 0.3, 0.5)),))
SCALE, SHIFT = 0.21, -0.05  # the planted model's relative = SCALE * depth + SHIFT

pytestmark = [pytest.mark.usefixtures("ros")]


def planted(depth, seed=0):
    """Relative depth a perfect affine-invariant model would give, with 1 % noise."""
    rng = np.random.default_rng(seed)
    rel = SCALE * depth + SHIFT
    return (rel * (1.0 + 0.01 * rng.standard_normal(depth.shape))).astype(np.float32)


def ground_extrinsic(pose):
    """ground_extrinsic_* of a camera pose: p_cam = R p_world + t (world z up, floor z=0)."""
    rotation = pose.rotation.T
    return (list(map(float, -rotation @ pose.translation)),
            list(map(float, matrix_to_quaternion(rotation))))


@pytest.fixture
def node_rig():
    yield from planted_node_rigs("s")


def send_view(rig, model, pose, stamp, **kwargs):
    view = render_frame(SCENE, pose, CAMERA)
    model.relative = planted(np.nan_to_num(view.depth, nan=10.0))
    rig.send(view.rgb, stamp, camera=CAMERA, **kwargs)
    return view


def metric_error(rig, stamp, truth):
    assert rig.wait_for(lambda: stamp in rig.stamps("depth/image"), timeout=20), \
        rig.diagnostics[-1:]
    metric = messages.image_to_array(rig.at("depth/image", stamp))
    valid = np.isfinite(metric) & np.isfinite(truth)
    assert valid.mean() > 0.9
    return float(np.median(np.abs(metric[valid] - truth[valid]) / truth[valid]))


def last_diag(rig, predicate, timeout=10.0):
    assert rig.wait_for(lambda: rig.diagnostics and predicate(rig.diagnostics[-1]),
                        timeout=timeout), rig.diagnostics[-1:]
    return rig.diagnostics[-1]


@pytest.mark.parametrize("height, pitch_deg", [(0.4, 10.0), (1.2, 25.0)])
def test_the_ground_plane_gives_metric_depth_from_the_static_camera_pose(
        node_rig, height, pitch_deg):
    pose = camera_pose((0.0, 0.0, height), pitch=np.radians(pitch_deg))
    translation, rotation = ground_extrinsic(pose)
    rig, model = node_rig(scale_source="ground", ground_extrinsic_translation=translation,
                          ground_extrinsic_rotation=rotation)
    view = send_view(rig, model, pose, T0)
    assert metric_error(rig, T0, view.depth) < 0.03
    diag = last_diag(rig, lambda d: d["scale_inliers"] != "0")
    assert diag["scale_source"] == "ground"
    assert diag["scale_status"] in ("OK", "WARN holding last fit")


def test_a_camera_looking_up_publishes_no_metric_depth_and_says_why(node_rig):
    pose = camera_pose((0.0, 0.0, 0.8), pitch=np.radians(-35.0))
    translation, rotation = ground_extrinsic(pose)
    rig, model = node_rig(scale_source="ground", ground_extrinsic_translation=translation,
                          ground_extrinsic_rotation=rotation)
    send_view(rig, model, pose, T0)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "1")
    assert "no floor in view" in diag["scale_message"], diag
    assert diag["scale_status"].startswith("ERROR no fit") and diag["_level"] == b"\x02"
    assert rig.stamps("depth/image") == [] and T0 in rig.stamps("depth/relative")


def test_ground_without_a_transform_names_the_missing_frame(node_rig):
    rig, model = node_rig(scale_source="ground")
    send_view(rig, model, camera_pose((0.0, 0.0, 0.8), pitch=0.3), T0)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "1")
    assert ("no transform from ground frame 'base_footprint' to camera frame "
            "'camera_optical'") in diag["scale_message"]
    assert rig.stamps("depth/image") == []


def test_a_camera_below_the_floor_is_refused_not_fitted(node_rig):
    pose = camera_pose((0.0, 0.0, -0.5), pitch=0.3)
    translation, rotation = ground_extrinsic(pose)
    rig, model = node_rig(scale_source="ground", ground_extrinsic_translation=translation,
                          ground_extrinsic_rotation=rotation)
    send_view(rig, model, camera_pose((0.0, 0.0, 0.5), pitch=0.3), T0)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "1")
    assert "camera height -0.5 m" in diag["scale_message"], diag
    assert rig.stamps("depth/image") == []


def sparse_depth(depth, encoding, *, keep=0.04, step=1, frame_id="camera_optical", seed=1):
    """An RGB-D camera's depth: ``keep`` of the pixels valid, 1 % noise, 3 % gross outliers."""
    rng = np.random.default_rng(seed)
    d = depth[::step, ::step].astype(np.float64)
    noisy = d * (1.0 + 0.01 * rng.standard_normal(d.shape))
    outliers = rng.random(d.shape) < 0.03
    noisy[outliers] *= rng.uniform(0.3, 3.0, np.count_nonzero(outliers))
    noisy[(rng.random(d.shape) > keep) | ~np.isfinite(d)] = 0.0
    if encoding == "16UC1":
        array = np.rint(noisy * 1000.0).astype(np.uint16)
    else:
        array = noisy.astype(np.float32)
    return messages.build_image(Image, header(0, frame_id), array, encoding)


@pytest.mark.parametrize("encoding, step", [("16UC1", 1), ("32FC1", 1), ("32FC1", 2)])
def test_sparse_sensor_depth_gives_metric_depth_at_any_resolution(node_rig, encoding, step):
    rig, model = node_rig(scale_source="depth")
    pose = camera_pose((0.0, 0.0, 0.9), pitch=0.25)
    view = render_frame(SCENE, pose, CAMERA)
    depth_msg = sparse_depth(view.depth, encoding, keep=0.3 if step == 2 else 0.2, step=step)
    depth_msg.header = header(T0)
    model.relative = planted(np.nan_to_num(view.depth, nan=10.0))
    rig.send(view.rgb, T0, camera=CAMERA, sensor_depth=depth_msg)
    assert metric_error(rig, T0, view.depth) < 0.015
    assert last_diag(rig, lambda d: d["frames_processed"] == "1")["scale_source"] == "depth"


def test_a_sensor_depth_that_is_no_depth_image_is_counted_as_bad_input(node_rig):
    rig, model = node_rig(scale_source="depth")
    wrong = messages.build_image(Image, header(T0), np.zeros((48, 64, 3), np.uint8), "rgb8")
    send_view(rig, model, camera_pose((0.0, 0.0, 0.9), pitch=0.25), T0, sensor_depth=wrong)
    diag = last_diag(rig, lambda d: d["frames_bad_input"] == "1")
    assert "unusable sensor depth: a depth image must be 16UC1 (mm) or 32FC1 (m), got " \
        "'rgb8'" in diag["last_bad_input"]
    assert rig.stamps("depth/image") == [] and diag["frames_failed"] == "0"


def test_sensor_depth_of_another_aspect_ratio_is_refused_with_the_reason(node_rig):
    rig, model = node_rig(scale_source="depth")
    wide = messages.build_image(Image, header(T0), np.full((48, 96), 2.0, np.float32),
                                "32FC1")
    send_view(rig, model, camera_pose((0.0, 0.0, 0.9), pitch=0.25), T0, sensor_depth=wide)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "1")
    assert "another aspect ratio than the image 64x48" in diag["scale_message"], diag
    assert rig.stamps("depth/image") == []


def test_sensor_depth_in_another_frame_without_its_camera_info_says_what_it_needs(node_rig):
    rig, model = node_rig(scale_source="depth")
    view = render_frame(SCENE, camera_pose((0.0, 0.0, 0.9), pitch=0.25), CAMERA)
    other = sparse_depth(view.depth, "32FC1", frame_id="depth_optical")
    other.header = header(T0, "depth_optical")
    model.relative = planted(np.nan_to_num(view.depth, nan=10.0))
    rig.send(view.rgb, T0, camera=CAMERA, sensor_depth=other)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "1")
    assert "sensor depth is in frame 'depth_optical', not the image's 'camera_optical'" in \
        diag["scale_message"]


def test_scale_source_is_checked_and_fixed_needs_a_fixed_scale(node_rig):
    rig, _ = node_rig()
    node = rig.node_under_test
    assert node.scale_source() == "lidar"  # auto, as before: LiDAR unless fixed_scale is set
    bad = node.set_parameters([Parameter("scale_source", value="sonar")])[0]
    assert not bad.successful and "scale_source must be one of auto, lidar" in bad.reason
    fixed = node.set_parameters([Parameter("scale_source", value="fixed")])[0]
    assert not fixed.successful and "needs fixed_scale > 0" in fixed.reason
    assert node.set_parameters_atomically([Parameter("fixed_scale", value=2.0),
                                           Parameter("scale_source", value="fixed")]).successful
    assert node.scale_source() == "fixed"


def test_a_jump_in_the_camera_pose_is_held_not_published_as_a_new_scale(node_rig):
    pose = camera_pose((0.0, 0.0, 0.6), pitch=np.radians(20.0))
    translation, rotation = ground_extrinsic(pose)
    rig, model = node_rig(scale_source="ground", ground_extrinsic_translation=translation,
                          ground_extrinsic_rotation=rotation)
    view = send_view(rig, model, pose, T0)
    assert metric_error(rig, T0, view.depth) < 0.03
    # TF now claims the camera is three times as high: one such frame is not believed
    jumped = ground_extrinsic(camera_pose((0.0, 0.0, 1.8), pitch=np.radians(20.0)))[0]
    node = rig.node_under_test
    assert node.set_parameters([Parameter("ground_extrinsic_translation",
                                          value=jumped)])[0].successful
    later = T0 + 10**8
    send_view(rig, model, pose, later)
    assert metric_error(rig, later, view.depth) < 0.03  # the held scale, still right
    diag = last_diag(rig, lambda d: d["frames_processed"] == "2")
    assert "scale jump rejected" in diag["scale_message"], diag
    assert diag["scale_status"] == "WARN holding last fit"

"""A LiDAR cloud in the camera frame: identity, tf2's transform, or the static extrinsic."""

import numpy as np
import pytest

from e2e_depth_ros.core.geometry import quaternion_to_matrix
from e2e_depth_ros.ros.lidar_input import (InputProblem, StaticExtrinsic, lidar_points,
                                           lidar_transform)
from plain_msgs import TYPES, cloud, header

POINTS = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)
NONE = StaticExtrinsic("", (0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
# LiDAR x forward, y left, z up -> optical z forward, x right, y down; lens 0.1 m ahead
LIDAR_TO_OPTICAL = StaticExtrinsic("lidar", (0.5, -0.5, 0.5, 0.5), (0.0, 0.0, -0.1))


def lookup_failing(target, source, stamp):
    raise LookupError(f"{source} -> {target} unknown")


def test_a_cloud_in_the_camera_frame_is_kept_as_it_is():
    points = lidar_points(cloud(POINTS, frame_id="camera_optical"), "camera_optical",
                          lookup=None, extrinsic=NONE)
    assert np.allclose(points, POINTS)


def test_tf2_is_asked_target_first_and_its_transform_applied():
    asked = []

    def lookup(target, source, stamp):
        asked.append((target, source))
        return np.eye(3), np.array([0.0, 0.0, 1.0])

    points = lidar_points(cloud(POINTS), "camera_optical", lookup=lookup, extrinsic=NONE)
    assert asked == [("camera_optical", "lidar")]
    assert np.allclose(points, POINTS + [0.0, 0.0, 1.0])


def test_without_tf2_the_static_extrinsic_of_that_frame_is_used():
    points = lidar_points(cloud(POINTS), "camera_optical", lookup=lookup_failing,
                          extrinsic=LIDAR_TO_OPTICAL)
    rotation = quaternion_to_matrix(*LIDAR_TO_OPTICAL.rotation_xyzw)
    assert np.allclose(points, POINTS @ rotation.T + [0.0, 0.0, -0.1], atol=1e-6)
    assert np.allclose(rotation @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], atol=1e-9)  # forward
    assert np.allclose(rotation @ [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], atol=1e-9)  # left


@pytest.mark.parametrize("lookup, says", [(None, "tf2 is not installed"),
                                          (lookup_failing, "LookupError: lidar -> ")])
def test_no_transform_at_all_names_both_frames_and_the_tf2_error(lookup, says):
    problem = lidar_transform("velodyne", "camera_optical", header(0).stamp, lookup=lookup,
                              extrinsic=LIDAR_TO_OPTICAL)
    assert isinstance(problem, InputProblem) and problem.kind == "lidar_transform"
    assert "'velodyne'" in problem.text and "'camera_optical'" in problem.text
    assert says.replace("lidar ->", "velodyne ->") in problem.text
    assert "static extrinsic is for 'lidar'" in problem.text


def test_an_unreadable_cloud_is_a_cloud_problem():
    bad = cloud(POINTS)
    bad.fields = [TYPES["sensor_msgs/msg/PointField"](name="intensity", offset=0, datatype=7,
                                                      count=1)]
    problem = lidar_points(bad, "camera_optical", lookup=None, extrinsic=NONE)
    assert isinstance(problem, InputProblem) and problem.kind == "lidar_cloud"
    assert problem.text.startswith("unusable LiDAR cloud: ")

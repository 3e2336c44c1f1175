"""The node's camera poses for temporal alignment (ros/odometry.py), without rclpy."""

from types import SimpleNamespace as NS

import numpy as np
import pytest

from e2e_depth_ros.offline.scenes import BODY_FROM_OPTICAL, camera_pose, matrix_to_quaternion
from e2e_depth_ros.ros.lidar_input import StaticExtrinsic
from e2e_depth_ros.ros.odometry import (BODY_TO_OPTICAL_XYZW, OdometryBuffer,
                                        camera_pose_from_odometry, camera_pose_from_tf)

T0 = 1_700_000_000_000_000_000


def odometry(stamp_ns, rotation, translation):
    """A duck-typed nav_msgs/Odometry of a base pose (p_odom = R p_base + t)."""
    x, y, z, w = matrix_to_quaternion(rotation)
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return NS(header=NS(stamp=NS(sec=sec, nanosec=nanosec)), pose=NS(pose=NS(
        position=NS(x=translation[0], y=translation[1], z=translation[2]),
        orientation=NS(x=x, y=y, z=z, w=w))))


def base_of(pose):
    """The base under a camera looking along its x axis (the default extrinsic)."""
    return pose.rotation @ BODY_FROM_OPTICAL.T, pose.translation


DEFAULT = StaticExtrinsic("", BODY_TO_OPTICAL_XYZW, (0.0, 0.0, 0.0))


def test_the_default_extrinsic_turns_a_base_pose_into_its_forward_cameras_pose():
    truth = camera_pose((1.0, -2.0, 0.5), yaw=0.4, pitch=0.1)
    buffer = OdometryBuffer()
    assert buffer.add(odometry(T0, *base_of(truth))) is None
    pose = camera_pose_from_odometry(buffer, DEFAULT, T0)
    np.testing.assert_allclose(pose.rotation, truth.rotation, atol=1e-9)
    np.testing.assert_allclose(pose.translation, truth.translation, atol=1e-12)


def test_an_offset_camera_is_composed_with_the_base_pose():
    base_rotation = camera_pose((0, 0, 0), yaw=0.7).rotation @ BODY_FROM_OPTICAL.T
    buffer = OdometryBuffer()
    buffer.add(odometry(T0, base_rotation, np.array([2.0, 1.0, 0.0])))
    # the camera 0.3 m ahead of and 0.5 m above the base: p_cam = R p_base + t
    rotation = BODY_FROM_OPTICAL.T
    t = -rotation @ np.array([0.3, 0.0, 0.5])
    extrinsic = StaticExtrinsic("", matrix_to_quaternion(rotation), tuple(t))
    pose = camera_pose_from_odometry(buffer, extrinsic, T0)
    expected = base_rotation @ np.array([0.3, 0.0, 0.5]) + np.array([2.0, 1.0, 0.0])
    np.testing.assert_allclose(pose.translation, expected, atol=1e-12)


def test_poses_between_samples_are_interpolated_and_stale_ones_refused():
    buffer = OdometryBuffer()
    a, b = camera_pose((0.0, 0.0, 0.0)), camera_pose((1.0, 0.0, 0.0), yaw=0.2)
    buffer.add(odometry(T0, *base_of(a)))
    buffer.add(odometry(T0 + 100_000_000, *base_of(b)))
    mid = camera_pose_from_odometry(buffer, DEFAULT, T0 + 25_000_000)
    np.testing.assert_allclose(mid.translation, [0.25, 0.0, 0.0], atol=1e-12)
    expected = camera_pose((0.25, 0.0, 0.0), yaw=0.05).rotation
    np.testing.assert_allclose(mid.rotation, expected, atol=1e-9)
    late = camera_pose_from_odometry(buffer, DEFAULT, T0 + 150_000_000)
    np.testing.assert_allclose(late.translation, [1.0, 0.0, 0.0])  # within the tolerance
    stale = camera_pose_from_odometry(buffer, DEFAULT, T0 + 1_100_000_000)
    assert stale == "odometry is stale: the newest is 1.00 s older than the image"
    assert "older than every odometry message" in camera_pose_from_odometry(
        buffer, DEFAULT, T0 - 1)
    assert camera_pose_from_odometry(OdometryBuffer(), DEFAULT, T0) == \
        "no odometry message yet"


@pytest.mark.parametrize("quaternion, translation", [
    ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0, 1.0), (np.nan, 0.0, 0.0)),
])
def test_a_broken_odometry_message_is_refused_with_the_reason(quaternion, translation):
    msg = odometry(T0, np.eye(3), translation)
    x, y, z, w = quaternion
    msg.pose.pose.orientation = NS(x=x, y=y, z=z, w=w)
    buffer = OdometryBuffer()
    assert "not finite or its quaternion is not unit" in buffer.add(msg)
    assert camera_pose_from_odometry(buffer, DEFAULT, T0) == "no odometry message yet"


def test_the_buffer_keeps_ten_seconds():
    buffer = OdometryBuffer()
    for i in range(30):
        buffer.add(odometry(T0 + i * 1_000_000_000, np.eye(3), (float(i), 0.0, 0.0)))
    assert len(buffer._stamps) == 11
    assert "older than every" in buffer.at(T0)


def test_a_failed_tf_lookup_says_which_transform():
    def lookup(target, source, stamp, timeout):
        assert timeout == 0.1  # odometry a little late is waited for
        raise LookupError("frame odom does not exist")

    why = camera_pose_from_tf(lookup, "odom", "camera_optical", None)
    assert why == ("no transform odom -> camera_optical: LookupError: frame odom does not "
                   "exist")

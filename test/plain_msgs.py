"""rosbags message classes for tests that must not start rclpy: the ROS-free modules take
any message with the right fields (rclpy's or rosbags')."""

from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros import messages

TYPES = get_typestore(Stores.ROS2_HUMBLE).types


def header(stamp_ns: int, frame_id: str = "camera_optical"):
    stamp = TYPES["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return TYPES["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image(rgb: np.ndarray, stamp_ns: int = 0):
    return messages.build_image(TYPES["sensor_msgs/msg/Image"], header(stamp_ns), rgb, "rgb8")


def camera_info(camera: PinholeCamera, stamp_ns: int = 0):
    return TYPES["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns), height=camera.height, width=camera.width,
        distortion_model="plumb_bob", d=np.zeros(5), r=np.eye(3).reshape(-1),
        k=np.array([camera.fx, 0, camera.cx, 0, camera.fy, camera.cy, 0, 0, 1], float),
        p=camera.projection.ravel().astype(float), binning_x=0, binning_y=0,
        roi=TYPES["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def cloud(points: np.ndarray, stamp_ns: int = 0, frame_id: str = "lidar"):
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(1, -1, 3)
    return messages.build_pointcloud(TYPES["sensor_msgs/msg/PointCloud2"],
                                     TYPES["sensor_msgs/msg/PointField"],
                                     header(stamp_ns, frame_id), pts)

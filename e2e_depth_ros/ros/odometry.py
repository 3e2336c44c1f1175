"""The camera's pose in the odometry frame at an image stamp, for temporal alignment.

With tf2 (every ROS install): ``odom_frame`` -> the image's frame from TF, looked up after
the model ran (odometry has caught up with the image by then). Without tf2 (pip-only
machines): the ``odom`` topic (``nav_msgs/Odometry``, the pose of its child frame, e.g.
``base_link``, in ``odom``) and the camera's static extrinsic on that frame
(``base_extrinsic_*``). Between two odometry samples the pose is interpolated (translation
linear, rotation slerp); an image older than the buffer or newer than the last sample by
more than ``ODOM_TOLERANCE_S`` has no pose: stale odometry is no odometry, and the
alignment restarts rather than move the depth with a wrong motion. ROS-free but for the
duck-typed messages.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Any

import numpy as np

from e2e_depth_ros.core.geometry import quaternion_to_matrix, slerp
from e2e_depth_ros.core.temporal import CameraPose
from e2e_depth_ros.ros.lidar_input import StaticExtrinsic
from e2e_depth_ros.ros.sync import stamp_to_ns

ODOM_TOLERANCE_S = 0.1  # an image this far past the newest odometry still takes it
HORIZON_NS = 10_000_000_000  # odometry kept this long (as tf2's cache)
# REP 103 body (x forward, y left, z up) to optical (x right, y down, z forward): the camera
# looking straight ahead from the odometry's child frame, as a quaternion x, y, z, w of
# p_cam = R p_base
BODY_TO_OPTICAL_XYZW = (0.5, -0.5, 0.5, 0.5)


class OdometryBuffer:
    """Recent ``nav_msgs/Odometry`` poses (child frame in odom), by stamp."""

    def __init__(self) -> None:
        self._stamps: list[int] = []
        self._poses: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # stamp: (xyzw, t)

    def add(self, msg: Any) -> str | None:
        """Store one message; the reason it is unusable otherwise (nothing stored)."""
        stamp = stamp_to_ns(msg.header.stamp)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        t = np.array([p.x, p.y, p.z], dtype=np.float64)
        xyzw = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
        norm = float(np.linalg.norm(xyzw))
        if not (np.isfinite(t).all() and np.isfinite(norm) and abs(norm - 1.0) < 1e-3):
            return (f"odometry pose is not finite or its quaternion is not unit "
                    f"(|q| = {norm:.4g})")
        if stamp < (self._stamps[-1] if self._stamps else stamp) - HORIZON_NS:
            return "odometry stamp far older than the buffer"
        if stamp not in self._poses:
            insort(self._stamps, stamp)
        self._poses[stamp] = (xyzw, t)
        while self._stamps and self._stamps[0] < self._stamps[-1] - HORIZON_NS:
            self._poses.pop(self._stamps.pop(0))
        return None

    def at(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray] | str:
        """(R, t) of the child frame in odom at ``stamp_ns``, or why there is none."""
        if not self._stamps:
            return "no odometry message yet"
        newest = self._stamps[-1]
        if stamp_ns > newest:
            late = (stamp_ns - newest) * 1e-9
            if late > ODOM_TOLERANCE_S:
                return f"odometry is stale: the newest is {late:.2f} s older than the image"
            xyzw, t = self._poses[newest]
            return quaternion_to_matrix(*xyzw), t
        i = bisect_left(self._stamps, stamp_ns)
        if self._stamps[i] == stamp_ns:
            xyzw, t = self._poses[stamp_ns]
            return quaternion_to_matrix(*xyzw), t
        if i == 0:
            return "the image is older than every odometry message kept"
        s0, s1 = self._stamps[i - 1], self._stamps[i]
        (q0, t0), (q1, t1) = self._poses[s0], self._poses[s1]
        w = (stamp_ns - s0) / (s1 - s0)
        return quaternion_to_matrix(*slerp(q0, q1, w)), (1 - w) * t0 + w * t1


def camera_pose_from_odometry(odometry: OdometryBuffer, extrinsic: StaticExtrinsic,
                              stamp_ns: int) -> CameraPose | str:
    """The camera in odom: the child frame's pose composed with the camera's extrinsic
    (``p_cam = R p_base + t``, so the camera in the base frame is its inverse)."""
    found = odometry.at(stamp_ns)
    if isinstance(found, str):
        return found
    base_rotation, base_translation = found
    rotation = quaternion_to_matrix(*extrinsic.rotation_xyzw)
    cam_rotation = rotation.T  # the camera's axes in the base frame
    cam_translation = -rotation.T @ np.asarray(extrinsic.translation, dtype=np.float64)
    return CameraPose(base_rotation @ cam_rotation,
                      base_rotation @ cam_translation + base_translation)


def camera_pose_from_tf(lookup: Callable[..., tuple[np.ndarray, np.ndarray]],
                        odom_frame: str, camera_frame: str, stamp: Any) -> CameraPose | str:
    """The camera in ``odom_frame`` from tf2 (p_odom = R p_cam + t), or why not."""
    try:  # odometry a little behind the image is waited for, briefly
        rotation, translation = lookup(odom_frame, camera_frame, stamp,
                                       timeout=ODOM_TOLERANCE_S)
    except Exception as err:  # noqa: BLE001 - tf2 raises several lookup errors
        return f"no transform {odom_frame} -> {camera_frame}: {type(err).__name__}: {err}"
    return CameraPose(np.asarray(rotation, dtype=np.float64),
                      np.asarray(translation, dtype=np.float64))


class OdometrySource:
    """Where the node's camera poses come from: tf2, else the ``odom`` topic.

    Without tf2 it subscribes to ``odom`` (relative: namespaces and remapping apply) when
    ``nav_msgs`` is installed; a bad message is counted in ``problem`` and dropped.
    """

    def __init__(self, node: Any, lookup: Callable[..., Any] | None, qos: Any) -> None:
        import threading

        self._lookup = lookup
        self._buffer = OdometryBuffer()
        self._lock = threading.Lock()  # the executor adds, the worker reads
        self.problem = ""  # the latest unusable odometry message, for diagnostics
        self.description = "tf2"
        if lookup is None:
            try:
                from nav_msgs.msg import Odometry
            except ImportError:  # pragma: no cover - a ROS install without nav_msgs
                self.description = "none (no tf2, no nav_msgs)"
                return
            self.description = "odom topic (nav_msgs/Odometry; no tf2)"
            node.create_subscription(Odometry, "odom", self._on_odometry, qos)

    def _on_odometry(self, msg: Any) -> None:
        with self._lock:
            why = self._buffer.add(msg)
        if why:
            self.problem = why

    def pose(self, params: dict, header: Any) -> CameraPose | str:
        """The camera of ``header`` in the odometry frame at its stamp, or why not."""
        if self._lookup is not None:
            return camera_pose_from_tf(self._lookup, params["odom_frame"], header.frame_id,
                                       header.stamp)
        extrinsic = StaticExtrinsic("", tuple(params["base_extrinsic_rotation"]),
                                    tuple(params["base_extrinsic_translation"]))
        with self._lock:
            return camera_pose_from_odometry(self._buffer, extrinsic,
                                             stamp_to_ns(header.stamp))

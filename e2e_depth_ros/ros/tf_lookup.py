"""tf2 lookups for the node, when a ROS install provides tf2 (none on pip-only machines)."""

from __future__ import annotations

from typing import Any

import numpy as np
import rclpy.duration
import rclpy.time

from e2e_depth_ros.core.geometry import quaternion_to_matrix

try:  # tf2 is used when a ROS install provides it; static extrinsics otherwise
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None


class TfLookup:
    """A tf2 buffer and listener on ``node``; call it for (R, t) of target <- source."""

    def __init__(self, node: Any) -> None:
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)

    def __call__(self, target: str, source: str, stamp: Any, timeout: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``timeout`` (s): wait that long for a transform that has not arrived yet."""
        wait = rclpy.duration.Duration(seconds=timeout)
        tf = self._buffer.lookup_transform(target, source, rclpy.time.Time.from_msg(stamp),
                                           timeout=wait)
        q, t = tf.transform.rotation, tf.transform.translation
        return quaternion_to_matrix(q.x, q.y, q.z, q.w), np.array([t.x, t.y, t.z])


def tf_lookup(node: Any) -> TfLookup | None:
    """A lookup on ``node``, or None where tf2 is not installed."""
    return TfLookup(node) if tf2_ros is not None else None

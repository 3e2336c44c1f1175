"""A tiny static transform tree from recorded /tf_static, for tools that run without tf2.

tf2 is not installable everywhere, and offline tools only need the fixed sensor
extrinsics a bag carries. A ``geometry_msgs/TransformStamped`` with parent ``header.frame_id``
and child ``child_frame_id`` maps child-frame points into the parent frame:
``p_parent = R p_child + t``. ``lookup(target, source)`` chains such edges in either
direction, so a LiDAR mounted on a base that also carries the camera is found too.
Duck-typed: rclpy and rosbags messages both work. Pure numpy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2e_depth_ros.core.geometry import quaternion_to_matrix


@dataclass(frozen=True)
class RigidTransform:
    """``p_target = rotation @ p_source + translation`` (meters)."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def compose(self, inner: RigidTransform) -> RigidTransform:
        """This transform applied after ``inner``."""
        return RigidTransform(self.rotation @ inner.rotation,
                              self.rotation @ inner.translation + self.translation)

    def inverse(self) -> RigidTransform:
        r_t = self.rotation.T
        return RigidTransform(r_t, -r_t @ self.translation)


IDENTITY = RigidTransform(np.eye(3), np.zeros(3))


def strip_slash(frame: str) -> str:
    """tf2 ignores a leading slash in frame ids (a ROS 1 habit); so does this tree."""
    return frame.lstrip("/")


class StaticTransforms:
    """Parent/child edges from TFMessages; a later edge for the same child replaces it."""

    def __init__(self) -> None:
        self._edges: dict[str, tuple[str, RigidTransform]] = {}  # child -> (parent, T)

    def add_message(self, msg: Any) -> None:
        """Add every transform of a tf2_msgs/TFMessage."""
        for stamped in msg.transforms:
            t, q = stamped.transform.translation, stamped.transform.rotation
            self._edges[strip_slash(stamped.child_frame_id)] = (
                strip_slash(stamped.header.frame_id),
                RigidTransform(quaternion_to_matrix(q.x, q.y, q.z, q.w),
                               np.array([t.x, t.y, t.z], dtype=np.float64)),
            )

    @property
    def frames(self) -> list[str]:
        """Every frame id the tree knows, sorted."""
        names = set(self._edges) | {parent for parent, _ in self._edges.values()}
        names |= self._moving_frames()
        return sorted(names)

    def _moving_frames(self) -> set[str]:
        return set()

    def _edges_at(self, stamp_ns: int | None) -> dict[str, tuple[str, RigidTransform]]:
        """child -> (parent, T) of every edge known at ``stamp_ns``: here the static ones."""
        return self._edges

    def lookup(self, target: str, source: str, stamp_ns: int | None = None
               ) -> RigidTransform | None:
        """Transform taking ``source``-frame points into ``target``; None when unconnected.

        ``stamp_ns``: the time of the points, for trees that also hold moving edges
        (``tf_buffer.TransformBuffer``); the static tree is the same at every time.
        """
        target, source = strip_slash(target), strip_slash(source)
        if target == source:
            return IDENTITY
        graph: dict[str, list[tuple[str, RigidTransform]]] = {}
        for child, (parent, tf) in self._edges_at(stamp_ns).items():
            graph.setdefault(child, []).append((parent, tf))  # child -> parent: T
            graph.setdefault(parent, []).append((child, tf.inverse()))
        seen = {source}
        queue: deque[tuple[str, RigidTransform]] = deque([(source, IDENTITY)])
        while queue:  # breadth first: the shortest chain of edges wins
            frame, to_frame = queue.popleft()
            for neighbour, step in graph.get(frame, ()):
                if neighbour in seen:
                    continue
                chained = step.compose(to_frame)
                if neighbour == target:
                    return chained
                seen.add(neighbour)
                queue.append((neighbour, chained))
        return None

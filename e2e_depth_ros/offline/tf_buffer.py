"""Moving transforms from recorded /tf, looked up at a stamp the way tf2 does it.

``TransformBuffer`` is the static tree of ``tf_static`` plus, per child frame, the history
of its ``/tf`` transforms. A lookup at a stamp takes each moving edge between its two
recorded neighbours (translation linear, rotation slerp) and refuses to extrapolate: a
stamp before the first or after the last sample of an edge leaves that edge out, as tf2
would raise. A stamp exactly on a sample is that sample. Pure numpy, duck-typed messages.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np

from e2e_depth_ros.core.geometry import quaternion_to_matrix, slerp
from e2e_depth_ros.offline.tf_static import RigidTransform, StaticTransforms, strip_slash
from e2e_depth_ros.ros.sync import stamp_to_ns


class _Track:
    """One moving edge: its parent and samples (stamp ns, translation, quaternion xyzw)."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.samples: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._stamps: list[int] | None = None

    def add(self, stamp_ns: int, translation: np.ndarray, quaternion: np.ndarray) -> None:
        self.samples.append((stamp_ns, translation, quaternion))
        self._stamps = None

    def at(self, stamp_ns: int) -> RigidTransform | None:
        if self._stamps is None:
            self.samples.sort(key=lambda s: s[0])
            self._stamps = [s[0] for s in self.samples]
        i = bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            _, t, q = self.samples[i]
            return RigidTransform(quaternion_to_matrix(*q), t)
        if i == 0 or i == len(self._stamps):
            return None  # before the first or after the last sample: no extrapolation
        (s0, t0, q0), (s1, t1, q1) = self.samples[i - 1], self.samples[i]
        w = (stamp_ns - s0) / (s1 - s0)
        return RigidTransform(quaternion_to_matrix(*slerp(q0, q1, w)), (1 - w) * t0 + w * t1)


class TransformBuffer(StaticTransforms):
    """/tf_static edges (``add_message``) and /tf edges (``add_message(msg, moving=True)``).

    ``lookup(target, source, stamp_ns)`` chains both; without a stamp only the static edges
    are used. An edge recorded on both topics is taken from /tf_static.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tracks: dict[str, _Track] = {}

    def add_message(self, msg: Any, *, moving: bool = False) -> None:
        if not moving:
            super().add_message(msg)
            return
        for stamped in msg.transforms:
            child, parent = strip_slash(stamped.child_frame_id), strip_slash(
                stamped.header.frame_id)
            track = self._tracks.get(child)
            if track is None or track.parent != parent:  # a new parent starts a new history
                track = self._tracks[child] = _Track(parent)
            t, q = stamped.transform.translation, stamped.transform.rotation
            track.add(stamp_to_ns(stamped.header.stamp), np.array([t.x, t.y, t.z], float),
                      np.array([q.x, q.y, q.z, q.w], float))

    def _moving_frames(self) -> set[str]:
        return set(self._tracks) | {track.parent for track in self._tracks.values()}

    def _edges_at(self, stamp_ns: int | None) -> dict[str, tuple[str, RigidTransform]]:
        edges = dict(super()._edges_at(stamp_ns))
        if stamp_ns is None:
            return edges
        for child, track in self._tracks.items():
            if child in edges:
                continue
            found = track.at(stamp_ns)
            if found is not None:
                edges[child] = (track.parent, found)
        return edges

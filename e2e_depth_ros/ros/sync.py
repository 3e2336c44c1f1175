"""Pairing messages by header stamp, without ROS.

message_filters is not always installed, and the node only needs to find the CameraInfo /
LiDAR cloud that belongs to an image (the newest-frame slots per camera live in multicam).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


def stamp_to_ns(stamp) -> int:
    """Nanoseconds of a builtin_interfaces/Time (rclpy or rosbags message)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class StampBuffer(Generic[T]):
    """The last ``size`` items by stamp; ``match`` finds the one nearest to an image stamp."""

    def __init__(self, size: int = 30) -> None:
        self._items: deque[tuple[int, T]] = deque(maxlen=size)
        self._changed = threading.Condition()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._changed:
            self._items.append((stamp_ns, item))
            self._changed.notify_all()

    def match(self, stamp_ns: int, tolerance_ns: int, *, wait: float = 0.0) -> T | None:
        """The item with exactly this stamp, else the nearest within the tolerance.

        ``wait`` (seconds): while nothing matches and the newest item is older than
        ``stamp_ns`` (one may still be in flight), wait up to this long for it. Never waits
        for a buffer that is empty (its source may not exist) or already past the stamp.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._nearest(stamp_ns, tolerance_ns) is not None
                                   or not self._items or self._items[-1][0] >= stamp_ns,
                                   timeout=wait)
            return self._nearest(stamp_ns, tolerance_ns)

    def _nearest(self, stamp_ns: int, tolerance_ns: int) -> T | None:
        best, best_gap = None, None
        for stamp, item in reversed(self._items):  # newest first, so ties go to the newest
            gap = abs(stamp - stamp_ns)
            if gap == 0:
                return item
            if gap <= tolerance_ns and (best_gap is None or gap < best_gap):
                best, best_gap = item, gap
        return best

    def newest(self) -> T | None:
        with self._changed:
            return self._items[-1][1] if self._items else None

    def newest_stamp(self) -> int | None:
        with self._changed:
            return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        with self._changed:
            self._items.clear()

"""Pairing messages by header stamp and keeping only the newest frame, without ROS.

message_filters is not always installed, and the node only needs two small things: find the
CameraInfo / LiDAR cloud that belongs to an image, and hand the worker the newest image.
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
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            self._items.append((stamp_ns, item))

    def match(self, stamp_ns: int, tolerance_ns: int) -> T | None:
        """The item with exactly this stamp, else the nearest within the tolerance."""
        with self._lock:
            items = list(self._items)
        best, best_gap = None, None
        for stamp, item in reversed(items):  # newest first, so ties go to the newest
            gap = abs(stamp - stamp_ns)
            if gap == 0:
                return item
            if gap <= tolerance_ns and (best_gap is None or gap < best_gap):
                best, best_gap = item, gap
        return best

    def newest_stamp(self) -> int | None:
        with self._lock:
            return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class LatestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces what the worker has not taken yet (a drop).

    Callbacks never block on the worker, and the worker always gets the newest frame.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout``; None when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

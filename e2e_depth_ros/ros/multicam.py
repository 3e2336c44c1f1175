"""Several cameras, one worker: newest-frame slots per camera and a fair batch schedule.

Without ROS, so the scheduling is unit-tested on its own. Each camera keeps only its newest
unprocessed frame (a newer one replaces it: a drop counted for that camera). The worker takes
one *round*: the cameras that have a frame, at most ``max_batch`` of them, starting with those
served longest ago, so a camera that publishes faster cannot starve a slower one and a camera
that stopped publishing is simply absent from the round (it never holds the others up).
"""

from __future__ import annotations

import re
import threading
from typing import Generic, Sequence, TypeVar

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


def validate_cameras(names: Sequence[str]) -> str | None:
    """Why a ``cameras`` list is refused, or None (empty = the single-camera topics)."""
    seen = set()
    for name in names:
        if not isinstance(name, str) or not _NAME.match(name):
            return (f"camera name {name!r} is not a relative ROS name (letters, digits, '_', "
                    "'/' between tokens, each starting with a letter)")
        if name in seen:
            return f"camera {name!r} is listed twice"
        seen.add(name)
    return None


def camera_topic(camera: str, topic: str) -> str:
    """A topic of one camera: ``front`` + ``depth/image`` -> ``front/depth/image``.

    Relative, so the node's namespace and remapping still apply; camera "" is the
    single-camera node's own topic.
    """
    camera = camera.strip("/")
    return f"{camera}/{topic}" if camera else topic


def pick_round(order: Sequence[str], pending: set[str], max_batch: int) -> list[str]:
    """The cameras served this round: pending ones in ``order`` (longest waiting first)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [camera for camera in order if camera in pending][:max_batch]


class CameraSlots(Generic[T]):
    """One newest-item mailbox per camera behind one condition the worker waits on.

    ``put`` never blocks on the worker. ``take_round`` returns ``[(camera, item)]`` for at most
    ``max_batch`` cameras; the served cameras go to the back of the order.
    """

    def __init__(self, cameras: Sequence[str]) -> None:
        if not cameras:
            raise ValueError("CameraSlots needs at least one camera")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"camera names must be unique, got {list(cameras)}")
        self._cond = threading.Condition()
        self._items: dict[str, T] = {}
        self._order: list[str] = list(cameras)
        self._closed = False
        self.dropped: dict[str, int] = {camera: 0 for camera in cameras}

    @property
    def cameras(self) -> list[str]:
        return list(self.dropped)

    def put(self, camera: str, item: T) -> None:
        with self._cond:
            if camera not in self.dropped:
                raise KeyError(f"unknown camera {camera!r}; known: {self.cameras}")
            if camera in self._items:
                self.dropped[camera] += 1
            self._items[camera] = item
            self._cond.notify()

    def take_round(self, max_batch: int, timeout: float | None = None) -> list[tuple[str, T]]:
        """The newest items of up to ``max_batch`` cameras; [] when closed or timed out."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout)
            if self._closed:
                return []
            served = pick_round(self._order, set(self._items), max_batch)
            self._order = [c for c in self._order if c not in served] + served
            return [(camera, self._items.pop(camera)) for camera in served]

    def pending(self) -> list[str]:
        with self._cond:
            return [camera for camera in self._order if camera in self._items]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

"""The node's problems, logged once per camera and kind per period, and kept for diagnostics.

One throttle per kind, so one noisy problem never hides another; the last warning and bad
input of each camera are what its diagnostics show. ROS-free: the logger is looked up at
each call (``get_logger``), so a test can swap the node's logger.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from e2e_depth_ros.core.input_checks import KindThrottle

if TYPE_CHECKING:
    from e2e_depth_ros.ros.stream import Stream

THROTTLE_S = 5.0  # per camera and kind of problem


class ProblemLog:
    """Throttled, per-kind logging that also records what diagnostics show."""

    def __init__(self, get_logger: Callable[[], Any], period: float = THROTTLE_S) -> None:
        self._get_logger = get_logger
        self._throttle = KindThrottle(period)

    def log(self, stream: Stream | None, level: str, kind: str, text: str) -> None:
        """Log ``text`` unless this camera logged this kind in the last period."""
        key = f"{stream.name}/{kind}" if stream is not None else kind
        if not self._throttle.allow(key, time.monotonic()):
            return
        line, logger = stream.say(text) if stream is not None else text, self._get_logger()
        # One call site per severity: rclpy keys its logging context by the calling line and
        # raises ValueError when one line logs at two severities (a warning, then an error).
        if level == "error":
            logger.error(line)
        elif level == "warning":
            logger.warning(line)
        else:
            getattr(logger, level)(line)

    def warn(self, stream: Stream, kind: str, text: str) -> None:
        stream.stats.last_warning = text
        self.log(stream, "warning", kind, text)

    def bad_input(self, stream: Stream, kind: str, text: str) -> None:
        """A frame refused for its input: counted, shown in diagnostics, logged per kind."""
        stream.stats.bad_input += 1
        stream.stats.last_bad_input = text
        self.warn(stream, kind, text)

    def failed(self, stream: Stream, err: Exception, *, quiet: bool = False) -> None:
        """A frame that failed (model, scale, publishing): counted; logged unless ``quiet``."""
        stats = stream.stats
        stats.failed += 1
        stats.health.last_failure = time.monotonic()
        stats.last_error = f"{type(err).__name__}: {err}"
        if not quiet:
            self.log(stream, "error", "frame_failed", f"frame failed: {stats.last_error}")

"""Rates, outages and recent failures of one camera's stream, for diagnostics.

Pure Python, time passed in (monotonic seconds), so one instance per camera is cheap and
the rules are testable without a clock.
"""

from __future__ import annotations

import threading
from collections import deque


class RateMeter:
    """Events per second over the last ``window`` seconds.

    Steady streams read their true rate (events over the span they cover), slow ones
    (below 1 Hz) are not rounded to 0, and the rate decays to 0 during an outage.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.last: float | None = None

    def add(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self.last = now

    def rate(self, now: float) -> float:
        with self._lock:
            while self._times and self._times[0] < now - self.window:
                self._times.popleft()
            times = list(self._times)
        if not times:
            return 0.0
        if len(times) == 1:
            return 1.0 / self.window
        steady = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
        decayed = len(times) / max(now - times[0], 1e-9)
        return min(steady, decayed)


class StreamHealth:
    """Input and output rates, input outages, and whether frames failed recently."""

    def __init__(self, *, failure_window: float = 10.0, min_outage: float = 2.0) -> None:
        self.input = RateMeter()
        self.output = RateMeter()
        self.failure_window = failure_window
        self.min_outage = min_outage
        self.last_failure: float | None = None

    def outage(self, now: float) -> float | None:
        """Seconds without input when that is longer than the stream makes normal, else None.

        Normal is 3 periods of the rate seen while frames came, at least ``min_outage``.
        """
        last = self.input.last
        if last is None:
            return None
        gap = now - last
        rate = self.input.rate(last)
        allowed = max(self.min_outage, 3.0 / rate if rate > 0 else self.min_outage)
        return gap if gap > allowed else None

    def failing(self, now: float) -> bool:
        """Whether a frame failed in the last ``failure_window`` seconds (then it recovers)."""
        return self.last_failure is not None and now - self.last_failure <= self.failure_window

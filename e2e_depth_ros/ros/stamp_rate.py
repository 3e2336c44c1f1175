"""The rate a source publishes at, read from the header stamps of the messages that arrived.

Why: transport loss is silent. A camera at 30 Hz whose frames mostly die in DDS looks like a
10 Hz camera to a subscriber that counts arrivals. Its stamps still say 30 Hz: consecutive
received stamps are whole multiples of the camera's period apart, and the multiples say how
many frames were lost in between. No clock of our own is involved (works for bag replay).
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class StampRate:
    """What the stamps in the window say.

    ``rate_hz``: the publisher's rate (NaN until enough stamps); ``received``: distinct
    stamps in the window; ``missing``: frames the gaps say were published but did not
    arrive; ``loss``: missing / (received + missing), in [0, 1], NaN until known.
    """

    rate_hz: float
    received: int
    missing: int
    loss: float


UNKNOWN = StampRate(float("nan"), 0, 0, float("nan"))


class StampRateEstimator:
    """Stamps of received messages in, the publisher's rate and the loss out.

    Keeps the last ``window`` distinct stamps. The period is found robustly: a low
    percentile of the gaps (a gap of one period, present while less than ~90 % is lost)
    seeds it, then each gap is divided by its whole number of periods and the median taken,
    which averages jitter. Gaps longer than ``pause_periods`` periods are pauses of the
    source (a stopped camera, a bag gap), not loss. A stamp going back restarts (bag loop).
    Thread-safe: ``add`` runs in a subscription callback, ``estimate`` in a timer.
    """

    def __init__(self, window: int = 100, *, min_gaps: int = 5,
                 pause_periods: float = 50.0) -> None:
        if window < min_gaps + 1:
            raise ValueError(f"window {window} must hold more than min_gaps={min_gaps} gaps")
        self._stamps: deque[int] = deque(maxlen=window)
        self._min_gaps = min_gaps
        self._pause_periods = pause_periods
        self._lock = threading.Lock()

    def add(self, stamp_ns: int) -> None:
        with self._lock:
            if self._stamps:
                if stamp_ns == self._stamps[-1]:
                    return  # the same frame again (a second publisher, a re-send)
                if stamp_ns < self._stamps[-1]:
                    self._stamps.clear()
            self._stamps.append(stamp_ns)

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()

    def estimate(self) -> StampRate:
        with self._lock:
            stamps = list(self._stamps)
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        if len(gaps) < self._min_gaps:
            return UNKNOWN
        ordered = sorted(gaps)
        seed = ordered[len(ordered) // 10]  # 10th percentile: a one-period gap
        periods = [gap / max(1, round(gap / seed)) for gap in gaps
                   if gap <= self._pause_periods * seed]
        period = statistics.median(periods)
        missing = 0
        for gap in gaps:
            whole = round(gap / period)
            if whole <= self._pause_periods:
                missing += max(0, whole - 1)
        received = len(stamps)
        rate = 1e9 / period if period > 0 else math.nan
        return StampRate(rate, received, missing, missing / (received + missing))

"""The rate a source publishes at, read from the header stamps of the messages that arrived.

Why: transport loss is silent. A camera at 30 Hz whose frames mostly die in DDS looks like a
10 Hz camera to a subscriber that counts arrivals. Its stamps still say 30 Hz: consecutive
received stamps are whole multiples of the camera's period apart, and the multiples say how
many frames were lost in between. No clock of our own is involved (works for bag replay).
"""

from __future__ import annotations

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

    Keeps the last ``window`` distinct stamps. Real cameras jitter (stamps 40 and 60 ms apart
    on a 20 Hz camera; a publisher behind its schedule sends late and then catches up), so no
    single gap is trusted to say "one period" or "a frame was lost":

    1. Period: a low percentile of the gaps (a one-period gap, present while less than ~90 %
       is lost) seeds it; then the mean of the gaps between 0.5 and 1.75 periods, repeated
       until it settles, moves it from the low edge of the one-period gaps to their centre.
       1.75 keeps a gap jittered to 1.5 periods in and a gap of two periods (one frame lost)
       out. The old estimate divided each gap by its rounded multiple of the low seed, so a
       60 ms gap beside 40 ms ones counted as two periods: 33 % "lost", at 33 Hz.
    2. Loss: each gap counts ``round(gap / period)`` periods, zero included, and the missing
       frames are the periods minus the gaps. A late frame makes one gap long and the next
       short; the short one counts zero, so the two cancel (a stamp's jitter telescopes out
       of the sum) instead of the long one counting as a lost frame.

    Gaps longer than ``pause_periods`` periods are pauses of the source (a stopped camera, a
    bag gap), not loss. A stamp going back restarts (bag loop).
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
        seed = sorted(gaps)[len(gaps) // 10]  # 10th percentile: a one-period gap
        gaps = [gap for gap in gaps if gap <= self._pause_periods * seed]  # pauses out
        period = float(seed)
        for _ in range(20):  # settles in a few steps; bounded for safety
            ones = [gap for gap in gaps if 0.5 * period <= gap < 1.75 * period]
            if not ones or sum(ones) / len(ones) == period:
                break
            period = sum(ones) / len(ones)
        periods = sum(round(gap / period) for gap in gaps)
        if periods <= 0:
            return UNKNOWN
        missing = max(0, periods - len(gaps))
        received = len(stamps)
        rate = 1e9 * periods / sum(gaps)  # whole periods over their time: jitter averages out
        return StampRate(rate, received, missing, missing / (received + missing))

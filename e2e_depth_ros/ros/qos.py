"""Which QoS an input subscription takes, from what the topic's publishers offer.

Why it matters: DDS does not match a best-effort publisher with a reliable subscription, and
a best-effort subscription to a reliable publisher loses most large messages (a 1 MB image is
split into UDP fragments and one lost fragment loses the frame; nobody repairs it). So the
node does what rosbag2 and RViz do: look at the publishers' reliability and take the same,
re-checking when publishers come and go. Pure logic, no rclpy: the node maps rclpy's
policies to the names below and back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RELIABLE = "reliable"
BEST_EFFORT = "best_effort"
MODES = ("auto", RELIABLE, BEST_EFFORT, "sensor_data")
SENSOR_DATA_DEPTH = 5  # rclpy's qos_profile_sensor_data: best effort, keep last 5


@dataclass(frozen=True)
class InputQos:
    """The chosen subscription QoS and why.

    ``reliability`` is ``reliable`` or ``best_effort``; ``depth`` is the keep-last depth;
    ``mismatch`` says some publisher will not connect or will lose large messages with this
    choice; ``message`` is one line for the log and the diagnostics.
    """

    reliability: str
    depth: int
    mismatch: bool
    message: str

    @property
    def key(self) -> tuple[str, int]:
        """What the subscription is created with: a new key means a new subscription."""
        return self.reliability, self.depth


def _count(offered: list[str], reliability: str) -> str:
    n = sum(item == reliability for item in offered)
    return f"{n} {reliability.replace('_', '-')} publisher{'s' if n != 1 else ''}"


def choose_input_qos(mode: str, offered: Iterable[str], *, depth: int = 1) -> InputQos:
    """The QoS for a subscription given the publishers' reliabilities.

    ``mode``: ``auto`` follows the publishers (all reliable -> reliable; any best-effort ->
    best-effort, the only choice every publisher connects to; none yet -> best-effort,
    which connects to whichever appears, and the caller re-checks); ``reliable`` /
    ``best_effort`` force it; ``sensor_data`` is rclpy's sensor-data profile (best effort,
    keep last 5). ``offered``: one ``reliable`` / ``best_effort`` per publisher; other
    values (unknown, system default) are ignored. ``depth``: keep-last depth (1 keeps only
    the newest frame).
    """
    if mode not in MODES:
        raise ValueError(f"input QoS mode {mode!r}: expected one of {', '.join(MODES)}")
    if depth < 1:
        raise ValueError(f"keep-last depth must be >= 1, got {depth}")
    offered = [item for item in offered if item in (RELIABLE, BEST_EFFORT)]
    n_reliable = offered.count(RELIABLE)
    n_best_effort = offered.count(BEST_EFFORT)
    if mode == "auto":
        if not offered:
            return InputQos(BEST_EFFORT, depth, False,
                            "auto: no publishers yet, best-effort until one appears")
        if n_best_effort == 0:
            return InputQos(RELIABLE, depth, False,
                            f"auto: reliable, matching {_count(offered, RELIABLE)}")
        if n_reliable == 0:
            return InputQos(BEST_EFFORT, depth, False,
                            f"auto: best-effort, matching {_count(offered, BEST_EFFORT)}")
        return InputQos(BEST_EFFORT, depth, True,
                        f"auto: best-effort for mixed publishers ({_count(offered, RELIABLE)}"
                        f", {_count(offered, BEST_EFFORT)}): large messages from the "
                        "reliable ones may be lost")
    if mode == RELIABLE:
        if n_best_effort:
            return InputQos(RELIABLE, depth, True,
                            f"forced reliable: {_count(offered, BEST_EFFORT)} cannot connect "
                            "(incompatible QoS); set input_qos to auto")
        return InputQos(RELIABLE, depth, False, "forced reliable")
    if mode == "sensor_data":
        depth, label = SENSOR_DATA_DEPTH, "forced sensor_data (best-effort, keep last 5)"
    else:
        label = "forced best-effort"
    if n_reliable:
        return InputQos(BEST_EFFORT, depth, True,
                        f"{label}: {_count(offered, RELIABLE)} may lose large messages; "
                        "set input_qos to auto")
    return InputQos(BEST_EFFORT, depth, False, label)

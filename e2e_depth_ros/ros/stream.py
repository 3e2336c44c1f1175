"""One camera inside the node: its buffers, input checks, rates and counters (ROS-free).

The node (``node.py``) owns the subscriptions, the model and the publishing; everything it
keeps per camera lives here, so several cameras never share a stamp check, a rate window or
counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.core import input_checks
from e2e_depth_ros.ros.health import StreamHealth
from e2e_depth_ros.ros.multicam import camera_topic
from e2e_depth_ros.ros.outputs import Output
from e2e_depth_ros.core.processing import Frame
from e2e_depth_ros.ros.stamp_rate import StampRateEstimator
from e2e_depth_ros.ros.sync import StampBuffer

if TYPE_CHECKING:  # rclpy-bound; the annotations only
    from e2e_depth_ros.ros.matched_subscription import MatchedSubscription


class Stats:
    """Counters the diagnostics report; written by the worker, read by the timer."""

    def __init__(self) -> None:
        self.received = self.processed = self.failed = self.bad_input = self.idle = 0
        self.camera_info_reused = 0  # frames given a nearby camera_info (camera_info_reuse)
        self.latency = float("nan")
        self.inference = float("nan")  # seconds of the model call (shared by its batch)
        self.overhead = float("nan")  # seconds per frame spent outside the model
        self.batch_size = 0  # frames in this camera's last model call
        self.last_error = ""
        self.last_warning = ""
        self.last_bad_input = ""  # why the latest frame counted in bad_input was refused
        self.health = StreamHealth()  # rates, outages, recent failures (monotonic clock)
        self.last_stamp_at: tuple[float, float] | None = None  # (stamp s, monotonic s)
        self.odometry = ""  # "ok", or why the latest frame had no camera pose (temporal)

    def clock_stamp(self, now: float) -> float | None:
        """The camera's clock now: the last stamp plus the time since it arrived."""
        if self.last_stamp_at is None:
            return None
        stamp, arrived = self.last_stamp_at
        return stamp + max(0.0, now - arrived)


class Stream:
    """One camera inside the node: its inputs' buffers and checks, publishers and counters.

    ``name`` "" is the single-camera node (today's topics); otherwise every topic of this
    camera is ``<name>/<topic>``, relative, so namespaces and remapping still apply.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = Stats()
        self.stamps = input_checks.StampCheck()
        self.said_once: set[str] = set()
        self.camera_infos: StampBuffer = StampBuffer(size=30)
        self.info_in_step = True  # its camera_info has come with its images (worth a wait)
        self.clouds: StampBuffer = StampBuffer(size=10)
        self.sensor_depths: StampBuffer = StampBuffer(size=10)  # RGB-D / stereo depth images
        self.sensor_infos: StampBuffer = StampBuffer(size=10)  # their camera_infos
        self.stamp_rate = StampRateEstimator(window=100)  # the camera's rate and loss
        self.inputs: dict[str, MatchedSubscription] = {}
        self.pub: dict[str, Any] = {}

    def topic(self, relative: str) -> str:
        return camera_topic(self.name, relative)

    def say(self, text: str) -> str:
        """A log line that names the camera when the node has several."""
        return f"[{self.name}] {text}" if self.name else text


@dataclass
class Job:
    """One camera's frame between preparation and publishing."""

    stream: Stream
    header: Any
    stamp_ns: int
    frame: Frame
    info: Any
    wanted: list[Output]
    prepare_s: float

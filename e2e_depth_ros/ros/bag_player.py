"""Play a bag's inputs into a live ROS graph and record what a node publishes back.

The demo's live half: ``ReplayPeer`` is one rclpy node that publishes recorded CDR bytes
with their ORIGINAL headers and subscribes to the depth node's outputs, and ``Player``
walks a bag frame by frame (lock-step, or paced in real time) through it. Both work on
duck-typed parts, so this module imports neither rosbags nor the offline layer: the bag
reader yields rosbags-style ``(connection, bag_time, raw)`` tuples, the recorder has
``add_output``, ``write`` and ``copy`` (``offline.recording.Recording``). rclpy and the
message packages are imported inside the functions, so importing this module stays instant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from e2e_depth_ros.ros.sync import stamp_to_ns


class Recorder(Protocol):
    """Where the peer writes received outputs and the player copies the bag's messages."""

    def add_output(self, topic: str, msgtype: str) -> None: ...

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None: ...

    def copy(self, conn: Any, bag_time: int, raw: bytes) -> None: ...


class ReplayTopics(Protocol):
    """The replayed bag's topics: what the node subscribes to and what is copied."""

    image: str
    tf_static: str

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def copied(self) -> tuple[str, ...]: ...


@dataclass
class ReplayedFrame:
    """One replayed image: its header stamp and the publish -> outputs round trip."""

    stamp_ns: int
    round_trip: float | None  # s; None when no output came within the timeout; NaN: not timed


@contextmanager
def ros_context() -> Iterator[None]:
    """rclpy initialised for the block and shut down after it, whatever happens."""
    import rclpy

    rclpy.init(args=[])
    try:
        yield
    finally:
        rclpy.try_shutdown()


def message_classes() -> dict[str, type]:
    """ROS type name -> rclpy class for what is published or recorded."""
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
               "sensor_msgs/msg/CompressedImage": CompressedImage,
               "sensor_msgs/msg/PointCloud2": PointCloud2}
    try:  # only a ROS install has tf2_msgs; the node does not need /tf_static here
        from tf2_msgs.msg import TFMessage
        classes["tf2_msgs/msg/TFMessage"] = TFMessage
    except ImportError:
        pass
    return classes


class ReplayPeer:
    """A player (bag inputs, original headers) and a recorder (node outputs) in one node.

    ``outputs`` maps the node's output topics (full names) to their types; ``done`` names
    the outputs every frame waits for; ``pair`` the two outputs that must share each stamp;
    ``status_name`` the node's /diagnostics entry kept in ``diagnostics``.
    """

    def __init__(self, recording: Recorder, input_types: dict[str, str], tf_static: str, *,
                 outputs: dict[str, str], done: tuple[str, ...], pair: tuple[str, str],
                 status_name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.recording = recording
        self.done, self.pair, self.status_name = done, pair, status_name
        self.node = Node("e2e_depth_demo")
        classes = message_classes()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # Recorder readers keep a deep history: the executor also writes the bag, and a
        # keep-last reader that is not taken from in time drops the oldest sample.
        recorder = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.publishers = {}
        for topic, msgtype in input_types.items():
            if msgtype in classes:
                self.publishers[topic] = (self.node.create_publisher(
                    classes[msgtype], topic, latched if topic == tf_static else reliable),
                    classes[msgtype])
        self.subscriptions = {}
        for topic, msgtype in outputs.items():
            recording.add_output(topic, msgtype)
            self.subscriptions[topic] = self.node.create_subscription(
                classes[msgtype], topic, self._recorder(topic), recorder)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      10)
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_count = 0
        self._seen: dict[str, set[int]] = {t: set() for t in self.subscriptions}
        self._cond = threading.Condition()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _recorder(self, topic: str) -> Callable[[Any], None]:
        from rclpy.serialization import serialize_message

        def record(msg: Any) -> None:
            stamp = stamp_to_ns(msg.header.stamp)
            self.recording.write(topic, stamp, serialize_message(msg))
            with self._cond:
                self._seen[topic].add(stamp)
                self._cond.notify_all()
        return record

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                with self._cond:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics["_message"] = status.message
                    self.diagnostics_count += 1
                    self._cond.notify_all()

    def connected(self, inputs: tuple[str, ...]) -> bool:
        """The node's subscriptions see our inputs and its publishers our recorder."""
        return (all(self.publishers[t][0].get_subscription_count() > 0 for t in inputs
                    if t in self.publishers)
                and all(s.get_publisher_count() > 0 for s in self.subscriptions.values()))

    def publish(self, topic: str, raw: bytes) -> Any | None:
        """Deserialize the bag's CDR bytes into the rclpy class and publish; the message."""
        from rclpy.serialization import deserialize_message

        if topic not in self.publishers:
            return None
        publisher, cls = self.publishers[topic]
        msg = deserialize_message(raw, cls)
        publisher.publish(msg)
        return msg

    def seen(self, topic: str) -> set[int]:
        """Header stamps (ns) received so far on an output topic."""
        with self._cond:
            return set(self._seen[topic])

    def wait_outputs(self, stamp_ns: int, timeout: float, alive: Callable[[], bool]) -> bool:
        """Until every ``done`` output of this stamp arrived (False: timeout or node gone)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(stamp_ns in self._seen[t] for t in self.done):
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def unpaired(self) -> list[int]:
        """Stamps (ns) received on only one of the ``pair`` outputs."""
        with self._cond:
            return self._unpaired()

    def _unpaired(self) -> list[int]:
        first, second = (self._seen[topic] for topic in self.pair)
        return sorted(first ^ second)

    def wait_pairs(self, timeout: float) -> list[int]:
        """Until every stamp received on one ``pair`` output is on the other too (the node
        publishes them together; the second may still be in flight); the stamps left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unpaired():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            return self._unpaired()

    def wait_diagnostics(self, after: int, timeout: float) -> None:
        """Until a /diagnostics newer than count ``after`` (the node publishes at 1 Hz)."""
        with self._cond:
            self._cond.wait_for(lambda: self.diagnostics_count > after, timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._thread.join(timeout=2.0)


class Player:
    """Publishes a bag frame by frame; the image goes last, after its camera_info/LiDAR.

    Lock-step (``rate`` None) waits for each frame's outputs before the next; ``rate`` R
    replays in real time at R x speed (the node then drops frames it cannot keep up with).
    ``alive`` says whether the node still runs; ``check_alive`` raises when it is gone;
    ``say`` prints a progress line.
    """

    def __init__(self, peer: ReplayPeer, recording: Recorder, topics: ReplayTopics, *,
                 rate: float | None, frame_timeout: float, pair_timeout: float,
                 alive: Callable[[], bool], check_alive: Callable[[], None],
                 say: Callable[[str], None]) -> None:
        self.peer, self.recording, self.topics = peer, recording, topics
        self.rate, self.frame_timeout, self.pair_timeout = rate, frame_timeout, pair_timeout
        self.alive, self.check_alive, self.say = alive, check_alive, say
        self.results: list[ReplayedFrame] = []
        self._clock: tuple[float, int] | None = None  # (wall start, first bag time)

    def _pace(self, bag_time: int) -> None:
        """Real-time replay: sleep until this message's time comes."""
        if self.rate is None:
            return
        if self._clock is None:
            self._clock = (time.monotonic(), bag_time)
        wall, first = self._clock
        delay = wall + (bag_time - first) * 1e-9 / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def run(self, reader: Any) -> list[ReplayedFrame]:
        """Copy every wanted message into the recording and publish the node's inputs."""
        wanted = [c for c in reader.connections if c.topic in self.topics.copied]
        pending: tuple[int, bytes] | None = None
        for conn, bag_time, raw in reader.messages(connections=wanted):
            if pending is not None and bag_time > pending[0]:
                self._send_image(*pending)
                pending = None
            self.recording.copy(conn, bag_time, raw)
            if conn.topic == self.topics.image:
                pending = (bag_time, raw)
            elif conn.topic in (*self.topics.inputs, self.topics.tf_static):
                self._pace(bag_time)
                self.peer.publish(conn.topic, raw)
        if pending is not None:
            self._send_image(*pending)
        if self.rate is not None and self.results:
            self._wait_last()
        time.sleep(0.5)  # the last frame's metric outputs follow its depth/relative
        split = self.peer.wait_pairs(self.pair_timeout)
        if split:
            self.say(f"  warning: {len(split)} stamp(s) have only one of "
                     f"{' and '.join(self.peer.pair)} in the recording: "
                     f"{', '.join(f'{s * 1e-9:.3f}' for s in split)}")
        return self.results

    def _send_image(self, bag_time: int, raw: bytes) -> None:
        self._pace(bag_time)
        if self.rate is None:
            time.sleep(0.05)  # camera_info and LiDAR reach the node before the image
        sent = time.monotonic()
        msg = self.peer.publish(self.topics.image, raw)
        result = ReplayedFrame(stamp_to_ns(msg.header.stamp), None)
        self.results.append(result)
        if self.rate is None:
            if self.peer.wait_outputs(result.stamp_ns, self.frame_timeout, self.alive):
                result.round_trip = time.monotonic() - sent
                self.peer.wait_pairs(self.pair_timeout)  # this frame's pair before the next
            self._report(result)

    def _report(self, result: ReplayedFrame) -> None:
        self.check_alive()
        n, stamp = len(self.results), result.stamp_ns * 1e-9
        if result.round_trip is None:
            self.say(f"  frame {n}: stamp {stamp:.3f}: no output within "
                     f"{self.frame_timeout:.0f} s (raise --frame-timeout)")
        else:
            self.say(f"  frame {n}: stamp {stamp:.3f} -> outputs in {result.round_trip:.2f} s")

    def _wait_last(self) -> None:
        """Real time: the node keeps the newest frame, so the last image is always processed."""
        last = self.results[-1]
        sent = time.monotonic()
        if self.peer.wait_outputs(last.stamp_ns, self.frame_timeout, self.alive):
            last.round_trip = time.monotonic() - sent
        seen = self.peer.seen(self.peer.done[0])
        for result in self.results:
            if result.stamp_ns in seen and result.round_trip is None:
                result.round_trip = float("nan")  # processed; round trip not measured
        done = sum(r.round_trip is not None for r in self.results)
        self.say(f"  real time x{self.rate}: {done} of {len(self.results)} frames processed "
                 "(the node drops frames it cannot keep up with)")

"""A real rclpy test rig: a camera/LiDAR publisher and a subscriber to every node output."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from e2e_depth_ros.ros import messages, outputs
from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.multicam import camera_topic
from e2e_depth_ros.ros.outputs import rclpy_types

OUTPUTS = {output.topic: rclpy_types()[output.msgtype] for output in outputs.OUTPUTS}
_names = itertools.count()


@dataclass(frozen=True)
class Prediction:
    """What ``Estimator.predict`` returns, for fake estimators: no torch import (Humble leg)."""

    depth: np.ndarray | None
    normals: np.ndarray | None


class EstimatorProxy:
    """A real estimator behind a wrapper that tests and benchmarks extend (slow, timed)."""

    def __init__(self, inner):
        object.__setattr__(self, "inner", inner)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name == "processing_resolution":  # the node sets it on the real estimator
            self.inner.processing_resolution = value
        else:
            object.__setattr__(self, name, value)

    def predict(self, rgb, **kwargs):
        return self.inner.predict(rgb, **kwargs)


class SlowEstimator(EstimatorProxy):
    """The real estimator, optionally as slow as a real model on a CPU, recording each call's
    batch size and saying when the first call began (``busy``)."""

    def __init__(self, inner, delay: float = 0.0):
        super().__init__(inner)
        self.delay, self.batches, self.busy = delay, [], threading.Event()

    @property
    def calls(self) -> int:
        return len(self.batches)

    def predict(self, rgb, **kwargs):
        self.batches.append(1 if rgb.ndim == 3 else rgb.shape[0])
        self.busy.set()
        time.sleep(self.delay)
        return self.inner.predict(rgb, **kwargs)


class PlantedModel:
    """Returns ``relative`` for any image (a batch: one copy per image): a model whose output
    the test chose, e.g. the scene's truth under an affine map."""

    model_names = {"depth": "planted", "normals": None}
    device, dtype, processing_resolution = "cpu", "float32", 0

    def __init__(self):
        self.relative = None

    def processing_size(self, height, width):
        return height, width

    def predict(self, rgb, *, depth=True, normals=True, **kwargs):
        from e2e_depth_ros.core.depth_model import ItemPrediction

        rel = self.relative if rgb.ndim == 3 else np.stack([self.relative] * rgb.shape[0])
        return ItemPrediction(rel if depth else None, None)


def planted_node_rigs(prefix: str, **defaults):
    """A fixture body: yields ``factory(**params) -> (Rig, PlantedModel)`` for nodes with a
    planted model in namespaces of their own, and closes them all afterwards."""
    import os

    from rclpy.parameter import Parameter

    from e2e_depth_ros.ros.node import DepthNode

    made = []

    def factory(**params):
        model = PlantedModel()
        ns = f"/{prefix}{os.getpid()}_{next(_names)}"
        params = {"processing_resolution": 0, **defaults, **params}
        node = DepthNode(estimator=model, namespace=ns, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        made.append(Rig(node, ns))
        return made[-1], model

    yield factory
    for rig_ in made:
        rig_.close()


class LogRecorder:
    """Stands in for the node's logger: records (level, text) of every line it writes."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text, **kwargs: self.lines.append((level, text))


def header(stamp_ns: int, frame_id: str = "camera_optical") -> Header:
    return Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                  frame_id=frame_id)


def random_image(seed: int = 0, shape=(48, 64)) -> np.ndarray:
    """A uint8 RGB noise image (H, W, 3), the same for the same seed."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def camera_info(camera: PinholeCamera, stamp_ns: int, frame_id: str = "camera_optical"):
    info = CameraInfo(header=header(stamp_ns, frame_id), width=camera.width,
                      height=camera.height, distortion_model="plumb_bob")
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    info.p = camera.projection.ravel().tolist()
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.d = [0.0] * 5
    return info


def lidar_cloud(points: np.ndarray, stamp_ns: int, frame_id: str = "lidar") -> PointCloud2:
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(1, -1, 3)
    return messages.build_pointcloud(PointCloud2, PointField, header(stamp_ns, frame_id), pts)


class Rig:
    """Spins the node under test and a peer node in a background executor.

    With ``cameras`` the peer feeds and records every camera: topics are then keyed
    ``<camera>/<topic>`` (``camera_topic``); without, keys are the plain topics.
    """

    def __init__(self, node_under_test: Node, namespace: str, *, compressed: bool = False,
                 subscribe: bool = True, cameras: tuple[str, ...] = ("",)):
        self.node_under_test = node_under_test
        self.peer = Node(f"rig_{next(_names)}", namespace=namespace)
        image_type = CompressedImage if compressed else Image
        self.image_pubs, self.info_pubs, self.lidar_pubs = {}, {}, {}
        self.depth_pubs, self.depth_info_pubs = {}, {}  # an RGB-D camera's depth stream
        for cam in cameras:
            self.image_pubs[cam] = self.peer.create_publisher(
                image_type, camera_topic(cam, "image/compressed" if compressed else "image"),
                10)
            self.info_pubs[cam] = self.peer.create_publisher(
                CameraInfo, camera_topic(cam, "camera_info"), 10)
            self.lidar_pubs[cam] = self.peer.create_publisher(
                PointCloud2, camera_topic(cam, "points_lidar"), 10)
            self.depth_pubs[cam] = self.peer.create_publisher(
                Image, camera_topic(cam, "sensor_depth/image"), 10)
            self.depth_info_pubs[cam] = self.peer.create_publisher(
                CameraInfo, camera_topic(cam, "sensor_depth/camera_info"), 10)
        self.image_pub, self.info_pub, self.lidar_pub = (
            pubs[cameras[0]] for pubs in (self.image_pubs, self.info_pubs, self.lidar_pubs))
        self.received: dict[str, list] = {camera_topic(cam, topic): []
                                          for cam in cameras for topic in OUTPUTS}
        self.diagnostics: list = []  # the first camera's
        self.diagnostics_by_camera: dict[str, list] = {cam: [] for cam in cameras}
        self._lock = threading.Lock()
        for cam in cameras if subscribe else ():
            for topic, msg_type in OUTPUTS.items():
                key = camera_topic(cam, topic)
                self.peer.create_subscription(msg_type, key, self._collector(key), 10)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(node_under_test)
        self.executor.add_node(self.peer)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._diag_names = {node_under_test.diagnostic_name(cam): cam for cam in cameras}
        self._first, self._cameras = cameras[0], cameras
        publishers = [p for cam in cameras
                      for p in node_under_test.stream(cam).pub.values()] if subscribe else []
        assert self.wait_for(lambda: all(p.get_subscription_count() > 0
                                         for p in self.image_pubs.values())
                             and all(p.get_subscription_count() > 0 for p in publishers)
                             and self.inputs_match()), "no discovery"
        time.sleep(0.3)  # the publishers' writers discover the re-created readers too

    def inputs_match(self) -> bool:
        """The node's inputs have re-subscribed to match the rig's reliable publishers."""
        if self.node_under_test._params.get("input_qos", "auto") != "auto":
            return True
        return all(sub.choice is not None and sub.choice.reliability == "reliable"
                   and sub.publisher_count() > 0
                   for cam in self._cameras
                   for sub in self.node_under_test.stream(cam).inputs.values())

    def _collector(self, topic):
        def collect(msg):
            with self._lock:
                self.received[topic].append(msg)
        return collect

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            cam = self._diag_names.get(status.name)
            if cam is None:
                continue
            values = ({kv.key: kv.value for kv in status.values}
                      | {"_level": status.level, "_message": status.message})
            with self._lock:
                self.diagnostics_by_camera[cam].append(values)
                if cam == self._first:
                    self.diagnostics.append(values)

    def wait_for(self, predicate, timeout: float = 10.0, poll: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return predicate()

    def stamps(self, topic: str) -> list[int]:
        with self._lock:
            return [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
                    for m in self.received[topic]]

    def at(self, topic: str, stamp_ns: int):
        """The message of ``topic`` stamped ``stamp_ns`` (the newest such), or None."""
        with self._lock:
            for msg in reversed(self.received[topic]):
                if msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns:
                    return msg
        return None

    def last(self, topic: str):
        with self._lock:
            return self.received[topic][-1] if self.received[topic] else None

    def send(self, rgb: np.ndarray | None, stamp_ns: int, *, camera: PinholeCamera | None = None,
             lidar: np.ndarray | None = None, lidar_frame: str = "lidar", image=None,
             cam: str | None = None, frame_id: str = "camera_optical", sensor_depth=None,
             sensor_depth_info=None) -> None:
        """Publish camera_info and LiDAR first, so they are there when the image is.

        ``cam`` picks the rig camera (default: the first); ``frame_id`` the image's frame;
        ``sensor_depth`` (+ its camera_info) an RGB-D depth Image of the same stamp.
        """
        cam = self._first if cam is None else cam
        if camera is not None:
            self.publish_info(camera_info(camera, stamp_ns, frame_id), cam)
        if lidar is not None:
            self.lidar_pubs[cam].publish(lidar_cloud(lidar, stamp_ns, lidar_frame))
            self._wait_received(self.node_under_test.stream(cam).clouds, stamp_ns)
        if sensor_depth is not None:
            if sensor_depth_info is not None:
                self.depth_info_pubs[cam].publish(sensor_depth_info)
                self._wait_received(self.node_under_test.stream(cam).sensor_infos, stamp_ns)
            self.depth_pubs[cam].publish(sensor_depth)
            self._wait_received(self.node_under_test.stream(cam).sensor_depths, stamp_ns)
        if image is None:
            image = messages.build_image(Image, header(stamp_ns, frame_id), rgb, "rgb8")
        self.image_pubs[cam].publish(image)

    def publish_info(self, info, cam: str | None = None) -> None:
        """Publish a camera_info and wait until the node holds it, so an image can follow.

        Under load the node's executor may take the image before a camera_info that was
        published earlier: a test must not depend on that ordering.
        """
        cam = self._first if cam is None else cam
        self.info_pubs[cam].publish(info)
        self._wait_received(self.node_under_test.stream(cam).camera_infos,
                            info.header.stamp.sec * 1_000_000_000 + info.header.stamp.nanosec)

    def _wait_received(self, buffer, stamp_ns: int) -> None:
        if not self.wait_for(lambda: buffer.match(stamp_ns, 0) is not None, timeout=5.0):
            raise AssertionError(f"the node never received the message stamped {stamp_ns}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)  # spin has returned: no callback sees a destroyed node
        self.node_under_test.destroy_node()
        self.peer.destroy_node()

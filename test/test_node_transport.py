"""Camera frames from another process reach the node; loss shows in its diagnostics.

A single process hides transport: intra-process delivery never fragments a message. These
tests put the camera in its own process (test/camera_process.py) and count, in the node,
what arrived (docs/ros_interface.md, input QoS and transport).
"""

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from e2e_depth_ros.ros import inputs
from e2e_depth_ros.ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.ros.node import DepthNode
from rig import LogRecorder

CAMERA_PROCESS = Path(__file__).resolve().parent / "camera_process.py"
ROOT = Path(__file__).resolve().parents[1]
_names = itertools.count()

pytestmark = pytest.mark.usefixtures("ros")


@pytest.fixture(scope="module")
def estimator(tiny_depth):
    from e2e_depth_ros.model.estimator import Estimator  # needs torch: not at collection time

    return Estimator(tiny_depth, None, device="cpu", processing_resolution=64)


class SpunNode:
    def __init__(self, estimator, **params):
        self.namespace = f"/tr{os.getpid()}_{next(_names)}"
        self.node = DepthNode(estimator=estimator, namespace=self.namespace,
                              parameter_overrides=[Parameter(k, value=v)
                                                   for k, v in params.items()])
        self.executor = MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._thread.join(timeout=2.0)


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def run_camera(topic, *args):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen([sys.executable, str(CAMERA_PROCESS), topic, *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def stream(camera, image_input, node_ready):
    """Wait for discovery and the node's re-subscription, then let the camera publish."""
    assert camera.stdout.readline().strip() == "matched", "camera saw no subscriber"
    assert wait_for(node_ready), "the node did not match the camera's QoS"
    # The re-created subscription must be discovered by the camera's writer too before
    # frames count: wait for the match, then give the writer's side a moment (SEDP).
    assert wait_for(lambda: image_input.publisher_count() > 0), "no publisher matched"
    time.sleep(0.5)
    camera.stdin.write("go\n")
    camera.stdin.flush()
    assert camera.stdout.readline().strip() == "done"
    assert camera.wait(timeout=30) == 0


@pytest.fixture
def spun(estimator):
    nodes = []

    def factory(**params):
        nodes.append(SpunNode(estimator, **params))
        return nodes[-1]

    yield factory
    for item in nodes:
        item.close()


def keep_every_frame_in_dds(monkeypatch) -> None:
    """The node's image reader keeps the newest frame only: on a busy machine its executor can
    stall past a frame period, and the next frame then replaces one not yet taken. That is
    the node's own pace, not transport; these tests measure transport, so the reader keeps
    every frame until the executor takes it (the QoS choice itself is unchanged)."""
    monkeypatch.setattr(inputs, "IMAGE_DEPTH", 64)


def test_reliable_camera_in_another_process_reaches_the_node_at_640x480(spun, monkeypatch):
    keep_every_frame_in_dds(monkeypatch)
    spun_node = spun()  # input_qos auto; nothing subscribes the outputs, so no inference
    node = spun_node.node
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "reliable",
                        "--count", "30", "--rate", "10")
    try:
        image_input = node._inputs["image"]
        stream(camera, image_input, lambda: image_input.choice.reliability == "reliable")
    finally:
        camera.kill() if camera.poll() is None else None
    assert wait_for(lambda: node.stats.received >= 30, timeout=5.0)
    assert node.stats.received == 30
    values, problem = node._transport_diagnostics()
    assert values["input_qos_image"].startswith("reliable, keep last 64 (auto: reliable")
    assert float(values["input_rate_from_stamps_hz"]) == pytest.approx(10.0, rel=1e-3)
    assert (values["input_frames_missing"], values["input_loss_estimate"]) == ("0", "0.000")
    assert problem == "" and values["input_qos_mismatch"] == ""


def test_frames_missing_from_the_stamps_show_as_loss_in_diagnostics(spun, monkeypatch):
    keep_every_frame_in_dds(monkeypatch)
    spun_node = spun()
    node = spun_node.node
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "reliable",
                        "--count", "30", "--rate", "20", "--drop-every", "3",
                        "--width", "64", "--height", "48")
    try:
        image_input = node._inputs["image"]
        stream(camera, image_input, lambda: image_input.choice.reliability == "reliable")
    finally:
        camera.kill() if camera.poll() is None else None
    assert wait_for(lambda: node.stats.received >= 20, timeout=5.0)
    values, problem = node._transport_diagnostics()
    assert float(values["input_rate_from_stamps_hz"]) == pytest.approx(20.0, rel=1e-3)
    assert values["input_frames_missing"] == "9"  # 10 dropped, the last one after the end
    assert float(values["input_loss_estimate"]) == pytest.approx(9 / 29, abs=1e-3)
    assert "31% of camera frames lost in transport" in problem


def test_forced_reliable_input_reports_a_best_effort_camera_as_a_mismatch(spun):
    spun_node = spun(input_qos="reliable")
    node = spun_node.node
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "best_effort",
                        "--count", "1", "--width", "64", "--height", "48")
    try:
        assert wait_for(lambda: node._inputs["image"].choice.mismatch)
    finally:
        camera.kill()
        camera.wait()
    values, problem = node._transport_diagnostics()
    assert "image: forced reliable: 1 best-effort publisher cannot connect" in \
        values["input_qos_mismatch"]
    assert problem == "input QoS mismatch"


def test_input_qos_follows_the_publishers_when_they_change(spun):
    spun_node = spun()
    node = spun_node.node
    assert node._inputs["image"].choice.message.startswith("auto: no publishers")
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "best_effort",
                        "--count", "1", "--width", "64", "--height", "48")
    try:  # the camera leaves cleanly, so its participant is gone at once, not after a lease
        image_input = node._inputs["image"]
        stream(camera, image_input, lambda: "1 best-effort publisher" in image_input.choice
               .message)
    finally:
        camera.kill() if camera.poll() is None else None
    assert node._inputs["image"].choice.reliability == "best_effort"
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "reliable",
                        "--count", "1", "--width", "64", "--height", "48")
    try:
        image_input = node._inputs["image"]
        stream(camera, image_input, lambda: image_input.choice.reliability == "reliable")
    finally:
        camera.kill() if camera.poll() is None else None
    assert node.stats.received >= 1


def test_resubscribing_camera_info_keeps_it_ahead_of_the_image_in_the_executor(spun):
    from sensor_msgs.msg import CameraInfo

    spun_node = spun()
    node = spun_node.node
    publisher_node = rclpy.create_node(f"info_pub_{next(_names)}")
    try:  # a reliable camera_info publisher appears: only camera_info's QoS changes
        publisher_node.create_publisher(CameraInfo, f"{spun_node.namespace}/camera_info", 10)
        assert wait_for(lambda: node._inputs["camera_info"].choice.reliability == "reliable")
    finally:
        publisher_node.destroy_node()
    names = [sub.topic_name.removeprefix(f"{spun_node.namespace}/")
             for sub in node.subscriptions]
    assert [n for n in names if n in ("camera_info", "points_lidar", "image")] == \
        ["camera_info", "points_lidar", "image"]
    assert names.index("sensor_depth/image") < names.index("image")


def test_best_effort_camera_using_the_shipped_profile_reaches_the_node_at_640x480(
        spun, monkeypatch):
    keep_every_frame_in_dds(monkeypatch)
    spun_node = spun()
    node = spun_node.node
    profile = str(ROOT / "config" / "fastdds_large_data.xml")
    # The camera's process only; Fast DDS 2 (Jazzy) and 3 (Kilted) read different names.
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", profile)
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", profile)
    camera = run_camera(f"{spun_node.namespace}/image", "--reliability", "best_effort",
                        "--count", "30", "--rate", "10")
    try:
        stream(camera, node._inputs["image"], lambda: node._inputs["image"].choice.message ==
               "auto: best-effort, matching 1 best-effort publisher")
    finally:
        camera.kill() if camera.poll() is None else None
    assert node.stats.received >= 28, f"{node.stats.received} of 30 arrived"


def test_input_qos_parameter_refuses_an_unknown_mode_with_the_choices():
    from e2e_depth_ros.ros.parameters import PARAMETERS, validate_parameter

    assert PARAMETERS["input_qos"][0] == "auto"
    assert validate_parameter("input_qos", "sensor_data") is None
    assert validate_parameter("input_qos", "fast") == (
        "input_qos must be one of auto, reliable, best_effort, sensor_data, got 'fast'")


def test_the_qos_choice_is_logged_once_and_a_mismatch_warned_once_over_many_rechecks():
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node = rclpy.create_node(f"qos_log_{os.getpid()}_{next(_names)}")
    recorder = LogRecorder()
    node.get_logger = lambda: recorder
    topic = f"/qos_log_{os.getpid()}_{next(_names)}/image"
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    publisher = node.create_publisher(Image, topic, best_effort)
    try:
        inputs = MatchedSubscription(node, Image, topic, lambda msg: None, mode="reliable")
        for _ in range(5):  # the node re-checks every second
            inputs.recheck()
        infos = [text for level, text in recorder.lines if level == "info"]
        warnings = [text for level, text in recorder.lines if level == "warning"]
        assert len(infos) == 1 and "subscribed reliable" in infos[0], recorder.lines
        assert len(warnings) == 1 and "QoS mismatch" in warnings[0], recorder.lines
        inputs.mode = "auto"  # now the choice changes, and is said once more
        for _ in range(3):
            inputs.recheck()
        infos = [text for level, text in recorder.lines if level == "info"]
        assert len(infos) == 2 and "subscribed best-effort" in infos[1], recorder.lines
        inputs.destroy()
    finally:
        node.destroy_publisher(publisher)
        node.destroy_node()

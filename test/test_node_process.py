"""The node as a robot runs it: its own process, command-line parameters and signals."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from e2e_depth_ros.ros import messages
from rig import header

T0 = 1_700_000_000_000_000_000

pytestmark = pytest.mark.usefixtures("ros")


class NodeProcess:
    """``python -m e2e_depth_ros.node`` with its output collected line by line."""

    def __init__(self, *ros_args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "e2e_depth_ros.node", *ros_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1"))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, needle: str, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(needle in line for line in self.lines):
                return True
            time.sleep(0.01)
        return any(needle in line for line in self.lines)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode, "\n".join(self.lines)


def test_help_prints_every_parameter_and_exits_at_once_without_loading_models():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "e2e_depth_ros.node", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, HF_HUB_OFFLINE="0"))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m e2e_depth_ros.node")
    for name in ("depth_model", "processing_resolution", "max_input_pixels", "min_depth"):
        assert f"  {name} (default" in proc.stdout
    assert "empty or none disables" in proc.stdout
    assert elapsed < 20  # no hub, no torch: just rclpy's import


@pytest.mark.parametrize("param, match", [
    ("processing_resolution:=-1", "processing_resolution out of range"),
    ("processing_resolution:=5000", "processing_resolution out of range"),
    ("processing_resolution:=4", "processing_resolution must be 0 (native size) or 16..2048"),
    ("processing_resolution:=abc", "expecting type 'INTEGER'"),
    ("min_depth:=nan", "min_depth out of range"),
])
def test_a_bad_parameter_at_start_up_is_one_fatal_line_and_exit_1(param, match):
    node = NodeProcess("--ros-args", "-p", param, "-p", "depth_model:=/nonexistent/model")
    code, out = node.finish(timeout=60)
    assert code == 1, out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert len(lines) == 1 and "[FATAL]" in lines[0] and match in lines[0], out


OPT_IN_PROBE = """
import sys
import e2e_depth_ros.model.allocator as allocator
allocator.keep_cpu_buffers_mapped = lambda: print("OPTED-IN") or True
from e2e_depth_ros.ros import node
raise SystemExit(node.main(sys.argv))
"""


def test_node_main_opts_in_to_the_allocator_tuning():
    proc = subprocess.run(
        [sys.executable, "-c", OPT_IN_PROBE, "--ros-args", "-r", f"__ns:=/alloc{os.getpid()}",
         "-p", "depth_model:=/nonexistent/model", "-p", "normals_model:=none"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1, proc.stderr  # the missing model: after the opt-in
    assert proc.stdout.splitlines() == ["OPTED-IN"], proc.stdout + proc.stderr


def test_ctrl_c_during_model_loading_exits_0_with_one_line(tiny_depth):
    node = NodeProcess("--ros-args", "-r", f"__ns:=/load{os.getpid()}",
                       "-p", f"depth_model:={tiny_depth}", "-p", "normals_model:=none")
    assert node.wait_for_line("loading models"), node.lines
    node.proc.send_signal(signal.SIGINT)
    code, out = node.finish()
    assert code == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    after = out.split("loading models", 1)[1].splitlines()[1:]
    assert after == ["[e2e_depth_node] interrupted during start-up: exiting"], out


def test_second_ctrl_c_while_a_frame_is_in_flight_exits_0_with_one_line(tiny_depth):
    """The first Ctrl-C stops spinning; the second used to abort inside destroy_node."""
    namespace = f"/sigint{os.getpid()}"
    node = NodeProcess("--ros-args", "-r", f"__ns:={namespace}",
                       "-p", f"depth_model:={tiny_depth}", "-p", "normals_model:=NONE",
                       "-p", "processing_resolution:=768")  # seconds a frame, even tiny
    peer = Node("sigint_peer", namespace=namespace)
    try:
        assert node.wait_for_line("ready: depth="), node.lines
        assert any("normals=None" in line for line in node.lines)  # NONE means off
        image_pub = peer.create_publisher(Image, "image", 10)
        peer.create_subscription(Image, "depth/relative", lambda msg: None, QoSProfile(depth=1))
        deadline = time.monotonic() + 30
        while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(peer, timeout_sec=0.1)
        time.sleep(1.0)  # let the node see our depth/relative subscription
        rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        image_pub.publish(messages.build_image(Image, header(T0), rgb, "rgb8"))
        time.sleep(1.0)  # inference is now running
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)  # inside destroy_node, waiting for the worker
        node.proc.send_signal(signal.SIGINT)
        code, out = node.finish()
    finally:
        peer.destroy_node()
    assert code == 0, out
    assert "terminate called" not in out and "Traceback" not in out
    after = [line for line in out.split("ready: depth=", 1)[1].splitlines()[1:]
             if not line.startswith("[INFO]")]  # e.g. input QoS following the publishers
    assert after == ["[e2e_depth_node] interrupted: shutting down"], out


@pytest.mark.parametrize("args, match", [
    (["-p", f"cameras:=[{'c' * 240}]"], "is not a usable ROS topic name: topic length"),
    (["-p", "cameras:=[front]", "-p", "front.image_topic:=bad topic!"],
     "camera front's image input 'bad topic!' is not a usable ROS topic name"),
    (["-p", "cameras:=[front]", "-p", "front.camera_info_topic:=/diagnostics"],
     "camera front's camera_info input '/diagnostics' resolves to /diagnostics, which this "
     "node publishes"),
    (["-p", "cameras:=[a, a/depth]"], "camera a/depth's camera_info input "
     "'a/depth/camera_info' resolves to /a/depth/camera_info, which this node publishes"),
    (["-r", "image:=depth/image"], "image input 'image' resolves to /depth/image, which this "
     "node publishes (depth/image): it would read its own output"),
], ids=["long-camera-name", "invalid-topic", "diagnostics-as-input", "camera-under-camera",
        "remapped-onto-output"])
def test_an_input_topic_that_cannot_work_is_one_fatal_line_and_exit_1(args, match):
    node = NodeProcess("--ros-args", *args, "-p", "depth_model:=/nonexistent/model")
    code, out = node.finish(timeout=60)
    assert code == 1, out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert len(lines) == 1 and "[FATAL]" in lines[0] and match in lines[0], out

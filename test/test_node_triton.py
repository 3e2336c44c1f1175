"""The node with backend triton against a real ``e2e-depth serve`` that it does not own:
every output published, a server lost and back, a server absent at start, a slow server,
a multi-camera batch in one request, and Ctrl-C."""

import os
import signal
import threading
import time

import pytest
from rclpy.parameter import Parameter

from e2e_depth_ros.offline.serve_process import ServeProcess, free_ports
from e2e_depth_ros.ros.node import DepthNode
from rig import Rig, random_image

pytestmark = [pytest.mark.usefixtures("ros"), pytest.mark.triton, pytest.mark.needs_torch]
T0 = 1_700_000_000_000_000_000
ERROR = b"\x02"


def triton_node(namespace, url, *, timeout=30.0, **params):
    overrides = [Parameter("backend", value="triton"), Parameter("triton_url", value=url),
                 Parameter("triton_timeout", value=timeout),
                 Parameter("processing_resolution", value=0),
                 *(Parameter(k, value=v) for k, v in params.items())]
    return DepthNode(namespace=namespace, parameter_overrides=overrides)


class Camera:
    """Sends a frame every ``period`` s from a thread until stopped."""

    def __init__(self, rig, period=0.2):
        self.rig, self.period, self.sent = rig, period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        rgb = random_image(7)
        while not self._stop.wait(self.period):
            self.rig.send(rgb, T0 + self.sent * 100_000_000)
            self.sent += 1

    def stop(self):
        self._stop.set()
        self._thread.join()


def _level(diag):
    level = diag["_level"]
    return bytes(level) if not isinstance(level, int) else bytes([level])


def test_outputs_stop_with_the_server_and_resume_by_themselves_when_it_returns(
        serve_python, tiny_depth, tiny_normals, tmp_path):
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = ServeProcess(serve_python, tiny_depth, tiny_normals, type(tmp_path)(repository),
                          log_path=tmp_path / "server.log").start()
    namespace = f"/triton_loss{os.getpid()}"
    node = triton_node(namespace, server.grpc_url, timeout=5.0)
    rig = Rig(node, namespace)
    camera = Camera(rig)
    try:
        assert rig.wait_for(lambda: rig.received["depth/relative"]
                            and rig.received["normals/image"], timeout=60)
        threads = threading.active_count()
        server.stop()
        stopped = time.monotonic()
        published = len(rig.received["depth/relative"])
        assert rig.wait_for(lambda: rig.diagnostics and _level(rig.diagnostics[-1]) == ERROR
                            and "unreachable" in rig.diagnostics[-1]["model_server"],
                            timeout=2.5), rig.diagnostics[-1:]
        error_after = time.monotonic() - stopped
        assert rig.wait_for(lambda: node.stats.failed >= 3, timeout=10)
        assert len(rig.received["depth/relative"]) <= published + 1  # the frame in flight
        server.start()
        assert rig.wait_for(lambda: len(rig.received["depth/relative"]) > published + 2,
                            timeout=60)
        assert rig.wait_for(lambda: rig.diagnostics[-1].get("model_server", "").startswith(
            "connected"), timeout=5)
        assert threading.active_count() <= threads + 2  # nothing piles up while it was gone
        print(f"diagnostics ERROR {error_after:.2f} s after the server stopped; "
              f"{node.stats.failed} frames failed meanwhile")
    finally:
        camera.stop()
        rig.close()
        server.stop()


def test_a_node_starts_without_its_server_and_says_so_in_diagnostics(serve_python):
    namespace = f"/triton_absent{os.getpid()}"
    node = triton_node(namespace, f"grpc://127.0.0.1:{free_ports(1)[0]}")
    rig = Rig(node, namespace)
    try:
        assert rig.wait_for(lambda: rig.diagnostics, timeout=5)
        diag = rig.diagnostics[-1]
        assert _level(diag) == ERROR and "unreachable" in diag["model_server"]
        assert diag["backend"] == "triton"
    finally:
        rig.close()


def test_cameras_of_a_multi_camera_node_share_one_request(triton_server):
    namespace = f"/triton_multi{os.getpid()}"
    node = triton_node(namespace, triton_server.grpc_url, cameras=["left", "right"],
                       max_batch=2, publish_normals=False)
    rig = Rig(node, namespace, cameras=("left", "right"))
    try:
        before = triton_server.metrics()
        for cam in ("left", "right"):
            rig.send(random_image(8), T0, cam=cam)
        assert rig.wait_for(lambda: rig.received["left/depth/relative"]
                            and rig.received["right/depth/relative"], timeout=60)
        after = triton_server.metrics()
        requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
        frames = after["nv_inference_count"] - before["nv_inference_count"]
        if node.stream("left").stats.batch_size == 2:
            assert (requests, frames) == (1, 2)
        else:  # the executor delivered the cameras apart: one request per frame, never more
            assert requests == frames == 2
    finally:
        rig.close()


def test_ctrl_c_stops_a_triton_node_with_exit_0(triton_server):
    from test_node_process import NodeProcess

    node = NodeProcess("--ros-args", "-r", f"__ns:=/triton_sigint{os.getpid()}",
                       "-p", "backend:=triton", "-p", f"triton_url:={triton_server.grpc_url}")
    assert node.wait_for_line("ready: depth="), node.lines
    node.proc.send_signal(signal.SIGINT)
    code, out = node.finish()
    assert code == 0, out
    assert "Traceback" not in out

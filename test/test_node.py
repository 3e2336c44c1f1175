"""The node over real rclpy (loopback DDS) with tiny real checkpoints (docs/ros_interface.md)."""

import itertools
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.node import DepthNode
from rig import Rig, SlowEstimator, header, random_image as image

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
T0 = 1_700_000_000_000_000_000
_namespaces = itertools.count()


pytestmark = [pytest.mark.usefixtures("ros"), pytest.mark.needs_torch]


def make_rig(estimator, compressed=False, **params) -> Rig:
    namespace = f"/t{os.getpid()}_{next(_namespaces)}"
    params.setdefault("processing_resolution", 0)
    params["use_compressed"] = compressed
    node = DepthNode(estimator=estimator, namespace=namespace,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    return Rig(node, namespace, compressed=compressed)


@pytest.fixture
def rig_factory():
    rigs = []

    def factory(estimator, **params):
        rigs.append(make_rig(estimator, **params))
        return rigs[-1]

    yield factory
    for rig in rigs:
        rig.close()


def decode_cloud(msg):
    """x, y, z, rgb (H, W) read from the bytes with the offsets docs/ros_interface.md fixes."""
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    raw = raw.reshape(msg.height, msg.width, msg.point_step)
    xyz = [raw[..., o:o + 4].copy().view("<f4")[..., 0] for o in (0, 4, 8)]
    rgb = raw[..., 16:20].copy().view("<u4")[..., 0]
    return xyz, rgb


def test_every_output_arrives_with_the_input_header_and_encoding(estimator, rig_factory):
    rig = rig_factory(estimator, fixed_scale=2.0, fixed_shift=0.5, publish_depth_mm=True)
    rgb = image(1)
    rig.send(rgb, T0, camera=CAMERA)
    assert rig.wait_for(lambda: all(rig.received[t] for t in rig.received)), {
        t: len(v) for t, v in rig.received.items()}
    expected = {"depth/relative": "32FC1", "depth/image": "32FC1", "depth/image_vis": "bgr8",
                "depth/image_mm": "16UC1",
                "normals/image": "32FC3", "normals/image_vis": "rgb8"}
    for topic, encoding in expected.items():
        msg = rig.last(topic)
        assert (msg.encoding, msg.height, msg.width) == (encoding, 48, 64), topic
        assert msg.header.frame_id == "camera_optical" and rig.stamps(topic) == [T0], topic
    info = rig.last("depth/camera_info")
    assert rig.stamps("depth/camera_info") == [T0]
    assert (info.width, info.height) == (64, 48) and info.p[0] == 50.0 and info.p[5] == 46.0
    assert rig.stamps("points") == [T0] and rig.last("points").header.frame_id == "camera_optical"


def test_cloud_layout_and_pinhole_geometry_match_the_metric_depth(estimator, rig_factory):
    rig = rig_factory(estimator, fixed_scale=3.0, fixed_shift=0.25)
    rgb = image(2)
    rig.send(rgb, T0, camera=CAMERA)
    assert rig.wait_for(lambda: rig.received["points"] and rig.received["depth/image"])
    cloud, depth_msg = rig.last("points"), rig.last("depth/image")
    relative = np.frombuffer(bytes(rig.last("depth/relative").data), "<f4").reshape(48, 64)
    metric = np.frombuffer(bytes(depth_msg.data), "<f4").reshape(48, 64)
    np.testing.assert_allclose(metric, 3.0 * relative + 0.25, rtol=1e-6)

    assert (cloud.height, cloud.width, cloud.point_step) == (48, 64, 32)
    assert cloud.row_step == 32 * 64 and not cloud.is_dense and not cloud.is_bigendian
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 16, 7)]
    (x, y, z), packed = decode_cloud(cloud)
    np.testing.assert_array_equal(z, metric)
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(x, (u - CAMERA.cx) * z / CAMERA.fx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, (v - CAMERA.cy) * z / CAMERA.fy, rtol=1e-5, atol=1e-6)
    expected = (rgb.astype(np.uint32)[..., 0] << 16) | (rgb[..., 1].astype(np.uint32) << 8) \
        | rgb[..., 2]
    np.testing.assert_array_equal(packed, expected)


def test_depth_limits_and_decimation_apply_at_run_time(estimator, rig_factory):
    rig = rig_factory(estimator, fixed_scale=10.0)
    rig.send(image(3), T0, camera=CAMERA)
    assert rig.wait_for(lambda: rig.received["points"])
    metric = np.frombuffer(bytes(rig.last("depth/image").data), "<f4")
    limit = float(np.median(metric))
    node = rig.node_under_test
    result = node.set_parameters([Parameter("points_decimation", value=2),
                                  Parameter("max_depth", value=limit)])
    assert all(r.successful for r in result)
    rig.send(image(3), T0 + 10**8, camera=CAMERA)
    assert rig.wait_for(lambda: len(rig.received["points"]) == 2)
    cloud = rig.last("points")
    assert (cloud.height, cloud.width) == (24, 32)
    clipped = np.frombuffer(bytes(rig.last("depth/image").data), "<f4")
    assert np.isnan(clipped).any() and np.nanmax(clipped) <= limit
    (_, _, z), _ = decode_cloud(cloud)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(clipped.reshape(48, 64)[::2, ::2]))


def test_invalid_and_read_only_parameters_are_refused_with_a_reason(estimator, rig_factory):
    node = rig_factory(estimator).node_under_test
    bad = node.set_parameters([Parameter("lidar_extrinsic_rotation", value=[0.0, 0.0, 0.0])])
    assert not bad[0].successful and "quaternion" in bad[0].reason
    assert not node.set_parameters([Parameter("points_decimation", value=0)])[0].successful
    assert not node.set_parameters([Parameter("device", value="cuda")])[0].successful


def test_without_metric_scale_no_metric_depth_or_cloud_is_published(estimator, rig_factory):
    rig = rig_factory(estimator)
    rig.send(image(4), T0, camera=CAMERA)
    assert rig.wait_for(lambda: rig.received["depth/relative"] and rig.received["normals/image"])
    time.sleep(0.3)
    assert not rig.received["depth/image"] and not rig.received["points"]


def test_a_burst_during_slow_inference_yields_only_the_newest_frame(estimator, rig_factory):
    slow = SlowEstimator(estimator, delay=1.0)
    rig = rig_factory(slow)
    rig.send(image(5), T0)
    assert rig.wait_for(lambda: slow.calls == 1)
    burst = [T0 + i * 10**7 for i in range(1, 8)]
    for stamp in burst:
        rig.send(image(5), stamp)
        time.sleep(0.02)
    assert rig.wait_for(lambda: burst[-1] in rig.stamps("depth/relative"), timeout=10)
    assert rig.stamps("depth/relative") == [T0, burst[-1]]
    assert rig.wait_for(lambda: rig.diagnostics and int(rig.diagnostics[-1]["frames_dropped"])
                        >= 1, timeout=5)
    diag = rig.diagnostics[-1]
    assert int(diag["frames_dropped"]) + 2 == int(diag["frames_received"])


def _alive_after(rig, stamp):
    rig.send(image(6), stamp, camera=CAMERA)
    return rig.wait_for(lambda: stamp in rig.stamps("depth/relative"))


def _raw_image(width, height, encoding, step, data, stamp):
    msg = Image(header=header(stamp), width=width, height=height, encoding=encoding,
                step=step, is_bigendian=0)
    msg.data = data
    return msg


@pytest.mark.parametrize("make_bad", [
    lambda s: _raw_image(64, 48, "weird16", 128, bytes(128 * 48), s),
    lambda s: _raw_image(64, 48, "rgb8", 100, bytes(100 * 48), s),  # step < width * 3
    lambda s: _raw_image(64, 48, "rgb8", 192, bytes(192 * 10), s),  # truncated
    lambda s: _raw_image(0, 0, "rgb8", 0, b"", s),
    lambda s: _raw_image(4, 4, "rgb8", 12, bytes(48), s),  # too small for the model
], ids=["unsupported-encoding", "wrong-step", "truncated", "zero-size", "too-small"])
def test_bad_images_are_counted_and_the_node_keeps_running(estimator, rig_factory, make_bad):
    rig = rig_factory(estimator)
    rig.send(None, T0, image=make_bad(T0))
    # Each is the sender's fault: counted as bad input, never as a failure of the model.
    assert rig.wait_for(lambda: rig.diagnostics
                        and int(rig.diagnostics[-1]["frames_bad_input"]) == 1, timeout=5)
    assert int(rig.diagnostics[-1]["frames_failed"]) == 0
    assert not rig.received["depth/relative"]
    assert _alive_after(rig, T0 + 10**9)


def test_corrupt_compressed_payload_is_dropped_and_jpeg_works(estimator, rig_factory):
    rig = rig_factory(estimator, compressed=True)
    bad = CompressedImage(header=header(T0), format="jpeg", data=b"\xff\xd8 not a jpeg")
    rig.send(None, T0, image=bad)
    assert rig.wait_for(lambda: rig.diagnostics
                        and int(rig.diagnostics[-1]["frames_bad_input"]) == 1, timeout=5)
    ok, jpeg = cv2.imencode(".jpg", image(7))
    good = CompressedImage(header=header(T0 + 10**9), format="jpeg", data=jpeg.tobytes())
    rig.send(None, T0 + 10**9, image=good)
    assert rig.wait_for(lambda: rig.stamps("depth/relative") == [T0 + 10**9])


def test_repeated_stamps_are_dropped_and_going_back_in_time_is_survived(
        estimator, rig_factory):
    rig = rig_factory(estimator)
    stats = rig.node_under_test.stats
    for sent, stamp in enumerate((T0 + 10**9, T0 + 10**9, T0), start=1):
        rig.send(image(9), stamp)  # each taken before the next: the input keeps the newest
        assert rig.wait_for(lambda: stats.processed + stats.bad_input == sent)
    assert rig.wait_for(lambda: rig.stamps("depth/relative") == [T0 + 10**9, T0])
    assert _alive_after(rig, T0 + 2 * 10**9)


def test_node_with_a_missing_model_exits_at_start_with_one_line():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "e2e_depth_ros.node", "--ros-args", "-p",
         "depth_model:=/nonexistent/model", "-p", "normals_model:=''"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "/nonexistent/model: no such checkpoint folder" in lines[0]


def test_sigterm_during_inference_stops_the_node_quickly_and_cleanly(tiny_depth):
    """A robot's launch system sends SIGTERM; an inference in flight must not hold it up."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile

    namespace = f"/term{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e_depth_ros.node", "--ros-args", "-r", f"__ns:={namespace}",
         "-p", f"depth_model:={tiny_depth}", "-p", "normals_model:=''",
         "-p", "processing_resolution:=768"],  # a few seconds a frame, even for the tiny model
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peer = Node("term_peer", namespace=namespace)
    try:
        image_pub = peer.create_publisher(Image, "image", 10)
        peer.create_subscription(Image, "depth/relative", lambda msg: None, QoSProfile(depth=1))
        deadline = time.monotonic() + 60
        while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(peer, timeout_sec=0.1)
        assert image_pub.get_subscription_count() > 0, "node did not come up"
        time.sleep(1.0)  # let the node see our depth/relative subscription
        from e2e_depth_ros.ros import messages
        image_pub.publish(messages.build_image(Image, header(T0), image(10), "rgb8"))
        time.sleep(1.0)  # inference is now running
        start = time.monotonic()
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        peer.destroy_node()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert elapsed < 5.0

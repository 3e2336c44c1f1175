"""Temporal alignment in the node, over real rclpy: odometry, a bridged gap, resets.

No tf2 here: the node takes its camera poses from the ``odom`` topic (nav_msgs/Odometry)
and the default camera extrinsic (looking along the base's x axis). The planted model
returns each drive frame's flickering prediction (offline.drives), so what the node
publishes can be judged against the ray-cast truth.
"""


import numpy as np
import pytest
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image

from e2e_depth_ros.core.metrics import OneMapAccumulator
from e2e_depth_ros.offline.drives import make_drive, sparse_metric
from e2e_depth_ros.offline.scenes import BODY_FROM_OPTICAL, matrix_to_quaternion
from e2e_depth_ros.ros import messages
from rig import header, planted_node_rigs

T0 = 1_700_000_000_000_000_000

pytestmark = [pytest.mark.usefixtures("ros")]


@pytest.fixture(scope="module")
def drive():
    return make_drive("forward", 12, width=96, height=72, speed=1.0)


@pytest.fixture
def node_rig():
    def with_odometry(**params):
        rig, model = factory(**params)
        rig.odom_pub = rig.peer.create_publisher(Odometry, "odom", 50)
        return rig, model

    rigs = planted_node_rigs("t", temporal_alignment=True)
    factory = next(rigs)
    yield with_odometry
    next(rigs, None)


def stamp_of(frame):
    return T0 + int(round(frame.stamp * 1e9))


def publish_odometry(rig, frame, offset=(0.0, 0.0, 0.0)):
    """The base under the drive's camera (odom -> base_link), and wait until the node has it."""
    msg = Odometry()
    msg.header = header(stamp_of(frame), "odom")
    msg.child_frame_id = "base_link"
    rotation = frame.pose.rotation @ BODY_FROM_OPTICAL.T
    x, y, z, w = matrix_to_quaternion(rotation)
    msg.pose.pose.orientation.x, msg.pose.pose.orientation.y = x, y
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = z, w
    p = frame.pose.translation + np.asarray(offset)
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = map(float, p)
    rig.odom_pub.publish(msg)
    buffer = rig.node_under_test.odometry._buffer
    assert rig.wait_for(lambda: stamp_of(frame) in buffer._stamps, timeout=5.0)


def send(rig, model, camera, frame, *, metric=False, odometry=True, offset=(0, 0, 0)):
    """One frame in lock-step: odometry, (sensor depth), image; waits for its relative."""
    stamp = stamp_of(frame)
    if odometry:
        publish_odometry(rig, frame, offset)
    depth_msg = None
    if metric:
        sparse = np.nan_to_num(sparse_metric(frame.depth, np.random.default_rng(stamp % 97)))
        depth_msg = messages.build_image(Image, header(stamp), sparse.astype(np.float32),
                                         "32FC1")
    model.relative = frame.relative
    rig.send(frame.rgb, stamp, camera=camera, sensor_depth=depth_msg)
    assert rig.wait_for(lambda: stamp in rig.stamps("depth/relative"), timeout=20), \
        rig.diagnostics[-1:]


def last_diag(rig, predicate, timeout=10.0):
    assert rig.wait_for(lambda: rig.diagnostics and predicate(rig.diagnostics[-1]),
                        timeout=timeout), rig.diagnostics[-1:]
    return rig.diagnostics[-1]


def abs_rel(rig, frame):
    metric = messages.image_to_array(rig.at("depth/image", stamp_of(frame)))
    return float(np.nanmean(np.abs(metric - frame.depth) / frame.depth))


def test_metric_depth_is_carried_over_a_gap_of_its_source(node_rig, drive):
    camera, frames = drive
    rig, model = node_rig(scale_source="depth")
    for frame in frames[:10]:
        send(rig, model, camera, frame, metric=frame.index < 3)
    for frame in frames[:10]:  # 0.7 s without sensor depth: every frame metric
        assert rig.at("depth/image", stamp_of(frame)) is not None, frame.index
        assert abs_rel(rig, frame) < 0.04, frame.index
    diag = last_diag(rig, lambda d: d["frames_processed"] == "10")
    assert diag["temporal_alignment"].startswith("propagated: metric from the previous frame")
    assert diag["scale_status"].startswith("OK propagated from the previous frame (0.7 s")
    assert diag["temporal_gap_s"] == "0.70" and diag["temporal_resets"] == "0"
    assert diag["odometry"] == "ok"
    assert diag["odometry_source"] == "odom topic (nav_msgs/Odometry; no tf2)"


def test_an_odometry_jump_resets_and_publishes_no_metric_guess(node_rig, drive):
    camera, frames = drive
    rig, model = node_rig(scale_source="depth")
    for frame in frames[:3]:
        send(rig, model, camera, frame, metric=True)
    send(rig, model, camera, frames[3], offset=(4.0, 0.0, 0.0))  # a 4 m jump in 0.1 s
    assert rig.at("depth/image", stamp_of(frames[3])) is None  # reset, nothing metric
    diag = last_diag(rig, lambda d: d["frames_processed"] == "4")
    assert diag["temporal_resets"] == "1"
    assert "reset: odometry jumped" in diag["temporal_alignment"]
    assert "temporal alignment reset: odometry jumped" in diag["last_warning"]
    send(rig, model, camera, frames[4], metric=True, offset=(4.0, 0.0, 0.0))
    assert abs_rel(rig, frames[4]) < 0.04  # the next metric fit starts a new chain


def test_stale_odometry_is_no_odometry(node_rig, drive):
    camera, frames = drive
    rig, model = node_rig(scale_source="none")
    send(rig, model, camera, frames[0])
    broken = Odometry()
    broken.header = header(stamp_of(frames[0]) + 1, "odom")
    broken.pose.pose.orientation.w = 0.0  # a zero quaternion: no rotation at all
    rig.odom_pub.publish(broken)
    assert rig.wait_for(lambda: rig.node_under_test.odometry.problem, timeout=5.0)
    send(rig, model, camera, frames[1])
    late = frames[11]  # 1 s after the last odometry message
    send(rig, model, camera, late, odometry=False)
    diag = last_diag(rig, lambda d: d["frames_processed"] == "3")
    assert diag["odometry"].startswith("odometry is stale: the newest is 1.00 s older")
    assert "reset: odometry lost" in diag["temporal_alignment"]
    assert diag["odometry_problem"] == ("odometry pose is not finite or its quaternion is "
                                        "not unit (|q| = 0)")
    assert rig.stamps("depth/image") == []


def test_relative_depth_stays_in_the_first_frames_frame(node_rig):
    camera, frames = make_drive("static", 6, width=96, height=72)
    rig, model = node_rig(scale_source="none")
    for frame in frames:
        send(rig, model, camera, frame, odometry=False)
    relative = [messages.image_to_array(rig.at("depth/relative", stamp_of(f))) for f in frames]
    np.testing.assert_allclose(relative[0], frames[0].relative, rtol=1e-6)
    one_map = OneMapAccumulator()
    for r, f in zip(relative, frames):
        one_map.add(r, f.depth)
    assert one_map.result().metrics.abs_rel < 0.03  # one map fits every frame
    diag = last_diag(rig, lambda d: d["frames_processed"] == "6")
    assert diag["odometry"] == "no odometry message yet"
    assert diag["temporal_alignment"].startswith("relative: aligned to the previous frame")

"""Metric depth from LiDAR inside the node (docs/lidar_scale.md), over real rclpy.

The "model" here is an oracle that returns the rendered scene's true depth under a known
affine map, so the test checks the node's wiring (matching, extrinsics, fit, hold, stop),
not the random tiny network.
"""

import itertools
import os

import numpy as np
import pytest
from rclpy.parameter import Parameter

from e2e_depth_ros.node import DepthNode
from e2e_depth_ros.synthetic import make_sequence
from rig import Prediction, Rig

SCALE, SHIFT = 4.0, 0.5  # true depth = SCALE * relative + SHIFT
_namespaces = itertools.count()


pytestmark = pytest.mark.usefixtures("ros")


@pytest.fixture(scope="module")
def sequence():
    return make_sequence(6, width=64, height=48, seed=3)


class AffineOracle:
    """Returns (true depth - SHIFT) / SCALE for frames of the sequence it knows."""

    def __init__(self, sequence):
        self.depth = {f.rgb.tobytes(): f.depth for f in sequence.frames}
        self.processing_resolution = 0
        self.model_names = {"depth": "oracle", "normals": None}
        self.device, self.dtype = "cpu", "float32"

    def predict(self, rgb, *, depth=True, normals=True):
        relative = (self.depth[rgb.tobytes()] - SHIFT) / SCALE
        return Prediction(depth=relative.astype(np.float32), normals=None)


@pytest.fixture
def rig(sequence):
    ext = sequence.extrinsic
    params = {"lidar_extrinsic_frame": "lidar",
              "lidar_extrinsic_translation": [float(v) for v in ext.translation],
              "lidar_extrinsic_rotation": [float(v) for v in ext.quaternion_xyzw],
              "scale_hold_timeout": 0.5}
    namespace = f"/l{os.getpid()}_{next(_namespaces)}"
    node = DepthNode(estimator=AffineOracle(sequence), namespace=namespace,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    rig = Rig(node, namespace)
    yield rig
    rig.close()


def metric_of(msg):
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width)


def send_frame(rig, sequence, i, *, lidar=True, stamp=None, lidar_frame="lidar"):
    frame = sequence.frames[i]
    stamp = frame.stamp_ns if stamp is None else stamp
    rig.send(frame.rgb, stamp, camera=sequence.camera,
             lidar=frame.lidar_points if lidar else None, lidar_frame=lidar_frame)
    assert rig.wait_for(lambda: stamp in rig.stamps("depth/relative")), f"frame {i}"
    return stamp


def test_lidar_fit_gives_metric_depth_matching_ground_truth_and_diagnostics(rig, sequence):
    for i in range(3):
        send_frame(rig, sequence, i)
    frame = sequence.frames[2]
    assert rig.wait_for(lambda: frame.stamp_ns in rig.stamps("depth/image"))
    metric = metric_of(rig.last("depth/image"))
    valid = np.isfinite(metric)
    assert valid.mean() > 0.95
    abs_rel = np.mean(np.abs(metric[valid] - frame.depth[valid]) / frame.depth[valid])
    assert abs_rel < 0.03
    assert rig.last("points").header.stamp == rig.last("depth/image").header.stamp
    assert rig.wait_for(lambda: rig.diagnostics
                        and rig.diagnostics[-1]["scale_status"] == "OK", timeout=5)
    diag = rig.diagnostics[-1]
    scale, shift = float(diag["scale"]), float(diag["shift"])
    relative = metric_of(rig.last("depth/relative"))
    np.testing.assert_allclose(metric[valid], (scale * relative + shift)[valid], rtol=1e-3)
    assert abs(scale - SCALE) / SCALE < 0.03 and int(diag["scale_inliers"]) >= 10


def test_metric_outputs_are_held_then_stopped_when_lidar_stops(rig, sequence):
    for i in range(2):
        send_frame(rig, sequence, i)
    last_fit = sequence.frames[1].stamp_ns
    held = send_frame(rig, sequence, 2, lidar=False, stamp=last_fit + 3 * 10**8)
    assert rig.wait_for(lambda: held in rig.stamps("depth/image"))
    assert rig.wait_for(lambda: rig.diagnostics and rig.diagnostics[-1]["scale_status"]
                        .startswith("WARN holding"), timeout=5)
    stopped = send_frame(rig, sequence, 3, lidar=False, stamp=last_fit + 2 * 10**9)
    assert rig.wait_for(lambda: rig.diagnostics and rig.diagnostics[-1]["scale_status"]
                        .startswith("ERROR"), timeout=5)
    assert stopped not in rig.stamps("depth/image") and stopped not in rig.stamps("points")
    back = send_frame(rig, sequence, 4)
    assert rig.wait_for(lambda: back in rig.stamps("depth/image"))


def test_lidar_in_a_frame_without_transform_warns_and_relative_continues(rig, sequence):
    stamp = send_frame(rig, sequence, 0, lidar_frame="mystery")
    assert rig.wait_for(lambda: rig.diagnostics and "mystery" in
                        rig.diagnostics[-1]["last_warning"], timeout=5)
    assert "no transform from LiDAR frame 'mystery'" in rig.diagnostics[-1]["last_warning"]
    assert rig.diagnostics[-1]["scale_status"].startswith("ERROR")
    assert stamp not in rig.stamps("depth/image")
    assert send_frame(rig, sequence, 1, lidar_frame="mystery")

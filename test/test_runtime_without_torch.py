"""The node's runtime path without torch: Humble robots whose model runs elsewhere, and the
torch-free compatibility leg. The estimator here is a numpy stand-in; these tests pin the
node's wiring and imports, not the model."""

import itertools
import os

import numpy as np
import pytest
from rclpy.parameter import Parameter

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.node import DepthNode
from imports import heavy_imports
from rig import Prediction, Rig

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
T0 = 1_700_000_000_000_000_000
RUNTIME_MODULES = ("ros.messages", "core.geometry", "core.processing", "core.scale", "ros.sync",
                   "offline.tf_static", "ros.node")
_namespaces = itertools.count()


class GreyEstimator:
    """Relative depth = grey level, normals = facing the camera; numpy only."""

    def __init__(self):
        self.processing_resolution = 0
        self.model_names = {"depth": "grey", "normals": "facing"}
        self.device, self.dtype = "cpu", "float32"
        self.calls = 0

    def predict(self, rgb, *, depth=True, normals=True):
        self.calls += 1
        grey = rgb.astype(np.float32).mean(axis=-1) / 255.0
        facing = np.zeros((*rgb.shape[:2], 3), np.float32)
        facing[..., 2] = -1.0
        return Prediction(depth=grey if depth else None, normals=facing if normals else None)


def test_runtime_modules_import_without_torch_or_diffusers():
    assert heavy_imports(list(RUNTIME_MODULES), ("torch", "diffusers", "transformers")) == []


@pytest.mark.usefixtures("ros")
def test_node_with_an_injected_estimator_publishes_every_output_without_torch():
    namespace = f"/w{os.getpid()}_{next(_namespaces)}"
    estimator = GreyEstimator()
    params = {"processing_resolution": 0, "fixed_scale": 2.0, "fixed_shift": 0.5,
              "publish_depth_mm": True}  # every output, the opt-in one too
    node = DepthNode(estimator=estimator, namespace=namespace,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    rig = Rig(node, namespace)
    try:
        rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        rig.send(rgb, T0, camera=CAMERA)
        assert rig.wait_for(lambda: all(rig.received[t] for t in rig.received)), {
            t: len(v) for t, v in rig.received.items()}
        metric = np.frombuffer(bytes(rig.last("depth/image").data), "<f4").reshape(48, 64)
        expected = 2.0 * rgb.astype(np.float32).mean(axis=-1) / 255.0 + 0.5
        np.testing.assert_allclose(metric, expected, rtol=1e-5)
        normals = np.frombuffer(bytes(rig.last("normals/image").data), "<f4").reshape(48, 64, 3)
        np.testing.assert_array_equal(normals[..., 2], -1.0)
        assert all(rig.stamps(topic) == [T0] for topic in rig.received)
        assert estimator.calls == 1
    finally:
        rig.close()

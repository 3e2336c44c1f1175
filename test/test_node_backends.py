"""The node's backend and precision parameters: declared read-only and shown in diagnostics."""

import os
import subprocess
import sys

import pytest
from rclpy.parameter import Parameter

from e2e_depth_ros.ros.node import DepthNode
from e2e_depth_ros.ros.parameters import PARAMETERS
from rig import Rig

pytestmark = [pytest.mark.usefixtures("ros"), pytest.mark.needs_torch]


def test_backend_and_precision_are_read_only_parameters_with_descriptions():
    for name, default in (("backend", "torch"), ("precision", "auto")):
        value, _, description, _, read_only = PARAMETERS[name]
        assert value == default and read_only and description


def test_diagnostics_show_the_backend_and_the_resolved_precision(tiny_depth):
    from e2e_depth_ros.model.estimator import Estimator  # needs torch: not at collection time

    est = Estimator(tiny_depth, None, device="cpu", processing_resolution=0,
                    precision="fp32")
    namespace = f"/backends{os.getpid()}"
    node = DepthNode(estimator=est, namespace=namespace,
                     parameter_overrides=[Parameter("processing_resolution", value=0)])
    rig = Rig(node, namespace)
    try:
        assert rig.wait_for(lambda: rig.diagnostics, timeout=10)
        diag = rig.diagnostics[-1]
        assert diag["backend"] == "torch" and diag["precision"] == "fp32"
        refused = node.set_parameters([Parameter("backend", value="openvino")])[0]
        assert not refused.successful
    finally:
        rig.close()


def test_node_with_an_unavailable_precision_exits_at_start_with_one_line(tiny_depth):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, "-m", "e2e_depth_ros.node", "--ros-args", "-p",
         f"depth_model:={tiny_depth}", "-p", "normals_model:=''", "-p", "device:=cpu",
         "-p", "precision:=bf16"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "precision bf16 with the torch backend on CPU is refused" in done.stderr
    assert "Traceback" not in done.stderr

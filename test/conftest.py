"""Test harness: DDS stays on loopback, each run in its own ROS domain."""

import os
import sys

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

# Fixtures that build tiny diffusers checkpoints: a test using them needs torch even when it
# forgets its ``needs_torch`` mark, so the torch-free (Humble) leg deselects it too.
_TORCH_FIXTURES = {"tiny_depth", "tiny_normals", "estimator"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _TORCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_torch)


@pytest.fixture(scope="session")
def tiny_depth(tmp_path_factory) -> str:
    """A random-weight depth checkpoint in the published layout (seed 0)."""
    from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "depth", task="depth"))


@pytest.fixture(scope="session")
def tiny_normals(tmp_path_factory) -> str:
    """A random-weight normals checkpoint sharing the depth checkpoint's VAE (seed 0)."""
    from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "normals",
                                    task="normals"))


@pytest.fixture(scope="module")
def estimator(tiny_depth, tiny_normals):
    """Depth and normals on the CPU at native size; one per test module (a node may change
    its processing resolution)."""
    from e2e_depth_ros.model.estimator import Estimator

    return Estimator(tiny_depth, tiny_normals, device="cpu", processing_resolution=0)


# test/ holds helper modules (the rclpy rig) imported by the node tests.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="module")
def ros():
    """rclpy initialised for one test module (DDS on loopback, see above)."""
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()

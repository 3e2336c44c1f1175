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


@pytest.fixture(scope="session")
def serve_python():
    """The Triton server's environment (ci/serve.sh makes .cache/serve), or skip."""
    from pathlib import Path

    from e2e_depth_ros.offline.serve_process import serve_python as find

    python = find(Path(__file__).resolve().parents[1])
    if python is None:
        pytest.skip("no Triton server environment: run `bash ci/serve.sh setup` (or set "
                    "E2E_DEPTH_SERVE_PYTHON) for the triton tests")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed")
    return python


@pytest.fixture(scope="session")
def triton_server(serve_python, tiny_depth, tiny_normals, tmp_path_factory):
    """One ``e2e-depth serve`` with the tiny checkpoints for the session, on 127.0.0.1: the
    CI leg's (E2E_DEPTH_TRITON_URL and friends, same seeded checkpoints) or our own."""
    from pathlib import Path
    from types import SimpleNamespace

    from e2e_depth_ros.offline.serve_process import ServeProcess, triton_metrics

    if os.environ.get("E2E_DEPTH_TRITON_URL"):
        metrics_url = os.environ["E2E_DEPTH_TRITON_METRICS_URL"]
        yield SimpleNamespace(grpc_url=os.environ["E2E_DEPTH_TRITON_URL"],
                              http_url=os.environ["E2E_DEPTH_TRITON_HTTP_URL"],
                              metrics=lambda: triton_metrics(metrics_url))
        return
    log = tmp_path_factory.mktemp("serve") / "server.log"
    server = ServeProcess(serve_python, tiny_depth, tiny_normals,
                          Path(__file__).resolve().parents[1], log_path=log)
    with server:
        yield server

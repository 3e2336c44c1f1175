"""ROS 2 node and tools for single-step fine-tuned diffusion depth and normals (E2E-FT).

The public library names are importable from here (``from e2e_depth_ros import
Estimator``) and load their layer on first use: importing the package stays instant and
pulls in neither torch nor rclpy. The layers: docs/architecture.md.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "Estimator": "e2e_depth_ros.model.estimator",
    "Prediction": "e2e_depth_ros.model.estimator",
    "make_tiny_checkpoint": "e2e_depth_ros.model.tiny_checkpoint",
    "DepthModel": "e2e_depth_ros.core.depth_model",
    "FrameProcessor": "e2e_depth_ros.core.processing",
    "ProcessingConfig": "e2e_depth_ros.core.processing",
    "Needs": "e2e_depth_ros.core.processing",
    "FrameResult": "e2e_depth_ros.core.processing",
    "PinholeCamera": "e2e_depth_ros.core.geometry",
    "evaluate_bag": "e2e_depth_ros.offline.evaluate",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """Load a public name's layer on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'e2e_depth_ros' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value

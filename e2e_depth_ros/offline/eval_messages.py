"""Decoding the evaluation's messages: camera images, ground truth, recorded predictions.

Each decoder refuses an encoding it does not know (a ``MessageError``) instead of casting
silently; the frame evaluation counts those as skipped frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2e_depth_ros.errors import MessageError
from e2e_depth_ros.offline.bag_io import COMPRESSED

if TYPE_CHECKING:
    import numpy as np


def decode_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a raw or compressed camera image."""
    from e2e_depth_ros.ros.messages import compressed_to_rgb, image_to_rgb

    return compressed_to_rgb(msg) if msgtype == COMPRESSED else image_to_rgb(msg)


def float_image(msg: Any, encoding: str) -> np.ndarray:
    """A recorded 32FC1 / 32FC3 image, refusing any other encoding (no silent casts)."""
    from e2e_depth_ros.ros.messages import image_to_array

    if msg.encoding != encoding:
        raise MessageError(f"expected a {encoding} image, got {msg.encoding}")
    return image_to_array(msg)


def is_metric_topic(topic: str) -> bool:
    """The node publishes metric depth as ``depth/image`` (REP 118) and nothing else."""
    return topic.rstrip("/").endswith("depth/image")

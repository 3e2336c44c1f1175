"""Which camera images are worth the model: size limits judged before decoding, then decoding.

Duck-typed (rclpy and rosbags messages alike): a message with a ``format`` field is a
``CompressedImage``. A refusal is returned, never raised, so the node counts it as bad input
and goes on with the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from e2e_depth_ros.core import input_checks
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.ros import messages


@dataclass(frozen=True)
class Refusal:
    """Why an image was dropped; ``kind`` keys the per-kind log throttle."""

    kind: str  # image_size or image_decode
    text: str


def admit_image(msg: Any, *, processing_resolution: int,
                max_input_pixels: int) -> np.ndarray | Refusal:
    """uint8 RGB (H, W, 3) of an image worth processing, or why not.

    The size is judged from the header first (a PNG's IHDR for a compressed image), so a
    small file that expands to gigabytes costs nothing.
    """
    limits = dict(processing_resolution=processing_resolution,
                  max_input_pixels=max_input_pixels)
    compressed = hasattr(msg, "format")
    size = (input_checks.compressed_size(bytes(msg.data)) if compressed
            else (int(msg.width), int(msg.height)))
    if size is not None and all(size):
        problem = input_checks.frame_size_problem(*size, **limits)
        if problem:
            return Refusal("image_size", f"dropping image: {problem}")
    try:
        rgb = messages.compressed_to_rgb(msg) if compressed else messages.image_to_rgb(msg)
    except E2EDepthError as err:
        return Refusal("image_decode", f"dropping image: {err}")
    problem = input_checks.frame_size_problem(rgb.shape[1], rgb.shape[0], **limits)
    if problem:
        return Refusal("image_size", f"dropping image: {problem}")
    return rgb

"""Which images reach the model: refused by size before decoding, by content after."""

import cv2
import numpy as np
import pytest

from e2e_depth_ros.ros.admission import Refusal, admit_image
from plain_msgs import TYPES, header, image

LIMITS = dict(processing_resolution=0, max_input_pixels=10_000)


def test_a_good_raw_image_comes_back_as_its_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert np.array_equal(admit_image(image(rgb), **LIMITS), rgb)


def test_a_raw_image_over_max_input_pixels_is_refused_from_its_header_alone():
    huge = TYPES["sensor_msgs/msg/Image"](header=header(0), height=8000, width=8000,
                                          encoding="rgb8", is_bigendian=0, step=24000,
                                          data=np.zeros(0, np.uint8))  # no body to decode
    refusal = admit_image(huge, **LIMITS)
    assert isinstance(refusal, Refusal) and refusal.kind == "image_size"
    assert "max_input_pixels" in refusal.text


def test_a_compressed_image_is_known_by_its_format_field_and_decoded():
    rgb = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = TYPES["sensor_msgs/msg/CompressedImage"](header=header(0), format="png",
                                                   data=np.frombuffer(png, np.uint8))
    assert np.array_equal(admit_image(msg, **LIMITS), rgb)


def test_undecodable_bytes_are_refused_as_a_decode_problem_naming_why():
    msg = TYPES["sensor_msgs/msg/CompressedImage"](header=header(0), format="jpeg",
                                                   data=np.frombuffer(b"not a jpeg", np.uint8))
    refusal = admit_image(msg, **LIMITS)
    assert isinstance(refusal, Refusal) and refusal.kind == "image_decode"
    assert refusal.text.startswith("dropping image: ")


@pytest.mark.parametrize("shape", [(3, 2), (8, 4000)])
def test_images_the_model_cannot_run_are_refused_as_a_size_problem(shape):
    rgb = np.zeros((*shape, 3), np.uint8)
    refusal = admit_image(image(rgb), processing_resolution=64, max_input_pixels=10**8)
    assert isinstance(refusal, Refusal) and refusal.kind == "image_size"

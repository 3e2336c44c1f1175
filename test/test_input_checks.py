"""Per-camera input checks (docs/ros_interface.md): sizes, headers, intrinsics, stamps."""

import cv2
import numpy as np
import pytest

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.input_checks import (KindThrottle, StampCheck, camera_problem,
                                             compressed_size, frame_size_problem,
                                             processing_resolution_problem)
from imports import heavy_imports

LIMITS = dict(processing_resolution=768, max_input_pixels=4096 * 4096)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_size_reads_png_and_jpeg_headers_without_decoding(ext):
    ok, data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert compressed_size(data.tobytes()) == (53, 37)


def test_compressed_size_reads_a_progressive_jpeg_after_an_exif_segment():
    ok, data = cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8),
                            [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    raw = data.tobytes()
    exif = b"\xff\xe1" + (2 + 1000).to_bytes(2, "big") + bytes(1000)
    assert compressed_size(raw[:2] + exif + raw[2:]) == (30, 20)


def test_compressed_size_of_a_huge_png_is_read_from_its_first_24_bytes():
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (8000).to_bytes(4, "big") * 2
    assert compressed_size(header + b"garbage") == (8000, 8000)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"])
def test_compressed_size_is_none_for_unknown_or_truncated_headers(data):
    assert compressed_size(data) is None


@pytest.mark.parametrize("width, height, match", [
    (1, 1, "too small"), (3, 2, "too small"), (4, 4, "too small"),
    (4000, 8, "aspect ratio too extreme"), (8000, 8000, "max_input_pixels"),
])
def test_frame_size_problem_names_why_a_frame_is_refused(width, height, match):
    assert match in frame_size_problem(width, height, **LIMITS)


def test_frame_size_problem_accepts_ordinary_frames():
    assert frame_size_problem(640, 480, **LIMITS) is None
    assert frame_size_problem(4000, 8, processing_resolution=0,
                              max_input_pixels=10**6) is None


@pytest.mark.parametrize("value", [1, 7, 8, 15, 2049, 4096])
def test_processing_resolution_that_cannot_work_is_refused(value):
    assert "0 (native size) or 16..2048" in processing_resolution_problem(value)


@pytest.mark.parametrize("value", [0, 16, 768, 2048])
def test_processing_resolution_in_range_is_accepted(value):
    assert processing_resolution_problem(value) is None


GOOD = PinholeCamera(160, 120, fx=130.0, fy=125.0, cx=80.5, cy=59.0)


@pytest.mark.parametrize("camera, match", [
    (PinholeCamera(160, 120, fx=float("nan"), fy=125.0, cx=80.0, cy=60.0), "non-finite"),
    (PinholeCamera(160, 120, fx=130.0, fy=float("inf"), cx=80.0, cy=60.0), "non-finite"),
    (PinholeCamera(160, 120, fx=130.0, fy=125.0, cx=float("nan"), cy=60.0), "non-finite"),
    (PinholeCamera(160, 120, fx=0.0, fy=125.0, cx=80.0, cy=60.0), "must be > 0"),
    (PinholeCamera(160, 120, fx=-130.0, fy=125.0, cx=80.0, cy=60.0), "must be > 0"),
    (PinholeCamera(100, 100, fx=130.0, fy=125.0, cx=50.0, cy=50.0), "is for 100x100"),
    (PinholeCamera(160, 120, fx=1e-30, fy=1e-30, cx=80.0, cy=60.0), "implausible"),
    (PinholeCamera(160, 120, fx=1e9, fy=125.0, cx=80.0, cy=60.0), "implausible"),
], ids=["nan-fx", "inf-fy", "nan-cx", "zero-fx", "negative-fx", "size-mismatch",
        "fx-1e-30", "fx-1e9"])
def test_camera_problem_refuses_intrinsics_that_cannot_describe_the_image(camera, match):
    assert match in camera_problem(camera, 160, 120)


def test_camera_problem_accepts_a_plausible_camera():
    assert camera_problem(GOOD, 160, 120) is None


def test_stamp_check_keeps_the_repeated_stamp_rule_and_detects_time_going_back():
    check = StampCheck()
    assert [check.check(s) for s in (10, 10, 20, 5)] == ["new", "repeat", "new", "back"]
    assert check.unusable == ""


def test_stamp_check_says_a_camera_stamping_every_frame_zero_is_unusable():
    check = StampCheck()
    assert [check.check(0) for _ in range(3)] == ["new", "repeat", "repeat"]
    assert "stamps are unusable" in check.unusable
    check.check(10**9)
    assert check.unusable == ""  # a real stamp again


def test_stamp_check_says_a_frozen_stamp_is_unusable_after_three_repeats():
    check = StampCheck(unusable_after=3)
    check.check(5)
    check.check(5)
    assert check.unusable == ""
    check.check(5)
    assert "3 in a row" in check.unusable


def test_kind_throttle_lets_each_kind_through_once_per_period():
    throttle = KindThrottle(5.0)
    kinds = ["image_size", "image_decode", "camera_info", "stamp_repeat"]
    allowed = [throttle.allow(kind, 0.5 * i) for i, kind in enumerate(kinds * 2)]
    assert allowed == [True] * 4 + [False] * 4
    assert throttle.allow("image_size", 5.1) and throttle.suppressed["image_size"] == 1


def test_input_checks_import_neither_torch_nor_rclpy():
    assert heavy_imports(["core.input_checks", "ros.health", "model.model_args"],
                         ("torch", "rclpy", "rosbags")) == []

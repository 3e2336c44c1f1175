"""Which camera_info an image gets: its stamp's, a brief wait, or a reused unchanged one."""

import threading

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros import pairing
from e2e_depth_ros.ros.stream import Stream
from plain_msgs import camera_info

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
ZOOMED = PinholeCamera(64, 48, fx=80.0, fy=74.0, cx=30.5, cy=25.0)
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def stream_with(*infos) -> Stream:
    stream = Stream("")
    for info in infos:
        stamp = info.header.stamp
        stream.camera_infos.add(stamp.sec * 10**9 + stamp.nanosec, info)
    return stream


def test_the_camera_info_of_the_image_stamp_is_taken_without_reuse():
    info = camera_info(CAMERA, T0)
    stream = stream_with(camera_info(CAMERA, T0 - 100 * MS), info)
    assert pairing.matching_info(stream, T0, tolerance_s=0.0, reuse_s=1.0) is info
    assert stream.stats.camera_info_reused == 0


def test_a_camera_info_delivered_during_the_wait_is_taken():
    stream = stream_with(camera_info(CAMERA, T0 - 100 * MS))
    late = camera_info(CAMERA, T0)
    threading.Timer(0.01, lambda: stream.camera_infos.add(T0, late)).start()
    assert pairing.matching_info(stream, T0, tolerance_s=0.0, reuse_s=0.0) is late


def test_a_wait_in_vain_is_not_repeated_until_a_camera_info_matches_again():
    stream = stream_with(camera_info(CAMERA, T0 - 500 * MS))
    assert pairing.matching_info(stream, T0, tolerance_s=0.0, reuse_s=0.0) is None
    assert stream.info_in_step is False
    stream.camera_infos.add(T0 + MS, camera_info(CAMERA, T0 + MS))
    assert pairing.matching_info(stream, T0 + MS, tolerance_s=0.0, reuse_s=0.0) is not None
    assert stream.info_in_step is True


def test_an_unchanged_calibration_is_reused_within_the_window_and_counted():
    older = camera_info(CAMERA, T0 - 400 * MS)
    stream = stream_with(older)
    stream.info_in_step = False  # no wait: this camera's infos come at a lower rate
    assert pairing.matching_info(stream, T0, tolerance_s=0.05, reuse_s=1.0) is older
    assert stream.stats.camera_info_reused == 1
    assert pairing.matching_info(stream, T0, tolerance_s=0.05, reuse_s=0.2) is None


def test_a_changed_calibration_is_never_reused():
    stream = stream_with(camera_info(CAMERA, T0 - 400 * MS), camera_info(ZOOMED, T0 + 900 * MS))
    stream.info_in_step = False
    assert pairing.reused_info(stream, T0, 0.5) is None
    assert stream.stats.camera_info_reused == 0


def test_camera_of_gives_the_pinhole_of_a_matching_size_and_a_reason_otherwise():
    camera = pairing.camera_of(camera_info(CAMERA), 64, 48)
    assert isinstance(camera, PinholeCamera)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (50.0, 46.0, 30.5, 25.0)
    reason = pairing.camera_of(camera_info(CAMERA), 128, 96)
    assert isinstance(reason, str) and reason.startswith("refusing camera_info: ")
    uncalibrated = camera_info(CAMERA)
    uncalibrated.k = np.zeros(9)
    uncalibrated.p = np.zeros(12)
    assert isinstance(pairing.camera_of(uncalibrated, 64, 48), str)

"""The multi-camera schedule without ROS: newest frame per camera, fair rounds, no stalls."""

import subprocess
import sys
import threading
import time

import pytest

from e2e_depth_ros.ros.multicam import CameraSlots, camera_topic, pick_round, validate_cameras
from imports import heavy_imports


def test_each_camera_keeps_only_its_newest_frame_and_counts_its_own_drops():
    slots = CameraSlots(["front", "left"])
    for i in range(3):
        slots.put("front", f"front{i}")
    slots.put("left", "left0")
    assert dict(slots.take_round(4)) == {"front": "front2", "left": "left0"}
    assert slots.dropped == {"front": 2, "left": 0}


def test_a_round_serves_every_pending_camera_when_they_fit_in_max_batch():
    slots = CameraSlots(["front", "left", "right"])
    for camera in ("right", "front", "left"):
        slots.put(camera, camera)
    assert sorted(c for c, _ in slots.take_round(3)) == ["front", "left", "right"]
    assert slots.pending() == []


def test_round_robin_serves_the_cameras_left_out_first_next_round():
    slots = CameraSlots(["a", "b", "c", "d", "e"])
    served = []
    for _ in range(5):
        for camera in slots.cameras:  # every camera always has a new frame
            slots.put(camera, camera)
        served.append([c for c, _ in slots.take_round(2)])
    assert served == [["a", "b"], ["c", "d"], ["e", "a"], ["b", "c"], ["d", "e"]]


def test_a_fast_camera_cannot_starve_a_slow_one():
    slots = CameraSlots(["fast", "slow"])
    counts = {"fast": 0, "slow": 0}
    for step in range(20):
        slots.put("fast", step)
        if step % 2 == 0:
            slots.put("slow", step)
        for camera, _ in slots.take_round(1):
            counts[camera] += 1
    # The slow camera has a frame every other step, and it is served whenever it has one.
    assert counts["slow"] >= 9


def test_a_camera_that_stopped_does_not_delay_the_others():
    slots = CameraSlots(["front", "stalled"])
    slots.put("stalled", "old")
    assert [c for c, _ in slots.take_round(2)] == ["stalled"]
    started = time.monotonic()
    slots.put("front", "f1")
    assert slots.take_round(2, timeout=5.0) == [("front", "f1")]
    assert time.monotonic() - started < 1.0


def test_take_round_waits_for_a_frame_from_any_camera_and_close_wakes_it():
    slots = CameraSlots(["front", "left"])
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.take_round(2, timeout=5.0)))
    worker.start()
    time.sleep(0.1)
    slots.put("left", "l0")
    worker.join(2.0)
    assert got == [[("left", "l0")]]
    worker = threading.Thread(target=lambda: got.append(slots.take_round(2, timeout=5.0)))
    worker.start()
    slots.close()
    worker.join(2.0)
    assert not worker.is_alive() and got[-1] == [] and slots.closed


def test_take_round_returns_nothing_after_the_timeout():
    assert CameraSlots(["front"]).take_round(1, timeout=0.05) == []


def test_pick_round_refuses_a_max_batch_below_one():
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        pick_round(["a"], {"a"}, 0)


def test_put_for_an_unknown_camera_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown camera 'rear'.*front"):
        CameraSlots(["front"]).put("rear", 1)


@pytest.mark.parametrize("names, reason", [
    (["front", "front"], "'front' is listed twice"),
    (["/front"], "not a relative ROS name"),
    (["front cam"], "not a relative ROS name"),
    (["1st"], "not a relative ROS name"),
    ([""], "not a relative ROS name"),
])
def test_bad_camera_lists_are_refused_with_the_reason(names, reason):
    assert reason in validate_cameras(names)


def test_camera_lists_that_are_valid_pass():
    assert validate_cameras([]) is None
    assert validate_cameras(["front", "rear/left", "cam_2"]) is None


def test_camera_topics_are_relative_and_the_empty_camera_keeps_the_plain_topic():
    assert camera_topic("front", "depth/image") == "front/depth/image"
    assert camera_topic("", "depth/image") == "depth/image"


def test_the_schedule_imports_without_ros_torch_or_rosbags():
    assert heavy_imports(["ros.multicam", "ros.outputs", "core.depth_model"],
                         ("rclpy", "torch", "rosbags")) == []


def test_frame_processing_imports_without_torch():
    code = ("import sys, e2e_depth_ros.core.processing; "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

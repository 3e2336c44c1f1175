"""Input QoS follows the publishers (e2e_depth_ros.ros.qos), without ROS."""

import pytest

from e2e_depth_ros.ros.qos import (BEST_EFFORT, MODES, RELIABLE, SENSOR_DATA_DEPTH, InputQos,
                                   choose_input_qos)
from imports import heavy_imports


@pytest.mark.parametrize("offered, reliability", [
    ([RELIABLE], RELIABLE),
    ([RELIABLE, RELIABLE], RELIABLE),
    ([BEST_EFFORT], BEST_EFFORT),
    ([BEST_EFFORT, BEST_EFFORT], BEST_EFFORT),
])
def test_auto_takes_the_reliability_every_publisher_offers(offered, reliability):
    choice = choose_input_qos("auto", offered, depth=1)
    assert choice == InputQos(reliability, 1, False, choice.message)
    assert "auto" in choice.message and reliability.replace("_", "-") in choice.message


def test_auto_without_publishers_is_best_effort_so_any_publisher_connects():
    choice = choose_input_qos("auto", [])
    assert (choice.reliability, choice.mismatch) == (BEST_EFFORT, False)
    assert "no publishers" in choice.message


def test_auto_with_mixed_publishers_is_best_effort_and_reports_the_mismatch():
    choice = choose_input_qos("auto", [RELIABLE, BEST_EFFORT, RELIABLE], depth=1)
    assert (choice.reliability, choice.mismatch) == (BEST_EFFORT, True)
    assert "2 reliable publishers" in choice.message
    assert "1 best-effort publisher" in choice.message


def test_auto_ignores_publishers_of_unknown_reliability():
    assert choose_input_qos("auto", ["unknown", RELIABLE]).reliability == RELIABLE
    assert "no publishers" in choose_input_qos("auto", ["system_default"]).message


def test_forced_reliable_warns_that_best_effort_publishers_cannot_connect():
    choice = choose_input_qos(RELIABLE, [BEST_EFFORT, RELIABLE])
    assert (choice.reliability, choice.mismatch) == (RELIABLE, True)
    assert "1 best-effort publisher cannot connect" in choice.message
    assert choose_input_qos(RELIABLE, [RELIABLE]).mismatch is False
    assert choose_input_qos(RELIABLE, []).mismatch is False


@pytest.mark.parametrize("mode", [BEST_EFFORT, "sensor_data"])
def test_forced_best_effort_warns_that_reliable_publishers_lose_large_messages(mode):
    choice = choose_input_qos(mode, [RELIABLE], depth=1)
    assert (choice.reliability, choice.mismatch) == (BEST_EFFORT, True)
    assert "may lose large messages" in choice.message and "auto" in choice.message
    assert choose_input_qos(mode, [BEST_EFFORT]).mismatch is False


def test_sensor_data_is_rclpys_sensor_profile_and_other_modes_keep_the_depth():
    assert choose_input_qos("sensor_data", [], depth=1).depth == SENSOR_DATA_DEPTH == 5
    for mode in ("auto", RELIABLE, BEST_EFFORT):
        assert choose_input_qos(mode, [RELIABLE], depth=1).depth == 1


def test_choice_key_changes_only_when_the_subscription_must_be_recreated():
    one = choose_input_qos("auto", [RELIABLE])
    two = choose_input_qos("auto", [RELIABLE, RELIABLE])
    assert one.message != two.message and one.key == two.key == (RELIABLE, 1)
    assert choose_input_qos("auto", [RELIABLE, BEST_EFFORT]).key == (BEST_EFFORT, 1)


def test_unknown_mode_and_bad_depth_are_refused_with_the_value():
    with pytest.raises(ValueError, match=r"input QoS mode 'fast': expected one of auto"):
        choose_input_qos("fast", [])
    with pytest.raises(ValueError, match=r"depth must be >= 1, got 0"):
        choose_input_qos("auto", [], depth=0)
    assert MODES == ("auto", "reliable", "best_effort", "sensor_data")


def test_qos_and_stamp_rate_modules_import_without_rclpy_or_torch():
    assert heavy_imports(["ros.qos", "ros.stamp_rate"],
                         ("rclpy", "torch", "rosbags", "numpy")) == []

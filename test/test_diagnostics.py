"""One camera's status judged at a chosen instant, without rclpy or a running node."""

from dataclasses import dataclass

import numpy as np
import pytest

from e2e_depth_ros.core.processing import FrameProcessor, ProcessingConfig
from e2e_depth_ros.ros import diagnostics
from e2e_depth_ros.ros.qos import InputQos, choose_input_qos
from e2e_depth_ros.ros.stream import Stream


@dataclass
class Model:
    """What diagnostics read of a model (no weights needed)."""

    model_names = {"depth": "tiny-depth", "normals": None}
    device = "cpu"
    dtype = "float32"
    processing_resolution = 0


class Input:
    """A subscription as far as diagnostics look: its QoS choice."""

    def __init__(self, choice: InputQos | None) -> None:
        self.choice = choice

    def describe(self) -> str:
        return self.choice.message if self.choice else "not subscribed"


def stream_fed(frames: int = 3, *, start: float = 100.0, period: float = 0.1,
               offered=("reliable",)) -> Stream:
    stream = Stream("front")
    choice = choose_input_qos("auto", list(offered))
    stream.inputs = {name: Input(choice) for name in ("camera_info", "lidar", "image")}
    for i in range(frames):
        stream.stats.health.input.add(start + i * period)
        stream.stamp_rate.add(10**18 + i * int(period * 1e9))
    return stream


def view(config=ProcessingConfig(fixed_scale=1.0), *, metric_wanted=False,
         source=None) -> diagnostics.NodeView:
    params = {"processing_resolution": 0, "input_qos": "auto"}
    return diagnostics.NodeView(FrameProcessor(Model(), config, finisher=None), params,
                                max_batch=1, dropped=0, metric_wanted=metric_wanted,
                                wall_clock_s=0.0, scale_source=source or (
                                    "fixed" if config.fixed_scale > 0 else "lidar"))


def test_a_stream_is_ok_while_frames_come_and_warns_of_an_outage_once_they_stop():
    stream = stream_fed()
    last = stream.stats.health.input.last
    healthy = diagnostics.stream_status(stream, last + 0.5, view())
    assert healthy.level == diagnostics.OK, healthy.message
    assert healthy.values["input_age_s"] == "0.5" and healthy.values["camera"] == "front"
    silent = diagnostics.stream_status(stream, last + 10.0, view())
    assert silent.level == diagnostics.WARN
    assert silent.message.startswith("no input for 10 s; fixed")


def test_a_camera_that_never_sent_an_image_is_not_shown_as_ok():
    report = diagnostics.stream_status(stream_fed(0), 5.0, view())
    assert report.level == diagnostics.WARN and "no image received yet" in report.message
    assert report.values["input_age_s"] == "nan"


@pytest.mark.parametrize("metric_wanted, level, text", [
    (False, diagnostics.OK, "off: relative depth only"),
    (True, diagnostics.WARN, "WARN no LiDAR cloud and no fixed_scale"),
])
def test_without_lidar_or_fixed_scale_only_a_wanted_metric_output_warns(
        metric_wanted, level, text):
    stream = stream_fed()
    report = diagnostics.stream_status(stream, stream.stats.health.input.last + 0.2,
                                       view(ProcessingConfig(), metric_wanted=metric_wanted))
    assert report.level == level and report.values["scale_status"].startswith(text)


def test_a_lidar_stream_without_a_fit_is_an_error():
    stream = stream_fed()
    stream.clouds.add(10**18, object())
    report = diagnostics.stream_status(stream, stream.stats.health.input.last + 0.2,
                                       view(ProcessingConfig(), metric_wanted=True))
    assert report.level == diagnostics.ERROR and "no fit" in report.values["scale_status"]


def test_frames_missing_from_the_stamps_are_reported_as_transport_loss():
    stream = stream_fed(0)
    for i in range(60):
        if i % 3 != 2:  # every third frame never arrives
            stream.stats.health.input.add(100.0 + i * 0.05)
            stream.stamp_rate.add(10**18 + i * 50_000_000)
    values, problem = diagnostics.transport_values(stream, "auto")
    assert float(values["input_loss_estimate"]) == pytest.approx(1 / 3, abs=0.05)
    assert "of camera frames lost in transport" in problem
    report = diagnostics.stream_status(stream, 103.0, view())
    assert report.level == diagnostics.WARN and "lost in transport" in report.message


def test_a_qos_mismatch_names_the_input_and_warns():
    stream = stream_fed(offered=("reliable", "best_effort"))
    values, problem = diagnostics.transport_values(stream, "auto")
    assert values["input_qos_mismatch"].startswith("camera_info: ")
    assert problem == "input QoS mismatch"


def test_values_are_strings_and_the_failed_frame_error_shows_only_while_recent():
    stream = stream_fed()
    last = stream.stats.health.input.last
    stream.stats.last_error = "RuntimeError: simulated"
    stream.stats.health.last_failure = last
    recent = diagnostics.stream_status(stream, last + 0.5, view())
    assert recent.values["last_error"] == "RuntimeError: simulated"
    assert "frames failing" in recent.message and recent.level == diagnostics.WARN
    assert all(isinstance(v, str) for v in recent.values.values())
    later = diagnostics.stream_status(stream, last + 60.0, view())
    assert later.values["last_error"] == "" and "frames failing" not in later.message
    assert np.isfinite(float(later.values["scale"]))


@pytest.mark.parametrize("source, level, text", [
    ("none", diagnostics.OK, "off: scale_source none"),
    ("depth", diagnostics.WARN, "WARN no sensor depth image"),
    ("ground", diagnostics.ERROR, "ERROR no fit"),
])
def test_each_scale_source_says_what_it_lacks(source, level, text):
    stream = stream_fed()
    report = diagnostics.stream_status(stream, stream.stats.health.input.last + 0.2,
                                       view(ProcessingConfig(), metric_wanted=True,
                                            source=source))
    assert report.level == level and report.values["scale_status"].startswith(text)
    assert report.values["scale_source"] == source

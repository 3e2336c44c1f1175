"""Rates, outages and recent failures for diagnostics, on an explicit clock."""

import pytest

from e2e_depth_ros.ros.health import RateMeter, StreamHealth


def feed(meter, rate, seconds, start=0.0):
    t = start
    while t < start + seconds:
        meter.add(t)
        t += 1.0 / rate
    return t - 1.0 / rate


@pytest.mark.parametrize("rate", [0.2, 0.5, 2.0, 30.0])
def test_rate_meter_reads_steady_streams_below_and_above_1_hz(rate):
    meter = RateMeter(window=10.0)
    last = feed(meter, rate, 30.0)
    assert meter.rate(last + 0.01) == pytest.approx(rate, rel=0.05)
    assert meter.rate(last + 0.5 / rate) == pytest.approx(rate, rel=0.35)


def test_rate_meter_decays_to_zero_during_an_outage():
    meter = RateMeter(window=10.0)
    last = feed(meter, 2.0, 20.0)
    assert meter.rate(last + 5.0) < 1.2  # half the window is empty: about half the rate
    assert meter.rate(last + 10.5) == 0.0


def test_stream_health_reports_an_outage_on_the_clock():
    health = StreamHealth(min_outage=2.0)
    last = feed(health.input, 10.0, 5.0)
    assert health.outage(last + 1.0) is None
    assert health.outage(last + 30.0) == pytest.approx(30.0)


def test_stream_health_allows_a_slow_camera_three_periods_between_frames():
    health = StreamHealth(min_outage=2.0)
    last = feed(health.input, 0.2, 30.0)
    assert health.outage(last + 12.0) is None
    assert health.outage(last + 16.0) == pytest.approx(16.0)


def test_one_failed_frame_warns_only_within_the_failure_window():
    health = StreamHealth(failure_window=10.0)
    assert not health.failing(0.0)
    health.last_failure = 1.0
    assert health.failing(5.0)
    assert not health.failing(11.5)

"""The publisher's rate and the transport loss from received header stamps."""

import math

import numpy as np
import pytest

from e2e_depth_ros.ros.stamp_rate import StampRateEstimator

T0 = 1_700_000_000_000_000_000
PERIOD = 33_333_333  # 30 Hz


def feed(estimator, indices, *, period=PERIOD, jitter_ns=0, seed=0):
    rng = np.random.default_rng(seed)
    for index in indices:
        noise = int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else 0
        estimator.add(T0 + index * period + noise)


def test_every_frame_arriving_gives_the_camera_rate_and_no_loss():
    estimator = StampRateEstimator(window=100)
    feed(estimator, range(60))
    result = estimator.estimate()
    assert result.rate_hz == pytest.approx(30.0, rel=1e-6)
    assert (result.received, result.missing, result.loss) == (60, 0, 0.0)


@pytest.mark.parametrize("kept", [0.8, 0.5, 0.3, 0.15])
def test_random_transport_loss_is_measured_from_the_gaps_between_stamps(kept):
    rng = np.random.default_rng(1)
    arrived = [i for i in range(400) if rng.random() < kept]
    estimator = StampRateEstimator(window=len(arrived))
    feed(estimator, arrived, jitter_ns=2_000_000)  # +-2 ms jitter on a 33 ms period
    result = estimator.estimate()
    published = arrived[-1] - arrived[0] + 1
    assert result.rate_hz == pytest.approx(30.0, rel=0.02)
    assert result.received == len(arrived)
    assert result.missing == published - len(arrived)
    assert result.loss == pytest.approx(1 - len(arrived) / published, abs=1e-9)


def test_a_pause_of_the_source_is_not_counted_as_loss():
    estimator = StampRateEstimator(window=100)
    feed(estimator, list(range(20)) + list(range(1000, 1020)))  # a 32 s pause
    result = estimator.estimate()
    assert result.rate_hz == pytest.approx(30.0) and result.missing == 0


def test_stamps_going_back_restart_and_repeated_stamps_count_once():
    estimator = StampRateEstimator(window=100)
    feed(estimator, range(50), period=100_000_000)
    feed(estimator, [0, 1, 1, 2, 3, 4, 5, 7])  # a bag loop at 30 Hz, one frame lost
    result = estimator.estimate()
    assert result.rate_hz == pytest.approx(30.0)
    assert (result.received, result.missing) == (7, 1)


def test_too_few_stamps_give_unknown_rate_and_loss():
    estimator = StampRateEstimator(window=100, min_gaps=5)
    feed(estimator, range(5))
    result = estimator.estimate()
    assert math.isnan(result.rate_hz) and math.isnan(result.loss)
    feed(estimator, [5])
    assert estimator.estimate().loss == 0.0


def test_window_smaller_than_the_gap_minimum_is_refused():
    with pytest.raises(ValueError, match=r"window 3 must hold more than min_gaps=5"):
        StampRateEstimator(window=3)

"""Stamp matching (the newest-frame slots per camera: test_multicam.py)."""

from e2e_depth_ros.ros.sync import StampBuffer


def test_match_prefers_the_exact_stamp_over_a_nearer_newer_one():
    buf = StampBuffer(size=5)
    for stamp in (100, 200, 210):
        buf.add(stamp, f"m{stamp}")
    assert buf.match(200, tolerance_ns=50) == "m200"
    assert buf.match(207, tolerance_ns=50) == "m210"
    assert buf.match(500, tolerance_ns=50) is None


def test_buffer_forgets_the_oldest_beyond_its_size():
    buf = StampBuffer(size=2)
    for stamp in (1, 2, 3):
        buf.add(stamp, stamp)
    assert buf.match(1, tolerance_ns=0) is None and buf.match(3, tolerance_ns=0) == 3


def test_match_waits_for_an_item_still_in_flight_and_only_for_that():
    import threading
    import time

    buf = StampBuffer(size=5)
    buf.add(100, "m100")
    threading.Timer(0.1, buf.add, (200, "m200")).start()
    began = time.monotonic()
    assert buf.match(200, tolerance_ns=0, wait=5.0) == "m200"  # woken by add, not timed out
    assert time.monotonic() - began < 2.0
    began = time.monotonic()
    assert buf.match(150, tolerance_ns=0, wait=5.0) is None  # the buffer is already past it
    assert StampBuffer().match(1, tolerance_ns=0, wait=5.0) is None  # nothing will come
    assert time.monotonic() - began < 1.0
    began = time.monotonic()
    assert buf.match(300, tolerance_ns=0, wait=0.2) is None  # in flight, but never came
    assert time.monotonic() - began >= 0.2

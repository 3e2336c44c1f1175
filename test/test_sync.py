"""Stamp matching and the newest-frame mailbox."""

import threading
import time

from e2e_depth_ros.sync import LatestSlot, StampBuffer


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


def test_slot_hands_over_only_the_newest_item_and_counts_drops():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0) == 4
    assert slot.dropped == 4
    assert slot.take(timeout=0) is None


def test_closing_the_slot_wakes_a_waiting_worker_at_once():
    slot = LatestSlot()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    worker.start()
    start = time.monotonic()
    slot.close()
    worker.join(timeout=2)
    assert not worker.is_alive() and got == [None]
    assert time.monotonic() - start < 1.0

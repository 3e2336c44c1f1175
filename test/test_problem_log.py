"""Problems are logged once per camera and kind per period, and kept for diagnostics."""

from e2e_depth_ros.ros.problem_log import ProblemLog
from e2e_depth_ros.ros.stream import Stream


class Recorder:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda text: self.lines.append((level, text))


def test_each_kind_and_camera_has_its_own_throttle():
    recorder = Recorder()
    log = ProblemLog(lambda: recorder, period=60.0)
    front, left = Stream("front"), Stream("left")
    for _ in range(3):
        log.warn(front, "image_decode", "dropping image: bad")
    log.warn(front, "camera_info", "refusing camera_info: zero fx")
    log.warn(left, "image_decode", "dropping image: bad")
    assert recorder.lines == [("warning", "[front] dropping image: bad"),
                              ("warning", "[front] refusing camera_info: zero fx"),
                              ("warning", "[left] dropping image: bad")]
    assert front.stats.last_warning == "refusing camera_info: zero fx"


def test_bad_input_is_counted_every_time_even_when_the_log_is_throttled():
    recorder = Recorder()
    log = ProblemLog(lambda: recorder, period=60.0)
    stream = Stream("")
    for _ in range(4):
        log.bad_input(stream, "image_size", "dropping image: too small")
    assert stream.stats.bad_input == 4 and len(recorder.lines) == 1
    assert stream.stats.last_bad_input == "dropping image: too small"


def test_a_failed_frame_is_counted_and_logged_unless_quiet():
    recorder = Recorder()
    log = ProblemLog(lambda: recorder, period=0.0)
    stream = Stream("")
    log.failed(stream, RuntimeError("CUDA hiccup"))
    log.failed(stream, RuntimeError("while closing"), quiet=True)
    assert stream.stats.failed == 2 and stream.stats.health.last_failure is not None
    assert stream.stats.last_error == "RuntimeError: while closing"
    assert recorder.lines == [("error", "frame failed: RuntimeError: CUDA hiccup")]


def test_the_logger_is_looked_up_at_each_call_so_it_can_be_swapped():
    first, second = Recorder(), Recorder()
    current = [first]
    log = ProblemLog(lambda: current[0], period=0.0)
    log.log(None, "info", "a", "one")
    current[0] = second
    log.log(None, "info", "a", "two")
    assert first.lines == [("info", "one")] and second.lines == [("info", "two")]

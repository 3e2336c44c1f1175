"""What makes one camera's input unusable, judged before any work is spent on it.

Pure functions and small per-camera state (no ROS, no clock: time is passed in), so the node
can keep one set per camera. Each check returns a reason a person can act on, or None.
"""

from __future__ import annotations

import math
import struct

from e2e_depth_ros.core.geometry import PinholeCamera

MIN_SIDE = 8  # one latent pixel: the model cannot run on a side shorter than this
MAX_PROCESSING_RESOLUTION = 2048  # 2048 x 1536 is ~16x the work of the default 768
MIN_PROCESSING_RESOLUTION = 16  # smaller makes a 4:3 frame's short side < MIN_SIDE
DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096
# Plausible focal lengths, in pixels, relative to the image's longer side: 1e-3x is a
# 179.9 degree lens, 1e3x a 0.06 degree one; outside that the calibration is garbage.
FOCAL_RANGE = (1e-3, 1e3)


def processing_resolution_problem(value: int) -> str | None:
    """Why a processing_resolution cannot work for ordinary frames, or None."""
    if value == 0 or MIN_PROCESSING_RESOLUTION <= value <= MAX_PROCESSING_RESOLUTION:
        return None
    return (f"processing_resolution must be 0 (native size) or "
            f"{MIN_PROCESSING_RESOLUTION}..{MAX_PROCESSING_RESOLUTION}, got {value}")


def processing_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """(h, w) the model runs at: the longer side becomes ``resolution`` (0 = native)."""
    if resolution == 0:
        return height, width
    f = resolution / max(height, width)
    return int(height * f), int(width * f)


def frame_size_problem(width: int, height: int, *, processing_resolution: int,
                       max_input_pixels: int) -> str | None:
    """Why a ``width`` x ``height`` frame is refused before decoding or inference, or None."""
    if width * height > max_input_pixels:
        return (f"image {width}x{height} has {width * height} pixels > max_input_pixels "
                f"{max_input_pixels}")
    if width < MIN_SIDE or height < MIN_SIDE:
        return f"image {width}x{height} is too small: each side must be >= {MIN_SIDE} px"
    h, w = processing_size(height, width, processing_resolution)
    if h < MIN_SIDE or w < MIN_SIDE:
        return (f"image {width}x{height} becomes {w}x{h} at processing_resolution "
                f"{processing_resolution}: aspect ratio too extreme (a side < {MIN_SIDE} px)")
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless...): not DHT, JPG, DAC.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG or JPEG header without decoding; None if unknown.

    Lets a node refuse a tiny file that expands to gigabytes before paying for it.
    """
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return int(width), int(height)
        if marker == 0xDA or length < 2:  # image data before any frame header: give up
            return None
        pos += 2 + length
    return None


def camera_problem(camera: PinholeCamera, width: int, height: int) -> str | None:
    """Why intrinsics cannot describe a ``width`` x ``height`` image, or None.

    Refuses non-finite, zero or negative focal lengths, a size other than the image's, and
    implausible focal lengths (outside FOCAL_RANGE times the longer side), which would put
    points light-years away.
    """
    values = {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy}
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        return f"camera_info has non-finite intrinsics ({', '.join(bad)})"
    if camera.fx <= 0 or camera.fy <= 0:
        return f"camera_info has fx={camera.fx:g}, fy={camera.fy:g}: focal lengths must be > 0"
    if (camera.width, camera.height) != (width, height):
        return (f"camera_info is for {camera.width}x{camera.height} but the image is "
                f"{width}x{height}")
    side = max(width, height)
    lo, hi = FOCAL_RANGE[0] * side, FOCAL_RANGE[1] * side
    if not (lo <= camera.fx <= hi and lo <= camera.fy <= hi):
        return (f"camera_info has implausible focal lengths fx={camera.fx:g}, "
                f"fy={camera.fy:g} px for a {width}x{height} image (expected {lo:g}..{hi:g})")
    return None


class StampCheck:
    """The repeated-stamp rule of one camera, and whether its stamps are usable at all.

    A stamp equal to the previous one is a duplicate (refused); one earlier than it means
    time went back (a bag loop). A camera that stamps every frame 0, or repeats the same
    stamp ``unusable_after`` times in a row, has unusable stamps: ``unusable`` says why.
    """

    def __init__(self, unusable_after: int = 3) -> None:
        self.unusable_after = unusable_after
        self.last_ns: int | None = None
        self._repeats = 0
        self.unusable = ""

    def check(self, stamp_ns: int) -> str:
        """"new", "repeat" or "back" for this stamp (then remembered as the last one)."""
        last, self.last_ns = self.last_ns, stamp_ns
        if last is not None and stamp_ns == last:
            self._repeats += 1
            if stamp_ns == 0 or self._repeats + 1 >= self.unusable_after:
                self.unusable = (f"the camera stamps every frame {stamp_ns * 1e-9:.9f} s "
                                 f"({self._repeats + 1} in a row): its stamps are unusable, "
                                 "only the first of them is processed")
            return "repeat"
        if stamp_ns == 0:
            self.unusable = "the camera stamps frames 0: its stamps are unusable"
        else:
            self.unusable = ""
        self._repeats = 0
        return "new" if last is None or stamp_ns > last else "back"


class KindThrottle:
    """One throttle per kind of problem, so one noisy problem never hides another."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, kind: str, now: float) -> bool:
        """Whether a message of ``kind`` may be logged at ``now`` (seconds, any clock)."""
        last = self._last.get(kind)
        if last is not None and now - last < self.period:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        return True

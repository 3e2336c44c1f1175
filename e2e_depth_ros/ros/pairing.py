"""Which camera_info describes an image: by stamp, briefly waited for, or reused.

ROS-free; the per-camera buffers and counters live in ``stream.Stream``. Called after
inference, so a camera_info delivered late (reliable camera_info repaired behind megabyte
images) has had the whole model call to arrive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from e2e_depth_ros.core import input_checks
from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.ros import messages

if TYPE_CHECKING:
    from e2e_depth_ros.ros.stream import Stream

INFO_WAIT_S = 0.05  # longest wait for a camera_info published with its image but not yet here


def matching_info(stream: Stream, stamp_ns: int, *, tolerance_s: float,
                  reuse_s: float) -> Any:
    """The camera_info of this image stamp, waiting briefly for one still in flight.

    A driver publishes camera_info and image together and the camera_info may still be in
    flight; a camera whose infos lag behind this stamp gets INFO_WAIT_S more to deliver it.
    A camera without camera_info, or one already past this stamp, does not; nor does one
    whose last wait was in vain (camera_info at a lower rate than images) until a
    camera_info matches again. Without a match, see ``reused_info``.
    """
    wait = INFO_WAIT_S if stream.info_in_step else 0.0
    info = stream.camera_infos.match(stamp_ns, int(tolerance_s * 1e9), wait=wait)
    if info is not None:
        stream.info_in_step = True
        return info
    newest = stream.camera_infos.newest_stamp()
    if wait and newest is not None and newest < stamp_ns:
        stream.info_in_step = False  # waited in vain: not again until one matches
    return reused_info(stream, stamp_ns, reuse_s)


def reused_info(stream: Stream, stamp_ns: int, reuse_s: float) -> Any:
    """The nearest camera_info within ``reuse_s``, if the calibration is unchanged.

    Calibration rarely changes, and a camera_info that is late or sent at a lower rate
    than the images still describes them; one that differs from the newest (a zoom, a
    re-calibration) is never reused. Counted in the stream's stats.
    """
    window = int(reuse_s * 1e9)
    info = stream.camera_infos.match(stamp_ns, window) if window > 0 else None
    newest = stream.camera_infos.newest()
    if info is None or newest is None or not messages.same_calibration(info, newest):
        return None
    stream.stats.camera_info_reused += 1
    return info


def camera_of(info: Any, width: int, height: int) -> PinholeCamera | str:
    """The pinhole camera a camera_info gives a ``width`` x ``height`` image, or why not."""
    try:
        camera = messages.camera_from_info(info)
        problem = input_checks.camera_problem(camera, width, height)
    except E2EDepthError as err:
        problem = str(err)
    return (f"refusing camera_info: {problem}; no cloud, LiDAR fit or depth/camera_info for "
            "this frame") if problem else camera

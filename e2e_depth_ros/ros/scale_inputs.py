"""A frame's metric reference for the configured ``scale_source``, from the camera's inputs.

ROS-free: the per-camera buffers live in ``stream.Stream`` and the tf2 lookup is passed in
(``tf_lookup``). Each source either gives a ``core.scale_sources`` reference, or says why it
has none this frame (``Unavailable``: the reason reaches diagnostics through the filter),
or reports a bad input (``InputProblem``: counted and logged per kind by the node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from e2e_depth_ros.core.geometry import quaternion_to_matrix
from e2e_depth_ros.core.scale_sources import (GroundPlane, LidarPoints, ScaleReference,
                                              SensorDepth, Unavailable)
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.ros import messages
from e2e_depth_ros.ros.lidar_input import (InputProblem, Lookup, StaticExtrinsic,
                                           lidar_points)

if TYPE_CHECKING:
    from e2e_depth_ros.ros.stream import Stream


@dataclass(frozen=True)
class ScaleInputs:
    """The node's settings for the scale sources (read from its parameters per frame)."""

    lidar_tolerance: float  # s
    lidar_extrinsic: StaticExtrinsic
    sensor_depth_tolerance: float  # s
    ground_frame: str
    ground_extrinsic: StaticExtrinsic  # frame "" = none given

    @staticmethod
    def from_params(p: dict[str, Any]) -> ScaleInputs:
        ground_t = tuple(p["ground_extrinsic_translation"])
        return ScaleInputs(
            p["lidar_tolerance"],
            StaticExtrinsic(p["lidar_extrinsic_frame"], tuple(p["lidar_extrinsic_rotation"]),
                            tuple(p["lidar_extrinsic_translation"])),
            p["sensor_depth_tolerance"], p["ground_frame"],
            StaticExtrinsic(p["ground_frame"] if any(ground_t) else "",
                            tuple(p["ground_extrinsic_rotation"]), ground_t))


def resolve_source(configured: str, fixed_scale: float) -> str:
    """What ``auto`` means today: the fixed map when fixed_scale is set, else LiDAR."""
    if configured != "auto":
        return configured
    return "fixed" if fixed_scale > 0 else "lidar"


def scale_reference(stream: Stream, source: str, stamp_ns: int, header: Any,
                    settings: ScaleInputs, lookup: Lookup | None
                    ) -> ScaleReference | InputProblem | None:
    """The reference of ``source`` for the image with ``header``, or why there is none.

    None when the source takes no per-frame input (fixed, none) or LiDAR has no cloud of
    this stamp (the filter then holds its last fit, as before).
    """
    if source == "lidar":
        return _lidar(stream, stamp_ns, header.frame_id, settings, lookup)
    if source == "depth":
        return _sensor_depth(stream, stamp_ns, header.frame_id, settings, lookup)
    if source == "ground":
        return _ground(header, settings, lookup)
    return None


def _lidar(stream, stamp_ns, camera_frame, settings, lookup):
    cloud = stream.clouds.match(stamp_ns, int(settings.lidar_tolerance * 1e9))
    if cloud is None:
        return None
    points = lidar_points(cloud, camera_frame, lookup=lookup,
                          extrinsic=settings.lidar_extrinsic)
    return points if isinstance(points, InputProblem) else LidarPoints(points)


def _sensor_depth(stream, stamp_ns, camera_frame, settings, lookup):
    tolerance = int(settings.sensor_depth_tolerance * 1e9)
    msg = stream.sensor_depths.match(stamp_ns, tolerance)
    if msg is None:
        newest = stream.sensor_depths.newest_stamp()
        return Unavailable("no sensor depth image yet" if newest is None else
                           f"no sensor depth within {settings.sensor_depth_tolerance:g} s of "
                           "the image stamp (sensor_depth_tolerance)", "depth")
    try:
        depth = messages.depth_image_meters(msg)
    except E2EDepthError as err:
        return InputProblem("sensor_depth", f"unusable sensor depth: {err}")
    frame = msg.header.frame_id
    if not frame or frame == camera_frame:
        return SensorDepth(depth)
    info = stream.sensor_infos.match(stamp_ns, tolerance)
    if info is None:
        return Unavailable(f"sensor depth is in frame '{frame}', not the image's "
                           f"'{camera_frame}': reprojecting it needs its camera_info "
                           "(sensor_depth/camera_info) of the same stamp", "depth")
    try:
        sensor = messages.camera_from_info(info)
        rotation, translation = lookup(camera_frame, frame, msg.header.stamp)
    except Exception as err:  # noqa: BLE001 - bad camera_info, tf2's lookup errors, no tf2
        why = "tf2 is not installed" if lookup is None else f"{type(err).__name__}: {err}"
        return Unavailable(f"sensor depth in frame '{frame}' cannot be moved into "
                           f"'{camera_frame}': {why}", "depth")
    if (sensor.width, sensor.height) != (depth.shape[1], depth.shape[0]):
        return InputProblem("sensor_depth", f"sensor depth {depth.shape[1]}x{depth.shape[0]} "
                            f"does not match its camera_info {sensor.width}x{sensor.height}")
    return SensorDepth.reprojected(depth, sensor, rotation, translation)


def _ground(header, settings, lookup):
    camera_frame, ground = header.frame_id, settings.ground_frame
    transform, why = None, "tf2 is not installed"
    if lookup is not None:
        try:
            transform = lookup(camera_frame, ground, header.stamp)
        except Exception as err:  # noqa: BLE001 - tf2 raises several lookup errors
            why = f"{type(err).__name__}: {err}"
    static = settings.ground_extrinsic
    if transform is None and static.frame:
        transform = (quaternion_to_matrix(*static.rotation_xyzw),
                     np.asarray(static.translation, dtype=np.float64))
    if transform is None:
        return Unavailable(f"no transform from ground frame '{ground}' to camera frame "
                           f"'{camera_frame}' ({why}; ground_extrinsic_* not set): the "
                           "floor's height and slope are unknown", "ground")
    return GroundPlane.from_transform(*transform)

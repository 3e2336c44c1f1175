"""What gives each evaluated frame metric scale: the node's ``scale_source`` rule, offline.

The source is chosen once per run like the node chooses it (``auto``: LiDAR when a LiDAR
topic is given, else the fixed map when ``fixed_scale`` is set, else none), refused before
a model loads when the bag cannot serve it, and then turned into one
``core.scale_sources`` reference per frame, which ``FrameProcessor`` fits with the one robust
fit and filter, exactly as on the robot:

- ``lidar``: the matched cloud, moved into the camera frame by /tf_static;
- ``depth``: the matched sensor depth image (16UC1 mm or 32FC1 m); registered to the image
  when its frame is the image's, else reprojected with its camera_info
  (``--sensor-depth-info-topic``, by default the sibling ``camera_info`` of its topic) and
  the transform to the image's frame at the image's stamp (/tf_static and /tf);
- ``ground``: the floor, the z = 0 plane of ``--ground-frame``, from /tf_static and /tf at
  the image's stamp.

A frame whose reference is missing (no sensor depth within the tolerance, no transform at
its stamp) gets none: the filter holds, and the reason is counted in the run's notes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from e2e_depth_ros.core.scale_sources import SOURCES
from e2e_depth_ros.errors import BagError, E2EDepthError
from e2e_depth_ros.offline.tf_static import strip_slash

if TYPE_CHECKING:
    from e2e_depth_ros.core.processing import ProcessingConfig
    from e2e_depth_ros.core.scale_sources import ScaleReference
    from e2e_depth_ros.offline.bag_io import MessageRef, TopicIndex
    from e2e_depth_ros.offline.eval_types import EvalOptions, EvalTopics
    from e2e_depth_ros.offline.frame_plan import FramePlan
    from e2e_depth_ros.offline.tf_buffer import TransformBuffer

FITTED = ("lidar", "depth", "ground")  # sources fitted per frame (the rest: no filter)


def resolve_source(requested: str, *, lidar_topic: str | None, fixed_scale: float) -> str:
    """The source a run uses: ``requested``, or for ``auto`` the node's rule."""
    if requested not in SOURCES:
        raise ValueError(f"scale source {requested!r} is not one of {', '.join(SOURCES)}")
    if requested != "auto":
        return requested
    if lidar_topic:
        return "lidar"
    return "fixed" if fixed_scale > 0 else "none"


def sibling_info_topic(topic: str) -> str:
    """``/depth_sensor/image_rect`` -> ``/depth_sensor/camera_info`` (image_transport's habit)."""
    head = topic.rstrip("/").rpartition("/")[0]
    return f"{head}/camera_info"


def with_source_topics(topics: EvalTopics, bag_topics: set[str]) -> EvalTopics:
    """The topics with the sensor depth's camera_info filled in: the one given, else the
    sibling ``camera_info`` when the bag has it (needed only for depth in another frame)."""
    if topics.sensor_depth is None or topics.sensor_depth_info is not None:
        return topics
    sibling = sibling_info_topic(topics.sensor_depth)
    return replace(topics, sensor_depth_info=sibling) if sibling in bag_topics else topics


def processing_for(source: str, config: ProcessingConfig) -> ProcessingConfig:
    """The node's settings for this source: the fixed map applies only to ``fixed`` (in
    ``FrameProcessor`` a fixed scale would win over any reference)."""
    if source == "fixed":
        if not config.fixed_scale > 0:
            raise ValueError(f"--scale-source fixed needs --fixed-scale > 0, got "
                             f"{config.fixed_scale:g}")
        return config
    return replace(config, fixed_scale=0.0, fixed_shift=0.0)


def check_source(source: str, *, bag: Path, indexes: dict[str, TopicIndex],
                 topics: EvalTopics, options: EvalOptions, plans: list[FramePlan],
                 transforms: TransformBuffer) -> None:
    """Refuse, before a model loads, a source the bag cannot give a single frame."""
    image = indexes["image"]
    if source == "lidar" and "lidar" not in indexes:
        raise BagError(f"{bag}: --scale-source lidar needs --lidar-topic (a PointCloud2 "
                       "topic of the bag)")
    if source == "depth":
        _check_sensor_depth(bag, indexes, topics, options, plans, transforms)
    if source == "ground":
        frame = options.ground_frame
        if not any(transforms.lookup(image.frame_id, frame, p.image.stamp_ns) for p in plans):
            known = ", ".join(transforms.frames) or "none"
            raise BagError(
                f"{bag}: --scale-source ground: ground frame '{frame}' is not connected to "
                f"the camera frame '{image.frame_id}' on {topics.tf_static} or {topics.tf} at "
                f"any image stamp (frames there: {known}); pass --ground-frame with the frame "
                "whose z = 0 plane is the floor, or record its transforms")


def _check_sensor_depth(bag: Path, indexes: dict[str, TopicIndex], topics: EvalTopics,
                        options: EvalOptions, plans: list[FramePlan],
                        transforms: TransformBuffer) -> None:
    image, depth = indexes["image"], indexes.get("sensor_depth")
    if depth is None:
        raise BagError(f"{bag}: --scale-source depth needs --sensor-depth-topic (a 16UC1 or "
                       "32FC1 depth image topic of the bag)")
    matched = [p for p in plans if p.sensor_depth is not None]
    if not matched:
        raise BagError(
            f"{bag}: no sensor depth on {depth.topic} within {options.camera_info_tolerance} s "
            f"of any {image.topic} stamp (images {image.span()}, sensor depth {depth.span()})")
    if strip_slash(depth.frame_id) == strip_slash(image.frame_id):
        return  # registered to the image: no camera_info or transform needed
    info = indexes.get("sensor_depth_info")
    if info is None or not any(p.sensor_depth_info for p in matched):
        found = (f"no {info.topic} within {options.camera_info_tolerance} s of any image "
                 "stamp" if info is not None else
                 f"the bag has no {sibling_info_topic(depth.topic)}")
        raise BagError(
            f"{bag}: sensor depth on {depth.topic} is in frame '{depth.frame_id}', not the "
            f"image's '{image.frame_id}': reprojecting it needs its camera_info, and {found}; "
            "pass --sensor-depth-info-topic")
    if not any(transforms.lookup(image.frame_id, depth.frame_id, p.image.stamp_ns)
               for p in matched):
        raise BagError(
            f"{bag}: no transform from sensor depth frame '{depth.frame_id}' to camera frame "
            f"'{image.frame_id}' on {topics.tf_static} or {topics.tf} at any image stamp "
            f"(frames there: {', '.join(transforms.frames) or 'none'})")


class FrameReferences:
    """The metric reference of each frame of a run, read from the bag for its source.

    ``message(role, ref)`` fetches a frame's partner (message, raw); ``lidar_tf`` is the
    LiDAR-to-camera transform (lidar source only).
    """

    def __init__(self, source: str, message: Callable[[str, MessageRef], tuple[Any, bytes]],
                 transforms: TransformBuffer, *, lidar_tf: Any = None,
                 ground_frame: str = "base_footprint", tolerance: float = 0.05) -> None:
        self.source, self.message, self.transforms = source, message, transforms
        self.lidar_tf, self.ground_frame, self.tolerance = lidar_tf, ground_frame, tolerance

    def reference(self, plan: FramePlan, camera_frame: str
                  ) -> tuple[ScaleReference | None, str | None]:
        """(the frame's reference or None, why it has none when that needs saying)."""
        if self.source == "lidar":
            return self._lidar(plan), None
        if self.source == "depth":
            return self._sensor_depth(plan, camera_frame)
        if self.source == "ground":
            return self._ground(plan, camera_frame)
        return None, None

    def _lidar(self, plan: FramePlan) -> ScaleReference | None:
        """The matched cloud in the camera optical frame (None: no cloud or unreadable)."""
        if plan.lidar is None or self.lidar_tf is None:
            return None
        import numpy as np

        from e2e_depth_ros.core.geometry import transform_points
        from e2e_depth_ros.core.scale_sources import LidarPoints
        from e2e_depth_ros.ros.messages import pointcloud_to_xyz

        try:
            points = pointcloud_to_xyz(self.message("lidar", plan.lidar)[0])
        except E2EDepthError:
            return None  # the node warns and goes on without a fit; so does the filter
        tf = self.lidar_tf
        return LidarPoints(transform_points(points, tf.rotation, tf.translation)
                           .astype(np.float32))

    def _sensor_depth(self, plan: FramePlan, camera_frame: str
                      ) -> tuple[ScaleReference | None, str | None]:
        from e2e_depth_ros.core.scale_sources import SensorDepth
        from e2e_depth_ros.ros.messages import camera_from_info, depth_image_meters

        if plan.sensor_depth is None:
            return None, (f"no sensor depth within {self.tolerance} s of the image: no fit "
                          "(the scale filter holds)")
        try:
            msg = self.message("sensor_depth", plan.sensor_depth)[0]
            depth = depth_image_meters(msg)
        except E2EDepthError as err:
            return None, f"sensor depth not usable ({err}): no fit"
        frame = msg.header.frame_id
        if strip_slash(frame) == strip_slash(camera_frame):
            return SensorDepth(depth), None
        if plan.sensor_depth_info is None:
            return None, (f"no sensor depth camera_info within {self.tolerance} s of the "
                          "image: the depth cannot be reprojected, no fit")
        tf = self.transforms.lookup(camera_frame, frame, plan.image.stamp_ns)
        if tf is None:
            return None, (f"no transform {frame} -> {camera_frame} at the image's stamp: "
                          "no fit")
        try:
            sensor = camera_from_info(self.message("sensor_depth_info",
                                                   plan.sensor_depth_info)[0])
            if (sensor.width, sensor.height) != (depth.shape[1], depth.shape[0]):
                return None, (f"sensor depth is {depth.shape[1]}x{depth.shape[0]} but its "
                              f"camera_info {sensor.width}x{sensor.height}: no fit")
            return SensorDepth.reprojected(depth, sensor, tf.rotation, tf.translation), None
        except E2EDepthError as err:
            return None, f"sensor depth camera_info not usable ({err}): no fit"

    def _ground(self, plan: FramePlan, camera_frame: str
                ) -> tuple[ScaleReference | None, str | None]:
        from e2e_depth_ros.core.scale_sources import GroundPlane

        tf = self.transforms.lookup(camera_frame, self.ground_frame, plan.image.stamp_ns)
        if tf is None:
            return None, (f"no transform {self.ground_frame} -> {camera_frame} at the "
                          "image's stamp: no floor, no fit (the scale filter holds)")
        return GroundPlane.from_transform(tf.rotation, tf.translation), None

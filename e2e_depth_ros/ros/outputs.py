"""The node's outputs as one table: topic, type, enabling parameter, what it needs, its builder.

The node's publishers, its ``Needs``, the evaluation's output bag, the demo's recording and
the tests all read ``OUTPUTS``, so adding an output is one entry here plus its builder.
Builders take the message classes as a mapping from ROS 2 type names (``"sensor_msgs/msg/
Image"``) to classes: ``rclpy_types()`` for the node, a rosbags typestore's ``types`` for
bags. No ROS import happens here (docs/ros_interface.md lists the topics).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:  # nothing but the standard library at import: --help stays instant
    import numpy as np

    from e2e_depth_ros.core.processing import FrameResult, Needs

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD = "sensor_msgs/msg/PointCloud2"
POINTFIELD = "sensor_msgs/msg/PointField"
NEEDS = ("relative", "normals", "metric", "points")  # the computed fields of ``Needs``

Types = Mapping[str, type]
# (message classes, input header, matched CameraInfo or None, frame result) -> msg or None
Builder = Callable[[Types, Any, Any, "FrameResult"], Any]


@dataclass(frozen=True)
class Output:
    """One published topic of the node."""

    key: str  # short name used in code and diagnostics
    topic: str  # relative to the node's namespace or the camera's prefix
    msgtype: str  # ROS 2 type name
    enable: str  # bool parameter that switches it on
    needs: str  # the ``Needs`` field it requires computed: one of NEEDS
    build: Builder
    description: str  # of the enabling parameter
    default: bool = True  # of the enabling parameter
    recorded: bool = True  # the evaluation's output bag and the demo record it (not the vis)
    paired_with: str = ""  # the node publishes it only when this output's message exists too


def _image(field: str, encoding: str, convert: Callable[[np.ndarray], np.ndarray] | None = None,
           picture: str = "") -> Builder:
    """A builder of one Image from ``result.<field>``, through ``convert`` when given.

    ``picture``: the output's key, whose converted array ``result.pictures`` may already hold
    (drawn on the model's device, ``device_finish``).
    """
    def build(types: Types, header: Any, info: Any, result: FrameResult) -> Any:
        from e2e_depth_ros.ros import messages

        drawn = result.pictures.get(picture) if picture else None
        if drawn is not None:
            return messages.build_image(types[IMAGE], header, drawn, encoding)
        array = getattr(result, field)
        if array is None:
            return None
        return messages.build_image(types[IMAGE], header,
                                    convert(array) if convert else array, encoding)
    return build


def _depth_info(types: Types, header: Any, info: Any, result: FrameResult) -> Any:
    """The CameraInfo of depth/image: the input's, rescaled to the depth image's size."""
    from e2e_depth_ros.ros import messages

    if result.metric is None or info is None:
        return None
    height, width = result.metric.shape
    return messages.scaled_camera_info(info, width, height, header=header)


def _points(types: Types, header: Any, info: Any, result: FrameResult) -> Any:
    from e2e_depth_ros.ros import messages

    if result.points is None:
        return None
    return messages.build_pointcloud(types[POINTCLOUD], types[POINTFIELD], header,
                                     result.points, rgb=result.points_rgb,
                                     normals=result.points_normals)


def _colorize_depth(relative: np.ndarray) -> np.ndarray:
    from e2e_depth_ros.core.visualize import colorize_depth

    return colorize_depth(relative)


def _millimetres(metric: np.ndarray) -> np.ndarray:
    """Metric depth as uint16 millimetres (REP 118 16UC1): 0 where invalid or > 65.535 m."""
    import numpy as np

    mm = metric * 1000.0  # in metric's own precision, as before
    np.rint(mm, out=mm)
    mm[mm > 65535] = 0  # too far (and +inf): usually no pixel, so a cheap masked write
    np.fmax(mm, 0.0, out=mm)  # NaN, -inf and what is not above 0 -> 0, in one pass
    return mm.astype(np.uint16)


def _normals_rgb8(normals: np.ndarray) -> np.ndarray:
    from e2e_depth_ros.core.visualize import normals_to_rgb8

    return normals_to_rgb8(normals)


OUTPUTS: tuple[Output, ...] = (
    Output("relative", "depth/relative", IMAGE, "publish_relative", "relative",
           _image("relative", "32FC1"),
           "Publish depth/relative (affine-invariant, [0, 1])"),
    Output("depth", "depth/image", IMAGE, "publish_depth", "metric",
           _image("metric", "32FC1"),
           "Publish metric depth/image + depth/camera_info", paired_with="depth_info"),
    Output("depth_info", "depth/camera_info", CAMERA_INFO, "publish_depth", "metric",
           _depth_info, "Publish metric depth/image + depth/camera_info",
           paired_with="depth"),
    Output("depth_mm", "depth/image_mm", IMAGE, "publish_depth_mm", "metric",
           _image("metric", "16UC1", _millimetres, "depth_mm"),
           "Publish depth/image_mm (16UC1 millimetres, 0 = invalid) for consumers that "
           "take depth_image_proc's integer format", default=False, recorded=False),
    Output("depth_vis", "depth/image_vis", IMAGE, "publish_depth_vis", "relative",
           _image("relative", "bgr8", _colorize_depth, "depth_vis"),
           "Publish depth/image_vis (bgr8)", recorded=False),
    Output("normals", "normals/image", IMAGE, "publish_normals", "normals",
           _image("normals", "32FC3"),
           "Publish normals/image (32FC3)"),
    Output("normals_vis", "normals/image_vis", IMAGE, "publish_normals_vis", "normals",
           _image("normals", "rgb8", _normals_rgb8, "normals_vis"),
           "Publish normals/image_vis (rgb8)", recorded=False),
    Output("points", "points", POINTCLOUD, "publish_points", "points", _points,
           "Publish the organized point cloud `points`"),
)
PICTURES = ("depth_vis", "normals_vis", "depth_mm")  # drawn on the device on the GPU path
BY_KEY: dict[str, Output] = {output.key: output for output in OUTPUTS}
RECORDED: tuple[Output, ...] = tuple(o for o in OUTPUTS if o.recorded)
assert all(o.needs in NEEDS for o in OUTPUTS), "an output needs an unknown Needs field"


def enable_parameters() -> dict[str, tuple[bool, str]]:
    """Each enabling parameter once, in table order: name -> (default, description)."""
    found: dict[str, tuple[bool, str]] = {}
    for output in OUTPUTS:
        found.setdefault(output.enable, (output.default, output.description))
    return found


def needs_for(wanted: Iterable[Output], *, points_rgb: bool = True,
              points_normals: bool = False) -> Needs:
    """What must be computed so that the ``wanted`` outputs can be built."""
    from e2e_depth_ros.core.processing import Needs

    wanted = list(wanted)
    fields = {output.needs for output in wanted}
    return Needs(**{name: name in fields for name in NEEDS}, points_rgb=points_rgb,
                 points_normals=points_normals,
                 pictures=tuple(o.key for o in wanted if o.key in PICTURES))


def build_outgoing(wanted: Iterable[Output], types: Types, header: Any, info: Any,
                   result: FrameResult) -> tuple[list[tuple[str, Any]], list[str]]:
    """The (key, message) pairs to publish for one frame, and why any wanted one is held back.

    An output with no message (no metric depth without a scale) is skipped; a paired one
    goes out only with its partner: depth_image_proc and RTAB-Map need depth/image and
    depth/camera_info of one stamp, never one alone.
    """
    built = {o.key: o.build(types, header, info, result) for o in wanted}
    outgoing, held = [], []
    for output in wanted:
        msg = built[output.key]
        if msg is None:
            continue
        if output.paired_with:
            partner = BY_KEY[output.paired_with]
            if partner.key not in built:
                built[partner.key] = partner.build(types, header, info, result)
            if built[partner.key] is None:
                held.append(f"no usable camera_info for this stamp: {output.topic} is not "
                            f"published without its {partner.topic}")
                continue
        outgoing.append((output.key, msg))
    return outgoing, held


def topic(output: Output, prefix: str = "") -> str:
    """The output's topic under a camera prefix ("" keeps the node-relative name)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{output.topic}" if prefix else output.topic


class _RclpyTypes(Mapping[str, type]):
    """ROS 2 type name -> rclpy message class, imported on first use."""

    def __init__(self) -> None:
        self._cache: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        if name not in self._cache:
            package, kind, cls = name.split("/")
            try:
                self._cache[name] = getattr(importlib.import_module(f"{package}.{kind}"), cls)
            except (ImportError, AttributeError) as err:
                raise KeyError(name) from err
        return self._cache[name]

    def __iter__(self):
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)


def rclpy_types() -> Types:
    """Message classes of the installed ROS 2 Python packages, by type name."""
    return _RclpyTypes()

"""The node's parameters: one table (default, type, description, range, read-only), their
checks, and the ``--help`` text, so the node, the launch file's tests and the docs read one
source. Declaring them needs a node; judging them does not.
"""

from __future__ import annotations

import math
from dataclasses import fields

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from e2e_depth_ros.core import input_checks
from e2e_depth_ros.core.processing import ProcessingConfig, fixed_map_conflict
from e2e_depth_ros.core.scale_sources import SOURCES
from e2e_depth_ros.ros.multicam import camera_topic, validate_cameras
from e2e_depth_ros.ros.odometry import BODY_TO_OPTICAL_XYZW
from e2e_depth_ros.ros.outputs import OUTPUTS, enable_parameters
from e2e_depth_ros.ros.qos import MODES as INPUT_QOS_MODES

NODE_NAME = "e2e_depth_node"

_D, _I, _S, _B = (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER,
                  ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_BOOL)
_DA = ParameterType.PARAMETER_DOUBLE_ARRAY
# name: (default, type, description, range or None, read_only)
PARAMETERS = {
    "depth_model": ("GonzaloMG/marigold-e2e-ft-depth", _S,
                    "Depth checkpoint: hub id or local folder; empty or none disables depth",
                    None, True),
    "normals_model": ("GonzaloMG/marigold-e2e-ft-normals", _S,
                      "Normals checkpoint: hub id or local folder; empty or none disables "
                      "normals", None, True),
    "normals_convention": ("e2e_ft", _S,
                           "Frame of the normals model's output: e2e_ft or marigold", None, True),
    "device": ("auto", _S, "auto, cpu, cuda or cuda:N", None, True),
    "dtype": ("auto", _S, "Older name of precision (float32, float16, bfloat16 or auto); "
              "leave auto and set precision", None, True),
    "backend": ("torch", _S, "Inference backend: torch, openvino (Intel CPUs/GPUs; an export "
                "folder or a checkpoint converted once), onnxruntime (TensorRT, CUDA, CPU) or "
                "triton (a server running e2e-depth serve, at triton_url)", None, True),
    "triton_url": ("grpc://127.0.0.1:8001", _S, "backend triton: the server, grpc://HOST:PORT "
                   "or http://HOST:PORT; depth_model/normals_model none still disable an "
                   "output", None, True),
    "triton_timeout": (2.0, _D, "backend triton: most seconds one request may take",
                       (0.01, 600.0), True),
    "precision": ("auto", _S, "auto (fp16 on GPUs, fp32 on CPUs), fp32, fp16 or bf16 "
                  "(openvino on CPUs with bf16 support)", None, True),
    "compile": (False, _B, "torch.compile the UNet and VAE (GPU: ~2x faster after warm-up)",
                None, True),
    "use_compressed": (False, _B, "Subscribe to image/compressed instead of image", None, True),
    "input_qos": ("auto", _S, "Reliability of the image, camera_info and LiDAR subscriptions: "
                  "auto (match the publishers), reliable, best_effort or sensor_data", None,
                  False),
    "processing_resolution": (768, _I, "Longer image side the model runs at: 0 (native) or "
                              f"{input_checks.MIN_PROCESSING_RESOLUTION}.."
                              f"{input_checks.MAX_PROCESSING_RESOLUTION}",
                              (0, input_checks.MAX_PROCESSING_RESOLUTION), False),
    "max_input_pixels": (input_checks.DEFAULT_MAX_INPUT_PIXELS, _I, "Images with more pixels "
                         "(width x height, read from the header before decoding) are refused",
                         (64, 1 << 30), False),
    **{name: (default, _B, description, None, False)  # publish_*: one per output kind
       for name, (default, description) in enable_parameters().items()},
    "max_batch": (0, _I, "Most cameras whose newest frames run through the model together; "
                  "cameras left out go first next time. 0 = auto: 4 on a GPU, 1 on a CPU "
                  "(where a batch costs more per frame)", (0, 64), False),
    "points_decimation": (1, _I, "Keep every Nth row and column in the cloud", (1, 16), False),
    "points_color": (True, _B, "Add the packed rgb field to the cloud", None, False),
    "points_normals": (False, _B, "Add normal_x/y/z fields to the cloud (runs the normals "
                       "model)", None, False),
    "min_depth": (0.0, _D, "Metric depth below this is NaN (m); 0 = no limit", (0.0, 1000.0),
                  False),
    "max_depth": (0.0, _D, "Metric depth above this is NaN (m); 0 = no limit", (0.0, 1000.0),
                  False),
    "fixed_scale": (0.0, _D, "> 0: metric = fixed_scale * relative + fixed_shift (no LiDAR)",
                    (0.0, 10000.0), False),
    "fixed_shift": (0.0, _D, "Shift of the fixed metric map (m)", (-10000.0, 10000.0), False),
    "camera_info_tolerance": (0.05, _D, "Max stamp gap image-camera_info (s) when not exact",
                              (0.0, 10.0), False),
    "camera_info_reuse": (1.0, _D, "An image with no camera_info within the tolerance takes "
                          "the nearest one up to this far (s) while the calibration stays the "
                          "same; 0 = never", (0.0, 60.0), False),
    "scale_source": ("auto", _S, "What gives depth its metric scale: auto (fixed_scale when "
                     "set, else LiDAR), lidar, depth (sensor_depth/image of an RGB-D or stereo "
                     "camera), ground (the floor: ground_frame from TF), fixed (fixed_scale) or "
                     "none", None, False),
    "sensor_depth_tolerance": (0.05, _D, "Max stamp gap image-sensor depth (s)", (0.0, 10.0),
                               False),
    "ground_frame": ("base_footprint", _S, "Frame whose z = 0 plane is the floor, z up (REP "
                     "105): scale_source ground reads the camera's height and tilt from TF",
                     None, False),
    "ground_extrinsic_translation": ([0.0, 0.0, 0.0], _DA, "Without tf2: ground_frame's origin "
                                     "in the camera optical frame (m), p_cam = R p_ground + t; "
                                     "all 0 = not given", None, False),
    "ground_extrinsic_rotation": ([0.0, 0.0, 0.0, 1.0], _DA, "Quaternion x, y, z, w of R "
                                  "(ground frame to camera optical frame)", None, False),
    "temporal_alignment": (False, _B, "Align each frame's depth to the previous one moved by "
                           "odometry: depth/relative stays in the first frame's affine frame "
                           "(steady over time) and metric depth is carried over gaps of its "
                           "source of up to temporal_max_gap", None, False),
    "temporal_max_gap": (2.0, _D, "With temporal_alignment: longest time (s) a frame stays "
                         "metric without a metric fit of its own", (0.0, 60.0), False),
    "relative_per_frame": (False, _B, "With temporal_alignment: keep depth/relative in each "
                           "frame's own [0, 1] (as without it) instead of the sequence's frame",
                           None, False),
    "odom_frame": ("odom", _S, "With temporal_alignment: the odometry frame; the camera's "
                   "motion between frames is read from TF (odom_frame -> image frame)", None,
                   False),
    "base_extrinsic_translation": ([0.0, 0.0, 0.0], _DA, "Without tf2: the odom topic's child "
                                   "frame origin in the camera optical frame (m), p_cam = R "
                                   "p_base + t", None, False),
    "base_extrinsic_rotation": (list(BODY_TO_OPTICAL_XYZW), _DA, "Quaternion x, y, z, w of R "
                                "(odom child frame to camera optical frame); default: a "
                                "camera looking along the base's x axis (REP 103)", None,
                                False),
    "lidar_tolerance": (0.1, _D, "Max stamp gap image-LiDAR cloud (s)", (0.0, 10.0), False),
    "lidar_extrinsic_frame": ("", _S, "LiDAR frame the static extrinsic below applies to; "
                              "empty = only tf2", None, False),
    "lidar_extrinsic_translation": ([0.0, 0.0, 0.0], _DA, "LiDAR origin in the camera optical "
                                    "frame (m): p_cam = R p_lidar + t", None, False),
    "lidar_extrinsic_rotation": ([0.0, 0.0, 0.0, 1.0], _DA, "Quaternion x, y, z, w of R "
                                 "(LiDAR frame to camera optical frame)", None, False),
    "lidar_min_range": (0.1, _D, "LiDAR points closer than this along z are ignored (m)",
                        (0.0, 100.0), False),
    "lidar_min_points": (10, _I, "Fewest matched LiDAR pixels for a scale fit", (2, 100000),
                         False),
    "lidar_min_inlier_ratio": (0.3, _D, "Refuse fits with a lower inlier ratio", (0.0, 1.0),
                               False),
    "lidar_min_depth_span": (0.05, _D, "Refuse fits whose inliers' LiDAR depth spans less "
                             "than this fraction (scale unobservable, e.g. one wall)",
                             (0.0, 10.0), False),
    "lidar_inlier_threshold": (0.05, _D, "Inlier if |fit - lidar| <= this * lidar depth",
                               (0.001, 1.0), False),
    "scale_smoothing": (0.3, _D, "EMA weight of a new scale fit", (0.01, 1.0), False),
    "scale_max_jump": (0.5, _D, "Relative scale change rejected as a jump", (0.01, 10.0),
                       False),
    "scale_hold_timeout": (2.0, _D, "Keep the last good fit this long (s), then stop metric "
                           "outputs", (0.0, 3600.0), False),
}
CONFIG_KEYS = {f.name for f in fields(ProcessingConfig)}
CAMERAS_DESCRIPTION = ("Camera names, e.g. [front, left, right]: each camera's inputs and "
                       "outputs are <name>/<topic> and one model serves all; empty = one "
                       "camera on image, camera_info, points_lidar")
# Per camera, read-only parameter <camera>.<key>: the input topic (relative name, help text).
CAMERA_INPUTS = {
    "image_topic": ("image", "Image topic (with use_compressed: <topic>/compressed)"),
    "camera_info_topic": ("camera_info", "CameraInfo topic"),
    "lidar_topic": ("points_lidar", "LiDAR PointCloud2 topic"),
    "sensor_depth_topic": ("sensor_depth/image", "Depth image of an RGB-D or stereo camera "
                           "(16UC1 mm or 32FC1 m; its camera_info: the sibling camera_info)"),
}


def descriptor(name: str, kind: int, description: str, bounds, read_only: bool):
    desc = ParameterDescriptor(name=name, type=kind, description=description,
                               read_only=read_only)
    if bounds and kind == _D:
        desc.floating_point_range = [FloatingPointRange(from_value=float(bounds[0]),
                                                        to_value=float(bounds[1]))]
    elif bounds and kind == _I:
        desc.integer_range = [IntegerRange(from_value=bounds[0], to_value=bounds[1], step=1)]
    return desc


def validate_parameter(name: str, value) -> str | None:
    """Why a value is refused (ranges are checked by rclpy), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if name == "processing_resolution":
        return input_checks.processing_resolution_problem(value)
    if name.endswith("_extrinsic_translation") and (len(value) != 3 or
                                                    not all(map(math.isfinite, value))):
        return f"{name} needs 3 finite numbers [x, y, z]"
    if name == "input_qos" and value not in INPUT_QOS_MODES:
        return f"input_qos must be one of {', '.join(INPUT_QOS_MODES)}, got {value!r}"
    if name == "scale_source" and value not in SOURCES:
        return f"scale_source must be one of {', '.join(SOURCES)}, got {value!r}"
    if name.endswith("_extrinsic_rotation"):
        if len(value) != 4 or not all(map(math.isfinite, value)) or not any(value):
            return f"{name} needs a non-zero quaternion [x, y, z, w]"
    return None


def validate_parameters(params: dict) -> str | None:
    """Why a whole parameter set is refused (each value, then pairs that conflict), or None.

    Run-time changes are judged together with the values already set, so a conflict made
    by two separate requests is caught by the second.
    """
    for name, value in params.items():
        reason = validate_parameter(name, value)
        if reason:
            return reason
    if params.get("scale_source") == "fixed" and not params.get("fixed_scale", 0.0) > 0:
        return "scale_source fixed needs fixed_scale > 0 (metric = fixed_scale * relative + " \
            "fixed_shift)"
    low, high = params.get("min_depth", 0.0), params.get("max_depth", 0.0)
    if low > 0 and high > 0 and low >= high:
        return (f"min_depth {low:g} must be below max_depth {high:g} (0 = no limit): "
                "otherwise every metric pixel is NaN")
    return fixed_map_conflict(ProcessingConfig(
        **{k: v for k, v in params.items() if k in CONFIG_KEYS}))


def usage() -> str:
    """The node's --help text: how to run it and every parameter with its default."""
    lines = ["usage: python -m e2e_depth_ros.node [--help] [--ros-args -p NAME:=VALUE ...]",
             "", "E2E-FT depth/normals node: subscribes to image (or image/compressed), "
             "camera_info and points_lidar;",
             f"publishes {', '.join(output.topic for output in OUTPUTS)} and /diagnostics.",
             "With cameras:=[a, b, ...] every topic above is per camera: a/image, a/depth/image,"
             " ...", "", "parameters (read-only ones only at start-up):",
             "  cameras (default [], read-only)", f"      {CAMERAS_DESCRIPTION}",
             "  <camera>.image_topic, <camera>.camera_info_topic, <camera>.lidar_topic, "
             "<camera>.sensor_depth_topic (default '', read-only)", "      a camera's input "
             "topics; empty = <camera>/image, <camera>/camera_info, <camera>/points_lidar, "
             "<camera>/sensor_depth/image",
             "  <camera>.scale_source (default '', read-only)",
             "      this camera's scale_source; empty = the node's"]
    for name, (default, _kind, description, bounds, read_only) in PARAMETERS.items():
        extra = f", {bounds[0]}..{bounds[1]}" if bounds else ""
        extra += ", read-only" if read_only else ""
        lines.append(f"  {name} (default {default!r}{extra})")
        lines.append(f"      {description}")
    return "\n".join(lines)


def processing_config(params: dict) -> ProcessingConfig:
    """The frame pipeline's settings among the node's parameters."""
    return ProcessingConfig(**{k: v for k, v in params.items() if k in CONFIG_KEYS})


def declare_parameters(node) -> dict:
    """Declare every parameter of the table on ``node``; their values, judged together.

    Raises ValueError with the reason when the set is refused (main turns it into one line).
    """
    for name, (default, kind, description, bounds, read_only) in PARAMETERS.items():
        node.declare_parameter(name, default,
                               descriptor(name, kind, description, bounds, read_only))
    params = {name: node.get_parameter(name).value for name in PARAMETERS}
    reason = validate_parameters(params)
    if reason:
        raise ValueError(reason)
    return params


def declare_cameras(node) -> dict[str, dict[str, str]]:
    """The ``cameras`` list and, per camera, its input topics (read-only parameters).

    Returns {camera: {relative input: topic}} in the given order ({} without cameras).
    ``cameras`` is declared without a default: rclpy types an empty list default as a byte
    array, which would refuse ``cameras:=[front, left]``.
    """
    from rclpy.parameter import Parameter

    value = node.declare_parameter(
        "cameras", Parameter.Type.STRING_ARRAY,
        ParameterDescriptor(name="cameras", type=ParameterType.PARAMETER_STRING_ARRAY,
                            description=CAMERAS_DESCRIPTION, read_only=True)).value
    cameras = list(value or [])
    reason = validate_cameras(cameras)
    if reason:
        raise ValueError(f"cameras: {reason}")
    inputs: dict[str, dict[str, str]] = {}
    for camera in cameras:
        topics = {}
        for key, (relative, description) in CAMERA_INPUTS.items():
            name = f"{camera}.{key}"
            topic = node.declare_parameter(name, "", ParameterDescriptor(
                name=name, type=_S, read_only=True,
                description=f"{description} of camera {camera}; empty = "
                            f"{camera_topic(camera, relative)}")).value
            topics[relative] = topic or camera_topic(camera, relative)
        inputs[camera] = topics
    return inputs


def declare_camera_sources(node, cameras) -> dict[str, str]:
    """Per camera, ``<camera>.scale_source`` (read-only; empty = the node's scale_source)."""
    sources = {}
    for camera in cameras:
        name = f"{camera}.scale_source"
        value = node.declare_parameter(name, "", ParameterDescriptor(
            name=name, type=_S, read_only=True, description=f"scale_source of camera "
            f"{camera}: {', '.join(SOURCES)}; empty = the node's")).value
        if value and value not in SOURCES:
            raise ValueError(f"{name} must be one of {', '.join(SOURCES)} or empty, got "
                             f"{value!r}")
        sources[camera] = value
    return sources

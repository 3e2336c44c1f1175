"""The ROS 2 node: camera (+ LiDAR) in; depth, normals and point clouds out.

The contract: docs/ros_interface.md and docs/lidar_scale.md.

Wiring only. Callbacks store the newest message and return; one worker thread runs the
model on the newest frame and drops the rest; the math lives in ``processing`` and the
conversions in ``messages``. Every output carries the input image's header unchanged.
With ``cameras:=[a, b, ...]`` one node serves several cameras (topics ``a/image``, ...,
``a/depth/image``, ...): one model, the newest frame of each camera run as one batch
(``multicam`` schedules the rounds), everything else per camera.

    ros2 run e2e_depth_ros depth_node --ros-args -p depth_model:=/path -r image:=/cam/image
    python -m e2e_depth_ros.ros.node --ros-args ...
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from e2e_depth_ros.core import input_checks

from e2e_depth_ros.ros import messages
from e2e_depth_ros.core.depth_model import DepthModel
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.core.geometry import quaternion_to_matrix, transform_points
from e2e_depth_ros.ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.model.model_args import model_or_none, task_mismatch
from e2e_depth_ros.ros.outputs import (BY_KEY, OUTPUTS, Output, enable_parameters, needs_for,
                                       rclpy_types)
from e2e_depth_ros.ros.multicam import CameraSlots, camera_topic, validate_cameras
from e2e_depth_ros.core.processing import (Frame, FrameProcessor, ProcessingConfig,
                                           fixed_map_conflict)
from e2e_depth_ros.ros.qos import MODES as INPUT_QOS_MODES
from e2e_depth_ros.ros.stream import Job, Stats, Stream
from e2e_depth_ros.ros.sync import stamp_to_ns

try:  # tf2 is used when a ROS install provides it; static extrinsics otherwise
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None

NODE_NAME = "e2e_depth_node"
THROTTLE_S = 5.0  # per kind of problem
NAME_CHECK_DELAY_S = 1.0  # discovery time before looking for a namesake on the graph
AUTO_GPU_BATCH = 4  # max_batch 0 off the CPU; on a CPU a batch costs more per frame
INFO_WAIT_S = 0.05  # longest wait for a camera_info published with its image but not yet here
# Inputs: reliability matched to the publishers (input_qos); keep last 1 image (newest frame
# only), 5 camera_info / LiDAR messages (paired by stamp).
IMAGE_DEPTH, SENSOR_DEPTH = 1, 5
INPUT_LOSS_WARN = 0.05  # warn when the stamps say more than this fraction never arrived
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                        reliability=ReliabilityPolicy.RELIABLE)

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
                "folder or a checkpoint converted once) or onnxruntime (TensorRT, CUDA, CPU)",
                None, True),
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
_CONFIG_KEYS = {f.name for f in fields(ProcessingConfig)}
CAMERAS_DESCRIPTION = ("Camera names, e.g. [front, left, right]: each camera's inputs and "
                       "outputs are <name>/<topic> and one model serves all; empty = one "
                       "camera on image, camera_info, points_lidar")
# Per camera, read-only parameter <camera>.<key>: the input topic (relative name, help text).
CAMERA_INPUTS = {
    "image_topic": ("image", "Image topic (with use_compressed: <topic>/compressed)"),
    "camera_info_topic": ("camera_info", "CameraInfo topic"),
    "lidar_topic": ("points_lidar", "LiDAR PointCloud2 topic"),
}


def _descriptor(name: str, kind: int, description: str, bounds, read_only: bool):
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
    if name == "lidar_extrinsic_translation" and (len(value) != 3 or
                                                  not all(map(math.isfinite, value))):
        return "lidar_extrinsic_translation needs 3 finite numbers [x, y, z]"
    if name == "input_qos" and value not in INPUT_QOS_MODES:
        return f"input_qos must be one of {', '.join(INPUT_QOS_MODES)}, got {value!r}"
    if name == "lidar_extrinsic_rotation":
        if len(value) != 4 or not all(map(math.isfinite, value)) or not any(value):
            return "lidar_extrinsic_rotation needs a non-zero quaternion [x, y, z, w]"
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
    low, high = params.get("min_depth", 0.0), params.get("max_depth", 0.0)
    if low > 0 and high > 0 and low >= high:
        return (f"min_depth {low:g} must be below max_depth {high:g} (0 = no limit): "
                "otherwise every metric pixel is NaN")
    return fixed_map_conflict(ProcessingConfig(
        **{k: v for k, v in params.items() if k in _CONFIG_KEYS}))


def usage() -> str:
    """The node's --help text: how to run it and every parameter with its default."""
    lines = ["usage: python -m e2e_depth_ros.ros.node [--help] [--ros-args -p NAME:=VALUE ...]",
             "", "E2E-FT depth/normals node: subscribes to image (or image/compressed), "
             "camera_info and points_lidar;",
             f"publishes {', '.join(output.topic for output in OUTPUTS)} and /diagnostics.",
             "With cameras:=[a, b, ...] every topic above is per camera: a/image, a/depth/image,"
             " ...", "", "parameters (read-only ones only at start-up):",
             "  cameras (default [], read-only)", f"      {CAMERAS_DESCRIPTION}",
             "  <camera>.image_topic, <camera>.camera_info_topic, <camera>.lidar_topic "
             "(default '', read-only)", "      a camera's input topics; empty = <camera>/image, "
             "<camera>/camera_info, <camera>/points_lidar"]
    for name, (default, _kind, description, bounds, read_only) in PARAMETERS.items():
        extra = f", {bounds[0]}..{bounds[1]}" if bounds else ""
        extra += ", read-only" if read_only else ""
        lines.append(f"  {name} (default {default!r}{extra})")
        lines.append(f"      {description}")
    return "\n".join(lines)


class DepthNode(Node):
    """E2E-FT depth/normals node. ``estimator`` may be injected (tests); else it is loaded."""

    def __init__(self, *, estimator: DepthModel | None = None, node_name: str = NODE_NAME,
                 **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, kind, description, bounds, read_only) in PARAMETERS.items():
            self.declare_parameter(name, default,
                                   _descriptor(name, kind, description, bounds, read_only))
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        reason = validate_parameters(self._params)
        if reason:
            raise ValueError(reason)
        cameras = self._declare_cameras()
        self.startup_warnings = self._check_model_names()
        for text in self.startup_warnings:
            self.get_logger().warning(text)
        if estimator is None:
            estimator = self._load_estimator()
        estimator.processing_resolution = self._params["processing_resolution"]
        self.processor = FrameProcessor(estimator, self._processing_config())
        self._closing = False
        self._throttle = input_checks.KindThrottle(THROTTLE_S)
        self._streams = {name: Stream(name) for name in cameras or [""]}
        self._slots: CameraSlots = CameraSlots(list(self._streams))
        self._tf_buffer = None
        if tf2_ros is not None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        self._types = rclpy_types()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for stream in self._streams.values():
            stream.pub = {output.key: self.create_publisher(
                self._types[output.msgtype], stream.topic(output.topic), OUTPUT_QOS)
                for output in OUTPUTS}
            stream.inputs = self._subscribe_inputs(stream)
        self.create_timer(1.0, self._recheck_inputs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        self._name_check = self.create_timer(NAME_CHECK_DELAY_S, self._check_name_unique)
        self._worker = threading.Thread(target=self._work, name="e2e_depth_worker",
                                        daemon=True)
        self._worker.start()
        est = self.processor.estimator
        names = est.model_names
        where = (est.describe() if hasattr(est, "describe") else f"{est.device} ({est.dtype})")
        self.get_logger().info(
            f"ready: depth={names.get('depth')} normals={names.get('normals')} on {where}"
            + (f" for cameras {', '.join(cameras)}" if cameras else ""))

    # -- set-up ----------------------------------------------------------------------------
    def _declare_cameras(self) -> list[str]:
        """The ``cameras`` list and, per camera, its input topic parameters (read-only).

        Declared without a default: rclpy types an empty list default as a byte array,
        which would refuse ``cameras:=[front, left]``.
        """
        value = self.declare_parameter(
            "cameras", Parameter.Type.STRING_ARRAY,
            ParameterDescriptor(name="cameras", type=ParameterType.PARAMETER_STRING_ARRAY,
                                description=CAMERAS_DESCRIPTION, read_only=True)).value
        cameras = list(value or [])
        reason = validate_cameras(cameras)
        if reason:
            raise ValueError(f"cameras: {reason}")
        self._input_topics: dict[str, dict[str, str]] = {}
        for camera in cameras:
            topics = {}
            for key, (relative, description) in CAMERA_INPUTS.items():
                name = f"{camera}.{key}"
                topic = self.declare_parameter(name, "", ParameterDescriptor(
                    name=name, type=_S, read_only=True,
                    description=f"{description} of camera {camera}; empty = "
                                f"{camera_topic(camera, relative)}")).value
                topics[relative] = topic or camera_topic(camera, relative)
            self._input_topics[camera] = topics
        return cameras

    def _subscribe_inputs(self, stream: Stream) -> dict[str, MatchedSubscription]:
        """One camera's image, camera_info and LiDAR with the reliability publishers offer.

        camera_info and LiDAR first: the executor serves ready subscriptions in creation
        order, so a frame's camera_info arriving with its image is stored before the image
        wakes the worker (else that frame has no camera_info: no cloud, no depth/image).
        """
        mode = self._params["input_qos"]
        topics = self._input_topics.get(stream.name, {})
        image = topics.get("image", "image")
        image = ((CompressedImage, f"{image}/compressed") if self._params["use_compressed"]
                 else (Image, image))

        def on_image(msg) -> None:
            stream.stats.received += 1
            stream.stats.health.input.add(time.monotonic())
            stream.stamp_rate.add(stamp_to_ns(msg.header.stamp))
            self._slots.put(stream.name, msg)

        return {  # creation order, kept by _recheck_inputs
            "camera_info": MatchedSubscription(
                self, CameraInfo, topics.get("camera_info", "camera_info"),
                lambda msg: stream.camera_infos.add(stamp_to_ns(msg.header.stamp), msg),
                mode=mode, depth=SENSOR_DEPTH),
            "lidar": MatchedSubscription(
                self, PointCloud2, topics.get("points_lidar", "points_lidar"),
                lambda msg: stream.clouds.add(stamp_to_ns(msg.header.stamp), msg),
                mode=mode, depth=SENSOR_DEPTH),
            "image": MatchedSubscription(self, *image, on_image, mode=mode,
                                         depth=IMAGE_DEPTH),
        }

    def _recheck_inputs(self) -> None:
        """Publishers come and go: follow their reliability (or a changed input_qos).

        When one of a camera's inputs must be re-subscribed, all of its inputs are, in
        their order, so camera_info and LiDAR stay ahead of the image in the executor.
        """
        for stream in self._streams.values():
            choices = {}
            for name, subscription in stream.inputs.items():
                subscription.mode = self._params["input_qos"]
                choices[name] = subscription.choose()
            recreate = any(stream.inputs[name].changes(choice)
                           for name, choice in choices.items())
            for name, subscription in stream.inputs.items():
                subscription.apply(choices[name], recreate=recreate)

    @property
    def cameras(self) -> list[str]:
        """The camera names ([] for the single-camera node)."""
        return [name for name in self._streams if name]

    @property
    def stats(self) -> Stats:
        """The first camera's counters (the only camera's on a single-camera node)."""
        return next(iter(self._streams.values())).stats

    @property
    def _pub(self) -> dict[str, Any]:
        """The first camera's publishers (the only camera's on a single-camera node)."""
        return next(iter(self._streams.values())).pub

    def stream(self, camera: str = "") -> Stream:
        return self._streams[camera]

    @property
    def _inputs(self) -> dict[str, MatchedSubscription]:
        """The first camera's input subscriptions."""
        return next(iter(self._streams.values())).inputs

    def _check_model_names(self) -> list[str]:
        """Warnings for a checkpoint whose files or name say it is the other task's, or say
        neither (model_args.task_mismatch)."""
        warnings = []
        for task in ("depth", "normals"):
            model = model_or_none(self._params[f"{task}_model"])
            text = model and task_mismatch(model, task)
            if text:
                warnings.append(text)
        return warnings

    def _check_name_unique(self) -> None:
        """Warn once if another node on the graph has this node's name (after discovery)."""
        self._name_check.cancel()
        me = (self.get_name(), self.get_namespace())
        try:
            count = self.get_node_names_and_namespaces().count(me)
        except Exception:  # noqa: BLE001 - the graph can go away during shutdown
            return
        if count > 1:
            self.get_logger().warning(
                f"{count} nodes are named {self.get_fully_qualified_name()}: each runs the "
                "model and publishes every frame, and parameter requests reach either; give "
                "each a unique name or namespace (-r __node:=NAME / -r __ns:=/NS)")
            for stream in self._streams.values():
                stream.stats.last_warning = "another node on the graph has this node's name"

    def _load_estimator(self) -> DepthModel:
        from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries

        quiet_model_libraries()  # no loading bars in a robot's log
        p = self._params
        self.get_logger().info(f"loading models: backend={p['backend']} device={p['device']} "
                               f"precision={p['precision']} dtype={p['dtype']}")
        estimator = Estimator(model_or_none(p["depth_model"]), model_or_none(p["normals_model"]),
                              device=p["device"], dtype=p["dtype"],
                              processing_resolution=p["processing_resolution"],
                              normals_convention=p["normals_convention"], compile=p["compile"],
                              backend=p["backend"], precision=p["precision"],
                              log=self.get_logger().info)
        estimator.warm_up()  # GPU/compiled/OpenVINO: no stall in the first frames after ready
        return estimator

    def _processing_config(self) -> ProcessingConfig:
        return ProcessingConfig(**{k: v for k, v in self._params.items() if k in _CONFIG_KEYS})

    def _on_set_parameters(self, params) -> SetParametersResult:
        merged = dict(self._params)
        merged.update({param.name: param.value for param in params if param.name in PARAMETERS})
        reason = validate_parameters(merged)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self._params = merged
        self.processor.reconfigure(self._processing_config())  # read at the next frame
        return SetParametersResult(successful=True)

    # -- worker: one round = the newest frame of up to max_batch cameras --------------------
    def _work(self) -> None:
        while not self._slots.closed:
            taken = self._slots.take_round(self._max_batch(), timeout=0.5)
            if taken:
                self._process_round(taken)

    def _max_batch(self) -> int:
        """max_batch, or for 0 what pays on the model's device: batches off the CPU only
        (torch "cuda:0", OpenVINO "GPU", ONNX Runtime "CUDA"/"Tensorrt" batch; "cpu" not)."""
        chosen = int(self._params["max_batch"])
        if chosen:
            return chosen
        est = self.processor.estimator
        device = str(getattr(est, "backend_device", est.device)).split(":")[0].lower()
        return 1 if device == "cpu" else AUTO_GPU_BATCH

    def _process_round(self, taken: list[tuple[str, Any]]) -> None:
        """Prepare each frame, run equal-size frames through the model together, publish.

        Each camera's failure is its own: a bad frame, a failed model call or a failed
        publish is counted for the cameras it concerns, and the rest proceed.
        """
        jobs = []
        for name, msg in taken:
            stream = self._streams[name]
            try:
                job = self._prepare(stream, msg)
            except Exception as err:  # noqa: BLE001 - one frame's failure must not stop us
                self._failed(stream, err)
                continue
            if job is not None:
                jobs.append(job)
        if not jobs:
            return
        resolution = self._params["processing_resolution"]
        if self.processor.estimator.processing_resolution != resolution:
            self.processor.estimator.processing_resolution = resolution
        for batch in self.processor.batches([job.frame for job in jobs]):
            members = [jobs[i] for i in batch]
            start = time.monotonic()
            try:
                predictions = self.processor.predict([job.frame for job in members])
            except Exception as err:  # noqa: BLE001 - the next round proceeds
                for job in members:
                    self._failed(job.stream, err)
                continue
            inference = time.monotonic() - start
            for job, prediction in zip(members, predictions):
                try:
                    self._attach_camera(job)
                    self._finish(job, prediction, inference, len(members))
                except Exception as err:  # noqa: BLE001 - the other cameras still publish
                    self._failed(job.stream, err)

    def _failed(self, stream: Stream, err: Exception) -> None:
        stats = stream.stats
        stats.failed += 1
        stats.health.last_failure = time.monotonic()
        stats.last_error = f"{type(err).__name__}: {err}"
        if not self._closing:
            self._log(stream, "error", "frame_failed", f"frame failed: {stats.last_error}")

    def _log(self, stream: Stream | None, level: str, kind: str, text: str) -> None:
        """Log ``text`` unless this camera logged this kind in the last THROTTLE_S."""
        key = f"{stream.name}/{kind}" if stream is not None else kind
        if self._throttle.allow(key, time.monotonic()):
            getattr(self.get_logger(), level)(stream.say(text) if stream is not None else text)

    def _warn(self, stream: Stream, kind: str, text: str) -> None:
        stream.stats.last_warning = text
        self._log(stream, "warning", kind, text)

    def _bad_input(self, stream: Stream, kind: str, text: str) -> None:
        """A frame refused for its input: counted, shown in diagnostics, logged per kind."""
        stream.stats.bad_input += 1
        stream.stats.last_bad_input = text
        self._warn(stream, kind, text)

    def _admit(self, stream: Stream, msg):
        """uint8 RGB of an image worth processing, or None (counted as bad input, warned).

        The size is judged from the header before decoding, so a small file that expands to
        gigabytes costs nothing.
        """
        p = self._params
        limits = dict(processing_resolution=p["processing_resolution"],
                      max_input_pixels=p["max_input_pixels"])
        compressed = isinstance(msg, CompressedImage)
        size = (input_checks.compressed_size(bytes(msg.data)) if compressed
                else (int(msg.width), int(msg.height)))
        if size is not None and all(size):
            problem = input_checks.frame_size_problem(*size, **limits)
            if problem:
                self._bad_input(stream, "image_size", f"dropping image: {problem}")
                return None
        try:
            rgb = messages.compressed_to_rgb(msg) if compressed else messages.image_to_rgb(msg)
        except E2EDepthError as err:
            self._bad_input(stream, "image_decode", f"dropping image: {err}")
            return None
        problem = input_checks.frame_size_problem(rgb.shape[1], rgb.shape[0], **limits)
        if problem:
            self._bad_input(stream, "image_size", f"dropping image: {problem}")
            return None
        return rgb

    def _stamp_ok(self, stream: Stream, stamp_ns: int) -> bool:
        verdict = stream.stamps.check(stamp_ns)
        if stream.stamps.unusable and "stamps" not in stream.said_once:
            stream.said_once.add("stamps")  # once: the camera will not get better by itself
            self.get_logger().error(stream.say(stream.stamps.unusable))
        if verdict == "repeat":
            self._bad_input(stream, "stamp_repeat", f"dropping image: stamp "
                            f"{stamp_ns * 1e-9:.3f} repeats the previous one")
            return False
        if verdict == "back":
            self._warn(stream, "stamp_back",
                       "image stamp went back (bag loop?): scale history reset")
            self.processor.reset_scale(stream.name)
        return True

    def _wanted(self, stream: Stream) -> list[Output]:
        """The outputs that are enabled and have a subscriber: only those are computed."""
        p = self._params
        return [o for o in OUTPUTS
                if p[o.enable] and stream.pub[o.key].get_subscription_count() > 0]

    def _prepare(self, stream: Stream, msg) -> Job | None:
        """Checks and the matching LiDAR cloud: the frame ready for the model, or None."""
        began = time.monotonic()
        header = msg.header
        stamp_ns = stamp_to_ns(header.stamp)
        rgb = self._admit(stream, msg)
        if rgb is None or not self._stamp_ok(stream, stamp_ns):
            return None
        stream.stats.last_stamp_at = (stamp_ns * 1e-9, began)
        wanted = self._wanted(stream)
        if not wanted:
            stream.stats.idle += 1  # nobody listens: no work
            return None
        p = self._params
        needs = needs_for(wanted, points_rgb=bool(p["points_color"]),
                          points_normals=bool(p["points_normals"]))
        lidar = None
        if needs.metric or needs.points:
            lidar = self._lidar_points(stream, stamp_ns, header.frame_id)
        frame = Frame(rgb, stamp_ns * 1e-9, None, lidar, needs, stream.name)
        return Job(stream, header, stamp_ns, frame, None, wanted, time.monotonic() - began)

    def _attach_camera(self, job: Job) -> None:
        """Match the frame's camera_info once the model has run, not before.

        The model needs only the image, and a camera_info sent with its image but delivered
        late (reliable camera_info repaired behind megabyte images) has had the whole
        inference time to arrive: on a CPU that is seconds, and nothing waits.
        """
        height, width = job.frame.rgb.shape[:2]
        info = self._matching_info(job.stream, job.stamp_ns)
        camera = self._camera(job.stream, info, width, height)
        # never republish a camera_info that does not describe this image
        job.info = info if camera is not None else None
        job.frame = replace(job.frame, camera=camera)

    def _finish(self, job: Job, prediction, inference: float, batch_size: int) -> None:
        """Scale, metric depth and cloud of one camera's frame, then its outputs."""
        began = time.monotonic()
        stream, stats = job.stream, job.stream.stats
        result = self.processor.finish(job.frame, prediction)
        for note in result.notes:
            self._warn(stream, "note: " + note.split(":")[0][:40], note)
        if self._closing:
            return
        self._publish(stream, job.header, job.info, result, job.wanted)
        stats.inference = inference
        stats.batch_size = batch_size
        stats.overhead = job.prepare_s + time.monotonic() - began
        stats.processed += 1
        stats.health.output.add(time.monotonic())
        now_ns = self.get_clock().now().nanoseconds
        stats.latency = (now_ns - job.stamp_ns) * 1e-9

    def _matching_info(self, stream: Stream, stamp_ns: int):
        """The camera_info of this image stamp, waiting briefly for one still in flight.

        Called after inference. A driver publishes camera_info and image together and the
        camera_info may still be in flight; a camera whose infos lag behind this stamp gets
        INFO_WAIT_S more to deliver it. A camera without camera_info, or one already past
        this stamp, does not; nor does one whose last wait was in vain (camera_info at a
        lower rate than images) until a camera_info matches again.
        """
        tolerance = int(self._params["camera_info_tolerance"] * 1e9)
        wait = INFO_WAIT_S if stream.info_in_step else 0.0
        info = stream.camera_infos.match(stamp_ns, tolerance, wait=wait)
        newest = stream.camera_infos.newest_stamp()
        if info is not None:
            stream.info_in_step = True
            return info
        if wait and newest is not None and newest < stamp_ns:
            stream.info_in_step = False  # waited in vain: not again until one matches
        return self._reused_info(stream, stamp_ns)

    def _reused_info(self, stream: Stream, stamp_ns: int):
        """The nearest camera_info within camera_info_reuse, if the calibration is unchanged.

        Calibration rarely changes, and a camera_info that is late or sent at a lower rate
        than the images still describes them; one that differs from the newest (a zoom, a
        re-calibration) is never reused. Counted in diagnostics.
        """
        window = int(self._params["camera_info_reuse"] * 1e9)
        info = stream.camera_infos.match(stamp_ns, window) if window > 0 else None
        newest = stream.camera_infos.newest()
        if info is None or newest is None or not messages.same_calibration(info, newest):
            return None
        stream.stats.camera_info_reused += 1
        return info

    def _camera(self, stream: Stream, info, width: int, height: int):
        """The pinhole camera of this image, or None (bad camera_info is counted and warned)."""
        if info is None:
            if stream.pub["points"].get_subscription_count() or stream.clouds.newest_stamp():
                self._warn(stream, "camera_info_missing",
                           "no camera_info matches the image stamp: no cloud or LiDAR fit")
            return None
        try:
            camera = messages.camera_from_info(info)
            problem = input_checks.camera_problem(camera, width, height)
        except E2EDepthError as err:
            problem = str(err)
        if problem:
            self._bad_input(stream, "camera_info", f"refusing camera_info: {problem}; no "
                            "cloud, LiDAR fit or depth/camera_info for this frame")
            return None
        return camera

    def _lidar_points(self, stream: Stream, stamp_ns: int,
                      camera_frame: str) -> np.ndarray | None:
        cloud = stream.clouds.match(stamp_ns, int(self._params["lidar_tolerance"] * 1e9))
        if cloud is None:
            return None
        try:
            points = messages.pointcloud_to_xyz(cloud)
        except E2EDepthError as err:
            self._warn(stream, "lidar_cloud", f"unusable LiDAR cloud: {err}")
            return None
        transform = self._lidar_transform(stream, cloud.header, camera_frame)
        if transform is None:
            return None
        rotation, translation = transform
        return transform_points(points, rotation, translation).astype(np.float32)

    def _lidar_transform(self, stream: Stream, cloud_header, camera_frame: str):
        """(R, t) taking LiDAR points into the camera optical frame, or None (warned)."""
        lidar_frame = cloud_header.frame_id
        if lidar_frame == camera_frame:
            return np.eye(3), np.zeros(3)
        if self._tf_buffer is not None:
            try:
                tf = self._tf_buffer.lookup_transform(
                    camera_frame, lidar_frame, rclpy.time.Time.from_msg(cloud_header.stamp))
                q, t = tf.transform.rotation, tf.transform.translation
                return quaternion_to_matrix(q.x, q.y, q.z, q.w), np.array([t.x, t.y, t.z])
            except Exception as err:  # noqa: BLE001 - tf2 raises several lookup errors
                tf_error = f"{type(err).__name__}: {err}"
        else:
            tf_error = "tf2 is not installed"
        p = self._params
        if p["lidar_extrinsic_frame"] and p["lidar_extrinsic_frame"] == lidar_frame:
            return (quaternion_to_matrix(*p["lidar_extrinsic_rotation"]),
                    np.asarray(p["lidar_extrinsic_translation"], dtype=np.float64))
        self._warn(stream, "lidar_transform",
                   f"no transform from LiDAR frame '{lidar_frame}' to camera frame "
                   f"'{camera_frame}' ({tf_error}; static extrinsic is for "
                   f"'{p['lidar_extrinsic_frame']}'): metric depth needs one")
        return None

    # -- publishing ---------------------------------------------------------------------
    def _publish(self, stream: Stream, header, info, result, wanted: list[Output]) -> None:
        built = {o.key: o.build(self._types, header, info, result) for o in wanted}
        for output in wanted:
            msg = built[output.key]
            if msg is None:  # e.g. no metric depth without a scale
                continue
            if output.paired_with:
                # depth/image and depth/camera_info go out as a pair or not at all:
                # depth_image_proc and RTAB-Map need both of one stamp.
                partner = BY_KEY[output.paired_with]
                if partner.key not in built:
                    built[partner.key] = partner.build(self._types, header, info, result)
                if built[partner.key] is None:
                    self._warn(stream, "unpaired_output",
                               f"no usable camera_info for this stamp: {output.topic} is "
                               f"not published without its {partner.topic}")
                    continue
            stream.pub[output.key].publish(msg)

    # -- diagnostics: one status per camera ----------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Timer callback: never lets an error escape (it would stop the executor)."""
        try:
            now = time.monotonic()
            array = DiagnosticArray(status=[self._diagnostic_status(stream, now)
                                            for stream in self._streams.values()])
            array.header.stamp = self.get_clock().now().to_msg()
            self._diagnostics.publish(array)
        except Exception as err:  # noqa: BLE001 - diagnostics must never kill the node
            if not self._closing:
                self._log(None, "error", "diagnostics",
                          f"diagnostics failed: {type(err).__name__}: {err}")

    def diagnostic_name(self, camera: str = "") -> str:
        """The DiagnosticStatus name of one camera ("<node>: depth" without cameras)."""
        node = self.get_fully_qualified_name()
        return f"{node}: {camera} depth" if camera else f"{node}: depth"

    def _metric_wanted(self, stream: Stream) -> bool:
        p, pub = self._params, stream.pub
        return bool(p["publish_depth"]) and (pub["depth"].get_subscription_count() > 0
                                             or pub["depth_info"].get_subscription_count() > 0) \
            or bool(p["publish_points"]) and pub["points"].get_subscription_count() > 0

    def _scale_status(self, stream: Stream, now: float):
        """(scale state, status text, level), judged on the clock, not on the last frame."""
        stamp = stream.stats.clock_stamp(now)
        scale = self.processor.scale_state(stamp if stamp is not None
                                           else self.get_clock().now().nanoseconds * 1e-9,
                                           stream.name)
        cfg = self.processor.config
        if cfg.fixed_scale > 0:
            return scale, "fixed", DiagnosticStatus.OK
        if scale.status == "ok":
            return scale, "OK", DiagnosticStatus.OK
        if scale.status == "holding":
            return scale, "WARN holding last fit", DiagnosticStatus.WARN
        if stream.clouds.newest_stamp() is None:
            if not self._metric_wanted(stream):
                return scale, "off: relative depth only (no LiDAR, no fixed_scale)", \
                    DiagnosticStatus.OK
            return scale, ("WARN no LiDAR cloud and no fixed_scale: metric outputs off"), \
                DiagnosticStatus.WARN
        return scale, "ERROR no fit: metric outputs stopped", DiagnosticStatus.ERROR

    def _diagnostic_status(self, stream: Stream, now: float) -> DiagnosticStatus:
        s = stream.stats
        health = s.health
        scale, scale_status, level = self._scale_status(stream, now)
        cfg = self.processor.config
        est = self.processor.estimator
        fit = scale.fit
        failing = health.failing(now)
        outage = health.outage(now)
        input_age = now - health.input.last if health.input.last is not None else float("nan")
        values = {
            "camera": stream.name,
            "input_rate_hz": f"{health.input.rate(now):.2f}",
            "output_rate_hz": f"{health.output.rate(now):.2f}",
            "input_age_s": f"{input_age:.1f}",
            "latency_s": f"{s.latency:.3f}",
            "inference_s": f"{s.inference:.3f}",
            "batch_size": str(s.batch_size),
            "max_batch": str(self._max_batch()),
            "overhead_s": f"{s.overhead:.4f}",
            "frames_received": str(s.received),
            "frames_processed": str(s.processed),
            "frames_dropped": str(self._slots.dropped[stream.name]),
            "frames_bad_input": str(s.bad_input),
            "frames_failed": str(s.failed),
            "frames_idle": str(s.idle),
            "camera_info_reused": str(s.camera_info_reused),
            "depth_model": str(est.model_names.get("depth")),
            "normals_model": str(est.model_names.get("normals")),
            "device": str(getattr(est, "backend_device", est.device)),
            "dtype": str(est.dtype).replace("torch.", ""),
            "backend": str(getattr(est, "backend", "torch")),
            "precision": str(getattr(est, "precision", "")),
            "processing_resolution": str(self._params["processing_resolution"]),
            "input_stamps": stream.stamps.unusable or "ok",
            "scale_status": scale_status,
            "scale": f"{scale.scale if scale.scale is not None else cfg.fixed_scale:.6g}",
            "shift": f"{scale.shift if scale.shift is not None else cfg.fixed_shift:.6g}",
            "scale_inliers": str(fit.inliers if fit else 0),
            "scale_rmse_m": f"{fit.rmse if fit else float('nan'):.4g}",
            "scale_age_s": f"{scale.age if scale.age is not None else float('nan'):.3f}",
            "scale_message": scale.message,
            "last_error": s.last_error if failing else "",
            "last_warning": s.last_warning,
            "last_bad_input": s.last_bad_input,
        }
        transport_values, transport_problem = self._transport_diagnostics(stream)
        values.update(transport_values)
        problems = []
        if health.input.last is None:
            problems.append("no image received yet")
        elif outage is not None:
            problems.append(f"no input for {outage:.0f} s")
        if stream.stamps.unusable:
            problems.append("camera stamps unusable")
        if failing:
            problems.append("frames failing")
        if transport_problem:
            problems.append(transport_problem)
        if problems and level == DiagnosticStatus.OK:
            level = DiagnosticStatus.WARN
        summary = "; ".join(problems + [scale_status, f"{values['output_rate_hz']} Hz out"])
        return DiagnosticStatus(
            level=level, name=self.diagnostic_name(stream.name), message=summary,
            hardware_id=str(est.device),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _transport_diagnostics(self, stream: Stream | None = None
                               ) -> tuple[dict[str, str], str]:
        """Input QoS in use, and the camera's rate and loss from the image stamps.

        Transport loss is otherwise silent: frames lost in DDS never reach a callback. The
        stamps of those that arrive say how many were published in between. ``stream``:
        which camera (default: the first, the only one of a single-camera node).
        """
        stream = stream or next(iter(self._streams.values()))
        rate = stream.stamp_rate.estimate()
        inputs = stream.inputs
        mismatches = [f"{name}: {sub.choice.message}" for name, sub in inputs.items()
                      if sub.choice is not None and sub.choice.mismatch]
        values = {
            "input_qos": self._params["input_qos"],
            "input_qos_image": inputs["image"].describe(),
            "input_qos_camera_info": inputs["camera_info"].describe(),
            "input_qos_lidar": inputs["lidar"].describe(),
            "input_qos_mismatch": "; ".join(mismatches),
            "input_rate_from_stamps_hz": f"{rate.rate_hz:.2f}",
            "input_frames_missing": str(rate.missing),
            "input_loss_estimate": f"{rate.loss:.3f}",
        }
        problems = []
        if rate.loss > INPUT_LOSS_WARN:
            problems.append(f"{rate.loss:.0%} of camera frames lost in transport")
        if mismatches:
            problems.append("input QoS mismatch")
        return values, ", ".join(problems)

    def destroy_node(self) -> None:
        """Stop the worker without waiting for an inference in flight (it is a daemon)."""
        self._closing = True
        if hasattr(self, "_worker"):  # a node that failed during start-up has none
            self._slots.close()
            self._worker.join(timeout=1.0)
        super().destroy_node()

    @property
    def inference_in_flight(self) -> bool:
        """Whether the worker is still inside a model call (it cannot be interrupted)."""
        return hasattr(self, "_worker") and self._worker.is_alive()


def _wants_help(argv: list[str]) -> bool:
    """--help / -h before any --ros-args (after it, ROS owns the arguments)."""
    own = argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    return "--help" in own or "-h" in own


def _say(text: str) -> None:
    print(f"[{NODE_NAME}] {text}", file=sys.stderr, flush=True)


def _leave(node: DepthNode | None) -> None:
    """Tear down; further Ctrl-C / SIGTERM are ignored, we are already leaving.

    A second Ctrl-C inside destroy_node used to abort the process: the KeyboardInterrupt
    escaped while torch still ran on the worker thread, and interpreter shutdown tore its
    thread pool down (``terminate called without an active exception``).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    except KeyboardInterrupt:  # pragma: no cover - delivered before SIG_IGN took effect
        pass
    for sig in (signal.SIGINT, signal.SIGTERM):  # try_shutdown restores the old handlers
        signal.signal(sig, signal.SIG_IGN)


def main(args: list[str] | None = None) -> int:
    argv = list(args if args is not None else sys.argv)
    if _wants_help(argv):
        print(usage())
        return 0
    try:
        rclpy.init(args=argv)
    except Exception as err:  # noqa: BLE001 - rcl rejects malformed --ros-args this way
        print(f"{NODE_NAME}: cannot start: bad arguments ({err})", file=sys.stderr)
        return 2
    from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped

    keep_cpu_buffers_mapped()  # this process runs inference: keep its buffers mapped
    node = None
    try:
        node = DepthNode()
    except (E2EDepthError, ValueError, ParameterException) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        _leave(None)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        _say("interrupted during start-up: exiting")
        _leave(None)
        sys.stdout.flush()
        os._exit(0)  # model loading may have left torch threads that must not be joined
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        _say("interrupted: shutting down")
    finally:
        _leave(node)
    if node.inference_in_flight:
        # Interpreter shutdown would tear torch's thread pool down under the running model
        # (std::terminate, SIGABRT); nothing is left to flush or publish, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ROS 2 node: camera (+ LiDAR) in; depth, normals and point clouds out.

The contract: docs/ros_interface.md and docs/lidar_scale.md.

Wiring only. Callbacks store the newest message and return; one worker thread runs the
model on the newest frame and drops the rest; the math lives in ``processing`` and the
conversions in ``messages``. Every output carries the input image's header unchanged.

    ros2 run e2e_depth_ros depth_node --ros-args -p depth_model:=/path -r image:=/cam/image
    python -m e2e_depth_ros.node --ros-args ...
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import fields

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from e2e_depth_ros import input_checks, messages
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.geometry import quaternion_to_matrix, transform_points
from e2e_depth_ros.health import StreamHealth
from e2e_depth_ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.model_args import model_or_none, task_mismatch
from e2e_depth_ros.processing import (FrameProcessor, Needs, ProcessingConfig,
                                      fixed_map_conflict)
from e2e_depth_ros.qos import MODES as INPUT_QOS_MODES
from e2e_depth_ros.stamp_rate import StampRateEstimator
from e2e_depth_ros.sync import LatestSlot, StampBuffer, stamp_to_ns

try:  # tf2 is used when a ROS install provides it; static extrinsics otherwise
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None

NODE_NAME = "e2e_depth_node"
THROTTLE_S = 5.0  # per kind of problem
NAME_CHECK_DELAY_S = 1.0  # discovery time before looking for a namesake on the graph
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
    "publish_relative": (True, _B, "Publish depth/relative (affine-invariant, [0, 1])",
                         None, False),
    "publish_depth": (True, _B, "Publish metric depth/image + depth/camera_info", None, False),
    "publish_depth_vis": (True, _B, "Publish depth/image_vis (bgr8)", None, False),
    "publish_normals": (True, _B, "Publish normals/image (32FC3)", None, False),
    "publish_normals_vis": (True, _B, "Publish normals/image_vis (rgb8)", None, False),
    "publish_points": (True, _B, "Publish the organized point cloud `points`", None, False),
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
    lines = ["usage: python -m e2e_depth_ros.node [--help] [--ros-args -p NAME:=VALUE ...]",
             "", "E2E-FT depth/normals node: subscribes to image (or image/compressed), "
             "camera_info and points_lidar;", "publishes depth/relative, depth/image, "
             "depth/camera_info, depth/image_vis, normals/image, normals/image_vis, points "
             "and /diagnostics.", "", "parameters (read-only ones only at start-up):"]
    for name, (default, _kind, description, bounds, read_only) in PARAMETERS.items():
        extra = f", {bounds[0]}..{bounds[1]}" if bounds else ""
        extra += ", read-only" if read_only else ""
        lines.append(f"  {name} (default {default!r}{extra})")
        lines.append(f"      {description}")
    return "\n".join(lines)


class Stats:
    """Counters the diagnostics report; written by the worker, read by the timer."""

    def __init__(self) -> None:
        self.received = self.processed = self.failed = self.bad_input = self.idle = 0
        self.latency = float("nan")
        self.inference = float("nan")
        self.overhead = float("nan")  # seconds per frame spent outside the model
        self.last_error = ""
        self.last_warning = ""
        self.last_bad_input = ""  # why the latest frame counted in bad_input was refused
        self.health = StreamHealth()  # rates, outages, recent failures (monotonic clock)
        self.last_stamp_at: tuple[float, float] | None = None  # (stamp s, monotonic s)

    def clock_stamp(self, now: float) -> float | None:
        """The camera's clock now: the last stamp plus the time since it arrived."""
        if self.last_stamp_at is None:
            return None
        stamp, arrived = self.last_stamp_at
        return stamp + max(0.0, now - arrived)


class DepthNode(Node):
    """E2E-FT depth/normals node. ``estimator`` may be injected (tests); else it is loaded."""

    def __init__(self, *, estimator=None, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, kind, description, bounds, read_only) in PARAMETERS.items():
            self.declare_parameter(name, default,
                                   _descriptor(name, kind, description, bounds, read_only))
        self._params = {name: self.get_parameter(name).value for name in PARAMETERS}
        reason = validate_parameters(self._params)
        if reason:
            raise ValueError(reason)
        self.startup_warnings = self._check_model_names()
        for text in self.startup_warnings:
            self.get_logger().warning(text)
        if estimator is None:
            estimator = self._load_estimator()
        estimator.processing_resolution = self._params["processing_resolution"]
        self.processor = FrameProcessor(estimator, self._processing_config())
        self.stats = Stats()
        self._closing = False
        self._stamps = input_checks.StampCheck()
        self._throttle = input_checks.KindThrottle(THROTTLE_S)
        self._said_once: set[str] = set()
        self._camera_infos: StampBuffer = StampBuffer(size=30)
        self._clouds: StampBuffer = StampBuffer(size=10)
        self._slot: LatestSlot = LatestSlot()
        self._tf_buffer = None
        if tf2_ros is not None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)

        self._pub = {
            "relative": self.create_publisher(Image, "depth/relative", OUTPUT_QOS),
            "depth": self.create_publisher(Image, "depth/image", OUTPUT_QOS),
            "depth_info": self.create_publisher(CameraInfo, "depth/camera_info", OUTPUT_QOS),
            "depth_vis": self.create_publisher(Image, "depth/image_vis", OUTPUT_QOS),
            "normals": self.create_publisher(Image, "normals/image", OUTPUT_QOS),
            "normals_vis": self.create_publisher(Image, "normals/image_vis", OUTPUT_QOS),
            "points": self.create_publisher(PointCloud2, "points", OUTPUT_QOS),
        }
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._stamp_rate = StampRateEstimator(window=100)
        self._inputs = self._subscribe_inputs()
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
            f"ready: depth={names.get('depth')} normals={names.get('normals')} on {where}")

    # -- set-up ----------------------------------------------------------------------------
    def _check_model_names(self) -> list[str]:
        """Warnings for a checkpoint whose name says it is the other task's, or says neither."""
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
            self.stats.last_warning = "another node on the graph has this node's name"

    def _load_estimator(self):
        from e2e_depth_ros.estimator import Estimator, quiet_model_libraries

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

    def _subscribe_inputs(self) -> dict[str, MatchedSubscription]:
        """Image, camera_info and LiDAR with the reliability their publishers offer.

        camera_info and LiDAR first: the executor serves ready subscriptions in creation
        order, so a frame's camera_info arriving with its image is stored before the image
        wakes the worker (else that frame has no camera_info: no cloud, no depth/image).
        """
        mode = self._params["input_qos"]
        image = ((CompressedImage, "image/compressed") if self._params["use_compressed"]
                 else (Image, "image"))
        return {  # creation order, kept by _recheck_inputs
            "camera_info": MatchedSubscription(self, CameraInfo, "camera_info",
                                               self._on_camera_info, mode=mode,
                                               depth=SENSOR_DEPTH),
            "lidar": MatchedSubscription(self, PointCloud2, "points_lidar", self._on_lidar,
                                         mode=mode, depth=SENSOR_DEPTH),
            "image": MatchedSubscription(self, *image, self._on_image, mode=mode,
                                         depth=IMAGE_DEPTH),
        }

    def _recheck_inputs(self) -> None:
        """Publishers come and go: follow their reliability (or a changed input_qos).

        When one input must be re-subscribed, all are, in their order, so camera_info and
        LiDAR stay ahead of the image in the executor.
        """
        choices = {}
        for name, subscription in self._inputs.items():
            subscription.mode = self._params["input_qos"]
            choices[name] = subscription.choose()
        recreate = any(self._inputs[name].changes(choice) for name, choice in choices.items())
        for name, subscription in self._inputs.items():
            subscription.apply(choices[name], recreate=recreate)

    def _processing_config(self) -> ProcessingConfig:
        return ProcessingConfig(**{k: v for k, v in self._params.items() if k in _CONFIG_KEYS})

    def _on_set_parameters(self, params) -> SetParametersResult:
        merged = dict(self._params)
        merged.update({param.name: param.value for param in params})
        reason = validate_parameters(merged)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self._params = merged
        self.processor.reconfigure(self._processing_config())  # read at the next frame
        return SetParametersResult(successful=True)

    # -- callbacks: store and return -----------------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.received += 1
        self._stamp_rate.add(stamp_to_ns(msg.header.stamp))
        self.stats.health.input.add(time.monotonic())
        self._slot.put(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_infos.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_lidar(self, msg: PointCloud2) -> None:
        self._clouds.add(stamp_to_ns(msg.header.stamp), msg)

    # -- worker -------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._slot.closed:
            msg = self._slot.take(timeout=0.5)
            if msg is None:
                continue
            try:
                self._process(msg)
            except Exception as err:  # noqa: BLE001 - one frame's failure must not stop us
                self.stats.failed += 1
                self.stats.health.last_failure = time.monotonic()
                self.stats.last_error = f"{type(err).__name__}: {err}"
                if not self._closing:
                    self._log("error", "frame_failed", f"frame failed: {self.stats.last_error}")

    def _log(self, level: str, kind: str, text: str) -> None:
        """Log ``text`` unless a message of the same kind was logged in the last THROTTLE_S."""
        if self._throttle.allow(kind, time.monotonic()):
            getattr(self.get_logger(), level)(text)

    def _warn(self, kind: str, text: str) -> None:
        self.stats.last_warning = text
        self._log("warning", kind, text)

    def _bad_input(self, kind: str, text: str) -> None:
        """A frame refused for its input: counted, shown in diagnostics, logged per kind."""
        self.stats.bad_input += 1
        self.stats.last_bad_input = text
        self._warn(kind, text)

    def _admit(self, msg):
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
                self._bad_input("image_size", f"dropping image: {problem}")
                return None
        try:
            rgb = messages.compressed_to_rgb(msg) if compressed else messages.image_to_rgb(msg)
        except E2EDepthError as err:
            self._bad_input("image_decode", f"dropping image: {err}")
            return None
        problem = input_checks.frame_size_problem(rgb.shape[1], rgb.shape[0], **limits)
        if problem:
            self._bad_input("image_size", f"dropping image: {problem}")
            return None
        return rgb

    def _stamp_ok(self, stamp_ns: int) -> bool:
        verdict = self._stamps.check(stamp_ns)
        if self._stamps.unusable and "stamps" not in self._said_once:
            self._said_once.add("stamps")  # once: the camera will not get better by itself
            self.get_logger().error(self._stamps.unusable)
        if verdict == "repeat":
            self._bad_input("stamp_repeat", f"dropping image: stamp {stamp_ns * 1e-9:.3f} "
                            "repeats the previous one")
            return False
        if verdict == "back":
            self._warn("stamp_back", "image stamp went back (bag loop?): scale history reset")
            self.processor.reset_scale()
        return True

    def _needs(self) -> Needs:
        p = self._params

        def wanted(key: str, enable: str) -> bool:
            return bool(p[enable]) and self._pub[key].get_subscription_count() > 0

        return Needs(
            relative=wanted("relative", "publish_relative")
            or wanted("depth_vis", "publish_depth_vis"),
            normals=wanted("normals", "publish_normals")
            or wanted("normals_vis", "publish_normals_vis"),
            metric=wanted("depth", "publish_depth") or wanted("depth_info", "publish_depth"),
            points=wanted("points", "publish_points"),
            points_rgb=bool(p["points_color"]),
            points_normals=bool(p["points_normals"]),
        )

    def _process(self, msg) -> None:
        began = time.monotonic()
        header = msg.header
        stamp_ns = stamp_to_ns(header.stamp)
        rgb = self._admit(msg)
        if rgb is None or not self._stamp_ok(stamp_ns):
            return
        self.stats.last_stamp_at = (stamp_ns * 1e-9, began)
        needs = self._needs()
        if not (needs.relative or needs.normals or needs.metric or needs.points):
            self.stats.idle += 1  # nobody listens: no work
            return
        p = self._params
        info = self._camera_infos.match(stamp_ns, int(p["camera_info_tolerance"] * 1e9))
        camera = self._camera(info, rgb.shape[1], rgb.shape[0])
        if camera is None:
            info = None  # never republish a camera_info that does not describe this image
        lidar = None
        if needs.metric or needs.points:
            lidar = self._lidar_points(stamp_ns, header.frame_id)
        estimator = self.processor.estimator
        if estimator.processing_resolution != p["processing_resolution"]:
            estimator.processing_resolution = p["processing_resolution"]
        start = time.monotonic()
        result = self.processor.process(rgb, stamp_ns * 1e-9, camera=camera,
                                        lidar_points=lidar, needs=needs)
        self.stats.inference = time.monotonic() - start
        for note in result.notes:
            self._warn("note: " + note.split(":")[0][:40], note)
        if self._closing:
            return
        self._publish(header, info, result, needs)
        self.stats.overhead = time.monotonic() - began - self.stats.inference
        self.stats.processed += 1
        self.stats.health.output.add(time.monotonic())
        now_ns = self.get_clock().now().nanoseconds
        self.stats.latency = (now_ns - stamp_ns) * 1e-9

    def _camera(self, info, width: int, height: int):
        """The pinhole camera of this image, or None (bad camera_info is counted and warned)."""
        if info is None:
            if self._pub["points"].get_subscription_count() or self._clouds.newest_stamp():
                self._warn("camera_info_missing",
                           "no camera_info matches the image stamp: no cloud or LiDAR fit")
            return None
        try:
            camera = messages.camera_from_info(info)
            problem = input_checks.camera_problem(camera, width, height)
        except E2EDepthError as err:
            problem = str(err)
        if problem:
            self._bad_input("camera_info", f"refusing camera_info: {problem}; no cloud, LiDAR "
                            "fit or depth/camera_info for this frame")
            return None
        return camera

    def _lidar_points(self, stamp_ns: int, camera_frame: str) -> np.ndarray | None:
        cloud = self._clouds.match(stamp_ns, int(self._params["lidar_tolerance"] * 1e9))
        if cloud is None:
            return None
        try:
            points = messages.pointcloud_to_xyz(cloud)
        except E2EDepthError as err:
            self._warn("lidar_cloud", f"unusable LiDAR cloud: {err}")
            return None
        transform = self._lidar_transform(cloud.header, camera_frame)
        if transform is None:
            return None
        rotation, translation = transform
        return transform_points(points, rotation, translation).astype(np.float32)

    def _lidar_transform(self, cloud_header, camera_frame: str):
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
        self._warn("lidar_transform",
                   f"no transform from LiDAR frame '{lidar_frame}' to camera frame "
                   f"'{camera_frame}' ({tf_error}; static extrinsic is for "
                   f"'{p['lidar_extrinsic_frame']}'): metric depth needs one")
        return None

    # -- publishing ---------------------------------------------------------------------
    def _publish(self, header, info, result, needs: Needs) -> None:
        p, pub = self._params, self._pub
        if result.relative is not None:
            if p["publish_relative"]:
                pub["relative"].publish(messages.build_image(Image, header, result.relative,
                                                             "32FC1"))
            if p["publish_depth_vis"] and pub["depth_vis"].get_subscription_count():
                vis = messages.colorize_depth(result.relative)
                pub["depth_vis"].publish(messages.build_image(Image, header, vis, "bgr8"))
        if result.normals is not None:
            if p["publish_normals"]:
                pub["normals"].publish(messages.build_image(Image, header, result.normals,
                                                            "32FC3"))
            if p["publish_normals_vis"] and pub["normals_vis"].get_subscription_count():
                vis = messages.normals_to_rgb8(result.normals)
                pub["normals_vis"].publish(messages.build_image(Image, header, vis, "rgb8"))
        if result.metric is not None and p["publish_depth"]:
            # depth/image and depth/camera_info go out as a pair or not at all:
            # depth_image_proc and RTAB-Map need both of one stamp.
            if info is not None:
                height, width = result.metric.shape
                camera_info = messages.scaled_camera_info(info, width, height, header=header)
                pub["depth"].publish(messages.build_image(Image, header, result.metric,
                                                          "32FC1"))
                pub["depth_info"].publish(camera_info)
            else:
                self._warn("depth_without_info", "no usable camera_info for this stamp: "
                           "depth/image is not published without its depth/camera_info")
        if result.points is not None and p["publish_points"]:
            pub["points"].publish(messages.build_pointcloud(
                PointCloud2, PointField, header, result.points, rgb=result.points_rgb,
                normals=result.points_normals))

    # -- diagnostics --------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        """Timer callback: never lets an error escape (it would stop the executor)."""
        try:
            array = DiagnosticArray(status=[self._diagnostic_status(time.monotonic())])
            array.header.stamp = self.get_clock().now().to_msg()
            self._diagnostics.publish(array)
        except Exception as err:  # noqa: BLE001 - diagnostics must never kill the node
            if not self._closing:
                self._log("error", "diagnostics",
                          f"diagnostics failed: {type(err).__name__}: {err}")

    def _metric_wanted(self) -> bool:
        p, pub = self._params, self._pub
        return bool(p["publish_depth"]) and (pub["depth"].get_subscription_count() > 0
                                             or pub["depth_info"].get_subscription_count() > 0) \
            or bool(p["publish_points"]) and pub["points"].get_subscription_count() > 0

    def _scale_status(self, now: float):
        """(scale state, status text, level), judged on the clock, not on the last frame."""
        stamp = self.stats.clock_stamp(now)
        scale = self.processor.scale_state(stamp if stamp is not None
                                           else self.get_clock().now().nanoseconds * 1e-9)
        cfg = self.processor.config
        if cfg.fixed_scale > 0:
            return scale, "fixed", DiagnosticStatus.OK
        if scale.status == "ok":
            return scale, "OK", DiagnosticStatus.OK
        if scale.status == "holding":
            return scale, "WARN holding last fit", DiagnosticStatus.WARN
        if self._clouds.newest_stamp() is None:
            if not self._metric_wanted():
                return scale, "off: relative depth only (no LiDAR, no fixed_scale)", \
                    DiagnosticStatus.OK
            return scale, ("WARN no LiDAR cloud and no fixed_scale: metric outputs off"), \
                DiagnosticStatus.WARN
        return scale, "ERROR no fit: metric outputs stopped", DiagnosticStatus.ERROR

    def _diagnostic_status(self, now: float) -> DiagnosticStatus:
        s = self.stats
        health = s.health
        scale, scale_status, level = self._scale_status(now)
        cfg = self.processor.config
        est = self.processor.estimator
        fit = scale.fit
        failing = health.failing(now)
        outage = health.outage(now)
        input_age = now - health.input.last if health.input.last is not None else float("nan")
        values = {
            "input_rate_hz": f"{health.input.rate(now):.2f}",
            "output_rate_hz": f"{health.output.rate(now):.2f}",
            "input_age_s": f"{input_age:.1f}",
            "latency_s": f"{s.latency:.3f}",
            "inference_s": f"{s.inference:.3f}",
            "overhead_s": f"{s.overhead:.4f}",
            "frames_received": str(s.received),
            "frames_processed": str(s.processed),
            "frames_dropped": str(self._slot.dropped),
            "frames_bad_input": str(s.bad_input),
            "frames_failed": str(s.failed),
            "frames_idle": str(s.idle),
            "depth_model": str(est.model_names.get("depth")),
            "normals_model": str(est.model_names.get("normals")),
            "device": str(getattr(est, "backend_device", est.device)),
            "dtype": str(est.dtype).replace("torch.", ""),
            "backend": str(getattr(est, "backend", "torch")),
            "precision": str(getattr(est, "precision", "")),
            "processing_resolution": str(self._params["processing_resolution"]),
            "input_stamps": self._stamps.unusable or "ok",
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
        transport_values, transport_problem = self._transport_diagnostics()
        values.update(transport_values)
        problems = []
        if health.input.last is None:
            problems.append("no image received yet")
        elif outage is not None:
            problems.append(f"no input for {outage:.0f} s")
        if self._stamps.unusable:
            problems.append("camera stamps unusable")
        if failing:
            problems.append("frames failing")
        if transport_problem:
            problems.append(transport_problem)
        if problems and level == DiagnosticStatus.OK:
            level = DiagnosticStatus.WARN
        summary = "; ".join(problems + [scale_status, f"{values['output_rate_hz']} Hz out"])
        return DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", message=summary,
            hardware_id=str(est.device),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _transport_diagnostics(self) -> tuple[dict[str, str], str]:
        """Input QoS in use, and the camera's rate and loss from the image stamps.

        Transport loss is otherwise silent: frames lost in DDS never reach a callback. The
        stamps of those that arrive say how many were published in between.
        """
        rate = self._stamp_rate.estimate()
        mismatches = [f"{name}: {sub.choice.message}" for name, sub in self._inputs.items()
                      if sub.choice is not None and sub.choice.mismatch]
        values = {
            "input_qos": self._params["input_qos"],
            "input_qos_image": self._inputs["image"].describe(),
            "input_qos_camera_info": self._inputs["camera_info"].describe(),
            "input_qos_lidar": self._inputs["lidar"].describe(),
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
            self._slot.close()
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
    from e2e_depth_ros.allocator import keep_cpu_buffers_mapped

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

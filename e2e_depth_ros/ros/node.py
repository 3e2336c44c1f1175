"""The ROS 2 node: camera (+ LiDAR) in; depth, normals and point clouds out.

The contract: docs/ros_interface.md and docs/lidar_scale.md; the path of a frame through the
modules: docs/architecture.md.

Wiring only. Callbacks store the newest message and return; one worker thread runs the
model on the newest frame and drops the rest. What is judged lives in modules without rclpy:
``admission`` (is the image worth the model), ``pairing`` (which camera_info),
``lidar_input`` (the cloud in the camera frame), ``core.processing`` (the model, scale and
geometry), ``outputs`` (what goes out) and ``diagnostics`` (the status). Every output
carries the input image's header unchanged. With ``cameras:=[a, b, ...]`` one node serves
several cameras (topics ``a/image``, ..., ``a/depth/image``, ...): one model, the newest
frame of each camera run as one batch (``multicam`` schedules the rounds).

    ros2 run e2e_depth_ros depth_node --ros-args -p depth_model:=/path -r image:=/cam/image
    python -m e2e_depth_ros.node --ros-args ...
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from e2e_depth_ros.core.depth_model import DepthModel
from e2e_depth_ros.core.processing import Frame, FrameProcessor
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.model.model_args import task_warnings
from e2e_depth_ros.ros import diagnostics, pairing
from e2e_depth_ros.ros.admission import Refusal, admit_image
from e2e_depth_ros.ros.problem_log import ProblemLog
from e2e_depth_ros.ros.lidar_input import InputProblem
from e2e_depth_ros.ros.inputs import check_camera_topics, follow_publishers, subscribe_camera
from e2e_depth_ros.ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.ros.model_loading import load_model
from e2e_depth_ros.ros.multicam import CameraSlots
from e2e_depth_ros.ros.odometry import OdometrySource
from e2e_depth_ros.ros.outputs import OUTPUTS, Output, build_outgoing, needs_for, rclpy_types
from e2e_depth_ros.ros.parameters import (NODE_NAME, PARAMETERS, declare_camera_sources,
                                          declare_cameras, declare_parameters,
                                          processing_config, usage, validate_parameters)
from e2e_depth_ros.ros.scale_inputs import ScaleInputs, resolve_source, scale_reference
from e2e_depth_ros.ros.stream import Job, Stats, Stream
from e2e_depth_ros.ros.sync import stamp_to_ns
from e2e_depth_ros.ros.tf_lookup import tf_lookup

NAME_CHECK_DELAY_S = 1.0  # discovery time before looking for a namesake on the graph
AUTO_GPU_BATCH = 4  # max_batch 0 off the CPU; on a CPU a batch costs more per frame
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                        reliability=ReliabilityPolicy.RELIABLE)
# odometry comes fast (50 Hz+) from reliable or best-effort publishers: take either, keep many
ODOM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                      reliability=ReliabilityPolicy.BEST_EFFORT)


class DepthNode(Node):
    """E2E-FT depth/normals node. ``estimator`` may be injected (tests); else it is loaded."""

    def __init__(self, *, estimator: DepthModel | None = None, node_name: str = NODE_NAME,
                 **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._params = declare_parameters(self)
        self._input_topics = declare_cameras(self)
        self._camera_sources = declare_camera_sources(self, self._input_topics)
        check_camera_topics(self, self._input_topics,
                            compressed=self._params["use_compressed"])
        # a checkpoint whose files or name say it is the other task's, or say neither
        self.startup_warnings = task_warnings(self._params["depth_model"],
                                              self._params["normals_model"])
        for text in self.startup_warnings:
            self.get_logger().warning(text)
        if estimator is None:
            logger = self.get_logger()
            estimator = load_model(self._params, info=logger.info, warning=logger.warning)
        estimator.processing_resolution = self._params["processing_resolution"]
        self.processor = FrameProcessor(estimator, processing_config(self._params))
        self._closing = False
        self.problems = ProblemLog(lambda: self.get_logger())
        self._streams = {name: Stream(name) for name in self._input_topics or [""]}
        self._slots: CameraSlots = CameraSlots(list(self._streams))
        self._tf_lookup = tf_lookup(self)
        self.odometry = OdometrySource(self, self._tf_lookup, ODOM_QOS)
        self._types = rclpy_types()
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for stream in self._streams.values():
            stream.pub = {output.key: self.create_publisher(
                self._types[output.msgtype], stream.topic(output.topic), OUTPUT_QOS)
                for output in OUTPUTS}
            stream.inputs = subscribe_camera(
                self, stream, self._input_topics.get(stream.name, {}),
                mode=self._params["input_qos"], compressed=self._params["use_compressed"],
                on_image=lambda msg, stream=stream: self._on_image(stream, msg))
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
            + (f" for cameras {', '.join(self.cameras)}" if self.cameras else ""))

    # -- set-up ----------------------------------------------------------------------------
    def _on_image(self, stream: Stream, msg) -> None:
        """Executor thread: count the frame and leave it for the worker (newest wins)."""
        stream.stats.received += 1
        stream.stats.health.input.add(time.monotonic())
        stream.stamp_rate.add(stamp_to_ns(msg.header.stamp))
        self._slots.put(stream.name, msg)

    def _recheck_inputs(self) -> None:
        follow_publishers(self._streams.values(), self._params["input_qos"])

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

    def scale_source(self, camera: str = "") -> str:
        """The source of a camera's metric scale now (``auto`` resolved)."""
        chosen = self._camera_sources.get(camera) or self._params["scale_source"]
        return resolve_source(chosen, self._params["fixed_scale"])

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

    def _on_set_parameters(self, params) -> SetParametersResult:
        merged = dict(self._params)
        merged.update({param.name: param.value for param in params if param.name in PARAMETERS})
        reason = validate_parameters(merged)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self._params = merged
        self.processor.reconfigure(processing_config(merged))  # read at the next frame
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
                self.problems.failed(stream, err, quiet=self._closing)
                continue
            if job is not None:
                jobs.append(job)
        if not jobs:
            return
        estimator = self.processor.estimator
        if estimator.processing_resolution != self._params["processing_resolution"]:
            estimator.processing_resolution = self._params["processing_resolution"]
        for batch in self.processor.batches([job.frame for job in jobs]):
            members = [jobs[i] for i in batch]
            start = time.monotonic()
            try:
                predictions = self.processor.predict([job.frame for job in members])
            except Exception as err:  # noqa: BLE001 - the next round proceeds
                for job in members:
                    self.problems.failed(job.stream, err, quiet=self._closing)
                continue
            inference = time.monotonic() - start
            for job, prediction in zip(members, predictions):
                try:
                    self._attach_camera(job)
                    self._finish(job, prediction, inference, len(members))
                except Exception as err:  # noqa: BLE001 - the other cameras still publish
                    self.problems.failed(job.stream, err, quiet=self._closing)

    def _stamp_ok(self, stream: Stream, stamp_ns: int) -> bool:
        verdict = stream.stamps.check(stamp_ns)
        if stream.stamps.unusable and "stamps" not in stream.said_once:
            stream.said_once.add("stamps")  # once: the camera will not get better by itself
            self.get_logger().error(stream.say(stream.stamps.unusable))
        if verdict == "repeat":
            self.problems.bad_input(stream, "stamp_repeat", f"dropping image: stamp "
                                    f"{stamp_ns * 1e-9:.3f} repeats the previous one")
            return False
        if verdict == "back":
            self.problems.warn(stream, "stamp_back",
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
        stamp_ns = stamp_to_ns(msg.header.stamp)
        p = self._params
        rgb = admit_image(msg, processing_resolution=p["processing_resolution"],
                          max_input_pixels=p["max_input_pixels"])
        if isinstance(rgb, Refusal):
            self.problems.bad_input(stream, rgb.kind, rgb.text)
            return None
        if not self._stamp_ok(stream, stamp_ns):
            return None
        stream.stats.last_stamp_at = (stamp_ns * 1e-9, began)
        wanted = self._wanted(stream)
        if not wanted:
            stream.stats.idle += 1  # nobody listens: no work
            return None
        needs = needs_for(wanted, points_rgb=bool(p["points_color"]),
                          points_normals=bool(p["points_normals"]))
        source = self.scale_source(stream.name)
        reference = None
        if needs.metric or needs.points:
            reference = scale_reference(stream, source, stamp_ns, msg.header,
                                        ScaleInputs.from_params(p), self._tf_lookup)
            if isinstance(reference, InputProblem):
                self.problems.bad_input(stream, reference.kind, reference.text)
                reference = None
        frame = Frame(rgb, stamp_ns * 1e-9, None, None, needs, stream.name, reference, source)
        return Job(stream, msg.header, stamp_ns, frame, None, wanted, time.monotonic() - began)

    def _attach_camera(self, job: Job) -> None:
        """Match the frame's camera_info once the model has run (``pairing``), not before."""
        stream = job.stream
        info = pairing.matching_info(stream, job.stamp_ns,
                                     tolerance_s=self._params["camera_info_tolerance"],
                                     reuse_s=self._params["camera_info_reuse"])
        camera = None
        if info is None:
            if stream.pub["points"].get_subscription_count() or stream.clouds.newest_stamp():
                self.problems.warn(stream, "camera_info_missing", "no camera_info matches "
                                   "the image stamp: no cloud or LiDAR fit")
        else:
            height, width = job.frame.rgb.shape[:2]
            camera = pairing.camera_of(info, width, height)
            if isinstance(camera, str):
                self.problems.bad_input(stream, "camera_info", camera)
                camera = None
        # never republish a camera_info that does not describe this image
        job.info = info if camera is not None else None
        pose = None
        if self._params["temporal_alignment"]:
            pose = self.odometry.pose(self._params, job.header)
            stream.stats.odometry = pose if isinstance(pose, str) else "ok"
        job.frame = replace(job.frame, camera=camera,
                            odometry=None if isinstance(pose, str) else pose)

    def _finish(self, job: Job, prediction, inference: float, batch_size: int) -> None:
        """Scale, metric depth and cloud of one camera's frame, then its outputs."""
        began = time.monotonic()
        stream, stats = job.stream, job.stream.stats
        result = self.processor.finish(job.frame, prediction)
        for note in result.notes:
            self.problems.warn(stream, "note: " + note.split(":")[0][:40], note)
        if result.temporal is not None and result.temporal.message.startswith("reset:"):
            self.problems.warn(stream, "temporal_reset", "temporal alignment "
                               + result.temporal.message)
        if self._closing:
            return
        outgoing, held = build_outgoing(job.wanted, self._types, job.header, job.info, result)
        for text in held:
            self.problems.warn(stream, "unpaired_output", text)
        for key, msg in outgoing:
            stream.pub[key].publish(msg)
        stats.inference = inference
        stats.batch_size = batch_size
        stats.overhead = job.prepare_s + time.monotonic() - began
        stats.processed += 1
        stats.health.output.add(time.monotonic())
        stats.latency = (self.get_clock().now().nanoseconds - job.stamp_ns) * 1e-9

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
                self.problems.log(None, "error", "diagnostics",
                                  f"diagnostics failed: {type(err).__name__}: {err}")

    def diagnostic_name(self, camera: str = "") -> str:
        """The DiagnosticStatus name of one camera ("<node>: depth" without cameras)."""
        node = self.get_fully_qualified_name()
        return f"{node}: {camera} depth" if camera else f"{node}: depth"

    def _diagnostic_status(self, stream: Stream, now: float) -> DiagnosticStatus:
        """One camera's status at ``now`` (monotonic s), judged by ``diagnostics``."""
        p, pub = self._params, stream.pub
        metric_wanted = (p["publish_depth"] and (pub["depth"].get_subscription_count() > 0
                                                 or pub["depth_info"].get_subscription_count()
                                                 > 0)
                         or p["publish_points"] and pub["points"].get_subscription_count() > 0)
        view = diagnostics.NodeView(
            self.processor, p, self._max_batch(), self._slots.dropped[stream.name],
            bool(metric_wanted), self.get_clock().now().nanoseconds * 1e-9,
            self.scale_source(stream.name), self.odometry.description,
            self.odometry.problem)
        report = diagnostics.stream_status(stream, now, view)
        return DiagnosticStatus(
            level=bytes([report.level]), name=self.diagnostic_name(stream.name),
            message=report.message, hardware_id=str(self.processor.estimator.device),
            values=[KeyValue(key=k, value=v) for k, v in report.values.items()])

    def _transport_diagnostics(self, stream: Stream | None = None
                               ) -> tuple[dict[str, str], str]:
        """``diagnostics.transport_values`` of one camera (default: the first)."""
        stream = stream or next(iter(self._streams.values()))
        return diagnostics.transport_values(stream, self._params["input_qos"])

    def destroy_node(self) -> None:
        """Stop the worker without waiting for an inference in flight (it is a daemon)."""
        self._closing = True
        if hasattr(self, "_worker"):  # a node that failed during start-up has none
            self._slots.close()
            self._worker.join(timeout=1.0)
            close = getattr(self.processor.estimator, "close", None)
            if callable(close):  # a remote model's connections
                close()
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

"""One camera's diagnostics status, assembled without rclpy.

The node packs a ``StatusReport`` into ``diagnostic_msgs/DiagnosticStatus`` once a second.
Everything is judged at ``now`` (monotonic seconds) passed in, so a late timer cannot change
the verdict and tests can ask for any instant: a stream is in an outage when ``now`` is far
enough past its last input, whether or not anything arrived to trigger a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2e_depth_ros.core.processing import FrameProcessor
    from e2e_depth_ros.core.scale import ScaleState
    from e2e_depth_ros.ros.stream import Stream

# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR = 0, 1, 2
INPUT_LOSS_WARN = 0.05  # warn when the stamps say more than this fraction never arrived


@dataclass(frozen=True)
class StatusReport:
    """A camera's status: level (OK/WARN/ERROR), one-line summary, key/value strings."""

    level: int
    message: str
    values: dict[str, str]


@dataclass(frozen=True)
class NodeView:
    """What the status needs from the node besides the stream (read once per report)."""

    processor: FrameProcessor
    params: dict[str, Any]
    max_batch: int
    dropped: int  # frames of this camera replaced by a newer one before the model ran
    metric_wanted: bool  # someone subscribes to a metric output that is enabled
    wall_clock_s: float  # ROS time now, the scale filter's clock before any stamp arrived
    scale_source: str = "lidar"  # this camera's source, auto resolved (scale_inputs)
    odometry_source: str = ""  # where temporal alignment's camera poses come from
    odometry_problem: str = ""  # the latest unusable odometry message (odom topic)


def scale_summary(stream: Stream, now: float, view: NodeView
                  ) -> tuple[ScaleState, str, int]:
    """(scale state, status text, level), judged on the camera's clock, not the last frame."""
    stamp = stream.stats.clock_stamp(now)
    scale = view.processor.scale_state(stamp if stamp is not None else view.wall_clock_s,
                                       stream.name)
    source = view.scale_source
    if source == "none":
        return scale, "off: scale_source none (relative depth only)", OK
    if source == "fixed":
        return scale, "fixed", OK
    if scale.status == "ok":
        return scale, "OK", OK
    if scale.status == "holding":
        return scale, "WARN holding last fit", WARN
    if scale.status == "propagated":
        return scale, f"OK propagated from the previous frame ({scale.age:.1f} s since the " \
            "last metric fit)", OK
    if not view.metric_wanted:
        why = ("no LiDAR, no fixed_scale" if source == "lidar" and stream.clouds.newest_stamp()
               is None else "no metric output subscribed")
        return scale, f"off: relative depth only ({why})", OK
    if source == "lidar" and stream.clouds.newest_stamp() is None:
        return scale, "WARN no LiDAR cloud and no fixed_scale: metric outputs off", WARN
    if source == "depth" and stream.sensor_depths.newest_stamp() is None:
        return scale, "WARN no sensor depth image: metric outputs off", WARN
    return scale, "ERROR no fit: metric outputs stopped", ERROR


def transport_values(stream: Stream, input_qos: str) -> tuple[dict[str, str], str]:
    """Input QoS in use, and the camera's rate and loss from the image stamps.

    Transport loss is otherwise silent: frames lost in DDS never reach a callback. The
    stamps of those that arrive say how many were published in between.
    """
    rate = stream.stamp_rate.estimate()
    inputs = stream.inputs
    mismatches = [f"{name}: {sub.choice.message}" for name, sub in inputs.items()
                  if sub.choice is not None and sub.choice.mismatch]
    values = {
        "input_qos": input_qos,
        "input_qos_image": inputs["image"].describe(),
        "input_qos_camera_info": inputs["camera_info"].describe(),
        "input_qos_lidar": inputs["lidar"].describe(),
        **({"input_qos_sensor_depth": inputs["sensor_depth"].describe()}
           if "sensor_depth" in inputs else {}),
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


def temporal_values(stream: Stream, view: NodeView) -> dict[str, str]:
    """What temporal alignment did with the camera's latest frame, and its odometry."""
    if not view.params.get("temporal_alignment"):
        return {"temporal_alignment": "off"}
    aligner = view.processor.aligner_for(stream.name)
    last = aligner.last
    return {
        "temporal_alignment": f"{last.status}: {last.message}" if last else "no frame yet",
        "temporal_resets": str(aligner.resets),
        "temporal_gap_s": _nan_or(last.gap if last else None, ".2f"),
        "odometry_source": view.odometry_source,
        "odometry": stream.stats.odometry or "no frame yet",
        "odometry_problem": view.odometry_problem,
    }


def _nan_or(value: float | None, spec: str) -> str:
    return format(value if value is not None else float("nan"), spec)


def model_health(model: Any) -> tuple[int, str]:
    """(level, text) of a remote model's ``health()`` (the triton backend), else (OK, "")."""
    health = getattr(model, "health", None)
    return health() if callable(health) else (OK, "")


def stream_status(stream: Stream, now: float, view: NodeView) -> StatusReport:
    """The camera's rates, counters, model, scale and transport, and what is wrong."""
    s, health = stream.stats, stream.stats.health
    scale, scale_text, level = scale_summary(stream, now, view)
    cfg, est = view.processor.config, view.processor.estimator
    fit = scale.fit
    failing = health.failing(now)
    outage = health.outage(now)
    input_age = now - health.input.last if health.input.last is not None else None
    values = {
        "camera": stream.name,
        "input_rate_hz": f"{health.input.rate(now):.2f}",
        "output_rate_hz": f"{health.output.rate(now):.2f}",
        "input_age_s": _nan_or(input_age, ".1f"),
        "latency_s": f"{s.latency:.3f}",
        "inference_s": f"{s.inference:.3f}",
        "batch_size": str(s.batch_size),
        "max_batch": str(view.max_batch),
        "overhead_s": f"{s.overhead:.4f}",
        "frames_received": str(s.received),
        "frames_processed": str(s.processed),
        "frames_dropped": str(view.dropped),
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
        "processing_resolution": str(view.params["processing_resolution"]),
        "input_stamps": stream.stamps.unusable or "ok",
        "scale_source": view.scale_source,
        "scale_status": scale_text,
        "scale": f"{scale.scale if scale.scale is not None else cfg.fixed_scale:.6g}",
        "shift": f"{scale.shift if scale.shift is not None else cfg.fixed_shift:.6g}",
        "scale_inliers": str(fit.inliers if fit else 0),
        "scale_rmse_m": _nan_or(fit.rmse if fit else None, ".4g"),
        "scale_age_s": _nan_or(scale.age, ".3f"),
        "scale_message": scale.message,
        "last_error": s.last_error if failing else "",
        "last_warning": s.last_warning,
        "last_bad_input": s.last_bad_input,
    }
    values.update(temporal_values(stream, view))
    transport, transport_problem = transport_values(stream, view.params["input_qos"])
    values.update(transport)
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
    server_level, server_text = model_health(est)
    if server_text:
        values["model_server"] = server_text
    if server_level > OK:
        problems.insert(0, server_text)
        level = max(level, server_level)
    if problems and level == OK:
        level = WARN
    summary = "; ".join(problems + [scale_text, f"{values['output_rate_hz']} Hz out"])
    return StatusReport(level, summary, values)

"""Offline replay evaluation (SPEC §5): bag -> pairs by stamp -> estimator/scale -> scores.

    evaluate BAG --image-topic T --camera-info-topic T --gt-depth-topic T
             [--gt-normals-topic T] [--lidar-topic T] [--pred-topic T] [--pred-normals-topic T]
             [--depth-model M] [--normals-model M] [--device D] [--dtype D]
             [--processing-resolution N] [--min-depth X] [--max-depth X]
             [--stamp-tolerance S] [--max-frames N] [--out DIR]

Frames go through the node's own ``FrameProcessor`` in header-stamp order, so the LiDAR
scale filter sees the sequence the robot saw and the scores are those of what it publishes.
The bag is read twice: once for a small index (header stamps and bag times per topic,
/tf_static in full), then one frame at a time, so memory does not grow with the bag.

``evaluate_bag`` is the library entry point (tests, the demo); ``main`` is the command line.
Heavy imports (rosbags, torch, matplotlib) happen inside functions, so ``--help`` is instant.
Every expected failure is one line ``evaluate: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import struct
import sys
import tempfile
import warnings
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.errors import BagError, E2EDepthError, MessageError

if TYPE_CHECKING:
    import numpy as np

    from e2e_depth_ros.metrics import DepthMetrics, NormalMetrics
    from e2e_depth_ros.processing import FrameResult, ProcessingConfig

PROG = "evaluate"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
# Why a frame (or only its normals score) was not scored; every key is always reported.
SKIP_REASONS = {
    "no_gt_match": "no ground-truth depth within the stamp tolerance",
    "undecodable_image": "image could not be deserialized or decoded",
    "undecodable_gt": "ground-truth depth not 16UC1/32FC1 or corrupt",
    "gt_size_mismatch": "ground truth and prediction differ in size",
    "no_valid_gt": "fewer than 2 valid ground-truth pixels",
    "constant_prediction": "prediction constant on the valid pixels (alignment not unique)",
    "no_pred_match": "no recorded prediction within the stamp tolerance",
    "undecodable_pred": "recorded prediction not 32FC1 or corrupt",
    "no_gt_normals_match": "normals only: no ground-truth normals within the tolerance",
    "undecodable_normals": "normals only: ground truth or prediction not 32FC3 / wrong size",
}


def _bag_read_errors() -> tuple[type[BaseException], ...]:
    """What rosbags raises on a missing, foreign or corrupt bag (not a bug of ours)."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    return (AnyReaderError, ReaderError, SerdeError, OSError, EOFError, sqlite3.Error,
            struct.error, ValueError, KeyError, IndexError)


# ----------------------------------------------------------------------- options / results

@dataclass(frozen=True)
class EvalTopics:
    """Topic names in the bag. ``None`` leaves that input out."""

    image: str  # sensor_msgs/Image or CompressedImage
    camera_info: str
    gt_depth: str  # 16UC1 (mm, 0 invalid) or 32FC1 (m, non-finite invalid)
    gt_normals: str | None = None  # 32FC3, optical frame
    lidar: str | None = None  # PointCloud2, any frame reachable through tf_static
    pred: str | None = None  # 32FC1 predictions already in the bag (no model runs)
    pred_normals: str | None = None  # 32FC3 normals already in the bag
    tf_static: str = "/tf_static"


@dataclass(frozen=True)
class EvalOptions:
    """How to pair, what to score and what to write."""

    min_depth: float | None = None  # GT validity range (m), strict bounds; None = open
    max_depth: float | None = None
    stamp_tolerance: float = 0.02  # s; GT and recorded predictions to image
    camera_info_tolerance: float = 0.05  # s; the node's default
    lidar_tolerance: float = 0.1  # s; the node's default (LiDAR runs slower than cameras)
    max_frames: int | None = None  # first N images in stamp order
    pred_is_metric: bool | None = None  # None: metric when the topic ends with depth/image
    output_prefix: str = "/e2e_depth"
    write_bag: bool = True  # out.mcap (never with recorded predictions)
    write_report: bool = True  # report.md + PNGs
    progress: bool = True  # tqdm bar on stderr
    processing: ProcessingConfig | None = None  # the node's settings; None = its defaults


@dataclass(frozen=True)
class FrameScore:
    """Scores of one frame. Fractions, not percent; None where not computed.

    ``abs_rel``/``delta1``: after the per-image least-squares GT alignment, whose map
    ``best_scale * relative + best_shift`` is the best any LiDAR fit could do; ``lidar_*``:
    of the metric depth the node publishes (LiDAR filter's ``scale``/``shift``), or of a
    recorded metric prediction as it is.
    """

    stamp: float  # s, header stamp
    stamp_ns: int
    abs_rel: float
    delta1: float
    valid: int  # GT pixels scored
    best_scale: float
    best_shift: float
    lidar_abs_rel: float | None = None
    lidar_delta1: float | None = None
    scale: float | None = None
    shift: float | None = None
    inliers: int | None = None  # this frame's own LiDAR fit
    scale_status: str | None = None  # "ok", "holding", "none"; None without LiDAR
    normals_mean: float | None = None  # degrees, this frame's own


@dataclass
class EvalResult:
    """Everything an evaluation found; ``to_json`` is what metrics.json holds."""

    bag: str
    mode: str  # "model", "recorded-relative" or "recorded-metric"
    frames: int  # frames scored
    frames_total: int  # image frames considered (after --max-frames)
    depth_gt_aligned: DepthMetrics
    depth_lidar_aligned: DepthMetrics | None  # None without LiDAR or metric predictions
    lidar_frames: int  # frames with metric depth (the rest: no usable scale)
    normals: NormalMetrics | None
    per_frame: list[FrameScore]
    skipped: dict[str, int]
    notes: dict[str, int] = field(default_factory=dict)  # pipeline warnings -> frame count
    files: dict[str, str] = field(default_factory=dict)  # metrics, report, bag, plots

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite numbers become null (strict JSON has no NaN)."""
        def depth(m: DepthMetrics | None) -> dict | None:
            if m is None:
                return None
            return {"abs_rel": _num(m.abs_rel), "delta1": _num(m.delta1), "valid": m.valid}

        normals = None
        if self.normals is not None:
            n = self.normals
            normals = {k: _num(getattr(n, k)) for k in ("mean", "median", "a11", "a22", "a30")}
            normals["valid"] = n.valid
        return {
            "bag": self.bag,
            "mode": self.mode,
            "frames": self.frames,
            "frames_total": self.frames_total,
            "depth_gt_aligned": depth(self.depth_gt_aligned),
            "depth_lidar_aligned": depth(self.depth_lidar_aligned),
            "lidar_frames": self.lidar_frames,
            "normals": normals,
            "per_frame": [{k: _num(v) for k, v in vars(s).items()} for s in self.per_frame],
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "files": dict(self.files),
        }


def _num(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------- bag index

@dataclass(frozen=True)
class _Ref:
    """One message: where it is in the bag (topic, log time) and its header stamp."""

    topic: str
    bag_time: int
    stamp_ns: int


@dataclass
class _TopicIndex:
    """Header stamps of one topic, sorted, with the bag time to fetch each message by."""

    topic: str
    msgtype: str
    connections: list[Any]
    refs: list[_Ref] = field(default_factory=list)
    frame_id: str = ""  # of the first message
    undecodable: int = 0

    def finish(self) -> None:
        self.refs.sort(key=lambda r: (r.stamp_ns, r.bag_time))
        self._stamps = [r.stamp_ns for r in self.refs]

    def match(self, stamp_ns: int, tolerance_s: float) -> _Ref | None:
        """The message with exactly this stamp, else the nearest within the tolerance."""
        stamps = self._stamps
        i = bisect_left(stamps, stamp_ns)
        near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        if not near:
            return None
        best = min(near, key=lambda j: abs(stamps[j] - stamp_ns))
        if abs(stamps[best] - stamp_ns) <= round(tolerance_s * 1e9):
            return self.refs[best]
        return None

    def span(self) -> str:
        if not self.refs:
            return "none"
        return f"{self.refs[0].stamp_ns * 1e-9:.3f}..{self.refs[-1].stamp_ns * 1e-9:.3f} s"


# Types each role accepts; the first is the one named in errors.
_ROLE_TYPES = {
    "image": (IMAGE, COMPRESSED),
    "camera_info": (CAMERA_INFO,),
    "gt_depth": (IMAGE,),
    "gt_normals": (IMAGE,),
    "lidar": (POINTCLOUD,),
    "pred": (IMAGE,),
    "pred_normals": (IMAGE,),
    "tf_static": (TF_MESSAGE,),
}


def _open_reader(bag: Path) -> Any:
    """An opened AnyReader; every way of failing becomes one BagError naming the path."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise BagError(f"{bag}: no such bag (file or directory)")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except _bag_read_errors() as err:
        raise BagError(f"{bag}: not a readable rosbag2 (sqlite3 or MCAP) bag: {err}") from err
    return reader


def _check_topics(reader: Any, bag: Path, topics: EvalTopics) -> dict[str, _TopicIndex]:
    """One index per requested role; missing topics and wrong types are BagErrors."""
    by_topic: dict[str, list[Any]] = {}
    for conn in reader.connections:
        by_topic.setdefault(conn.topic, []).append(conn)
    available = ", ".join(f"{t} ({c[0].msgtype})" for t, c in sorted(by_topic.items()))
    indexes = {}
    for role, expected in _ROLE_TYPES.items():
        topic = getattr(topics, role)
        if topic is None:
            continue
        if topic not in by_topic:
            if role == "tf_static":
                continue  # only needed for LiDAR in another frame; checked there
            raise BagError(f"{bag}: topic {topic} (--{role.replace('_', '-')}-topic) is not in "
                           f"the bag; it has: {available or 'no topics'}")
        msgtype = by_topic[topic][0].msgtype
        if msgtype not in expected:
            raise BagError(f"{bag}: topic {topic} has type {msgtype}, expected "
                           f"{' or '.join(expected)} for --{role.replace('_', '-')}-topic")
        indexes[role] = _TopicIndex(topic, msgtype, by_topic[topic])
    return indexes


def _index_bag(reader: Any, bag: Path, indexes: dict[str, _TopicIndex]
               ) -> list[tuple[Any, int, bytes]]:
    """Fill the indexes with header stamps; returns the /tf_static messages in full."""
    from e2e_depth_ros.sync import stamp_to_ns

    by_topic: dict[str, list[_TopicIndex]] = {}  # one topic may serve two roles
    for index in indexes.values():
        by_topic.setdefault(index.topic, []).append(index)
    connections = [c for group in by_topic.values() for c in group[0].connections]
    tf_messages = []
    try:
        for conn, bag_time, raw in reader.messages(connections=connections):
            group = by_topic[conn.topic]
            if group[0].msgtype == TF_MESSAGE:
                tf_messages.append((conn, bag_time, bytes(raw)))
                continue
            try:
                header = reader.deserialize(raw, conn.msgtype).header
            except _bag_read_errors():
                for index in group:
                    index.undecodable += 1  # counted as a skip where it matters (images)
                continue
            for index in group:
                index.refs.append(_Ref(conn.topic, bag_time, stamp_to_ns(header.stamp)))
                if len(index.refs) == 1:
                    index.frame_id = header.frame_id
    except _bag_read_errors() as err:
        raise BagError(f"{bag}: corrupt bag, reading failed ({type(err).__name__}: {err})") \
            from err
    for index in indexes.values():
        index.finish()
    return tf_messages


# ----------------------------------------------------------------------- frame plan

@dataclass(frozen=True)
class _FramePlan:
    """The messages that belong to one image, found by header stamp (None: no match)."""

    image: _Ref
    gt_depth: _Ref | None
    camera_info: _Ref | None
    lidar: _Ref | None
    gt_normals: _Ref | None
    pred: _Ref | None
    pred_normals: _Ref | None


def _plan_frames(indexes: dict[str, _TopicIndex], options: EvalOptions) -> list[_FramePlan]:
    """Every image (first ``max_frames`` by stamp) with its partners."""
    tolerance = {
        "gt_depth": options.stamp_tolerance, "gt_normals": options.stamp_tolerance,
        "pred": options.stamp_tolerance, "pred_normals": options.stamp_tolerance,
        "camera_info": options.camera_info_tolerance, "lidar": options.lidar_tolerance,
    }
    images = indexes["image"].refs
    if options.max_frames is not None:
        images = images[: options.max_frames]
    plans = []
    for ref in images:
        partners = {role: (indexes[role].match(ref.stamp_ns, tol) if role in indexes else None)
                    for role, tol in tolerance.items()}
        plans.append(_FramePlan(image=ref, **partners))
    return plans


def _check_pairs(plans: list[_FramePlan], indexes: dict[str, _TopicIndex], bag: Path,
                 options: EvalOptions) -> None:
    """No image with ground truth at all is a mistake to report, not a score of nothing."""
    image, gt = indexes["image"], indexes["gt_depth"]
    if not image.refs:
        bad = f" ({image.undecodable} undecodable)" if image.undecodable else ""
        raise BagError(f"{bag}: no messages on image topic {image.topic}{bad}")
    if not any(p.gt_depth for p in plans):
        raise BagError(
            f"{bag}: no image/GT pairs: no {gt.topic} stamp within {options.stamp_tolerance} s "
            f"of any {image.topic} stamp (images {image.span()}, GT {gt.span()}); unmatched "
            "stamps, try --stamp-tolerance")


def _lidar_transform(transforms: Any, indexes: dict[str, _TopicIndex], topics: EvalTopics,
                     bag: Path) -> Any:
    """LiDAR frame -> camera frame from /tf_static, checked before any model loads."""
    lidar, image = indexes.get("lidar"), indexes["image"]
    if lidar is None or not lidar.refs:
        return None
    found = transforms.lookup(image.frame_id, lidar.frame_id)
    if found is None:
        known = ", ".join(transforms.frames) or "none"
        raise BagError(
            f"{bag}: no static transform from LiDAR frame '{lidar.frame_id}' to camera frame "
            f"'{image.frame_id}' on {topics.tf_static} (frames there: {known}); the "
            "evaluation takes the LiDAR extrinsic from the bag's /tf_static")
    return found


# ----------------------------------------------------------------------- message decoding

def _fetch(reader: Any, index: _TopicIndex, ref: _Ref) -> tuple[Any, bytes]:
    """(message, raw CDR) of one indexed message, read by its bag time."""
    from e2e_depth_ros.sync import stamp_to_ns

    for conn, bag_time, raw in reader.messages(connections=index.connections,
                                               start=ref.bag_time, stop=ref.bag_time + 1):
        msg = reader.deserialize(raw, conn.msgtype)
        if stamp_to_ns(msg.header.stamp) == ref.stamp_ns:
            return msg, bytes(raw)
    raise BagError(f"{index.topic}: message at bag time {ref.bag_time} vanished on re-read")


def _rgb(msg: Any, msgtype: str) -> np.ndarray:
    from e2e_depth_ros.messages import compressed_to_rgb, image_to_rgb

    return compressed_to_rgb(msg) if msgtype == COMPRESSED else image_to_rgb(msg)


def gt_depth_meters(msg: Any) -> np.ndarray:
    """float32 (H, W) meters from a GT depth Image, NaN where invalid.

    16UC1 (and mono16) is millimeters with 0 = invalid (the OpenNI / RealSense habit);
    32FC1 is meters (REP 118) with non-finite = invalid.
    """
    import numpy as np

    from e2e_depth_ros.messages import image_to_array

    values = image_to_array(msg)
    if msg.encoding in ("16UC1", "mono16"):
        depth = values.astype(np.float32) / np.float32(1000.0)
        depth[values == 0] = np.nan
        return depth
    if msg.encoding in ("32FC1", "64FC1"):
        return values.astype(np.float32)
    raise MessageError(f"ground-truth depth must be 16UC1 (mm) or 32FC1 (m), "
                       f"got {msg.encoding}")


def _float_image(msg: Any, encoding: str) -> np.ndarray:
    """A recorded 32FC1 / 32FC3 image, refusing any other encoding (no silent casts)."""
    from e2e_depth_ros.messages import image_to_array

    if msg.encoding != encoding:
        raise MessageError(f"expected a {encoding} image, got {msg.encoding}")
    return image_to_array(msg)


def is_metric_topic(topic: str) -> bool:
    """The node publishes metric depth as ``depth/image`` (REP 118) and nothing else."""
    return topic.rstrip("/").endswith("depth/image")


# ----------------------------------------------------------------------- output bag

_OUTPUTS = {
    "relative": ("depth/relative", IMAGE),
    "depth": ("depth/image", IMAGE),
    "depth_info": ("depth/camera_info", CAMERA_INFO),
    "normals": ("normals/image", IMAGE),
    "points": ("points", POINTCLOUD),
}


class _OutputBag:
    """The node's outputs with the original headers, plus copied inputs, as one MCAP file.

    rosbags writes a rosbag2 folder; its single .mcap is moved to ``path`` (self-describing:
    schemas and QoS travel inside, so ``ros2 bag play``, Foxglove and rosbags read it).
    """

    def __init__(self, path: Path, prefix: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._tmp = Path(tempfile.mkdtemp(prefix=".out_bag_", dir=path.parent))
        self._writer = Writer(self._tmp / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._ours: dict[str, Any] = {}
        self._copies: dict[str, Any] = {}

    def copy(self, conn: Any, bag_time: int, raw: bytes) -> None:
        """An input message as recorded (same bytes, definition and QoS)."""
        out = self._copies.get(conn.topic)
        if out is None:
            from rosbags.interfaces import MessageDefinitionFormat

            qos = getattr(conn.ext, "offered_qos_profiles", ())
            if conn.msgdef.data and conn.msgdef.format == MessageDefinitionFormat.MSG:
                out = self._writer.add_connection(conn.topic, conn.msgtype,
                                                  msgdef=conn.msgdef.data, rihs01=conn.digest,
                                                  offered_qos_profiles=qos)
            else:
                out = self._writer.add_connection(conn.topic, conn.msgtype,
                                                  typestore=self.typestore,
                                                  offered_qos_profiles=qos)
            self._copies[conn.topic] = out
        self._writer.write(out, bag_time, raw)

    def _write(self, key: str, bag_time: int, msg: Any) -> None:
        name, msgtype = _OUTPUTS[key]
        if key not in self._ours:
            self._ours[key] = self._writer.add_connection(f"{self.prefix}/{name}", msgtype,
                                                          typestore=self.typestore)
        self._writer.write(self._ours[key], bag_time,
                           self.typestore.serialize_cdr(msg, msgtype))

    def frame(self, bag_time: int, header: Any, info: Any, result: FrameResult) -> None:
        """What the node publishes for one frame (SPEC §3), stamped with the input header."""
        from e2e_depth_ros import messages

        types = self.typestore.types
        image_cls = types[IMAGE]
        if result.relative is not None:
            self._write("relative", bag_time,
                        messages.build_image(image_cls, header, result.relative, "32FC1"))
        if result.normals is not None:
            self._write("normals", bag_time,
                        messages.build_image(image_cls, header, result.normals, "32FC3"))
        if result.metric is not None:
            self._write("depth", bag_time,
                        messages.build_image(image_cls, header, result.metric, "32FC1"))
            if info is not None:
                height, width = result.metric.shape
                self._write("depth_info", bag_time,
                            messages.scaled_camera_info(info, width, height, header=header))
        if result.points is not None:
            self._write("points", bag_time, messages.build_pointcloud(
                types[POINTCLOUD], types["sensor_msgs/msg/PointField"], header,
                result.points, rgb=result.points_rgb, normals=result.points_normals))

    def close(self) -> None:
        """Finish the file and move it into place (replacing an older one)."""
        self._writer.close()
        written = next((self._tmp / "bag").glob("*.mcap"))
        if self.path.is_dir():
            shutil.rmtree(self.path)
        written.replace(self.path)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


# ----------------------------------------------------------------------- the evaluation

@dataclass(frozen=True)
class _Recorded:
    """A Prediction-shaped holder for outputs read from the bag."""

    depth: np.ndarray | None
    normals: np.ndarray | None


class _RecordedEstimator:
    """Stands in for the Estimator when predictions are in the bag: the frame's recorded
    relative depth goes through the node's own LiDAR fit and filter unchanged."""

    def __init__(self) -> None:
        self.next: _Recorded = _Recorded(None, None)

    def predict(self, rgb: np.ndarray, *, depth: bool = True, normals: bool = True
                ) -> _Recorded:
        return _Recorded(self.next.depth if depth else None,
                         self.next.normals if normals else None)


@dataclass
class _Sample:
    """Arrays of one frame kept for the report's pictures."""

    stamp: float
    rgb: np.ndarray
    gt: np.ndarray
    pred: np.ndarray  # metric: LiDAR-aligned when available, else GT-aligned
    label: str


class _Evaluation:
    """State of one run: the reader, indexes, the processor and the accumulating scores."""

    def __init__(self, reader: Any, bag: Path, topics: EvalTopics, options: EvalOptions,
                 indexes: dict[str, _TopicIndex], lidar_tf: Any, estimator: Any,
                 out: _OutputBag | None) -> None:
        from e2e_depth_ros.metrics import NormalErrorAccumulator
        from e2e_depth_ros.processing import FrameProcessor, Needs, ProcessingConfig

        self.reader, self.bag, self.topics, self.options = reader, bag, topics, options
        self.indexes, self.lidar_tf, self.out = indexes, lidar_tf, out
        self.recorded = estimator is None
        self.metric_pred = self.recorded and (
            options.pred_is_metric if options.pred_is_metric is not None
            else is_metric_topic(topics.pred or ""))
        self.estimator = _RecordedEstimator() if self.recorded else estimator
        self.processor = FrameProcessor(self.estimator, options.processing or ProcessingConfig())
        self.has_normals = (topics.pred_normals is not None
                            or getattr(estimator, "normals", None) is not None)
        self.needs = Needs(relative=True, normals=self.has_normals, metric=True,
                           points=out is not None, points_rgb=True, points_normals=False)
        self.normals = NormalErrorAccumulator()
        self.scores: list[FrameScore] = []
        self.depth_gt: list[DepthMetrics] = []
        self.depth_lidar: list[DepthMetrics] = []
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.samples: list[_Sample] = []
        self.sample_at: set[int] = set()
        self.notes: dict[str, int] = {}

    @property
    def mode(self) -> str:
        if not self.recorded:
            return "model"
        return "recorded-metric" if self.metric_pred else "recorded-relative"

    def _message(self, role: str, ref: _Ref) -> tuple[Any, bytes]:
        """(message, raw) of one frame's partner; unreadable bytes become a BagError."""
        try:
            return _fetch(self.reader, self.indexes[role], ref)
        except _bag_read_errors() as err:
            raise BagError(f"{self.bag}: {ref.topic} at bag time {ref.bag_time}: cannot be "
                           f"read ({type(err).__name__}: {err})") from err

    def _decoded(self, role: str, ref: _Ref | None, decode: Callable[[Any], Any],
                 reason: str) -> Any:
        """Decoded array of a partner message, or None with the skip counted."""
        if ref is None:
            return None
        try:
            return decode(self._message(role, ref)[0])
        except E2EDepthError:
            self.skipped[reason] += 1
            return None

    def run_frame(self, i: int, plan: _FramePlan) -> None:
        """Process one image as the node would, write its outputs, score it."""
        try:
            image_msg, image_raw = self._message("image", plan.image)
            rgb = _rgb(image_msg, self.indexes["image"].msgtype)
        except E2EDepthError:
            self.skipped["undecodable_image"] += 1
            return
        if self.recorded:
            pred = self._decoded("pred", plan.pred, lambda m: _float_image(m, "32FC1"),
                                 "undecodable_pred")
            if pred is None:
                if plan.pred is None:
                    self.skipped["no_pred_match"] += 1
                return
            normals = self._decoded("pred_normals", plan.pred_normals,
                                    lambda m: _float_image(m, "32FC3"), "undecodable_normals")
            self.estimator.next = _Recorded(pred, normals)
        result = self._process(rgb, plan, image_msg, image_raw)
        if not self.recorded and "pred_normals" in self.indexes:
            # Model depth, recorded normals: score the recorded ones (nothing else uses them).
            result.normals = self._decoded("pred_normals", plan.pred_normals,
                                           lambda m: _float_image(m, "32FC3"),
                                           "undecodable_normals")
        if plan.gt_depth is None:
            self.skipped["no_gt_match"] += 1
            return
        gt = self._decoded("gt_depth", plan.gt_depth, gt_depth_meters, "undecodable_gt")
        if gt is not None:
            self._score(i, plan, rgb, gt, result)

    def _process(self, rgb: np.ndarray, plan: _FramePlan, image_msg: Any, image_raw: bytes
                 ) -> FrameResult:
        """FrameResult of this frame through the node's pipeline; outputs written."""
        from e2e_depth_ros.messages import camera_from_info

        info = camera = None
        if plan.camera_info is not None:
            try:  # the node goes on without a camera (no cloud, no LiDAR fit); so does this
                info, info_raw = self._message("camera_info", plan.camera_info)
                camera = camera_from_info(info)
            except E2EDepthError:
                camera = None
        stamp = plan.image.stamp_ns * 1e-9
        if self.metric_pred:
            from e2e_depth_ros.processing import FrameResult

            pred = self.estimator.next
            return FrameResult(relative=pred.depth, normals=pred.normals, metric=pred.depth,
                               scale_source="recorded")
        result = self.processor.process(rgb, stamp, camera=camera,
                                        lidar_points=self._lidar(plan), needs=self.needs)
        for note in result.notes:  # what the node would log, e.g. a camera_info size mismatch
            self.notes[note] = self.notes.get(note, 0) + 1
        if self.out is not None:
            image_conn = self.indexes["image"].connections[0]
            self.out.copy(image_conn, plan.image.bag_time, image_raw)
            if info is not None:
                self.out.copy(self.indexes["camera_info"].connections[0],
                              plan.camera_info.bag_time, info_raw)
            self.out.frame(plan.image.bag_time, image_msg.header,
                           info if camera is not None else None, result)
        return result

    def _lidar(self, plan: _FramePlan) -> np.ndarray | None:
        """The matched cloud in the camera optical frame (None: no cloud or unreadable)."""
        if plan.lidar is None or self.lidar_tf is None:
            return None
        import numpy as np

        from e2e_depth_ros.geometry import transform_points
        from e2e_depth_ros.messages import pointcloud_to_xyz

        try:
            points = pointcloud_to_xyz(self._message("lidar", plan.lidar)[0])
        except E2EDepthError:
            return None  # the node warns and goes on without a fit; so does the filter
        tf = self.lidar_tf
        return transform_points(points, tf.rotation, tf.translation).astype(np.float32)

    def _score(self, i: int, plan: _FramePlan, rgb: np.ndarray, gt: np.ndarray,
               result: FrameResult) -> None:
        from e2e_depth_ros.metrics import aligned_depth_metrics, depth_metrics, valid_depth_mask

        relative = result.relative
        if relative is None or relative.shape != gt.shape:
            self.skipped["gt_size_mismatch"] += 1
            return
        opts = self.options
        try:
            aligned, s, t = aligned_depth_metrics(relative, gt, min_depth=opts.min_depth,
                                                  max_depth=opts.max_depth)
        except ValueError:
            self.skipped["constant_prediction"] += 1
            return
        if aligned.valid == 0:
            self.skipped["no_valid_gt"] += 1
            return
        self.depth_gt.append(aligned)
        lidar = None
        if result.metric is not None:
            mask = valid_depth_mask(gt, min_depth=opts.min_depth, max_depth=opts.max_depth)
            lidar = depth_metrics(result.metric, gt, mask)
            self.depth_lidar.append(lidar)
        score = self._frame_score(plan, aligned, s, t, lidar, result)
        score_normals = self._score_normals(plan, result)
        if score_normals is not None:
            score = _replace(score, normals_mean=score_normals)
        self.scores.append(score)
        if i in self.sample_at:
            pred = result.metric if result.metric is not None else s * relative + t
            label = "LiDAR-aligned" if result.metric is not None else "GT-aligned"
            if self.metric_pred:
                label = "recorded metric"
            self.samples.append(_Sample(score.stamp, rgb, gt, pred, label))

    def _frame_score(self, plan: _FramePlan, aligned: DepthMetrics, s: float, t: float,
                     lidar: DepthMetrics | None, result: FrameResult) -> FrameScore:
        state, fit = result.scale_state, result.fit
        with_lidar = "lidar" in self.indexes and not self.metric_pred
        return FrameScore(
            stamp=plan.image.stamp_ns * 1e-9, stamp_ns=plan.image.stamp_ns,
            abs_rel=aligned.abs_rel, delta1=aligned.delta1, valid=aligned.valid,
            best_scale=s, best_shift=t,
            lidar_abs_rel=None if lidar is None else lidar.abs_rel,
            lidar_delta1=None if lidar is None else lidar.delta1,
            scale=state.scale if state is not None else None,
            shift=state.shift if state is not None else None,
            inliers=fit.inliers if fit is not None else None,
            scale_status=state.status if (state is not None and with_lidar) else None,
        )

    def _score_normals(self, plan: _FramePlan, result: FrameResult) -> float | None:
        if "gt_normals" not in self.indexes or result.normals is None:
            return None
        if plan.gt_normals is None:
            self.skipped["no_gt_normals_match"] += 1
            return None
        gt = self._decoded("gt_normals", plan.gt_normals, lambda m: _float_image(m, "32FC3"),
                           "undecodable_normals")
        if gt is None:
            return None
        if gt.shape != result.normals.shape:
            self.skipped["undecodable_normals"] += 1
            return None
        return self.normals.add(result.normals, gt).mean

    def result(self, frames_total: int) -> EvalResult:
        from e2e_depth_ros.metrics import summarize_depth

        with_lidar = self.metric_pred or ("lidar" in self.indexes)
        normals = self.normals.result() if self.normals.frames else None
        return EvalResult(
            bag=str(self.bag), mode=self.mode, frames=len(self.scores),
            frames_total=frames_total, depth_gt_aligned=summarize_depth(self.depth_gt),
            depth_lidar_aligned=summarize_depth(self.depth_lidar) if with_lidar else None,
            lidar_frames=len(self.depth_lidar), normals=normals, per_frame=self.scores,
            skipped=self.skipped, notes=self.notes)


def _replace(score: FrameScore, **changes: Any) -> FrameScore:
    from dataclasses import replace

    return replace(score, **changes)


def _sample_indices(n: int, count: int = 3) -> set[int]:
    """First, middle and last frame: the start, the steady state and the end."""
    if n <= count:
        return set(range(n))
    return {round(k * (n - 1) / (count - 1)) for k in range(count)}


def evaluate_bag(
    bag: str | Path,
    topics: EvalTopics,
    *,
    estimator: Any | None = None,
    make_estimator: Callable[[], Any] | None = None,
    out_dir: str | Path = "evaluation",
    options: EvalOptions | None = None,
) -> EvalResult:
    """Replay ``bag`` through the node's pipeline and score it against ground truth.

    Give ``estimator`` (an ``Estimator``) or ``make_estimator`` (called only after the bag
    has been checked, so a bad bag fails before a slow model load), unless
    ``topics.pred`` names recorded predictions. Writes ``metrics.json``, ``report.md``
    with PNG plots and (model runs) ``out.mcap`` into ``out_dir``.
    Raises BagError for a missing/corrupt bag, missing or mistyped topics, no image/GT
    pair or a LiDAR frame with no static transform; CheckpointError from the model load.
    """
    options = options or EvalOptions()
    bag = Path(bag)
    if topics.pred is None and estimator is None and make_estimator is None:
        raise ValueError("give an estimator (or make_estimator), or topics.pred to score "
                         "recorded predictions")
    out_dir = Path(out_dir)
    reader = _open_reader(bag)
    try:
        return _evaluate_open(reader, bag, topics, estimator, make_estimator, out_dir, options)
    finally:
        reader.close()


def _evaluate_open(reader: Any, bag: Path, topics: EvalTopics, estimator: Any,
                   make_estimator: Callable[[], Any] | None, out_dir: Path,
                   options: EvalOptions) -> EvalResult:
    from e2e_depth_ros.tf_static import StaticTransforms

    indexes = _check_topics(reader, bag, topics)
    tf_messages = _index_bag(reader, bag, indexes)
    plans = _plan_frames(indexes, options)
    _check_pairs(plans, indexes, bag, options)
    if topics.pred is not None and not any(p.pred for p in plans):
        raise BagError(f"{bag}: no recorded prediction on {topics.pred} within "
                       f"{options.stamp_tolerance} s of any image stamp")
    transforms = StaticTransforms()
    try:
        for conn, _, raw in tf_messages:
            transforms.add_message(reader.deserialize(raw, conn.msgtype))
    except _bag_read_errors() as err:
        raise BagError(f"{bag}: {topics.tf_static} cannot be read ({err})") from err
    lidar_tf = _lidar_transform(transforms, indexes, topics, bag)
    if topics.pred is None and estimator is None:
        estimator = make_estimator()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = None
    if options.write_bag and topics.pred is None:
        out = _OutputBag(out_dir / "out.mcap", options.output_prefix)
    ev = _Evaluation(reader, bag, topics, options, indexes, lidar_tf,
                     None if topics.pred is not None else estimator, out)
    ev.sample_at = _sample_indices(len(plans))
    ev.skipped["undecodable_image"] += indexes["image"].undecodable
    try:
        if out is not None:
            for conn, bag_time, raw in tf_messages:
                out.copy(conn, bag_time, raw)
        for i, plan in enumerate(_progress(plans, options.progress)):
            ev.run_frame(i, plan)
    except BaseException:
        if out is not None:
            out.abort()
        raise
    if out is not None:
        out.close()
    result = ev.result(len(plans))
    _write_outputs(result, ev.samples, out_dir, options, out)
    return result


def _progress(plans: list[_FramePlan], enabled: bool) -> Iterator[_FramePlan]:
    from tqdm import tqdm

    return iter(tqdm(plans, desc=PROG, unit="frame", file=sys.stderr, disable=not enabled,
                     dynamic_ncols=True))


# ----------------------------------------------------------------------- report

def _write_outputs(result: EvalResult, samples: list[_Sample], out_dir: Path,
                   options: EvalOptions, out: _OutputBag | None) -> None:
    if out is not None:
        result.files["bag"] = str(out.path)
    if options.write_report:
        plots = _plots(result, samples, out_dir)
        result.files.update({name: str(out_dir / file) for name, file in plots.items()})
        report = out_dir / "report.md"
        report.write_text(render_report(result, plots))
        result.files["report"] = str(report)
    metrics = out_dir / "metrics.json"
    result.files["metrics"] = str(metrics)
    metrics.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def _figure(width: float, height: float) -> Any:
    """A pyplot-free Agg figure: no global backend switch, safe in any process."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plots(result: EvalResult, samples: list[_Sample], out_dir: Path) -> dict[str, str]:
    """Write the report's PNGs; returns {name: file name relative to out_dir}."""
    plots = {}
    if result.per_frame:
        plots["errors_over_time"] = _plot_errors(result, out_dir / "errors_over_time.png")
    if any(s.scale is not None for s in result.per_frame):
        plots["scale_over_time"] = _plot_scale(result, out_dir / "scale_over_time.png")
    if samples:
        t0 = result.per_frame[0].stamp
        plots["frames"] = _plot_samples(samples, t0, out_dir / "frames.png")
    return plots


def _times(result: EvalResult) -> list[float]:
    t0 = result.per_frame[0].stamp
    return [s.stamp - t0 for s in result.per_frame]


def _series(result: EvalResult, name: str) -> list[float]:
    return [float("nan") if getattr(s, name) is None else getattr(s, name)
            for s in result.per_frame]


def _plot_errors(result: EvalResult, path: Path) -> str:
    fig = _figure(8, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = _times(result)
    top.plot(t, _series(result, "abs_rel"), "o-", label="GT-aligned (best affine)")
    bottom.plot(t, _series(result, "delta1"), "o-", label="GT-aligned (best affine)")
    if result.depth_lidar_aligned is not None:
        label = "as published (LiDAR scale)" if result.mode != "recorded-metric" \
            else "recorded metric"
        top.plot(t, _series(result, "lidar_abs_rel"), "s-", label=label)
        bottom.plot(t, _series(result, "lidar_delta1"), "s-", label=label)
    top.set_ylabel("AbsRel")
    bottom.set_ylabel("delta1 (fraction)")
    bottom.set_xlabel("time since first scored frame (s)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.savefig(path)
    return path.name


def _plot_scale(result: EvalResult, path: Path) -> str:
    fig = _figure(8, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = _times(result)
    top.plot(t, _series(result, "scale"), "s-", label="LiDAR filter (published)")
    top.plot(t, _series(result, "best_scale"), "o--", label="best possible (GT fit)")
    bottom.plot(t, _series(result, "shift"), "s-", label="LiDAR filter (published)")
    bottom.plot(t, _series(result, "best_shift"), "o--", label="best possible (GT fit)")
    top.set_ylabel("scale (m per unit)")
    bottom.set_ylabel("shift (m)")
    bottom.set_xlabel("time since first scored frame (s)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.savefig(path)
    return path.name


def _plot_samples(samples: list[_Sample], t0: float, path: Path) -> str:
    import numpy as np

    fig = _figure(13, 2.8 * len(samples))
    axes = np.atleast_2d(fig.subplots(len(samples), 4))
    for row, sample in zip(axes, samples):
        valid = np.isfinite(sample.gt) & (sample.gt > 0)
        lo, hi = (np.percentile(sample.gt[valid], [2, 98]) if valid.any() else (0.0, 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.where(valid, np.abs(sample.pred - sample.gt) / sample.gt, np.nan)
        row[0].imshow(sample.rgb)
        row[0].set_title(f"image, t = {sample.stamp - t0:.2f} s")
        row[1].imshow(sample.gt, cmap="turbo_r", vmin=lo, vmax=hi)
        row[1].set_title("ground truth (m)")
        shown = row[2].imshow(sample.pred, cmap="turbo_r", vmin=lo, vmax=hi)
        row[2].set_title(f"prediction, {sample.label} (m)")
        fig.colorbar(shown, ax=row[1:3], shrink=0.8)
        err = row[3].imshow(error, cmap="magma", vmin=0.0, vmax=0.5)
        row[3].set_title("|pred - gt| / gt")
        fig.colorbar(err, ax=row[3], shrink=0.8)
        for ax in row:
            ax.set_axis_off()
    fig.savefig(path)
    return path.name


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def summary_lines(result: EvalResult) -> list[str]:
    """The stdout table: one row per score, then the skips."""
    lines = [f"{'score':<32}{'AbsRel':>10}{'delta1':>10}{'pixels':>12}"]
    g = result.depth_gt_aligned
    lines.append(f"{'depth, GT-aligned (best affine)':<32}{_fmt(g.abs_rel):>10}"
                 f"{_fmt(g.delta1):>10}{g.valid:>12}")
    lidar = result.depth_lidar_aligned
    if lidar is not None:
        name = "depth, recorded metric" if result.mode == "recorded-metric" \
            else "depth, LiDAR-aligned (robot)"
        lines.append(f"{name:<32}{_fmt(lidar.abs_rel):>10}{_fmt(lidar.delta1):>10}"
                     f"{lidar.valid:>12}   {result.lidar_frames}/{result.frames} frames metric")
    n = result.normals
    if n is not None:
        lines.append(f"normals: mean {_fmt(n.mean, '.2f')} deg, median {_fmt(n.median, '.2f')}"
                     f" deg, <11.25: {_fmt(n.a11)}, <22.5: {_fmt(n.a22)}, <30: {_fmt(n.a30)}"
                     f" ({n.valid} pixels)")
    skips = ", ".join(f"{k} {v}" for k, v in result.skipped.items() if v) or "none"
    lines.append(f"frames scored: {result.frames} of {result.frames_total}; skipped: {skips}")
    lines += [f"note ({count} frames): {note}" for note, count in result.notes.items()]
    return lines


def render_report(result: EvalResult, plots: dict[str, str]) -> str:
    """report.md: the table, the plots and how to read them."""
    parts = [
        f"# Evaluation of `{result.bag}`\n",
        f"Mode: {result.mode}. Fractions, not percent; AbsRel = mean(|p - g| / g), "
        "delta1 = fraction with max(p/g, g/p) < 1.25 over valid ground-truth pixels.\n",
        "```", *summary_lines(result), "```\n",
        "GT-aligned: each frame's relative depth mapped to meters by the least-squares "
        "scale and shift against its ground truth (the paper's protocol): the best any "
        "affine map could do. LiDAR-aligned: the metric depth the node publishes, with the "
        "scale and shift of its LiDAR fit and temporal filter.\n",
    ]
    sections = {
        "errors_over_time": ("Per-frame error over time", ""),
        "frames": ("A few frames", "Image, ground truth, prediction (meters) and its relative "
                   "error |p - g| / g; black in the error map: no valid ground truth."),
        "scale_over_time": ("LiDAR scale over time vs the best possible",
                            "The GT fit maps relative depth to meters the same way the LiDAR "
                            "fit does (metric = scale * relative + shift), so the curves "
                            "compare directly; the gap is what the LiDAR alignment loses."),
    }
    for key, (title, text) in sections.items():
        if key in plots:
            parts.append(f"## {title}\n\n{text}\n\n![{title}]({plots[key]})\n")
    if result.files.get("bag"):
        parts.append(f"Node outputs with the original headers: `{Path(result.files['bag']).name}`"
                     " (replays into RViz with the copied camera_info and /tf_static).\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line ``evaluate: error: ...`` and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Replay a rosbag2 (sqlite3 or MCAP) through the depth "
                "node's pipeline and score it against ground truth (SPEC §5).")
    p.add_argument("bag", type=Path, help="rosbag2 folder, or a .mcap / .db3 file")
    t = p.add_argument_group("topics")
    t.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    t.add_argument("--camera-info-topic", required=True)
    t.add_argument("--gt-depth-topic", required=True,
                   help="ground truth: 16UC1 (mm, 0 invalid) or 32FC1 (m, NaN invalid)")
    t.add_argument("--gt-normals-topic", help="32FC3 optical-frame normals")
    t.add_argument("--lidar-topic", help="PointCloud2; its frame is found in /tf_static")
    t.add_argument("--tf-static-topic", default="/tf_static")
    t.add_argument("--pred-topic", help="score this recorded 32FC1 depth instead of running a "
                   "model (metric when it ends with depth/image or with --pred-is-metric)")
    t.add_argument("--pred-is-metric", action="store_true", default=None,
                   help="the --pred-topic values are meters")
    t.add_argument("--pred-normals-topic", help="recorded 32FC3 normals to score")
    m = p.add_argument_group("model")
    m.add_argument("--depth-model", default=None, help="hub id or folder (default: the "
                   "published marigold-e2e-ft-depth)")
    m.add_argument("--normals-model", default=None, help="hub id or folder; default: the "
                   "published normals model when --gt-normals-topic is given, else none")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--dtype", default="auto")
    m.add_argument("--processing-resolution", type=int, default=768)
    e = p.add_argument_group("evaluation")
    e.add_argument("--min-depth", type=float, default=None, help="valid GT range (m)")
    e.add_argument("--max-depth", type=float, default=None)
    e.add_argument("--stamp-tolerance", type=float, default=0.02,
                   help="max header-stamp gap image-GT (s) when not exact (default 0.02)")
    e.add_argument("--lidar-tolerance", type=float, default=0.1,
                   help="max header-stamp gap image-LiDAR (s) (default 0.1, as the node)")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Values argparse cannot check alone, each named with what was received."""
    if args.stamp_tolerance < 0 or args.lidar_tolerance < 0:
        parser.error(f"tolerances must be >= 0, got --stamp-tolerance {args.stamp_tolerance}"
                     f" --lidar-tolerance {args.lidar_tolerance}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    for name in ("min_depth", "max_depth"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if args.min_depth is not None and args.max_depth is not None \
            and args.min_depth >= args.max_depth:
        parser.error(f"--min-depth {args.min_depth} must be below --max-depth {args.max_depth}")


def _model_choice(value: str | None, default: str | None) -> str | None:
    if value is None:
        return default
    return None if value.strip().lower() in ("", "none") else value


def _estimator_factory(args: argparse.Namespace) -> Callable[[], Any]:
    """Loads the model only when called (after the bag checks), quietly."""
    def make() -> Any:
        from e2e_depth_ros.estimator import (DEFAULT_DEPTH_MODEL, DEFAULT_NORMALS_MODEL,
                                             Estimator)

        _quiet_libraries()
        depth = _model_choice(args.depth_model, DEFAULT_DEPTH_MODEL)
        wants_normals = args.gt_normals_topic and not args.pred_normals_topic
        normals = _model_choice(args.normals_model,
                                DEFAULT_NORMALS_MODEL if wants_normals else None)
        if args.pred_normals_topic:
            normals = None
        if depth is None:
            raise ValueError("--depth-model none: the evaluation needs a depth model "
                             "(or --pred-topic)")
        return Estimator(depth, normals, device=args.device, dtype=args.dtype,
                         processing_resolution=args.processing_resolution)
    return make


def _quiet_libraries() -> None:
    """Hub/diffusers/transformers chatter off; a failed load still becomes one error."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils.logging as hub_logging
    import transformers.utils.logging as transformers_logging

    warnings.filterwarnings("ignore", module="huggingface_hub")
    hub_logging.set_verbosity_error()  # its "Retrying in 1s" lines on a machine offline
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """``evaluate BAG ...``: 0 on success, 2 with one error line on any expected failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    topics = EvalTopics(
        image=args.image_topic, camera_info=args.camera_info_topic,
        gt_depth=args.gt_depth_topic, gt_normals=args.gt_normals_topic,
        lidar=args.lidar_topic, pred=args.pred_topic, pred_normals=args.pred_normals_topic,
        tf_static=args.tf_static_topic)
    options = EvalOptions(
        min_depth=args.min_depth, max_depth=args.max_depth,
        stamp_tolerance=args.stamp_tolerance, lidar_tolerance=args.lidar_tolerance,
        max_frames=args.max_frames, pred_is_metric=args.pred_is_metric,
        progress=not args.no_progress)
    try:
        result = evaluate_bag(args.bag, topics, out_dir=args.out, options=options,
                              make_estimator=_estimator_factory(args))
    except (E2EDepthError, ValueError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(result)))
    print("wrote " + ", ".join(result.files[k] for k in ("metrics", "report", "bag")
                               if k in result.files))
    if result.frames == 0:
        print(f"{PROG}: error: no frame could be scored (see skipped above)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

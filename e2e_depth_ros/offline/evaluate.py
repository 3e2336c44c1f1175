"""Offline replay evaluation (docs/evaluation.md): bag -> pairs -> estimator/scale -> scores.

    evaluate BAG --image-topic T --camera-info-topic T --gt-depth-topic T
             [--gt-normals-topic T] [--lidar-topic T] [--pred-topic T] [--pred-normals-topic T]
             [--depth-model M] [--normals-model M] [--device D] [--dtype D]
             [--processing-resolution N] [--min-depth X] [--max-depth X]
             [--stamp-tolerance S] [--max-frames N] [--out DIR] [--overwrite]

Frames go through the node's own ``FrameProcessor`` in header-stamp order, so the LiDAR
scale filter sees the sequence the robot saw and the scores are those of what it publishes.
The bag is read twice: once for a small index (header stamps and bag times per topic,
/tf_static in full), then one frame at a time, so memory does not grow with the bag.

``evaluate_bag`` is the library entry point (tests, the demo); ``main`` is the command line.
Reading and writing bags lives in ``bag_io``, the summary, report and plots in ``report``;
this module pairs frames, runs them through the pipeline and scores them.
Heavy imports (rosbags, torch, matplotlib) happen inside functions, so ``--help`` is instant.
Every expected failure is one line ``evaluate: error: ...`` and exit code 2, and leaves the
output folder as it was: files an earlier run wrote are replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.offline.bag_io import (  # noqa: F401 (re-exported)
    CAMERA_INFO, COMPRESSED, IMAGE, POINTCLOUD, TF_MESSAGE, MessageRef, OutputBag, TopicIndex,
    bag_read_errors, check_topics, fetch_message, index_bag, open_reader)
from e2e_depth_ros.offline.cli import OneLineParser, processing_resolution_arg, tiny_notes
from e2e_depth_ros.errors import BagError, E2EDepthError, MessageError
from e2e_depth_ros.model.model_args import model_or_none
from e2e_depth_ros.offline.report import (REPORT_FILES, Sample,  # noqa: F401 (re-exported)
                                          render_report, summary_lines, write_outputs)

if TYPE_CHECKING:
    import numpy as np

    from e2e_depth_ros.core.metrics import DepthMetrics, NormalMetrics
    from e2e_depth_ros.core.processing import FrameResult, ProcessingConfig

PROG = "evaluate"
OUT_BAG = "out.mcap"
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
    overwrite: bool = False  # replace files an earlier run left in the output folder


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
    time_origin: float = 0.0  # s, the bag's first image header stamp: t = stamp - this
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
            "time_origin": self.time_origin,
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


# ----------------------------------------------------------------------- frame plan

@dataclass(frozen=True)
class _FramePlan:
    """The messages that belong to one image, found by header stamp (None: no match)."""

    image: MessageRef
    gt_depth: MessageRef | None
    camera_info: MessageRef | None
    lidar: MessageRef | None
    gt_normals: MessageRef | None
    pred: MessageRef | None
    pred_normals: MessageRef | None


def _plan_frames(indexes: dict[str, TopicIndex], options: EvalOptions) -> list[_FramePlan]:
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


def _check_pairs(plans: list[_FramePlan], indexes: dict[str, TopicIndex], bag: Path,
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


def _lidar_transform(transforms: Any, indexes: dict[str, TopicIndex], topics: EvalTopics,
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

def _rgb(msg: Any, msgtype: str) -> np.ndarray:
    from e2e_depth_ros.ros.messages import compressed_to_rgb, image_to_rgb

    return compressed_to_rgb(msg) if msgtype == COMPRESSED else image_to_rgb(msg)


def gt_depth_meters(msg: Any) -> np.ndarray:
    """float32 (H, W) meters from a GT depth Image, NaN where invalid.

    16UC1 (and mono16) is millimeters with 0 = invalid (the OpenNI / RealSense habit);
    32FC1 is meters (REP 118) with non-finite = invalid.
    """
    import numpy as np

    from e2e_depth_ros.ros.messages import image_to_array

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
    from e2e_depth_ros.ros.messages import image_to_array

    if msg.encoding != encoding:
        raise MessageError(f"expected a {encoding} image, got {msg.encoding}")
    return image_to_array(msg)


def is_metric_topic(topic: str) -> bool:
    """The node publishes metric depth as ``depth/image`` (REP 118) and nothing else."""
    return topic.rstrip("/").endswith("depth/image")


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


class _Evaluation:
    """State of one run: the reader, indexes, the processor and the accumulating scores."""

    def __init__(self, reader: Any, bag: Path, topics: EvalTopics, options: EvalOptions,
                 indexes: dict[str, TopicIndex], lidar_tf: Any, estimator: Any,
                 out: OutputBag | None) -> None:
        from e2e_depth_ros.core.metrics import NormalErrorAccumulator
        from e2e_depth_ros.core.processing import FrameProcessor, Needs, ProcessingConfig

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
        self.samples: list[Sample] = []
        self.sample_at: set[int] = set()
        self.notes: dict[str, int] = {}

    @property
    def mode(self) -> str:
        if not self.recorded:
            return "model"
        return "recorded-metric" if self.metric_pred else "recorded-relative"

    def _message(self, role: str, ref: MessageRef) -> tuple[Any, bytes]:
        """(message, raw) of one frame's partner; unreadable bytes become a BagError."""
        try:
            return fetch_message(self.reader, self.indexes[role], ref)
        except bag_read_errors() as err:
            raise BagError(f"{self.bag}: {ref.topic} at bag time {ref.bag_time}: cannot be "
                           f"read ({type(err).__name__}: {err})") from err

    def _decoded(self, role: str, ref: MessageRef | None, decode: Callable[[Any], Any],
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
        from e2e_depth_ros.ros.messages import camera_from_info

        info = camera = None
        if plan.camera_info is not None:
            try:  # the node goes on without a camera (no cloud, no LiDAR fit); so does this
                info, info_raw = self._message("camera_info", plan.camera_info)
                camera = camera_from_info(info)
            except E2EDepthError:
                camera = None
        stamp = plan.image.stamp_ns * 1e-9
        if self.metric_pred:
            from e2e_depth_ros.core.processing import FrameResult

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
            self._copy_partners(plan)
        return result

    def _copy_partners(self, plan: _FramePlan) -> None:
        """Ground truth and LiDAR go into out.mcap too, so it can be scored again as it is
        (``evaluate out.mcap --pred-topic /e2e_depth/depth/relative ...``)."""
        for role in ("gt_depth", "gt_normals", "lidar"):
            ref = getattr(plan, role)
            if ref is None:
                continue
            try:
                raw = self._message(role, ref)[1]
            except BagError:
                continue  # an unreadable partner is counted where it is scored
            self.out.copy(self.indexes[role].connections[0], ref.bag_time, raw)

    def _lidar(self, plan: _FramePlan) -> np.ndarray | None:
        """The matched cloud in the camera optical frame (None: no cloud or unreadable)."""
        if plan.lidar is None or self.lidar_tf is None:
            return None
        import numpy as np

        from e2e_depth_ros.core.geometry import transform_points
        from e2e_depth_ros.ros.messages import pointcloud_to_xyz

        try:
            points = pointcloud_to_xyz(self._message("lidar", plan.lidar)[0])
        except E2EDepthError:
            return None  # the node warns and goes on without a fit; so does the filter
        tf = self.lidar_tf
        return transform_points(points, tf.rotation, tf.translation).astype(np.float32)

    def _score(self, i: int, plan: _FramePlan, rgb: np.ndarray, gt: np.ndarray,
               result: FrameResult) -> None:
        from e2e_depth_ros.core.metrics import (aligned_depth_metrics, depth_metrics,
                                                valid_depth_mask)

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
            self.samples.append(Sample(score.stamp, rgb, gt, pred, label))

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
        from e2e_depth_ros.core.metrics import summarize_depth

        with_lidar = self.metric_pred or ("lidar" in self.indexes)
        normals = self.normals.result() if self.normals.frames else None
        return EvalResult(
            bag=str(self.bag), mode=self.mode, frames=len(self.scores),
            frames_total=frames_total, depth_gt_aligned=summarize_depth(self.depth_gt),
            depth_lidar_aligned=summarize_depth(self.depth_lidar) if with_lidar else None,
            lidar_frames=len(self.depth_lidar), normals=normals, per_frame=self.scores,
            skipped=self.skipped, time_origin=self.indexes["image"].refs[0].stamp_ns * 1e-9,
            notes=self.notes)


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
    check_out_dir(out_dir, planned_files(options, model_run=topics.pred is None),
                  overwrite=options.overwrite)
    reader = open_reader(bag)
    try:
        return _evaluate_open(reader, bag, topics, estimator, make_estimator, out_dir, options)
    finally:
        reader.close()


def planned_files(options: EvalOptions, *, model_run: bool) -> list[str]:
    """Names of every file an evaluation with these options may write into its folder."""
    names = ["metrics.json"]
    if options.write_report:
        names += [name for name in REPORT_FILES if name != "metrics.json"]
    if options.write_bag and model_run:
        names.append(OUT_BAG)
    return names


def check_out_dir(out_dir: Path, names: list[str], *, overwrite: bool) -> None:
    """Refuse to replace an earlier run's files unless asked, and anything not a file ever.

    Checked before the bag is read, so a refusal costs nothing and changes nothing.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} exists and is not a folder")
    for name in names:
        path = out_dir / name
        if not (path.exists() or path.is_symlink()):
            continue
        if not path.is_file() or path.is_symlink():
            raise FileExistsError(f"{path} exists and is not a file this tool wrote; move it "
                                  "away or choose another --out")
        if not overwrite:
            raise FileExistsError(f"{path} exists (an earlier run?); pass --overwrite to "
                                  "replace it, or choose another --out")


def _evaluate_open(reader: Any, bag: Path, topics: EvalTopics, estimator: Any,
                   make_estimator: Callable[[], Any] | None, out_dir: Path,
                   options: EvalOptions) -> EvalResult:
    from e2e_depth_ros.offline.tf_static import StaticTransforms

    indexes = check_topics(reader, bag, topics)
    tf_messages = index_bag(reader, bag, indexes)
    plans = _plan_frames(indexes, options)
    _check_pairs(plans, indexes, bag, options)
    if topics.pred is not None and not any(p.pred for p in plans):
        raise BagError(f"{bag}: no recorded prediction on {topics.pred} within "
                       f"{options.stamp_tolerance} s of any image stamp")
    transforms = StaticTransforms()
    try:
        for conn, _, raw in tf_messages:
            transforms.add_message(reader.deserialize(raw, conn.msgtype))
    except bag_read_errors() as err:
        raise BagError(f"{bag}: {topics.tf_static} cannot be read ({err})") from err
    lidar_tf = _lidar_transform(transforms, indexes, topics, bag)
    _check_ground_truth(reader, bag, indexes, plans, options)
    if topics.pred is None and estimator is None:
        estimator = make_estimator()
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = None
    if options.write_bag and topics.pred is None:
        out = OutputBag(out_dir / OUT_BAG, options.output_prefix)
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
        result = ev.result(len(plans))
        if result.frames == 0:
            skips = "; ".join(f"{v} frame(s) {SKIP_REASONS[k]}" for k, v in
                              result.skipped.items() if v) or "no frame matched"
            raise BagError(f"{bag}: no frame could be scored: {skips}; nothing written")
    except BaseException:
        if out is not None:
            out.abort()
        if created:
            _remove_if_empty(out_dir)
        raise
    if out is not None:
        out.close()
    write_outputs(result, ev.samples, out_dir, options, out)
    return result


def _remove_if_empty(folder: Path) -> None:
    """Undo a folder this run created, when nothing was left in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _check_ground_truth(reader: Any, bag: Path, indexes: dict[str, TopicIndex],
                        plans: list[_FramePlan], options: EvalOptions) -> None:
    """At least one paired ground-truth depth must be usable before a model loads or a file
    is written: decodable, the image's size, with 2 or more valid pixels. Stops at the first
    usable one, so a good bag costs one extra message read."""
    from e2e_depth_ros.core.metrics import valid_depth_mask

    problems: dict[str, int] = {}
    gt_index, image_index = indexes["gt_depth"], indexes["image"]
    for plan in plans:
        if plan.gt_depth is None:
            continue
        try:
            msg = fetch_message(reader, gt_index, plan.gt_depth)[0]
            gt = gt_depth_meters(msg)
        except (E2EDepthError, *bag_read_errors()) as err:
            problem = f"not usable ({err})"
        else:
            size = None
            if image_index.msgtype == IMAGE and "pred" not in indexes:  # model outputs
                try:
                    image = fetch_message(reader, image_index, plan.image)[0]
                    size = (int(image.height), int(image.width))
                except (E2EDepthError, *bag_read_errors()):
                    size = None
            valid = int(valid_depth_mask(gt, min_depth=options.min_depth,
                                         max_depth=options.max_depth).sum())
            if size is not None and gt.shape != size:
                problem = (f"{gt.shape[1]}x{gt.shape[0]}, the image is "
                           f"{size[1]}x{size[0]}")
            elif valid < 2:
                problem = ("fewer than 2 valid pixels (finite, > 0"
                           + (", within --min-depth/--max-depth" if options.min_depth is not None
                              or options.max_depth is not None else "") + ")")
            else:
                return
        problems[problem] = problems.get(problem, 0) + 1
    found = "; ".join(f"{n} x {problem}" for problem, n in problems.items())
    raise BagError(f"{bag}: no usable ground-truth depth on {gt_index.topic}: {found}; "
                   "nothing written")


def _progress(plans: list[_FramePlan], enabled: bool) -> Iterator[_FramePlan]:
    from tqdm import tqdm

    return iter(tqdm(plans, desc=PROG, unit="frame", file=sys.stderr, disable=not enabled,
                     dynamic_ncols=True))


# ----------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Replay a rosbag2 (sqlite3 or MCAP) through the "
                      "depth node's pipeline and score it against ground truth "
                      "(docs/evaluation.md).")
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
    m.add_argument("--dtype", default="auto", help="older name of --precision")
    m.add_argument("--backend", default="torch", choices=["torch", "openvino", "onnxruntime"],
                   help="torch (default), openvino or onnxruntime (an export folder, or a "
                   "checkpoint converted once)")
    m.add_argument("--precision", default="auto",
                   help="auto (fp16 on GPUs, fp32 on CPUs), fp32, fp16 or bf16")
    m.add_argument("--processing-resolution", type=processing_resolution_arg, default=768,
                   help="16..2048, or 0 = native (default: 768)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--min-depth", type=float, default=None, help="valid GT range (m)")
    e.add_argument("--max-depth", type=float, default=None)
    e.add_argument("--stamp-tolerance", type=float, default=0.02,
                   help="max header-stamp gap image-GT (s) when not exact (default 0.02)")
    e.add_argument("--lidar-tolerance", type=float, default=0.1,
                   help="max header-stamp gap image-LiDAR (s) (default 0.1, as the node)")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace metrics.json, report.md, "
                   "its plots and out.mcap left in --out by an earlier run (without it, "
                   "evaluate refuses)")
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
    return model_or_none(value)


def _estimator_factory(args: argparse.Namespace) -> Callable[[], Any]:
    """Loads the model only when called (after the bag checks), quietly."""
    def make() -> Any:
        from e2e_depth_ros.model.estimator import (DEFAULT_DEPTH_MODEL, DEFAULT_NORMALS_MODEL,
                                                   Estimator, quiet_model_libraries)

        from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped

        quiet_model_libraries()
        keep_cpu_buffers_mapped()  # this process runs inference: keep its buffers mapped
        depth = _model_choice(args.depth_model, DEFAULT_DEPTH_MODEL)
        wants_normals = args.gt_normals_topic and not args.pred_normals_topic
        normals = _model_choice(args.normals_model,
                                DEFAULT_NORMALS_MODEL if wants_normals else None)
        if args.pred_normals_topic:
            normals = None
        if depth is None:
            raise ValueError("--depth-model none: the evaluation needs a depth model "
                             "(or --pred-topic)")
        estimator = Estimator(depth, normals, device=args.device, dtype=args.dtype,
                              processing_resolution=args.processing_resolution,
                              backend=args.backend, precision=args.precision)
        for note in tiny_notes(depth, normals, prog=PROG):
            print(note, file=sys.stderr)
        return estimator
    return make


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
        progress=not args.no_progress, overwrite=args.overwrite)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

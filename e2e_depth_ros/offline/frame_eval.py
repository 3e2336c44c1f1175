"""One evaluation run, frame by frame: the node's pipeline, the outputs, the scores.

``FrameEvaluation`` holds what accumulates over a run (the processor with its scale
filter, the scores, the skip counts, the report's sample frames); ``evaluate`` opens the
bag, plans the frames and feeds them in stamp order. Each frame's metric reference (LiDAR,
sensor depth or the floor) comes from ``eval_sources``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.errors import BagError, E2EDepthError
from e2e_depth_ros.offline.bag_io import MessageRef, OutputBag, TopicIndex, bag_read_errors, \
    fetch_message
from e2e_depth_ros.offline.eval_sources import FITTED
from e2e_depth_ros.offline.eval_messages import (decode_rgb, float_image,
                                                 is_metric_topic)
from e2e_depth_ros.offline.eval_types import (SKIP_REASONS, EvalOptions, EvalResult,
                                              EvalTopics, FrameScore)
from e2e_depth_ros.offline.frame_plan import FramePlan
from e2e_depth_ros.offline.report import Sample, source_label

if TYPE_CHECKING:
    import numpy as np

    from e2e_depth_ros.core.metrics import DepthMetrics
    from e2e_depth_ros.core.processing import FrameResult
    from e2e_depth_ros.core.temporal import CameraPose
    from e2e_depth_ros.offline.tf_buffer import TransformBuffer


@dataclass(frozen=True)
class _Recorded:
    """A Prediction-shaped holder for outputs read from the bag."""

    depth: np.ndarray | None
    normals: np.ndarray | None


class RecordedEstimator:
    """Stands in for the Estimator when predictions are in the bag: the frame's recorded
    relative depth goes through the node's own scale fit and filter unchanged (a recorded
    metric depth through the fixed map 1 m per unit, for the node's cloud)."""

    def __init__(self) -> None:
        self.next: _Recorded = _Recorded(None, None)

    def predict(self, rgb: np.ndarray, *, depth: bool = True, normals: bool = True
                ) -> _Recorded:
        return _Recorded(self.next.depth if depth else None,
                         self.next.normals if normals else None)


class FrameEvaluation:
    """State of one run: the reader, indexes, the processor and the accumulating scores."""

    def __init__(self, reader: Any, bag: Path, topics: EvalTopics, options: EvalOptions,
                 indexes: dict[str, TopicIndex], estimator: Any, out: OutputBag | None, *,
                 source: str = "none", transforms: TransformBuffer | None = None,
                 lidar_tf: Any = None) -> None:
        """``source``: the resolved scale source (``eval_sources``); ``transforms``: the
        bag's /tf_static and /tf; ``lidar_tf``: LiDAR frame to camera frame."""
        from e2e_depth_ros.core.metrics import NormalErrorAccumulator, OneMapAccumulator
        from e2e_depth_ros.core.processing import FrameProcessor, Needs, ProcessingConfig
        from e2e_depth_ros.offline.eval_sources import FrameReferences, processing_for
        from e2e_depth_ros.offline.tf_buffer import TransformBuffer

        self.reader, self.bag, self.topics, self.options = reader, bag, topics, options
        self.indexes, self.out = indexes, out
        self.transforms = transforms or TransformBuffer()
        self.references = FrameReferences(
            source, self._message, self.transforms, lidar_tf=lidar_tf,
            ground_frame=options.ground_frame, tolerance=options.camera_info_tolerance)
        self.recorded = estimator is None
        self.metric_pred = self.recorded and (
            options.pred_is_metric if options.pred_is_metric is not None
            else is_metric_topic(topics.pred or ""))
        self.source = "recorded" if self.metric_pred else source
        self.estimator = RecordedEstimator() if self.recorded else estimator
        config = options.processing or ProcessingConfig()
        if self.metric_pred:  # metric as recorded: the node's map from it is 1 m per unit
            config = replace(config, fixed_scale=1.0, fixed_shift=0.0)
        else:
            config = processing_for(self.source, config)
        self.processor = FrameProcessor(self.estimator, config)
        self.has_normals = (topics.pred_normals is not None
                            or getattr(estimator, "normals", None) is not None)
        self.needs = Needs(relative=True, normals=self.has_normals, metric=True,
                           points=out is not None, points_rgb=True, points_normals=False)
        self.normals = NormalErrorAccumulator()
        self.scores: list[FrameScore] = []
        self.depth_gt: list[DepthMetrics] = []
        self.depth_lidar: list[DepthMetrics] = []
        # the relative depth of every scored frame, for one map over the whole sequence
        self.one_map = OneMapAccumulator(min_depth=options.min_depth,
                                         max_depth=options.max_depth)
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.image_error: str | None = None  # why the first undecodable image was refused
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

    def run_frame(self, i: int, plan: FramePlan) -> None:
        """Process one image as the node would, write its outputs, score it."""
        try:
            image_msg, image_raw = self._message("image", plan.image)
            rgb = decode_rgb(image_msg, self.indexes["image"].msgtype)
        except E2EDepthError as err:
            self.skipped["undecodable_image"] += 1
            self.image_error = self.image_error or str(err)  # the first says what is wrong
            return
        header = image_msg.header  # of the outputs: the input's (a recording's: its own)
        if self.recorded:
            got = self._decoded("pred", plan.pred,
                                lambda m: (m.header, float_image(m, "32FC1")),
                                "undecodable_pred")
            if got is None:
                if plan.pred is None:
                    self.skipped["no_pred_match"] += 1
                return
            header, pred = got
            normals = self._decoded("pred_normals", plan.pred_normals,
                                    lambda m: float_image(m, "32FC3"), "undecodable_normals")
            self.estimator.next = _Recorded(pred, normals)
        result = self._process(rgb, plan, image_msg, image_raw, header)
        if not self.recorded and "pred_normals" in self.indexes:
            # Model depth, recorded normals: score the recorded ones (nothing else uses them).
            result.normals = self._decoded("pred_normals", plan.pred_normals,
                                           lambda m: float_image(m, "32FC3"),
                                           "undecodable_normals")
        if plan.gt_depth is None:
            self.skipped["no_gt_match"] += 1
            return
        from e2e_depth_ros.ros.messages import depth_image_meters

        gt = self._decoded("gt_depth", plan.gt_depth, depth_image_meters, "undecodable_gt")
        if gt is not None:
            self._score(i, plan, rgb, gt, result)

    def _process(self, rgb: np.ndarray, plan: FramePlan, image_msg: Any, image_raw: bytes,
                 header: Any) -> FrameResult:
        """FrameResult of this frame through the node's pipeline; outputs written under
        ``header``."""
        from e2e_depth_ros.core.processing import Frame
        from e2e_depth_ros.ros.messages import camera_from_info

        info = camera = None
        if plan.camera_info is not None:
            try:  # the node goes on without a camera (no cloud, no LiDAR fit); so does this
                info, info_raw = self._message("camera_info", plan.camera_info)
                camera = camera_from_info(info)
            except E2EDepthError:
                camera = None
        stamp = plan.image.stamp_ns * 1e-9
        reference, why = (None, None) if self.metric_pred else \
            self.references.reference(plan, image_msg.header.frame_id)
        odometry = self._odometry(plan, image_msg.header.frame_id)
        result = self.processor.process_batch([Frame(rgb, stamp, camera, needs=self.needs,
                                                     reference=reference,
                                                     odometry=odometry)])[0]
        written = result
        if self.metric_pred:  # scored as recorded; depth/relative is not the node's here
            written = replace(result, relative=None)
            result.metric, result.scale_source = self.estimator.next.depth, "recorded"
        for note in [why, *result.notes]:  # what the node would log or count
            if note:
                self.notes[note] = self.notes.get(note, 0) + 1
        if self.out is not None:
            image_conn = self.indexes["image"].connections[0]
            self.out.copy(image_conn, plan.image.bag_time, image_raw)
            if info is not None:
                self.out.copy(self.indexes["camera_info"].connections[0],
                              plan.camera_info.bag_time, info_raw)
            self.out.frame(plan.image.bag_time, header,
                           info if camera is not None else None, written)
            self._copy_partners(plan)
        return result

    def _odometry(self, plan: FramePlan, camera_frame: str) -> CameraPose | None:
        """The camera in the odometry frame at the image stamp (temporal alignment), from
        the bag's /tf; None (and a note: the node would say so in diagnostics) without."""
        from e2e_depth_ros.core.temporal import CameraPose

        if not self.processor.config.temporal_alignment:
            return None
        odom = self.options.odom_frame
        tf = self.transforms.lookup(odom, camera_frame, plan.image.stamp_ns)
        if tf is None:
            note = (f"no transform {odom} -> {camera_frame} at the image's stamp: aligned "
                    "without odometry")
            self.notes[note] = self.notes.get(note, 0) + 1
            return None
        return CameraPose(tf.rotation, tf.translation)

    def _copy_partners(self, plan: FramePlan) -> None:
        """Ground truth and the metric references go into out.mcap too, so it can be scored
        again as it is (``evaluate out.mcap --pred-topic /e2e_depth/depth/relative ...``)."""
        for role in ("gt_depth", "gt_normals", "lidar", "sensor_depth", "sensor_depth_info"):
            ref = getattr(plan, role)
            if ref is None:
                continue
            try:
                raw = self._message(role, ref)[1]
            except BagError:
                continue  # an unreadable partner is counted where it is scored
            self.out.copy(self.indexes[role].connections[0], ref.bag_time, raw)

    def _score(self, i: int, plan: FramePlan, rgb: np.ndarray, gt: np.ndarray,
               result: FrameResult) -> None:
        from e2e_depth_ros.core.metrics import (aligned_depth_metrics, depth_metrics,
                                                log_median_ratio, valid_depth_mask)

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
        self.one_map.add(relative, gt)  # one entry per score, in the same order
        lidar = None
        log_ratio = None
        if result.metric is not None:
            mask = valid_depth_mask(gt, min_depth=opts.min_depth, max_depth=opts.max_depth)
            lidar = depth_metrics(result.metric, gt, mask)
            self.depth_lidar.append(lidar)
            log_ratio = log_median_ratio(result.metric, gt, mask)
        score = _replace(self._frame_score(plan, aligned, s, t, lidar, result),
                         log_scale_ratio=log_ratio)
        score_normals = self._score_normals(plan, result)
        if score_normals is not None:
            score = _replace(score, normals_mean=score_normals)
        self.scores.append(score)
        if i in self.sample_at:
            pred = result.metric if result.metric is not None else s * relative + t
            label = source_label(self.source) if result.metric is not None else "GT-aligned"
            self.samples.append(Sample(score.stamp, rgb, gt, pred, label))

    def _frame_score(self, plan: FramePlan, aligned: DepthMetrics, s: float, t: float,
                     lidar: DepthMetrics | None, result: FrameResult) -> FrameScore:
        state, fit = result.scale_state, result.fit
        scale = state.scale if state is not None else None
        shift = state.shift if state is not None else None
        if result.scale_source == "fixed":  # the user's map: plotted like a filter's
            scale, shift = self.processor.config.fixed_scale, self.processor.config.fixed_shift
        return FrameScore(
            stamp=plan.image.stamp_ns * 1e-9, stamp_ns=plan.image.stamp_ns,
            abs_rel=aligned.abs_rel, delta1=aligned.delta1, valid=aligned.valid,
            best_scale=s, best_shift=t,
            lidar_abs_rel=None if lidar is None else lidar.abs_rel,
            lidar_delta1=None if lidar is None else lidar.delta1,
            scale=scale, shift=shift,
            inliers=fit.inliers if fit is not None else None,
            scale_status=state.status if (state is not None and self.source in FITTED)
            else None,
            scale_source=result.scale_source,
        )

    def _score_normals(self, plan: FramePlan, result: FrameResult) -> float | None:
        if "gt_normals" not in self.indexes or result.normals is None:
            return None
        if plan.gt_normals is None:
            self.skipped["no_gt_normals_match"] += 1
            return None
        gt = self._decoded("gt_normals", plan.gt_normals, lambda m: float_image(m, "32FC3"),
                           "undecodable_normals")
        if gt is None:
            return None
        if gt.shape != result.normals.shape:
            self.skipped["undecodable_normals"] += 1
            return None
        return self.normals.add(result.normals, gt).mean

    def result(self, frames_total: int) -> EvalResult:
        from e2e_depth_ros.core.metrics import scale_change, summarize_depth

        with_metric = self.source != "none"
        normals = self.normals.result() if self.normals.frames else None
        one_map = self.one_map.result()
        assert len(one_map.per_frame) == len(self.scores)
        scores = [_replace(score, one_map_abs_rel=m.abs_rel, one_map_delta1=m.delta1)
                  for score, m in zip(self.scores, one_map.per_frame)]
        return EvalResult(
            bag=str(self.bag), mode=self.mode, frames=len(scores),
            frames_total=frames_total, depth_gt_aligned=summarize_depth(self.depth_gt),
            depth_lidar_aligned=summarize_depth(self.depth_lidar) if with_metric else None,
            lidar_frames=len(self.depth_lidar), normals=normals, per_frame=scores,
            skipped=self.skipped, time_origin=self.indexes["image"].refs[0].stamp_ns * 1e-9,
            notes=self.notes, scale_source=self.source, depth_one_map=one_map,
            scale_change=scale_change([s.log_scale_ratio for s in scores])
            if with_metric else None)


def _replace(score: FrameScore, **changes: Any) -> FrameScore:
    return replace(score, **changes)


def sample_indices(n: int, count: int = 3) -> set[int]:
    """First, middle and last frame: the start, the steady state and the end."""
    if n <= count:
        return set(range(n))
    return {round(k * (n - 1) / (count - 1)) for k in range(count)}

"""What an evaluation is asked (topics, options) and what it finds (scores, results).

The shared vocabulary of the offline evaluation: ``bag_io`` reads the topics, the frame
evaluation fills the scores, ``report`` writes them out and ``evaluate`` ties them together.
Kept apart so those modules all import it and none imports another for a type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2e_depth_ros.core.metrics import DepthMetrics, NormalMetrics, OneMapResult, ScaleChange
    from e2e_depth_ros.core.processing import ProcessingConfig

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
    tf: str = "/tf"  # moving transforms, looked up at each image stamp (when in the bag)
    sensor_depth: str | None = None  # 16UC1 (mm, 0 invalid) or 32FC1 (m, NaN/0 invalid)
    sensor_depth_info: str | None = None  # its CameraInfo; None: the sibling camera_info


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
    write_bag: bool = True  # out.mcap
    write_report: bool = True  # report.md + PNGs
    progress: bool = True  # tqdm bar on stderr
    processing: ProcessingConfig | None = None  # the node's settings; None = its defaults
    overwrite: bool = False  # replace files an earlier run left in the output folder
    scale_source: str = "auto"  # auto, lidar, depth, ground, fixed or none (the node's rule)
    ground_frame: str = "base_footprint"  # z up, floor at z = 0 (the ground source)
    odom_frame: str = "odom"  # temporal alignment: the camera's motion from /tf


@dataclass(frozen=True)
class FrameScore:
    """Scores of one frame. Fractions, not percent; None where not computed.

    ``abs_rel``/``delta1``: after the per-image least-squares GT alignment, whose map
    ``best_scale * relative + best_shift`` is the best any LiDAR fit could do; ``lidar_*``:
    of the metric depth the node publishes (LiDAR filter's ``scale``/``shift``), or of a
    recorded metric prediction as it is. Over time: ``log_scale_ratio`` is
    log(median(p / g)) of the metric depth (None without one); ``one_map_*`` score the
    relative depth under the one affine map fitted to the whole sequence (``EvalResult.
    depth_one_map``; None until the run ends).
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
    scale_status: str | None = None  # "ok", "holding", "none"; None without a reference
    normals_mean: float | None = None  # degrees, this frame's own
    scale_source: str | None = None  # what gave this frame's metric depth ("none": nothing)
    log_scale_ratio: float | None = None  # log(median(metric / GT)); 0 = the true scale
    one_map_abs_rel: float | None = None  # under the sequence's one map (pixel subsample)
    one_map_delta1: float | None = None


@dataclass
class EvalResult:
    """Everything an evaluation found; ``to_json`` is what metrics.json holds."""

    bag: str
    mode: str  # "model", "recorded-relative" or "recorded-metric"
    frames: int  # frames scored
    frames_total: int  # image frames considered (after --max-frames)
    depth_gt_aligned: DepthMetrics
    # The metric depth's score whatever its source (the name is older than the sources);
    # None when nothing gives metric depth (scale source "none").
    depth_lidar_aligned: DepthMetrics | None
    lidar_frames: int  # frames with metric depth (the rest: no usable scale)
    normals: NormalMetrics | None
    per_frame: list[FrameScore]
    skipped: dict[str, int]
    time_origin: float = 0.0  # s, the bag's first image header stamp: t = stamp - this
    notes: dict[str, int] = field(default_factory=dict)  # pipeline warnings -> frame count
    # What gives metric depth: "lidar", "depth" (sensor depth), "ground" (the floor from TF),
    # "fixed", "none", or "recorded" (metric predictions scored as they are).
    scale_source: str = "lidar"
    files: dict[str, str] = field(default_factory=dict)  # metrics, report, bag, plots
    # Steadiness over time. Relative depth under one affine map for the whole sequence
    # (next to depth_gt_aligned's per-frame maps); None when not computed.
    depth_one_map: OneMapResult | None = None
    # Frame-to-frame change of the metric depth's scale; None without metric depth.
    scale_change: ScaleChange | None = None

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
            "scale_source": self.scale_source,
            "frames": self.frames,
            "frames_total": self.frames_total,
            "time_origin": self.time_origin,
            "depth_gt_aligned": depth(self.depth_gt_aligned),
            "depth_lidar_aligned": depth(self.depth_lidar_aligned),
            "lidar_frames": self.lidar_frames,
            "normals": normals,
            "depth_one_map": self._one_map_json(),
            "scale_change": None if self.scale_change is None else {
                "mean_abs_log_change": _num(self.scale_change.mean_abs_change),
                "pairs": self.scale_change.pairs},
            "per_frame": [{k: _num(v) for k, v in vars(s).items()} for s in self.per_frame],
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "files": dict(self.files),
        }

    def _one_map_json(self) -> dict[str, Any] | None:
        m = self.depth_one_map
        if m is None:
            return None
        return {"abs_rel": _num(m.metrics.abs_rel), "delta1": _num(m.metrics.delta1),
                "valid": m.metrics.valid, "scale": _num(m.scale), "shift": _num(m.shift),
                "pixels_per_frame": m.pixels_per_frame}


def _num(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

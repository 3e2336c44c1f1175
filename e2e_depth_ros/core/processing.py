"""Camera frames through the estimator, scale recovery and geometry, without ROS.

The node and the offline evaluation both call ``FrameProcessor``, so a bag replayed offline
is scored on exactly what the robot would publish. Several cameras ("streams") share one
model: ``process_batch`` runs their frames through it as one batch, then finishes each
frame with its own stream's LiDAR scale filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth
from e2e_depth_ros.core.scale import ScaleFilter, ScaleFit, ScaleState, fit_samples
from e2e_depth_ros.core.scale_sources import SOURCE_NAMES, LidarPoints, ScaleReference
from e2e_depth_ros.core.temporal import (CameraPose, TemporalAligner, TemporalConfig,
                                         TemporalState)

from e2e_depth_ros.core.depth_model import ItemPrediction

if TYPE_CHECKING:
    from e2e_depth_ros.core.depth_model import DepthModel, Finisher, PredictionLike


@dataclass(frozen=True)
class ProcessingConfig:
    """Run-time settings of the frame pipeline (the node's changeable parameters)."""

    min_depth: float = 0.0  # meters; metric depth below is NaN (0 = no limit)
    max_depth: float = 0.0  # meters; metric depth above is NaN (0 = no limit)
    fixed_scale: float = 0.0  # > 0: metric = fixed_scale * relative + fixed_shift, no LiDAR
    fixed_shift: float = 0.0
    points_decimation: int = 1
    lidar_min_range: float = 0.1
    lidar_min_points: int = 10
    lidar_min_inlier_ratio: float = 0.3
    lidar_inlier_threshold: float = 0.05
    lidar_min_depth_span: float = 0.05  # inliers' 95th/5th percentile depth - 1, at least
    scale_smoothing: float = 0.3
    scale_max_jump: float = 0.5
    scale_hold_timeout: float = 2.0
    temporal_alignment: bool = False  # align each frame to the previous one (core.temporal)
    temporal_max_gap: float = 2.0  # s a frame stays metric without a metric fit of its own
    relative_per_frame: bool = False  # with temporal_alignment: depth/relative per frame

    @property
    def temporal(self) -> TemporalConfig:
        return TemporalConfig(max_gap=self.temporal_max_gap,
                              relative_per_frame=self.relative_per_frame)

    @property
    def fit_options(self) -> dict:
        """``scale.fit_samples``'s settings, the same for every source."""
        return dict(min_points=self.lidar_min_points,
                    min_inlier_ratio=self.lidar_min_inlier_ratio,
                    inlier_threshold=self.lidar_inlier_threshold,
                    min_depth_span=self.lidar_min_depth_span)


@dataclass(frozen=True)
class Needs:
    """What the consumers of this frame want; anything not wanted is not computed."""

    relative: bool = True
    normals: bool = True
    metric: bool = True
    points: bool = True
    points_rgb: bool = True
    points_normals: bool = False
    pictures: tuple[str, ...] = ()  # output keys drawn with the arrays (device_finish)


@dataclass
class FrameResult:
    """Arrays for one frame, all at the input image's resolution unless noted."""

    relative: np.ndarray | None = None  # float32 (H, W), affine-invariant depth in [0, 1]
    normals: np.ndarray | None = None  # float32 (H, W, 3), unit, optical frame
    metric: np.ndarray | None = None  # float32 (H, W), meters along z, NaN invalid
    points: np.ndarray | None = None  # float32 (h, w, 3) after decimation, NaN invalid
    points_rgb: np.ndarray | None = None  # uint8 (h, w, 3)
    points_normals: np.ndarray | None = None  # float32 (h, w, 3)
    scale_source: str = "none"  # "fixed", "lidar", "depth", "ground" or "none"
    temporal: TemporalState | None = None  # what temporal alignment did with this frame
    relative_map: tuple[float, float] = (1.0, 0.0)  # relative = a * model output + b
    scale_state: ScaleState | None = None  # the scale filter after this frame
    fit: ScaleFit | None = None  # this frame's own fit, before smoothing
    notes: list[str] = field(default_factory=list)  # why an output was skipped
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # drawn on the device


def _empty_metric_note(metric: np.ndarray, cfg: ProcessingConfig) -> str:
    """Why every metric pixel is NaN, so an all-NaN depth/image is never a mystery."""
    finite = metric[np.isfinite(metric)]
    span = f"{finite.min():.4g}..{finite.max():.4g} m" if finite.size else "no finite value"
    limits = f"(0, {cfg.max_depth or 'inf'}] m with min_depth {cfg.min_depth}"
    return f"every metric pixel is invalid: depth spans {span}, outside the valid {limits}"


def fixed_map_conflict(cfg: ProcessingConfig) -> str | None:
    """Why the fixed metric map cannot give one valid pixel (relative depth is in [0, 1])."""
    if not cfg.fixed_scale > 0:
        return None
    lo, hi = cfg.fixed_shift, cfg.fixed_scale + cfg.fixed_shift
    floor = max(cfg.min_depth, 0.0)
    ceiling = cfg.max_depth if cfg.max_depth > 0 else math.inf
    if hi <= floor or lo > ceiling:
        return (f"fixed_scale {cfg.fixed_scale:g} and fixed_shift {cfg.fixed_shift:g} map "
                f"relative depth [0, 1] to {lo:g}..{hi:g} m, all outside the valid depths "
                f"({floor:g}, {ceiling:g}] m: every metric pixel would be NaN")
    return None


@dataclass(frozen=True)
class Frame:
    """One camera's frame as ``process_batch`` takes it (see ``FrameProcessor.process``)."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    stamp: float  # seconds, the image's header stamp: the scale filter's clock
    camera: PinholeCamera | None = None
    lidar_points: np.ndarray | None = None  # (N, 3) in the camera optical frame
    needs: Needs = Needs()
    stream: str = ""  # which camera: each has its own scale filter
    reference: ScaleReference | None = None  # another metric reference (scale_sources)
    scale_source: str = "auto"  # auto: fixed map if set, else the reference; or SOURCES
    odometry: CameraPose | None = None  # the camera in the odometry frame at ``stamp``

    @property
    def scale_reference(self) -> ScaleReference | None:
        """This frame's metric reference: ``reference``, else its LiDAR points."""
        if self.reference is not None:
            return self.reference
        return LidarPoints(self.lidar_points) if self.lidar_points is not None else None

    @property
    def wants_depth(self) -> bool:
        return (self.needs.relative or self.needs.metric or self.needs.points
                or self.scale_reference is not None)

    @property
    def wants_normals(self) -> bool:
        return self.needs.normals or (self.needs.points and self.needs.points_normals)


def _mapped(relative: np.ndarray | None, relative_map: tuple[float, float]
            ) -> np.ndarray | None:
    """The relative output in its sequence's frame (temporal alignment), else as it is."""
    if relative is None or relative_map == (1.0, 0.0):
        return relative
    a, b = relative_map
    return (np.float32(a) * relative + np.float32(b)).astype(np.float32)


class FrameProcessor:
    """Owns the model and one LiDAR scale filter per stream; turns frames into output arrays."""

    def __init__(self, estimator: DepthModel, config: ProcessingConfig | None = None, *,
                 finisher: Finisher | None | str = "auto") -> None:
        """``finisher``: finishes frames on the model's device (``model.device_finish``);
        "auto" takes the model's own (``device_finisher()``: CUDA models give one, where it
        saves the copies and the CPU work), None finishes every frame with numpy."""
        self.estimator = estimator
        self.config = config or ProcessingConfig()
        self._filters: dict[str, ScaleFilter] = {}
        self._sources: dict[str, str] = {}  # per stream, the source of its filter's fits
        self._aligners: dict[str, TemporalAligner] = {}
        self._temporal_states: dict[str, tuple[float, ScaleState]] = {}  # stream: latest
        if finisher == "auto":
            make = getattr(estimator, "device_finisher", None)
            finisher = make() if callable(make) else None
        self.finisher = finisher

    @staticmethod
    def _make_filter(config: ProcessingConfig) -> ScaleFilter:
        return ScaleFilter(smoothing=config.scale_smoothing, max_jump=config.scale_max_jump,
                           hold_timeout=config.scale_hold_timeout)

    def filter_for(self, stream: str = "") -> ScaleFilter:
        """The LiDAR scale filter of one stream (camera), created on first use."""
        found = self._filters.get(stream)
        if found is None:  # setdefault: the worker and the diagnostics timer may race here
            found = self._filters.setdefault(stream, self._make_filter(self.config))
        return found

    @property
    def scale_filter(self) -> ScaleFilter:
        """The single-camera stream's filter."""
        return self.filter_for("")

    def reconfigure(self, config: ProcessingConfig) -> None:
        """Apply new settings from the next frame on; the filters restart if theirs changed."""
        old, self.config = self.config, config
        keys = ("scale_smoothing", "scale_max_jump", "scale_hold_timeout")
        if any(getattr(old, k) != getattr(config, k) for k in keys):
            self._filters = {stream: self._make_filter(config) for stream in self._filters}
        if old.temporal != config.temporal or old.fit_options != config.fit_options or \
                old.temporal_alignment != config.temporal_alignment:
            self._aligners, self._temporal_states = {}, {}

    def aligner_for(self, stream: str = "") -> TemporalAligner:
        """The temporal alignment chain of one stream, created on first use."""
        found = self._aligners.get(stream)
        if found is None:
            found = self._aligners.setdefault(
                stream, TemporalAligner(self.config.temporal, self.config.fit_options))
        return found

    def reset_scale(self, stream: str = "") -> None:
        """Forget one stream's scale history (time went backwards, e.g. a bag loop)."""
        self.filter_for(stream).reset()
        self.aligner_for(stream).reset()
        self._temporal_states.pop(stream, None)

    def scale_state(self, now: float, stream: str = "") -> ScaleState:
        """The stream's scale at ``now``; with temporal alignment, its latest frame's, no
        longer usable once the gap since its last metric fit is over."""
        if not self.config.temporal_alignment:
            return self.filter_for(stream).state(now)
        latest = self._temporal_states.get(stream)
        if latest is None:
            return ScaleState("none", None, None, None, None, "no frame aligned yet")
        anchor, state = latest
        gap = now - anchor
        if state.usable and gap > self.config.temporal_max_gap:
            return ScaleState("none", None, None, gap, state.fit,
                              f"last metric fit {gap:.1f} s ago > temporal_max_gap "
                              f"{self.config.temporal_max_gap} s")
        return state

    @staticmethod
    def batch_key(rgb: np.ndarray) -> tuple[int, int]:
        """Frames with equal keys can share one model call (the model takes equal sizes)."""
        return int(rgb.shape[0]), int(rgb.shape[1])

    def process(
        self,
        rgb: np.ndarray,
        stamp: float,
        *,
        camera: PinholeCamera | None = None,
        lidar_points: np.ndarray | None = None,
        needs: Needs = Needs(),
        stream: str = "",
    ) -> FrameResult:
        """Run the model and everything downstream of it for one uint8 RGB (H, W, 3) frame.

        ``camera`` must describe the image as received (same size) for point clouds and
        LiDAR projection; ``lidar_points`` are (N, 3) in the camera optical frame.
        ``stamp`` (seconds) is the image's header stamp: the filter's clock.
        """
        frame = Frame(rgb, stamp, camera, lidar_points, needs, stream)
        return self.finish(frame, self.predict([frame])[0])

    def process_batch(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """``process`` for several frames, one model call per group of equal ``batch_key``.

        Each result equals that frame's own ``process`` up to float rounding of the batched
        model call; results come back in the order of ``frames``.
        """
        predictions = self.predict(frames)
        return [self.finish(frame, pred) for frame, pred in zip(frames, predictions)]

    def batches(self, frames: Sequence[Frame]) -> list[list[int]]:
        """Indices of ``frames`` grouped by ``batch_key``, in order of first appearance.

        The model resizes a whole batch at once, so only equal input sizes share a call
        (cameras of one model and mode do); other sizes get a call each.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for index, frame in enumerate(frames):
            groups.setdefault(self.batch_key(frame.rgb), []).append(index)
        return list(groups.values())

    def predict(self, frames: Sequence[Frame]) -> list[PredictionLike]:
        """The model's outputs per frame: frames of equal size go through it as one batch.

        A batch computes depth (normals) when any of its frames wants it; ``finish`` drops
        what a frame did not ask for.
        """
        out: list[PredictionLike | None] = [None] * len(frames)
        for indices in self.batches(frames):
            members = [frames[i] for i in indices]
            depth = any(f.wants_depth for f in members)
            normals = any(f.wants_normals for f in members)
            keep = {"on_device": True} if self.finisher is not None else {}
            if len(members) == 1:
                out[indices[0]] = self.estimator.predict(members[0].rgb, depth=depth,
                                                         normals=normals, **keep)
                continue
            batch = np.stack([f.rgb for f in members])  # (N, H, W, 3)
            pred = self.estimator.predict(batch, depth=depth, normals=normals, **keep)
            for item, i in enumerate(indices):
                out[i] = ItemPrediction(
                    depth=None if pred.depth is None else pred.depth[item],
                    normals=None if pred.normals is None else pred.normals[item])
        return out  # type: ignore[return-value]  # every index was filled above

    def finish(self, frame: Frame, pred: PredictionLike) -> FrameResult:
        """Scale, metric depth and the cloud of one frame from its model outputs."""
        cfg, needs, rgb, camera = self.config, frame.needs, frame.rgb, frame.camera
        result = FrameResult()
        height, width = rgb.shape[:2]
        if camera is not None and (camera.width, camera.height) != (width, height):
            result.notes.append(
                f"camera_info is {camera.width}x{camera.height} but the image is "
                f"{width}x{height}: no point cloud or LiDAR fit"
            )
            camera = None
        want_metric = needs.metric or needs.points
        if self.finisher is not None and not isinstance(pred.depth, np.ndarray) \
                and not isinstance(pred.normals, np.ndarray):
            return self._finish_on_device(frame, pred, result, camera)
        result.relative = pred.depth if frame.wants_depth else None
        result.normals = pred.normals if frame.wants_normals else None
        if result.relative is None:
            return result

        relative = result.relative
        scale, shift = self._scale(result, lambda index: relative.reshape(-1)[index],
                                   relative.shape, frame, camera, pred.normals)
        result.relative = _mapped(relative, result.relative_map)
        if scale is None or not want_metric:
            return result
        metric = (np.float32(scale) * relative + np.float32(shift)).astype(np.float32)
        invalid = ~(metric > 0)
        if cfg.min_depth > 0:
            invalid |= metric < cfg.min_depth
        if cfg.max_depth > 0:
            invalid |= metric > cfg.max_depth
        if invalid.all():
            result.notes.append(_empty_metric_note(metric, cfg))
        metric[invalid] = np.nan
        result.metric = metric

        if needs.points:
            if camera is None:
                result.notes.append("no usable camera_info: no point cloud")
            else:
                self._cloud(result, rgb, camera, needs)
        return result

    def _finish_on_device(self, frame: Frame, pred, result: FrameResult,
                          camera: PinholeCamera | None) -> FrameResult:
        """``finish`` with the model's tensors: computed on the device, one copy back."""
        cfg, needs = self.config, frame.needs
        relative = pred.depth if frame.wants_depth else None
        normals = pred.normals if frame.wants_normals else None
        scale = shift = None
        if relative is not None:
            scale, shift = self._scale(
                result, lambda index: self.finisher.samples(relative, index),
                tuple(relative.shape), frame, camera)
        if not (needs.metric or needs.points):
            scale = None
        arrays = self.finisher.finish(
            relative, normals, keep_relative=needs.relative, scale=scale, shift=shift or 0.0,
            min_depth=cfg.min_depth, max_depth=cfg.max_depth,
            camera=camera if needs.points else None, decimation=cfg.points_decimation,
            points_normals=needs.points_normals, pictures=needs.pictures)
        result.relative = _mapped(arrays.relative, result.relative_map)
        result.normals = arrays.normals
        result.metric, result.points = arrays.metric, arrays.points
        result.points_normals, result.pictures = arrays.points_normals, arrays.pictures
        if result.metric is not None and np.isnan(result.metric).all():
            result.notes.append(_empty_metric_note(
                np.float32(scale) * pred.depth.cpu().numpy() + np.float32(shift), cfg))
        if scale is not None and needs.points:
            if camera is None:
                result.notes.append("no usable camera_info: no point cloud")
            elif needs.points_rgb:
                step = max(int(cfg.points_decimation), 1)
                result.points_rgb = np.ascontiguousarray(frame.rgb[::step, ::step])
        return result

    def _scale(self, result: FrameResult, values_at, shape: tuple[int, int], frame: Frame,
               camera: PinholeCamera | None, normals: np.ndarray | None = None
               ) -> tuple[float | None, float | None]:
        """(scale, shift) of this frame: the user's fixed map, else the scale filter fed by
        the frame's reference (LiDAR, sensor depth or the ground plane).

        ``values_at(flat_index)``: the relative depth at those pixels (the map itself may
        stay on the model's device).
        """
        cfg, choice = self.config, frame.scale_source
        if choice in ("auto", "fixed") and cfg.fixed_scale > 0:
            result.scale_source = "fixed"
            return cfg.fixed_scale, cfg.fixed_shift
        metric_source = choice not in ("none", "fixed")  # fixed, no fixed_scale: nothing
        reference = frame.scale_reference if metric_source else None
        if reference is not None:
            pairs = reference.pairs(camera, shape, min_range=cfg.lidar_min_range,
                                    normals=normals)
            result.fit = pairs if isinstance(pairs, ScaleFit) else fit_samples(
                values_at(pairs.index), pairs.depth, **cfg.fit_options,
                source=SOURCE_NAMES.get(reference.source, reference.source))
        if cfg.temporal_alignment:
            return self._align(result, values_at, shape, frame, camera, reference)
        if not metric_source:
            return None, None
        if reference is not None:
            result.scale_state = self.filter_for(frame.stream).update(result.fit, frame.stamp)
            self._sources[frame.stream] = reference.source
        else:
            result.scale_state = self.filter_for(frame.stream).state(frame.stamp)
        state = result.scale_state
        if state.usable and state.scale is not None and math.isfinite(state.scale):
            result.scale_source = self._sources.get(frame.stream, "lidar")  # held: its source
            return state.scale, state.shift
        return None, None

    def _align(self, result: FrameResult, values_at, shape: tuple[int, int], frame: Frame,
               camera: PinholeCamera | None, reference: ScaleReference | None
               ) -> tuple[float | None, float | None]:
        """``_scale`` with temporal alignment: the chain decides, the filter is not used."""
        alignment = self.aligner_for(frame.stream).align(
            values_at, shape, camera, frame.odometry, frame.stamp, result.fit)
        state = result.temporal = alignment.state
        result.relative_map = (alignment.relative_scale, alignment.relative_shift)
        if reference is not None and result.fit is not None and result.fit.ok:
            self._sources[frame.stream] = reference.source
        anchor = frame.stamp - (state.gap or 0.0)
        if not state.metric:
            result.scale_state = ScaleState("none", None, None, state.gap, result.fit,
                                            state.message)
            self._temporal_states[frame.stream] = (anchor, result.scale_state)
            return None, None
        status = "propagated" if state.status == "propagated" else "ok"
        result.scale_state = ScaleState(status, alignment.scale, alignment.shift, state.gap,
                                        result.fit, state.message)
        self._temporal_states[frame.stream] = (anchor, result.scale_state)
        result.scale_source = self._sources.get(frame.stream, "lidar")
        return alignment.scale, alignment.shift

    def _cloud(self, result: FrameResult, rgb: np.ndarray, camera: PinholeCamera,
               needs: Needs) -> None:
        step = max(int(self.config.points_decimation), 1)
        # Unprojecting every pixel and then slicing equals unprojecting the kept pixels.
        points = unproject_depth(result.metric, camera)
        result.points = np.ascontiguousarray(points[::step, ::step])
        if needs.points_rgb:
            result.points_rgb = np.ascontiguousarray(rgb[::step, ::step])
        if needs.points_normals and result.normals is not None:
            result.points_normals = np.ascontiguousarray(result.normals[::step, ::step])

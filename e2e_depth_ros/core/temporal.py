"""Depth that stays steady over time: each frame aligned to the previous one, moved by odometry.

Every frame of the model is affine-invariant on its own, so consecutive frames come out with
a different (scale, shift): relative depth flickers, a cloud "breathes", and metric depth
stops between two metric fits. ``TemporalAligner`` keeps, per camera, the previous frame's
aligned depth on a coarse pixel grid. The next frame gets one more set of matched pairs from
it: those points moved by the camera's motion (odometry; the identity when there is none)
and projected into the new view (nearest per pixel, as for LiDAR). The one robust fit of
``scale.fit_samples`` maps the new frame onto them; a metric source's own fit is fused with
that one by their inliers and residuals. So:

- a frame with no metric fit of its own (a LiDAR gap, the floor out of view) stays metric
  for up to ``max_gap`` seconds ("propagated");
- without any metric source, relative depth stays in the affine frame of the chain's first
  frame (``relative_per_frame`` keeps each frame's own [0, 1] instead).

The chain restarts ("reset", with the reason) when the odometry jumps or is lost, when the
views overlap too little, when the previous frame does not fit (a scene cut), or when time
goes back. Pure numpy, no clock: stamps are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.motion_scale import UnitsFromMotion
from e2e_depth_ros.core.scale import ScaleFit, fit_samples, lidar_pixels

GRID_STEP = 4  # the previous frame is kept on a 1-in-4 pixel grid: ~19k points at 640x480
WEIGHT_CAP = 500  # inliers a fit counts for at most: neighbouring pixels' errors correlate
AGREEMENT = 0.15  # a metric fit more than 15 % off the propagated depth restarts the chain
PSEUDO_NEAR, PSEUDO_SPAN = 1.0, 4.0  # a relative chain's working units: rel 0..1 -> 1..5


@dataclass(frozen=True)
class CameraPose:
    """The camera optical frame in the odometry frame: ``p_odom = rotation @ p_cam + t``."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,) metres

    def motion_to(self, later: CameraPose) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) moving points of this camera frame into ``later``'s: p' = R p + t."""
        r_t = later.rotation.T
        return r_t @ self.rotation, r_t @ (self.translation - later.translation)


@dataclass(frozen=True)
class TemporalConfig:
    max_gap: float = 2.0  # s a frame stays metric without a metric fit of its own
    relative_per_frame: bool = False  # depth/relative in each frame's own [0, 1]
    max_speed: float = 10.0  # m/s between two frames' odometry; faster is a jump
    max_turn_rate: float = math.pi  # rad/s likewise
    min_overlap: float = 0.3  # of the previous frame's points that land in view


@dataclass(frozen=True)
class TemporalState:
    """What the alignment did with one frame (diagnostics, evaluation).

    ``status``: "anchored" (a metric fit of its own, nothing to fuse), "fused" (its metric
    fit and the previous frame's together), "propagated" (metric from the previous frame
    alone), "relative" (aligned, not metric), "start" (first frame of a chain).
    """

    status: str
    metric: bool
    gap: float | None  # s since the chain's last frame with a metric fit of its own
    resets: int  # chain restarts so far
    message: str
    previous_fit: ScaleFit | None = None  # this frame fitted to the previous one


@dataclass(frozen=True)
class Alignment:
    """Maps for one frame: metric (or working units) = scale * r + shift, and the relative
    output = relative_scale * r + relative_shift, r being the model's own relative depth."""

    scale: float
    shift: float
    relative_scale: float
    relative_shift: float
    state: TemporalState


@dataclass
class _Previous:
    rays: np.ndarray | None  # (N, 3) z = 1 optical rays of the grid (None: no camera_info)
    index: np.ndarray  # (N,) flat pixel indices of the grid those points came from
    depth: np.ndarray  # (N,) their z
    shape: tuple[int, int]
    pose: CameraPose | None
    stamp: float


class TemporalAligner:
    """One camera's chain of aligned frames (see the module's docstring)."""

    def __init__(self, config: TemporalConfig, fit_options: dict) -> None:
        """``fit_options``: ``scale.fit_samples``'s keyword arguments (the metric fit's)."""
        self.config = config
        self.fit_options = dict(fit_options)
        self.resets = 0
        self.last: TemporalState | None = None  # the latest frame's (diagnostics)
        self._previous: _Previous | None = None
        self._clear()

    def _clear(self) -> None:
        self._previous = None
        self._metric = False
        self._anchor_stamp: float | None = None  # last frame with a metric fit of its own
        self._relative_map = (1.0, 0.0)  # working units -> the chain's relative frame
        self._had_pose = False
        self._units_search = UnitsFromMotion()  # a relative chain's metres, from parallax

    def reset(self) -> None:
        """Forget the chain (a bag looped, settings changed)."""
        self._clear()

    def align(self, values_at: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int],
              camera: PinholeCamera | None, pose: CameraPose | None, stamp: float,
              metric_fit: ScaleFit | None) -> Alignment:
        """This frame's maps. ``values_at(flat_index)``: its relative depth at those pixels;
        ``metric_fit``: its metric source's own fit (None: no source this frame)."""
        why = None
        if pose is not None and not (np.isfinite(pose.rotation).all()
                                     and np.isfinite(pose.translation).all()):
            pose, why = None, "odometry is not finite"  # and not kept for the next frame
        why = why or self._why_reset(shape, pose, stamp)
        previous_fit = None
        if why is None and self._previous is not None:
            previous_fit, why = self._fit_previous(values_at, shape, camera, pose)
        if why is not None:
            self.resets += 1
            self._clear()
        self._had_pose = pose is not None
        if self._previous is None:
            alignment = self._start(metric_fit, stamp, why)
        else:
            alignment = self._continue(previous_fit, metric_fit, stamp)
        self._remember(values_at, shape, camera, pose, stamp, alignment)
        self.last = alignment.state
        return alignment

    def _why_reset(self, shape: tuple[int, int], pose: CameraPose | None,
                   stamp: float) -> str | None:
        previous = self._previous
        if previous is None:
            return None
        dt = stamp - previous.stamp
        if dt < 0:
            return f"time went back {-dt:.3g} s"
        if previous.shape != shape:
            return f"image size changed from {previous.shape[1]}x{previous.shape[0]}"
        if pose is None:
            return "odometry lost" if self._had_pose else None
        if previous.pose is None:
            return None
        rotation, translation = previous.pose.motion_to(pose)
        step = float(np.linalg.norm(translation))
        angle = float(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)))
        span = max(dt, 1e-3)
        if step > self.config.max_speed * span or angle > self.config.max_turn_rate * span:
            return (f"odometry jumped {step:.3g} m / {math.degrees(angle):.3g} deg in "
                    f"{dt:.3g} s")
        return None

    def _fit_previous(self, values_at, shape, camera, pose
                      ) -> tuple[ScaleFit | None, str | None]:
        """The fit of this frame to the previous one moved into this view, or why not."""
        previous = self._previous
        moved = pose is not None and previous.pose is not None and camera is not None
        if moved and previous.rays is not None:
            rotation, translation = previous.pose.motion_to(pose)
            kappa, beta = self._units()
            if kappa is None:  # units unknown: rotate only (that needs no scale)
                points, translation = previous.rays * previous.depth[:, None], 0.0
            else:
                points = previous.rays * ((previous.depth - beta) / kappa)[:, None]
            points = points @ rotation.T + translation
            found = lidar_pixels(points, camera.projection, shape, min_range=1e-6)
            if isinstance(found, ScaleFit):
                return None, f"the previous frame is out of view ({found.reason})"
            index, depth = found
            if kappa is not None:
                depth = kappa * depth + beta
        else:  # the identity: the same pixels
            index, depth = previous.index, previous.depth
        overlap = index.size / max(previous.index.size, 1)
        if overlap < self.config.min_overlap:
            return None, f"views overlap {overlap:.0%} < {self.config.min_overlap:.0%}"
        fit = fit_samples(values_at(index), depth, **self.fit_options,
                          source="previous-frame", symmetric=True)
        if not fit.ok:
            return fit, f"the previous frame does not fit (scene cut?): {fit.reason}"
        return fit, None

    def _units(self) -> tuple[float | None, float]:
        """(kappa, beta): working units = kappa * metres + beta; kappa None when unknown."""
        if self._metric or self._anchor_stamp is not None:  # metres since a metric fit
            return 1.0, 0.0
        found = self._units_search.units
        return (None, 0.0) if found is None else found

    def _start(self, metric_fit: ScaleFit | None, stamp: float, why: str | None) -> Alignment:
        reset = f"reset: {why}; " if why else ""
        if metric_fit is not None and metric_fit.ok:
            self._metric, self._anchor_stamp = True, stamp
            scale, shift = metric_fit.scale, metric_fit.shift
            message = f"{reset}chain starts metric"
        else:
            scale, shift = PSEUDO_SPAN, PSEUDO_NEAR
            message = f"{reset}chain starts relative (no metric fit)"
        self._relative_map = (1.0 / scale, -shift / scale)  # this frame's own relative depth
        state = TemporalState("start", self._metric, 0.0 if self._metric else None,
                              self.resets, message)
        return self._alignment(scale, shift, state)

    def _continue(self, previous_fit: ScaleFit, metric_fit: ScaleFit | None,
                  stamp: float) -> Alignment:
        own = metric_fit is not None and metric_fit.ok
        gap = None if self._anchor_stamp is None else stamp - self._anchor_stamp
        if own and self._metric:
            if _disagree(previous_fit, metric_fit, self._previous.depth):
                self.resets += 1
                self._clear()
                return self._start(metric_fit, stamp, "the metric fit disagrees with the "
                                   "propagated depth by more than "
                                   f"{AGREEMENT:.0%}")
            scale, shift = _fuse(previous_fit, metric_fit)
            self._anchor_stamp = stamp
            state = TemporalState("fused", True, 0.0, self.resets,
                                  "metric fit fused with the previous frame", previous_fit)
            return self._alignment(scale, shift, state)
        if own:  # a relative chain meets metric: re-express its relative frame in metres
            self._relative_map = _rebase(self._relative_map, previous_fit, metric_fit)
            self._metric, self._anchor_stamp = True, stamp
            state = TemporalState("anchored", True, 0.0, self.resets,
                                  "metric fit: the chain is metric from here", previous_fit)
            return self._alignment(metric_fit.scale, metric_fit.shift, state)
        if self._metric and gap is not None and gap <= self.config.max_gap:
            state = TemporalState("propagated", True, gap, self.resets,
                                  f"metric from the previous frame, {gap:.2f} s after the "
                                  "last metric fit", previous_fit)
            return self._alignment(previous_fit.scale, previous_fit.shift, state)
        message = "aligned to the previous frame (relative)"
        if self._metric:  # the gap is over: relative from here, in metres still
            message = (f"no metric fit for {gap:.2f} s > max gap {self.config.max_gap:g} s: "
                       "relative only")
            self._metric = False
        state = TemporalState("relative", False, gap, self.resets, message, previous_fit)
        return self._alignment(previous_fit.scale, previous_fit.shift, state)

    def _alignment(self, scale: float, shift: float, state: TemporalState) -> Alignment:
        if self.config.relative_per_frame:
            return Alignment(scale, shift, 1.0, 0.0, state)
        a, b = self._relative_map
        return Alignment(scale, shift, a * scale, a * shift + b, state)

    def _remember(self, values_at, shape, camera, pose, stamp, alignment: Alignment) -> None:
        """Keep this frame's aligned depth on the grid for the next frame."""
        height, width = shape
        v, u = np.mgrid[GRID_STEP // 2:height:GRID_STEP, GRID_STEP // 2:width:GRID_STEP]
        index = (v * width + u).reshape(-1).astype(np.int64)
        depth = alignment.scale * np.asarray(values_at(index), dtype=np.float64) + \
            alignment.shift
        keep = np.isfinite(depth) & (depth > 0)
        index, depth, u, v = index[keep], depth[keep], u.reshape(-1)[keep], v.reshape(-1)[keep]
        rays = None
        if camera is not None:
            rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy,
                             np.ones(u.shape)], axis=1)
        self._previous = _Previous(rays, index, depth, shape, pose, stamp)
        if rays is not None and pose is not None and self._anchor_stamp is None:
            self._units_search.observe(values_at, rays, depth, camera, pose.rotation,
                                       pose.translation)


def _fuse(previous: ScaleFit, metric: ScaleFit) -> tuple[float, float]:
    """(scale, shift) of two fits weighted by inliers over squared residual."""
    def weight(fit: ScaleFit) -> float:
        rmse = fit.rmse if math.isfinite(fit.rmse) else 1.0
        return min(fit.inliers, WEIGHT_CAP) / max(rmse, 1e-3) ** 2

    w_p, w_m = weight(previous), weight(metric)
    total = w_p + w_m
    return ((w_p * previous.scale + w_m * metric.scale) / total,
            (w_p * previous.shift + w_m * metric.shift) / total)


def _disagree(previous: ScaleFit, metric: ScaleFit, depth: np.ndarray) -> bool:
    """Whether the two maps put the previous frame's median depth >AGREEMENT apart."""
    z = float(np.median(depth)) if depth.size else 1.0
    r = (z - previous.shift) / previous.scale
    return abs(metric.scale * r + metric.shift - z) > AGREEMENT * z


def _rebase(relative_map: tuple[float, float], previous: ScaleFit, metric: ScaleFit
            ) -> tuple[float, float]:
    """The relative frame's map from metres, given one frame in both units."""
    a, b = relative_map
    ratio = previous.scale / metric.scale  # working = ratio * (metric - t_m) + t_p
    return a * ratio, a * (previous.shift - ratio * metric.shift) + b

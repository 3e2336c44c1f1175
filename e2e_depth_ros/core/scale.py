"""Metric scale from sparse LiDAR (docs/lidar_scale.md): a robust affine fit and a temporal filter.

The model's depth is affine-invariant, ``metric = scale * relative + shift``. A LiDAR cloud
already in the camera optical frame (x right, y down, z forward, meters) gives metric z at
the pixels it projects to; this module fits (scale, shift) to those pairs and smooths them
over time. Pure numpy: no clock, no ROS types, time is passed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from e2e_depth_ros.errors import ScaleFitError
from e2e_depth_ros.core.geometry import project_points

# RANSAC scores hypotheses on at most this many matched pixels: enough to rank them,
# cheap enough to score hundreds at once; the final fit uses every candidate.
_SCORE_SAMPLE = 2048


@dataclass(frozen=True)
class ScaleFit:
    """Result of one LiDAR fit: ``metric_depth_m = scale * relative + shift``.

    ``inliers`` and ``candidates`` count matched pixels (one LiDAR point per pixel);
    ``rmse`` is the inliers' residual in meters; ``reason`` is empty when ``ok`` and says
    why the fit was refused otherwise (scale and shift are then NaN or the rejected values).
    """

    ok: bool
    scale: float
    shift: float
    inliers: int
    rmse: float
    candidates: int
    reason: str = ""

    def apply(self, relative: np.ndarray) -> np.ndarray:
        """Metric z-depth (meters, float32) from relative depth; NaN stays NaN."""
        return (np.float32(self.scale) * relative + np.float32(self.shift)).astype(np.float32)


def refused(reason: str, candidates: int = 0, *, scale: float = float("nan"),
            shift: float = float("nan"), inliers: int = 0, rmse: float = float("nan")
            ) -> ScaleFit:
    return ScaleFit(False, float(scale), float(shift), int(inliers), float(rmse),
                    int(candidates), reason)


def _check_arguments(relative: np.ndarray, points_cam: np.ndarray, P: np.ndarray) -> None:
    """Malformed arguments are programming errors: raise, naming what was received."""
    if not isinstance(relative, np.ndarray) or relative.ndim != 2 or relative.size == 0:
        shape = getattr(relative, "shape", type(relative).__name__)
        raise ScaleFitError(f"relative must be a non-empty (H, W) array, got {shape}")
    if not np.issubdtype(relative.dtype, np.floating):
        raise ScaleFitError(f"relative must be floating point, got {relative.dtype}")
    _check_points(points_cam, P)


def _check_points(points_cam: np.ndarray, P: np.ndarray) -> None:
    points = np.asarray(points_cam)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ScaleFitError(f"points_cam must be (N, 3), got {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise ScaleFitError(f"points_cam must be numeric, got {points.dtype}")
    if np.asarray(P).size != 12:
        raise ScaleFitError(f"P must be a (3, 4) projection, got shape {np.shape(P)}")


def _check_options(min_points: int, iterations: int, inlier_threshold: float) -> None:
    if min_points < 2 or iterations < 1 or inlier_threshold <= 0:
        raise ScaleFitError(
            f"need min_points >= 2, iterations >= 1, inlier_threshold > 0; got "
            f"{min_points}, {iterations}, {inlier_threshold}"
        )


def _zbuffer(points: np.ndarray, P: np.ndarray, shape: tuple[int, int],
             min_range: float) -> tuple[np.ndarray, int]:
    """Sparse depth image (inf where empty) holding the nearest point per pixel.

    Also returns how many points were in front of the camera (for the refusal reason).
    Non-finite points are ignored, never propagated.
    """
    height, width = shape
    finite = np.isfinite(points).all(axis=1)
    front = finite & (points[:, 2] > min_range)
    n_front = int(np.count_nonzero(front))
    zbuf = np.full(height * width, np.inf, dtype=np.float32)
    if n_front == 0:
        return zbuf.reshape(shape), 0
    uv, z = project_points(points[front], P)
    u = np.rint(uv[:, 0])
    v = np.rint(uv[:, 1])
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)  # NaN compares False
    index = v[inside].astype(np.intp) * width + u[inside].astype(np.intp)
    np.minimum.at(zbuf, index, z[inside].astype(np.float32))
    return zbuf.reshape(shape), n_front


def _local_minimum(image: np.ndarray, window: int) -> np.ndarray:
    """Minimum over a ``window`` x ``window`` neighbourhood (separable, pure numpy)."""
    r = window // 2
    if r <= 0:
        return image
    height, width = image.shape
    rows = np.pad(image, ((r, r), (0, 0)), constant_values=np.inf)
    vertical = rows[:height].copy()
    for k in range(1, 2 * r + 1):
        np.minimum(vertical, rows[k:k + height], out=vertical)
    cols = np.pad(vertical, ((0, 0), (r, r)), constant_values=np.inf)
    out = cols[:, :width].copy()
    for k in range(1, 2 * r + 1):
        np.minimum(out, cols[:, k:k + width], out=out)
    return out


def _weighted_line(rel: np.ndarray, z: np.ndarray, symmetric: bool = False
                   ) -> tuple[float, float]:
    """Least squares of ``z ~ s * rel + t`` with weights 1/z^2 (relative residuals).

    Relative residuals match the inlier test and AbsRel: a far point does not outweigh
    many near ones. Returns NaNs when rel has no spread. ``symmetric``: both sides are
    equally noisy (one frame against the previous one), so the slope is the geometric
    mean of both regressions, sign(cov) * sd(z) / sd(rel): least squares would shrink it
    by the noise of ``rel``, and a chain of frames would shrink without end.
    """
    w = 1.0 / np.square(z)
    sw = w.sum()
    mr, mz = (w * rel).sum() / sw, (w * z).sum() / sw
    dr = rel - mr
    var = (w * dr * dr).sum()
    if not var > 1e-18 * sw:
        return float("nan"), float("nan")
    cov = (w * dr * (z - mz)).sum()
    if symmetric:
        s = np.sign(cov) * np.sqrt((w * np.square(z - mz)).sum() / var)
    else:
        s = cov / var
    return float(s), float(mz - s * mr)


def _ransac(rel: np.ndarray, z: np.ndarray, threshold: float, iterations: int,
            rng: np.random.Generator) -> tuple[float, float]:
    """Best (s, t) over random pairs, all hypotheses scored at once on a sample."""
    n = rel.size
    pairs = rng.integers(0, n, size=(iterations, 2))
    r1, r2 = rel[pairs[:, 0]], rel[pairs[:, 1]]
    z1, z2 = z[pairs[:, 0]], z[pairs[:, 1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (z1 - z2) / (r1 - r2)
    t = z1 - s * r1
    sample = rng.choice(n, size=_SCORE_SAMPLE, replace=False) if n > _SCORE_SAMPLE else None
    rs, zs = (rel, z) if sample is None else (rel[sample], z[sample])
    rs, zs = rs.astype(np.float32), zs.astype(np.float32)  # ranking only: float32 is plenty
    with np.errstate(invalid="ignore", over="ignore"):
        residual = np.abs(s.astype(np.float32)[:, None] * rs + t.astype(np.float32)[:, None] - zs)
        score = np.count_nonzero(residual <= np.float32(threshold) * zs, axis=1)
    score[~(np.isfinite(s) & np.isfinite(t))] = -1
    best = int(np.argmax(score))
    return float(s[best]), float(t[best])


def _inliers(rel: np.ndarray, z: np.ndarray, s: float, t: float, threshold: float) -> np.ndarray:
    return np.abs(s * rel + t - z) <= threshold * z


def fit_depth_to_lidar(
    relative: np.ndarray,
    points_cam: np.ndarray,
    P: np.ndarray,
    *,
    min_range: float = 0.1,
    min_points: int = 10,
    min_inlier_ratio: float = 0.3,
    inlier_threshold: float = 0.05,
    edge_window: int = 5,
    edge_margin: float = 0.1,
    iterations: int = 200,
    seed: int = 0,
    min_depth_span: float = 0.05,
) -> ScaleFit:
    """Fit ``metric = scale * relative + shift`` to LiDAR points seen in the image.

    ``relative``: (H, W) float affine-invariant depth of the image ``P`` belongs to (NaN
    allowed). ``points_cam``: (N, 3) points in the camera optical frame, meters; non-finite
    rows are ignored. Steps (docs/lidar_scale.md): keep z > ``min_range``; project with
    P and round to the nearest pixel; keep one point per pixel, the nearest; drop points
    seen through foreground edges, i.e. farther than ``(1 + edge_margin)`` times the
    nearest point in their ``edge_window`` x ``edge_window`` neighbourhood; drop pixels
    where ``relative`` is not finite. Then RANSAC on pairs (``iterations`` hypotheses,
    seeded by ``seed``, so the result is deterministic) and weighted least squares on the
    inliers, refined once.
    A pixel is an inlier when ``|scale * rel + shift - z| <= inlier_threshold * z``
    (a relative tolerance: 0.05 is 5 % of the LiDAR depth).

    A fit that cannot be trusted returns ``ok=False`` with a ``reason`` (too few points,
    too few inliers, low inlier ratio, scale <= 0, or an ill-conditioned fit); only
    malformed arguments raise :class:`ScaleFitError`.

    Conditioning: scale is only observable when the inliers cover a range of depths. A wall
    square to the camera gives every point the same z, so any (scale, shift) with the right
    sum fits, and the fit comes out nearly flat (scale ~ 0, every pixel at the wall's
    depth). The fit is refused when the inliers' LiDAR depth (5th to 95th percentile)
    spans less than ``min_depth_span`` (0.05: the far end at least 5 % beyond the near end).
    """
    _check_arguments(relative, points_cam, P)
    _check_options(min_points, iterations, inlier_threshold)
    pixels = lidar_pixels(points_cam, P, relative.shape, min_range=min_range,
                          edge_window=edge_window, edge_margin=edge_margin)
    if isinstance(pixels, ScaleFit):
        return pixels
    index, z = pixels
    return fit_samples(relative.reshape(-1)[index], z, min_points=min_points,
                       min_inlier_ratio=min_inlier_ratio, inlier_threshold=inlier_threshold,
                       iterations=iterations, seed=seed, min_depth_span=min_depth_span)


def lidar_pixels(points_cam: np.ndarray, P: np.ndarray, shape: tuple[int, int], *,
                 min_range: float = 0.1, edge_window: int = 5, edge_margin: float = 0.1
                 ) -> tuple[np.ndarray, np.ndarray] | ScaleFit:
    """The image pixels (flat row-major indices) a fit may use and their LiDAR depth.

    The first steps of ``fit_depth_to_lidar``, which need no depth map: so the map can stay
    on the model's device and only these pixels' values come back. A refused ScaleFit when
    no point is in front of the camera.
    """
    _check_points(points_cam, P)
    points = np.asarray(points_cam, dtype=np.float64)
    if points.shape[0] == 0:
        return refused("empty LiDAR cloud")
    zbuf, n_front = _zbuffer(points, P, shape, min_range)
    if n_front == 0:
        return refused(f"no LiDAR point in front of the camera (z > {min_range} m) "
                       f"of {points.shape[0]}")
    nearest = _local_minimum(zbuf, edge_window)
    keep = np.isfinite(zbuf) & (zbuf <= nearest * np.float32(1.0 + edge_margin))
    index = np.flatnonzero(keep)
    return index, zbuf.reshape(-1)[index]


def fit_samples(relative: np.ndarray, z: np.ndarray, *, min_points: int = 10,
                min_inlier_ratio: float = 0.3, inlier_threshold: float = 0.05,
                iterations: int = 200, seed: int = 0, min_depth_span: float = 0.05,
                source: str = "LiDAR", symmetric: bool = False) -> ScaleFit:
    """The fit of ``fit_depth_to_lidar`` on the relative depth at the pixels a scale source
    gave (``lidar_pixels``, ``scale_sources``); ``source`` names them in a refusal.
    ``symmetric``: ``z`` is as noisy as ``relative`` (see ``_weighted_line``)."""
    _check_options(min_points, iterations, inlier_threshold)
    finite = np.isfinite(relative)
    rel = np.asarray(relative, dtype=np.float64)[finite]
    z = np.asarray(z, dtype=np.float64)[finite]
    candidates = rel.size
    if candidates < min_points:
        return refused(f"{candidates} valid {source} points in the image, need >= "
                       f"{min_points}", candidates)
    s, t = _ransac(rel, z, inlier_threshold, iterations, np.random.default_rng(seed))
    for _ in range(2):  # least squares on the RANSAC inliers, then once more on its own
        mask = _inliers(rel, z, s, t, inlier_threshold)
        if np.count_nonzero(mask) < 2:
            break
        s_ls, t_ls = _weighted_line(rel[mask], z[mask], symmetric)
        if not np.isfinite(s_ls):
            break
        s, t = s_ls, t_ls
    return _judge(rel, z, s, t, candidates, min_points=min_points,
                  min_inlier_ratio=min_inlier_ratio, threshold=inlier_threshold,
                  min_depth_span=min_depth_span, source=source)


def _judge(rel: np.ndarray, z: np.ndarray, s: float, t: float, candidates: int, *,
           min_points: int, min_inlier_ratio: float, threshold: float,
           min_depth_span: float, source: str) -> ScaleFit:
    """The final ScaleFit: accepted, or refused with the first failed check as reason."""
    if not (np.isfinite(s) and np.isfinite(t)):
        return refused(f"relative depth has no spread over the {source} pixels", candidates)
    mask = _inliers(rel, z, s, t, threshold)
    inliers = int(np.count_nonzero(mask))
    rmse = float(np.sqrt(np.mean(np.square(s * rel[mask] + t - z[mask])))) if inliers else \
        float("nan")
    values = dict(scale=s, shift=t, inliers=inliers, rmse=rmse)
    if s <= 0:
        return refused(f"scale {s:.4g} <= 0 (relative depth not increasing with distance)",
                       candidates, **values)
    if inliers < min_points:
        return refused(f"{inliers} inliers of {candidates}, need >= {min_points}",
                       candidates, **values)
    if inliers < min_inlier_ratio * candidates:
        return refused(f"inlier ratio {inliers / candidates:.2f} < {min_inlier_ratio}",
                       candidates, **values)
    near, far = np.percentile(z[mask], [5.0, 95.0])
    if far < near * (1.0 + min_depth_span):
        return refused(f"scale unobservable: the inliers span only {near:.4g}..{far:.4g} m "
                       f"({(far / near - 1.0) * 100:.2g} % of depth, need >= "
                       f"{min_depth_span * 100:.3g} %; one surface square to the camera?)",
                       candidates, **values)
    return ScaleFit(True, s, t, inliers, rmse, candidates, "")


@dataclass(frozen=True)
class ScaleState:
    """What the temporal filter currently believes.

    ``status``: "ok" (the latest fit was accepted), "holding" (later fits failed or were
    rejected, or none arrived, but the last accepted one is at most ``hold_timeout`` old),
    "propagated" (temporal alignment: carried from the previous frame, no fit of its own)
    or "none" (no usable scale: do not publish metric outputs). ``age`` is seconds since
    the last accepted fit; ``fit`` that fit as it came in (unsmoothed).
    """

    status: str
    scale: float | None
    shift: float | None
    age: float | None
    fit: ScaleFit | None
    message: str

    @property
    def usable(self) -> bool:
        """Whether metric outputs may be published with ``scale``/``shift``."""
        return self.status in ("ok", "holding", "propagated")


class ScaleFilter:
    """Smooths (scale, shift) over time and decides whether they are still usable.

    State machine, driven by ``update(fit, stamp)`` and queried with ``state(now)``:

    - no accepted fit yet, or the last one older than ``hold_timeout``: status "none".
      The next good fit (``fit.ok``) is taken as it is (no smoothing, no jump test).
    - good fit close to the current scale (relative change <= ``max_jump``): accepted;
      scale and shift move together by an EMA, ``x += smoothing * (x_new - x)``
      (both at once: they are one affine map, smoothing only one would mix two maps).
    - good fit that jumps (relative scale change > ``max_jump``): rejected and remembered.
      ``jump_confirm`` consecutive jumps that agree with each other (each within
      ``max_jump`` of the previous one) mean the scene really changed: the filter resets
      to the latest of them. An accepted fit in between clears the streak.
    - refused fit (``fit.ok`` False): nothing changes except the status.

    Status "ok" when the latest update was accepted at most ``fresh_timeout`` seconds ago
    (a 10 Hz LiDAR fits every 0.1 s), "holding" when it was refused or rejected (or no
    update came for longer) while the last accepted fit is at most ``hold_timeout`` seconds
    old, "none" after that. A stamp earlier than the last accepted one (time went
    back, e.g. a bag looped) resets the filter first.

    Thread-safe: a worker may ``update``/``reset`` while a diagnostics timer reads ``state``.
    """

    def __init__(self, *, smoothing: float = 0.3, max_jump: float = 0.5,
                 jump_confirm: int = 3, hold_timeout: float = 2.0,
                 fresh_timeout: float = 0.25) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ScaleFitError(f"smoothing must be in (0, 1], got {smoothing}")
        if max_jump <= 0 or jump_confirm < 1 or hold_timeout < 0:
            raise ScaleFitError(
                f"need max_jump > 0, jump_confirm >= 1, hold_timeout >= 0; got {max_jump}, "
                f"{jump_confirm}, {hold_timeout}"
            )
        self.smoothing = float(smoothing)
        self.max_jump = float(max_jump)
        self.jump_confirm = int(jump_confirm)
        self.hold_timeout = float(hold_timeout)
        self.fresh_timeout = float(fresh_timeout)
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next good fit is taken as it is."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._scale: float | None = None
        self._shift: float | None = None
        self._fit: ScaleFit | None = None
        self._accepted_at: float | None = None
        self._latest_accepted = False
        self._note = "no fit yet"
        self._jumps: list[ScaleFit] = []

    def update(self, fit: ScaleFit, stamp: float) -> ScaleState:
        """Feed one fit made at ``stamp`` (seconds); returns the state at that stamp."""
        with self._lock:
            return self._update(fit, stamp)

    def _update(self, fit: ScaleFit, stamp: float) -> ScaleState:
        if self._accepted_at is not None and stamp < self._accepted_at:
            self._clear()
        if not fit.ok:
            self._latest_accepted = False
            self._note = f"fit refused: {fit.reason}"
        elif self._stale(stamp):
            self._take(fit, stamp)
        elif self._is_jump(fit.scale, self._scale):
            self._remember_jump(fit, stamp)
        else:
            a = self.smoothing
            self._scale += a * (fit.scale - self._scale)
            self._shift += a * (fit.shift - self._shift)
            self._accept(fit, stamp, "fit accepted")
        return self._state(stamp)

    def state(self, now: float) -> ScaleState:
        """The filter's state at time ``now`` (seconds, same clock as the stamps)."""
        with self._lock:
            return self._state(now)

    def _state(self, now: float) -> ScaleState:
        if self._accepted_at is None or self._scale is None:
            return ScaleState("none", None, None, None, None, self._note)
        age = max(0.0, now - self._accepted_at)
        if age > self.hold_timeout:
            return ScaleState("none", None, None, age, self._fit,
                              f"last good fit {age:.1f} s old > hold_timeout "
                              f"{self.hold_timeout} s; {self._note}")
        fresh = self._latest_accepted and age <= self.fresh_timeout
        status = "ok" if fresh else "holding"
        message = self._note if fresh else f"holding fit from {age:.2f} s ago; {self._note}"
        return ScaleState(status, self._scale, self._shift, age, self._fit, message)

    def _stale(self, stamp: float) -> bool:
        return self._accepted_at is None or stamp - self._accepted_at > self.hold_timeout

    def _is_jump(self, new: float, old: float) -> bool:
        return abs(new - old) > self.max_jump * abs(old)

    def _remember_jump(self, fit: ScaleFit, stamp: float) -> None:
        if self._jumps and self._is_jump(fit.scale, self._jumps[-1].scale):
            self._jumps = []
        self._jumps.append(fit)
        if len(self._jumps) >= self.jump_confirm:
            self._take(fit, stamp, f"scale jump confirmed by {len(self._jumps)} fits; reset")
            return
        self._latest_accepted = False
        self._note = (f"scale jump rejected ({self._scale:.4g} -> {fit.scale:.4g}), "
                      f"{len(self._jumps)}/{self.jump_confirm} to confirm")

    def _take(self, fit: ScaleFit, stamp: float, note: str = "first fit accepted") -> None:
        """Start over from ``fit`` without smoothing."""
        self._scale, self._shift = fit.scale, fit.shift
        self._accept(fit, stamp, note)

    def _accept(self, fit: ScaleFit, stamp: float, note: str) -> None:
        self._fit = fit
        self._accepted_at = float(stamp)
        self._latest_accepted = True
        self._jumps = []
        self._note = (f"{note}: scale {self._scale:.4g}, shift {self._shift:.4g}, "
                      f"{fit.inliers}/{fit.candidates} inliers, rmse {fit.rmse:.3g} m")

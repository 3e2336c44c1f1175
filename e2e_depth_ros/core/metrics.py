"""Depth and surface-normal evaluation metrics on arrays and masks (docs/evaluation.md).

Pure numpy. Conventions, pinned by ``test/test_metrics.py``:

- Depth maps are (H, W) arrays (any equal shapes work); masks are boolean arrays of the
  same shape. Arithmetic is done in float64.
- Valid ground truth is finite, > 0 and strictly inside ``(min_depth, max_depth)`` when
  those are given (the Marigold / E2E-FT evaluation code uses strict bounds).
- AbsRel = mean(|p - g| / g); delta1 = fraction of pixels with max(p / g, g / p) < 1.25.
  Both are fractions, not percent. A prediction <= 0 is a delta1 miss.
- NaN policy for predictions: pixels where the prediction is non-finite are left out of
  the scores, and ``valid`` counts the pixels actually scored, so a prediction with holes
  shows up as a lower ``valid``, not as a silently better score.
- Normals are (H, W, 3) arrays; errors are angles in degrees between the normalised
  vectors, ``arccos(clip(dot, -1, 1))``. Pixels where either vector is non-finite or has
  zero norm are left out. Threshold fractions use strict ``<`` (as DSINE does).
- A metric over zero pixels is NaN with ``valid == 0``; no warnings are emitted.
- Over time (is depth steady?): :func:`log_median_ratio` per frame and :func:`scale_change`
  over the sequence for metric depth; :class:`OneMapAccumulator` for relative depth under
  one affine map fitted to the whole sequence (on a fixed per-frame pixel subsample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DELTA1_THRESHOLD = 1.25
NORMAL_THRESHOLDS_DEG = (11.25, 22.5, 30.0)


@dataclass(frozen=True)
class DepthMetrics:
    """Depth scores of one frame (or a summary). Fractions, not percent.

    ``abs_rel`` and ``delta1`` are NaN when ``valid == 0`` (no pixel could be scored).
    """

    abs_rel: float
    delta1: float
    valid: int


@dataclass(frozen=True)
class NormalMetrics:
    """Angular-error scores in degrees; ``a11``/``a22``/``a30`` are fractions of pixels
    with error under 11.25°, 22.5° and 30°. All NaN when ``valid == 0``."""

    mean: float
    median: float
    a11: float
    a22: float
    a30: float
    valid: int


# --- input checks (the boundary) -------------------------------------------------------

def _as_real_array(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr


def _check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )


def _check_mask(mask: object, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"mask must have the shape of {what} {shape}, got {arr.shape}")
    return arr


def _finite(arr: np.ndarray) -> np.ndarray:
    return np.isfinite(arr) if np.issubdtype(arr.dtype, np.floating) else np.ones(arr.shape, bool)


# --- depth ------------------------------------------------------------------------------

def valid_depth_mask(
    gt: np.ndarray, *, min_depth: float | None = None, max_depth: float | None = None
) -> np.ndarray:
    """Boolean mask of usable ground-truth depth: finite, > 0, and strictly inside
    ``(min_depth, max_depth)`` for the bounds that are given."""
    gt = _as_real_array("gt", gt)
    for name, bound in (("min_depth", min_depth), ("max_depth", max_depth)):
        if bound is not None and not (np.isfinite(bound) and bound >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {bound!r}")
    if min_depth is not None and max_depth is not None and min_depth >= max_depth:
        raise ValueError(
            f"min_depth must be below max_depth, got min_depth={min_depth}, "
            f"max_depth={max_depth}"
        )
    with np.errstate(invalid="ignore"):
        mask = _finite(gt) & (gt > 0)
        if min_depth is not None:
            mask &= gt > min_depth
        if max_depth is not None:
            mask &= gt < max_depth
    return mask


def align_scale_shift(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimising ``||s * pred + t - gt||`` over the mask.

    Done in depth space (the paper's protocol). Pixels where ``pred`` or ``gt`` is not
    finite are left out even if the mask includes them. Raises ``ValueError`` when fewer
    than 2 pixels remain or ``pred`` is constant on them (the fit is then not unique).
    """
    pred = _as_real_array("pred", pred)
    gt = _as_real_array("gt", gt)
    _check_same_shape("pred", pred, "gt", gt)
    mask = _check_mask(mask, pred.shape, "pred")
    use = mask & _finite(pred) & _finite(gt)
    n = int(np.count_nonzero(use))
    if n < 2:
        raise ValueError(
            f"scale-and-shift alignment needs at least 2 pixels with a finite prediction "
            f"and valid ground truth, got {n}"
        )
    p = pred[use].astype(np.float64)
    g = gt[use].astype(np.float64)
    if p.max() == p.min():
        raise ValueError(
            f"scale-and-shift alignment is not unique: the prediction is constant "
            f"({float(p[0])!r}) on all {n} valid pixels"
        )
    # Closed form on centred values (better conditioned than the normal equations).
    p_mean, g_mean = p.mean(), g.mean()
    dp = p - p_mean
    var_p = float(np.dot(dp, dp))
    if not (np.isfinite(var_p) and var_p > 0):
        raise ValueError(
            f"scale-and-shift alignment is ill-conditioned: prediction variance {var_p!r} "
            f"on {n} valid pixels"
        )
    s = float(np.dot(dp, g - g_mean) / var_p)
    t = float(g_mean - s * p_mean)
    return s, t


def _scored(pred_metric: np.ndarray, gt: np.ndarray, mask: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, gt, pixels to score): ``mask`` (default: :func:`valid_depth_mask` of ``gt``)
    with finite, positive ``gt`` and finite ``pred_metric``, the arguments checked."""
    pred = _as_real_array("pred_metric", pred_metric)
    gt = _as_real_array("gt", gt)
    _check_same_shape("pred_metric", pred, "gt", gt)
    if mask is None:
        mask = valid_depth_mask(gt)
    mask = _check_mask(mask, pred.shape, "pred_metric")
    with np.errstate(invalid="ignore"):
        return pred, gt, mask & _finite(gt) & (gt > 0) & _finite(pred)


def depth_metrics(
    pred_metric: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
) -> DepthMetrics:
    """AbsRel and delta1 of a metric-depth prediction against ground truth.

    Scored over ``mask`` (default: :func:`valid_depth_mask` of ``gt``) intersected with
    finite, positive ``gt`` (so a loose mask cannot divide by zero) and finite
    ``pred_metric``; ``valid`` is the number of pixels scored. A prediction <= 0 counts as
    a delta1 miss.
    """
    pred, gt, use = _scored(pred_metric, gt, mask)
    n = int(np.count_nonzero(use))
    if n == 0:
        return DepthMetrics(abs_rel=float("nan"), delta1=float("nan"), valid=0)
    p = pred[use].astype(np.float64)
    g = gt[use].astype(np.float64)
    with np.errstate(over="ignore"):  # huge finite p over tiny g: inf is the right answer
        abs_rel = float(np.mean(np.abs(p - g) / g))
        positive = p > 0
        ratio = np.full(p.shape, np.inf)
        ratio[positive] = np.maximum(p[positive] / g[positive], g[positive] / p[positive])
    delta1 = float(np.mean(ratio < DELTA1_THRESHOLD))
    return DepthMetrics(abs_rel=abs_rel, delta1=delta1, valid=n)


def aligned_depth_metrics(
    pred_relative: np.ndarray,
    gt: np.ndarray,
    *,
    min_depth: float | None = None,
    max_depth: float | None = None,
) -> tuple[DepthMetrics, float, float]:
    """Align ``pred_relative`` to ``gt`` by least-squares scale and shift, then score.

    Returns ``(metrics, s, t)``. A frame with fewer than 2 scorable pixels gives NaN
    metrics, ``valid == 0`` and NaN ``s``, ``t`` (nothing to evaluate; ``summarize_depth``
    skips it). A prediction that is constant on the valid pixels still raises
    ``ValueError`` from :func:`align_scale_shift`: that is a broken model, not missing data.
    """
    pred = _as_real_array("pred_relative", pred_relative)
    gt = _as_real_array("gt", gt)
    _check_same_shape("pred_relative", pred, "gt", gt)
    mask = valid_depth_mask(gt, min_depth=min_depth, max_depth=max_depth)
    if np.count_nonzero(mask & _finite(pred)) < 2:
        nan = float("nan")
        return DepthMetrics(abs_rel=nan, delta1=nan, valid=0), nan, nan
    s, t = align_scale_shift(pred, gt, mask)
    with np.errstate(invalid="ignore", over="ignore"):
        aligned = s * pred.astype(np.float64) + t
    return depth_metrics(aligned, gt, mask), s, t


def summarize_depth(per_frame: list[DepthMetrics]) -> DepthMetrics:
    """Mean of per-frame AbsRel and delta1 (the paper averages per image), ``valid`` summed.

    Frames with ``valid == 0`` are skipped; no scored frame gives NaN and ``valid == 0``.
    """
    scored = [m for m in per_frame if m.valid > 0]
    if not scored:
        return DepthMetrics(abs_rel=float("nan"), delta1=float("nan"), valid=0)
    return DepthMetrics(
        abs_rel=float(np.mean([m.abs_rel for m in scored])),
        delta1=float(np.mean([m.delta1 for m in scored])),
        valid=int(sum(m.valid for m in scored)),
    )


# --- normals ----------------------------------------------------------------------------

def angular_errors(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Angles in degrees between ``pred`` and ``gt`` normals, (H, W, 3) each.

    Returns a 1-D float64 array over the pixels in ``mask`` (default: all) where both
    vectors are finite and non-zero, in row-major order.
    """
    pred = _as_real_array("pred", pred)
    gt = _as_real_array("gt", gt)
    _check_same_shape("pred", pred, "gt", gt)
    if pred.ndim < 1 or pred.shape[-1] != 3:
        raise ValueError(f"normals must have a last axis of size 3, got shape {pred.shape}")
    if mask is None:
        mask = np.ones(pred.shape[:-1], dtype=bool)
    mask = _check_mask(mask, pred.shape[:-1], "the normal image (without the channel axis)")
    p = pred.astype(np.float64)
    g = gt.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        p_norm = np.linalg.norm(p, axis=-1)
        g_norm = np.linalg.norm(g, axis=-1)
        use = (
            mask
            & np.all(np.isfinite(p), axis=-1) & np.all(np.isfinite(g), axis=-1)
            & np.isfinite(p_norm) & np.isfinite(g_norm) & (p_norm > 0) & (g_norm > 0)
        )
    pu = p[use] / p_norm[use][:, None]
    gu = g[use] / g_norm[use][:, None]
    cos = np.clip(np.einsum("ij,ij->i", pu, gu), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def _normal_metrics_from_errors(errors: np.ndarray) -> NormalMetrics:
    if errors.size == 0:
        nan = float("nan")
        return NormalMetrics(mean=nan, median=nan, a11=nan, a22=nan, a30=nan, valid=0)
    errors = errors.astype(np.float64, copy=False)
    a11, a22, a30 = (float(np.mean(errors < th)) for th in NORMAL_THRESHOLDS_DEG)
    return NormalMetrics(
        mean=float(np.mean(errors)),
        median=float(np.median(errors)),
        a11=a11,
        a22=a22,
        a30=a30,
        valid=int(errors.size),
    )


def normal_metrics(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
) -> NormalMetrics:
    """Mean / median angular error (degrees) and fractions under 11.25°, 22.5°, 30° for
    one frame of (H, W, 3) normals; see :func:`angular_errors` for which pixels count."""
    return _normal_metrics_from_errors(angular_errors(pred, gt, mask))


class NormalErrorAccumulator:
    """Pools angular errors over a dataset, the usual normals protocol (DSINE, Marigold):
    mean, median and thresholds over all pixels of all frames, not a mean of frames.

    Errors are kept as float32 (4 bytes a pixel; fine for tens to hundreds of frames).
    """

    def __init__(self) -> None:
        self._errors: list[np.ndarray] = []

    def add(
        self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
    ) -> NormalMetrics:
        """Add one frame; returns that frame's own metrics."""
        errors = angular_errors(pred, gt, mask)
        self._errors.append(errors.astype(np.float32))
        return _normal_metrics_from_errors(errors)

    @property
    def frames(self) -> int:
        """How many frames were added (including ones with no valid pixel)."""
        return len(self._errors)

    def result(self) -> NormalMetrics:
        """Metrics over every valid pixel added so far (NaN, ``valid == 0`` if none)."""
        if not self._errors:
            return _normal_metrics_from_errors(np.empty(0))
        return _normal_metrics_from_errors(np.concatenate(self._errors))


# --- over time: the steadiness of a sequence -----------------------------------------------

@dataclass(frozen=True)
class ScaleChange:
    """Frame-to-frame scale change of metric depth over a sequence.

    ``mean_abs_change`` is the mean of ``|log_ratio[k] - log_ratio[k-1]|`` over ``pairs``
    pairs of consecutive frames that both have a finite log ratio (see
    :func:`log_median_ratio`); a fraction, since ``|Δ log| ≈`` the relative change
    (0.008 = 0.8 % a frame). NaN when ``pairs == 0``.
    """

    mean_abs_change: float
    pairs: int


def log_median_ratio(
    pred_metric: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """``log(median(p / g))`` of one frame: how far its metric scale is off the truth.

    Over ``mask`` (default: :func:`valid_depth_mask` of ``gt``) intersected with finite,
    positive ``gt`` and finite ``pred_metric``. NaN when no pixel is left or the median
    ratio is not positive (no scale to speak of); no warnings are emitted.
    """
    pred, gt, use = _scored(pred_metric, gt, mask)
    if not np.any(use):
        return float("nan")
    with np.errstate(over="ignore"):
        ratio = float(np.median(pred[use].astype(np.float64) / gt[use].astype(np.float64)))
    return math.log(ratio) if ratio > 0 and math.isfinite(ratio) else float("nan")


def scale_change(log_ratios: Sequence[float | None]) -> ScaleChange:
    """Mean ``|Δ log median(p / g)|`` between consecutive frames of ``log_ratios``.

    One entry per scored frame in time order; ``None`` or NaN (a frame without metric depth)
    breaks the chain: no difference is taken across it.
    """
    steps = []
    previous = None
    for value in log_ratios:
        value = None if value is None or not math.isfinite(value) else float(value)
        if value is not None and previous is not None:
            steps.append(abs(value - previous))
        previous = value
    if not steps:
        return ScaleChange(mean_abs_change=float("nan"), pairs=0)
    return ScaleChange(mean_abs_change=float(np.mean(steps)), pairs=len(steps))


@dataclass(frozen=True)
class OneMapResult:
    """Relative depth of a whole sequence under one affine map fitted to all of it.

    ``metrics``: mean over frames of each frame's AbsRel / delta1 under the one map (as
    :func:`summarize_depth` averages the per-frame fits), ``valid`` summed over the kept
    pixels; ``per_frame``: one entry per :meth:`OneMapAccumulator.add`, in order;
    ``scale``/``shift``: the map ``gt ≈ scale * relative + shift``; ``pixels``: pixels in
    the fit, at most ``pixels_per_frame`` from each frame. NaN metrics and map when fewer
    than 2 pixels were kept or the relative depth is constant on all of them (the fit is
    then not unique).
    """

    metrics: DepthMetrics
    per_frame: tuple[DepthMetrics, ...]
    scale: float
    shift: float
    pixels: int
    pixels_per_frame: int


class OneMapAccumulator:
    """One least-squares scale and shift for a whole sequence of relative depth.

    A per-frame fit hides a scale and shift that wander from frame to frame; one map for
    all frames shows them: a sequence that is one affine map of the truth scores ~0, one
    whose map jitters scores what the jitter costs. The fit is :func:`align_scale_shift`
    (least squares in depth space, as :func:`aligned_depth_metrics`) on the pooled pixels.

    Memory: each frame keeps a fixed subsample of at most ``pixels_per_frame`` of its valid
    pixels (valid ground truth as in :func:`aligned_depth_metrics`, finite prediction),
    drawn without replacement by a generator seeded with ``(seed, frame index)``, so a run
    is repeatable; the pairs are kept as float32 (8 bytes a pixel: 0.16 MB a frame at the
    default, ~50 MB for 300 frames of 640x480). Both the fit and the scores use only the
    kept pixels, so they estimate the full-frame values.
    """

    def __init__(self, *, pixels_per_frame: int = 20_000, seed: int = 0,
                 min_depth: float | None = None, max_depth: float | None = None) -> None:
        if isinstance(pixels_per_frame, bool) or not isinstance(pixels_per_frame, int) \
                or pixels_per_frame < 2:
            raise ValueError(f"pixels_per_frame must be an integer >= 2, got "
                             f"{pixels_per_frame!r}")
        valid_depth_mask(np.ones(1), min_depth=min_depth, max_depth=max_depth)  # the bounds
        self.pixels_per_frame, self.seed = pixels_per_frame, seed
        self.min_depth, self.max_depth = min_depth, max_depth
        self._pred: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []

    @property
    def frames(self) -> int:
        """How many frames were added (including ones with no valid pixel)."""
        return len(self._pred)

    def add(self, pred_relative: np.ndarray, gt: np.ndarray) -> int:
        """Keep this frame's subsample; returns how many of its pixels were kept."""
        pred = _as_real_array("pred_relative", pred_relative)
        gt = _as_real_array("gt", gt)
        _check_same_shape("pred_relative", pred, "gt", gt)
        mask = valid_depth_mask(gt, min_depth=self.min_depth, max_depth=self.max_depth)
        index = np.flatnonzero(mask & _finite(pred))
        if index.size > self.pixels_per_frame:
            rng = np.random.default_rng((self.seed, len(self._pred)))
            index = np.sort(rng.choice(index, size=self.pixels_per_frame, replace=False))
        self._pred.append(pred.reshape(-1)[index].astype(np.float32))
        self._gt.append(gt.reshape(-1)[index].astype(np.float32))
        return int(index.size)

    def result(self) -> OneMapResult:
        """The one map fitted to every kept pixel so far, and the scores under it."""
        nan = float("nan")
        empty = DepthMetrics(abs_rel=nan, delta1=nan, valid=0)
        pred = np.concatenate(self._pred) if self._pred else np.empty(0, np.float32)
        gt = np.concatenate(self._gt) if self._gt else np.empty(0, np.float32)
        try:
            s, t = align_scale_shift(pred, gt, np.ones(pred.shape, bool))
        except ValueError:  # fewer than 2 pixels, or constant: no unique map
            return OneMapResult(empty, tuple(empty for _ in self._pred), nan, nan,
                                int(pred.size), self.pixels_per_frame)
        per_frame = tuple(
            depth_metrics(s * p.astype(np.float64) + t, g, np.ones(p.shape, bool))
            for p, g in zip(self._pred, self._gt))
        return OneMapResult(summarize_depth(list(per_frame)), per_frame, s, t,
                            int(pred.size), self.pixels_per_frame)

"""The evaluation's report: the stdout summary, report.md with its PNG plots, metrics.json.

matplotlib is imported inside the plotting functions (Agg canvas, no pyplot), so importing
this module stays instant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from e2e_depth_ros.offline.bag_io import OutputBag
    from e2e_depth_ros.offline.eval_types import EvalOptions, EvalResult


# Every file the report may write into the output folder (evaluate checks them before a run).
REPORT_FILES = ("metrics.json", "report.md", "errors_over_time.png", "scale_over_time.png",
                "temporal_consistency.png", "frames.png")


@dataclass
class Sample:
    """Arrays of one frame kept for the report's pictures."""

    stamp: float
    rgb: np.ndarray
    gt: np.ndarray
    pred: np.ndarray  # metric: LiDAR-aligned when available, else GT-aligned
    label: str


def write_outputs(result: EvalResult, samples: list[Sample], out_dir: Path,
                  options: EvalOptions, out: OutputBag | None) -> None:
    """metrics.json always; report.md and its PNGs unless ``options.write_report`` is off."""
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


def _plots(result: EvalResult, samples: list[Sample], out_dir: Path) -> dict[str, str]:
    """Write the report's PNGs; returns {name: file name relative to out_dir}."""
    plots = {}
    if result.per_frame:
        plots["errors_over_time"] = _plot_errors(result, out_dir / "errors_over_time.png")
    if any(s.scale is not None for s in result.per_frame):
        plots["scale_over_time"] = _plot_scale(result, out_dir / "scale_over_time.png")
    if result.per_frame and result.depth_one_map is not None:
        plots["temporal_consistency"] = _plot_temporal(result,
                                                       out_dir / "temporal_consistency.png")
    if samples:
        plots["frames"] = _plot_samples(samples, result.time_origin, out_dir / "frames.png")
    return plots


TIME_AXIS = "t: seconds since the bag's first image stamp"


def frame_times(result: EvalResult) -> list[float]:
    """One definition of t everywhere (plots, frames.png, report): seconds since the bag's
    first image header stamp, so the same frame has the same t whichever frames scored."""
    return [s.stamp - result.time_origin for s in result.per_frame]


# The metric-depth score's name per scale source, the same in the table, plots and text.
SOURCE_LABELS = {"lidar": "LiDAR-aligned", "depth": "sensor-depth-aligned",
                 "ground": "floor-aligned", "fixed": "fixed-scale",
                 "recorded": "recorded metric", "none": "no metric depth"}
# What each source is, in the report's sentences and the scale plot's legend.
SOURCE_TEXT = {"lidar": "LiDAR", "depth": "sensor depth", "ground": "floor (ground plane "
               "from TF)", "fixed": "fixed map (--fixed-scale)"}


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source)


def metric_label(result: EvalResult) -> str:
    """The name of the metric-depth score, the same in the table, the plots and the text."""
    if result.mode == "recorded-metric":
        return SOURCE_LABELS["recorded"]
    return source_label(result.scale_source)


def _series(result: EvalResult, name: str) -> list[float]:
    return [float("nan") if getattr(s, name) is None else getattr(s, name)
            for s in result.per_frame]


def _plot_errors(result: EvalResult, path: Path) -> str:
    fig = _figure(8, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = frame_times(result)
    top.plot(t, _series(result, "abs_rel"), "o-", label="GT-aligned (best affine)")
    bottom.plot(t, _series(result, "delta1"), "o-", label="GT-aligned (best affine)")
    if result.depth_lidar_aligned is not None:
        label = metric_label(result)
        top.plot(t, _series(result, "lidar_abs_rel"), "s-", label=label)
        bottom.plot(t, _series(result, "lidar_delta1"), "s-", label=label)
    top.set_ylabel("AbsRel")
    bottom.set_ylabel("delta1 (fraction)")
    return _save_time_plot(fig, top, bottom, path)


def _save_time_plot(fig: Any, top: Any, bottom: Any, path: Path) -> str:
    """Shared finish of the two-panel plots over time: axis label, legend, grid, file."""
    bottom.set_xlabel(TIME_AXIS)
    if top.get_legend_handles_labels()[0]:  # a panel may hold only a note ("no metric depth")
        top.legend()
    top.grid(alpha=0.3)
    bottom.grid(alpha=0.3)
    fig.savefig(path)
    return path.name


def _plot_scale(result: EvalResult, path: Path) -> str:
    fig = _figure(8, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = frame_times(result)
    label = _scale_legend(result.scale_source)
    top.plot(t, _series(result, "scale"), "s-", label=label)
    top.plot(t, _series(result, "best_scale"), "o--", label="best possible (GT fit)")
    bottom.plot(t, _series(result, "shift"), "s-", label=label)
    bottom.plot(t, _series(result, "best_shift"), "o--", label="best possible (GT fit)")
    top.set_ylabel("scale (m per unit)")
    bottom.set_ylabel("shift (m)")
    return _save_time_plot(fig, top, bottom, path)


def _plot_temporal(result: EvalResult, path: Path) -> str:
    """Steadiness over time: the metric depth's log(median(p/g)) (top) and the relative
    depth's AbsRel under the sequence's one map next to the per-frame fit (bottom)."""
    fig = _figure(8, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = frame_times(result)
    if result.scale_change is not None:
        top.plot(t, _series(result, "log_scale_ratio"), "s-", label=metric_label(result))
        top.axhline(0.0, color="grey", linewidth=0.8)
    else:
        top.text(0.5, 0.5, "no metric depth", ha="center", va="center",
                 transform=top.transAxes)
    bottom.plot(t, _series(result, "abs_rel"), "o-", label="per-frame fit (GT-aligned)")
    bottom.plot(t, _series(result, "one_map_abs_rel"), "s-", label="one map for the sequence")
    top.set_ylabel("log(median(p / g))")
    bottom.set_ylabel("AbsRel")
    bottom.legend()
    return _save_time_plot(fig, top, bottom, path)


def _scale_legend(source: str) -> str:
    if source == "fixed":
        return "fixed map (published)"
    return f"{SOURCE_TEXT.get(source, source)} fit, filtered (published)"


def depth_colour_range(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(lo, hi) in meters shared by the GT and prediction panels: 1st-99th percentile of the
    finite, positive values of both, so a prediction far off the ground truth shows its own
    range instead of one flat colour."""
    import numpy as np

    values = [a[np.isfinite(a) & (a > 0)] for a in (gt, pred)]
    values = np.concatenate([v.ravel() for v in values])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def clipped_fraction(values: np.ndarray, lo: float, hi: float) -> float:
    """Fraction of the finite pixels drawn at an end of the colour bar (outside [lo, hi])."""
    import numpy as np

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    return float(np.mean((finite < lo) | (finite > hi)))


def _depth_cmap() -> Any:
    """turbo_r with out-of-range pixels in colours the map never uses (white, magenta) and
    missing values grey."""
    import matplotlib

    return matplotlib.colormaps["turbo_r"].with_extremes(under="white", over="magenta",
                                                         bad="grey")


def _error_cmap() -> Any:
    import matplotlib

    return matplotlib.colormaps["magma"].with_extremes(bad="grey")


def _plot_samples(samples: list[Sample], t0: float, path: Path) -> str:
    _samples_figure(samples, t0).savefig(path)
    return path.name


def _samples_figure(samples: list[Sample], t0: float) -> Any:
    """One row per sample: image, GT, prediction (one shared depth colour bar), error."""
    import numpy as np

    fig = _figure(13, 2.8 * len(samples))
    axes = np.atleast_2d(fig.subplots(len(samples), 4))
    cmap = _depth_cmap()
    for row, sample in zip(axes, samples):
        valid = np.isfinite(sample.gt) & (sample.gt > 0)
        lo, hi = depth_colour_range(sample.gt, sample.pred)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.where(valid, np.abs(sample.pred - sample.gt) / sample.gt, np.nan)
        row[0].imshow(sample.rgb)
        row[0].set_title(f"image, t = {sample.stamp - t0:.2f} s")
        row[1].imshow(sample.gt, cmap=cmap, vmin=lo, vmax=hi)
        row[1].set_title(_clip_title("ground truth (m)", sample.gt, lo, hi))
        shown = row[2].imshow(sample.pred, cmap=cmap, vmin=lo, vmax=hi)
        row[2].set_title(_clip_title(f"prediction, {sample.label} (m)", sample.pred, lo, hi))
        fig.colorbar(shown, ax=row[1:3], shrink=0.8,
                     extend=_colour_bar_extend(lo, hi, sample.gt, sample.pred))
        err = row[3].imshow(error, cmap=_error_cmap(), vmin=0.0, vmax=0.5)
        row[3].set_title(_clip_title("|pred - gt| / gt", error, 0.0, 0.5))
        fig.colorbar(err, ax=row[3], shrink=0.8, extend=_colour_bar_extend(0.0, 0.5, error))
        for ax in row:
            ax.set_axis_off()
    return fig


def _colour_bar_extend(lo: float, hi: float, *images: np.ndarray) -> str:
    """The colour bar's ``extend``: an arrow on each end some pixel is drawn past, so the bar
    shows that the colour there is a clip, and only then."""
    import numpy as np

    finite = [v[np.isfinite(v)] for v in images]
    below = any(np.any(v < lo) for v in finite)
    above = any(np.any(v > hi) for v in finite)
    return {(False, False): "neither", (True, False): "min", (False, True): "max",
            (True, True): "both"}[(below, above)]


def _clip_title(title: str, values: np.ndarray, lo: float, hi: float) -> str:
    """The panel title, plus how much of it is clipped to the colour bar's ends."""
    clipped = clipped_fraction(values, lo, hi)
    return f"{title}\n{clipped:.0%} outside the colour bar" if clipped >= 0.005 else title


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
        name = f"depth, {metric_label(result)}" + (
            " (robot)" if result.mode != "recorded-metric" else "")
        lines.append(f"{name:<32}{_fmt(lidar.abs_rel):>10}{_fmt(lidar.delta1):>10}"
                     f"{lidar.valid:>12}   {result.lidar_frames}/{result.frames} frames metric")
    lines += _temporal_lines(result)
    n = result.normals
    if n is not None:
        lines.append(f"normals: mean {_fmt(n.mean, '.2f')} deg, median {_fmt(n.median, '.2f')}"
                     f" deg, <11.25: {_fmt(n.a11)}, <22.5: {_fmt(n.a22)}, <30: {_fmt(n.a30)}"
                     f" ({n.valid} pixels)")
    skips = ", ".join(f"{k} {v}" for k, v in result.skipped.items() if v) or "none"
    lines.append(f"frames scored: {result.frames} of {result.frames_total}; skipped: {skips}")
    lines += [f"note ({count} frames): {note}" for note, count in result.notes.items()]
    return lines


def _temporal_lines(result: EvalResult) -> list[str]:
    """The rows of the steadiness metrics: one map for the sequence, scale change."""
    lines = []
    one = result.depth_one_map
    if one is not None:
        m = one.metrics
        lines.append(f"{'depth, one map for the sequence':<32}{_fmt(m.abs_rel):>10}"
                     f"{_fmt(m.delta1):>10}{m.valid:>12}   scale {_fmt(one.scale, '.4g')}, "
                     f"shift {_fmt(one.shift, '.4g')}")
    change = result.scale_change
    if change is not None:
        percent = _fmt(100 * change.mean_abs_change, ".2f")
        lines.append(f"scale change, frame to frame: {_fmt(change.mean_abs_change)} "
                     f"({percent} % a frame), {change.pairs} pairs, "
                     f"{metric_label(result)} depth")
    return lines


def _metric_explanation(result: EvalResult) -> str:
    if result.depth_lidar_aligned is None:
        return ("No metric depth was scored: scale source none (no LiDAR, sensor depth, "
                "floor or fixed scale; no recorded metric prediction).")
    if result.mode == "recorded-metric":
        return (f"{metric_label(result)}: the metric depth recorded in the bag (the node's "
                "depth/image), scored as it is, without any alignment.")
    if result.scale_source == "fixed":
        return (f"{metric_label(result)}: the metric depth the node publishes with the fixed "
                "map metric = fixed_scale * relative + fixed_shift.")
    return (f"{metric_label(result)}: the metric depth the node publishes, with the scale "
            f"and shift of its {SOURCE_TEXT.get(result.scale_source, result.scale_source)} "
            "fit and temporal filter.")


def _source_title(source: str) -> str:
    text = SOURCE_TEXT.get(source, source).split(" (")[0]
    return text[:1].upper() + text[1:] if source != "lidar" else "LiDAR"


_TEMPORAL_TEXT = (
    "Top: log(median(p / g)) of each frame's metric depth (0 = the true scale; a step of "
    "0.01 is a 1 % jump in scale); the scale change in the table is the mean |step| between "
    "consecutive scored frames that both have metric depth. Bottom: AbsRel of the relative "
    "depth under one affine map (scale, shift) fitted to the whole sequence, next to each "
    "frame's own fit; where the two part, the relative depth's scale or shift wanders from "
    "frame to frame. The one map is fitted and scored on a fixed subsample of each frame's "
    f"valid pixels. Both against {TIME_AXIS}.")


def render_report(result: EvalResult, plots: dict[str, str]) -> str:
    """report.md: the table, the plots and how to read them."""
    parts = [
        f"# Evaluation of `{result.bag}`\n",
        f"Mode: {result.mode}. Scale source: {result.scale_source}. Fractions, not percent; "
        "AbsRel = mean(|p - g| / g), delta1 = fraction with max(p/g, g/p) < 1.25 over valid "
        "ground-truth pixels.\n",
        "```", *summary_lines(result), "```\n",
        "GT-aligned: each frame's relative depth mapped to meters by the least-squares "
        "scale and shift against its ground truth (the paper's protocol): the best any "
        f"affine map could do. {_metric_explanation(result)}\n",
    ]
    if result.depth_one_map is not None:
        parts.append("One map for the sequence: the relative depth of every scored frame "
                     "mapped by one least-squares scale and shift fitted to the whole "
                     "sequence, then scored per frame and averaged; near the GT-aligned score "
                     "when the relative depth keeps one scale and shift over time. Scale "
                     "change, frame to frame: how much the metric depth's scale, "
                     "log(median(p / g)), moves between consecutive scored frames.\n")
    sections = {
        "errors_over_time": ("Per-frame error over time",
                             "AbsRel (top, lower is better) and delta1 (bottom, higher is "
                             f"better) of each scored frame against {TIME_AXIS}; a gap is a "
                             "frame that was not scored or had no metric depth."),
        "frames": ("A few frames", "Image, ground truth, prediction (meters) and its relative "
                   "error |p - g| / g, at the same t as the plots; ground truth and "
                   "prediction share one colour bar, pixels beyond its ends are drawn white "
                   "(nearer) or magenta (farther) and counted in the panel title; grey: no "
                   "value (no valid ground truth in the error map)."),
        "scale_over_time": (f"{_source_title(result.scale_source)} scale over time vs the "
                            "best possible",
                            "Scale (top) and shift (bottom) of the published metric depth, "
                            f"from the {SOURCE_TEXT.get(result.scale_source, 'scale')}, "
                            f"against {TIME_AXIS}. The GT fit maps relative depth to meters "
                            "the same way (metric = scale * relative + shift), so the curves "
                            "compare directly; the gap is what the alignment loses."),
        "temporal_consistency": ("Steadiness over time", _TEMPORAL_TEXT),
    }
    for key, (title, text) in sections.items():
        if key in plots:
            parts.append(f"## {title}\n\n{text}\n\n![{title}]({plots[key]})\n")
    if result.files.get("bag"):
        parts.append(f"Node outputs with the original headers: `{Path(result.files['bag']).name}`"
                     " (replays into RViz with the copied camera_info and /tf_static).\n")
    return "\n".join(parts)

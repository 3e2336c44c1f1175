"""The evaluation's report: captions, one name per score, one clock, honest colour bars."""

import re
import warnings

import numpy as np
import pytest

from e2e_depth_ros.offline import report
from e2e_depth_ros.offline.eval_types import EvalResult, FrameScore
from e2e_depth_ros.core.metrics import DepthMetrics, OneMapResult, ScaleChange

T0 = 1_700_000_000.0  # the bag's first image stamp (s)


def _result(mode, stamps, *, metric=True):
    frames = [FrameScore(stamp=s, stamp_ns=round(s * 1e9), abs_rel=0.1, delta1=0.9, valid=10,
                         best_scale=2.0, best_shift=0.5, lidar_abs_rel=0.2 if metric else None,
                         lidar_delta1=0.8 if metric else None,
                         log_scale_ratio=0.01 * k if metric else None, one_map_abs_rel=0.15,
                         one_map_delta1=0.85) for k, s in enumerate(stamps)]
    summary = DepthMetrics(0.1, 0.9, 10 * len(frames))
    one_map = OneMapResult(DepthMetrics(0.15, 0.85, 10 * len(frames)),
                           tuple(DepthMetrics(0.15, 0.85, 10) for _ in frames), 2.1, 0.4,
                           10 * len(frames), 20_000)
    return EvalResult(bag="b", mode=mode, frames=len(frames), frames_total=4,
                      depth_gt_aligned=summary,
                      depth_lidar_aligned=DepthMetrics(0.2, 0.8, 40) if metric else None,
                      lidar_frames=len(frames) if metric else 0, normals=None,
                      per_frame=frames, skipped={}, time_origin=T0, depth_one_map=one_map,
                      scale_change=ScaleChange(0.01, len(frames) - 1) if metric else None)


PLOTS = {"errors_over_time": "errors_over_time.png", "frames": "frames.png",
         "scale_over_time": "scale_over_time.png",
         "temporal_consistency": "temporal_consistency.png"}


@pytest.mark.parametrize("mode", ["model", "recorded-relative", "recorded-metric"])
def test_every_report_section_has_a_caption_under_its_heading(mode):
    text = report.render_report(_result(mode, [T0, T0 + 0.1]), PLOTS)
    sections = re.findall(r"^## (.+)\n\n(.*)\n", text, flags=re.MULTILINE)
    assert {title for title, _ in sections} >= {"Per-frame error over time", "A few frames",
                                                "Steadiness over time"}
    for title, caption in sections:
        assert caption.strip() and not caption.startswith("!["), title


def test_recorded_metric_report_names_its_score_recorded_metric_everywhere():
    text = report.render_report(_result("recorded-metric", [T0, T0 + 0.1]), PLOTS)
    assert "LiDAR-aligned" not in text
    table_row = next(line for line in text.splitlines() if line.startswith("depth, recorded"))
    assert table_row.startswith("depth, recorded metric")
    assert "recorded metric: the metric depth recorded in the bag" in text


def test_lidar_report_names_its_score_lidar_aligned_in_table_and_text():
    text = report.render_report(_result("model", [T0, T0 + 0.1]), PLOTS)
    assert "depth, LiDAR-aligned (robot)" in text
    assert "LiDAR-aligned: the metric depth the node publishes" in text
    assert "recorded metric" not in text


def test_time_is_seconds_since_the_bags_first_image_whatever_frame_scored_first():
    # The same frame (stamp T0 + 0.4) in two evaluations of one bag: one scored from the
    # first frame on, the other only from T0 + 0.3 on. Its t must be the same in both.
    everything = _result("recorded-relative", [T0, T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 0.4])
    later = _result("recorded-metric", [T0 + 0.3, T0 + 0.4])
    assert report.frame_times(everything)[-1] == pytest.approx(0.4, abs=1e-6)
    assert report.frame_times(later)[-1] == pytest.approx(0.4, abs=1e-6)


def test_frames_png_plots_a_far_off_prediction_in_range_and_counts_what_is_clipped(tmp_path):
    gt = np.linspace(1.0, 3.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    pred = gt + 8.0  # far beyond the ground truth: once one flat colour past the bar
    lo, hi = report.depth_colour_range(gt, pred)
    assert lo <= 1.05 and hi >= 10.9
    assert report.clipped_fraction(pred, lo, hi) < 0.03  # the 1st-99th percentile tails
    assert report.clipped_fraction(pred, 1.0, 3.0) == 1.0
    gt[:2] = np.nan
    sample = report.Sample(T0 + 0.4, np.zeros((48, 64, 3), np.uint8), gt, pred, "GT-aligned")
    name = report._plot_samples([sample], T0, tmp_path / "frames.png")
    assert (tmp_path / name).stat().st_size > 0


def _two_level_gt():
    """Half the pixels at 1 m, half at 3 m: the colour range is exactly [1, 3] (the 1st and
    99th percentiles), so a prediction equal to it has nothing outside the bar."""
    gt = np.full((48, 64), 1.0, np.float32)
    gt[:, 32:] = 3.0
    return gt


def _panels(tmp_path, pred):
    """Titles of the GT, prediction and error panels of frames.png, and the ``extend`` of
    its two colour bars (depth, shared by GT and prediction; error)."""
    sample = report.Sample(T0, np.zeros((48, 64, 3), np.uint8), _two_level_gt(), pred, "GT")
    fig = report._samples_figure([sample], T0)
    fig.savefig(tmp_path / "frames.png")  # drawn: the titles and bars are the ones shown
    _, gt_ax, pred_ax, err_ax = fig.axes[:4]
    titles = [ax.get_title() for ax in (gt_ax, pred_ax, err_ax)]
    return titles, [ax.get_images()[0].colorbar.extend for ax in (pred_ax, err_ax)]


def test_frames_png_says_nothing_about_clipping_when_nothing_is_clipped(tmp_path):
    titles, extends = _panels(tmp_path, _two_level_gt())
    assert titles == ["ground truth (m)", "prediction, GT (m)", "|pred - gt| / gt"]
    assert extends == ["neither", "neither"]


def test_frames_png_says_how_much_of_a_clipped_prediction_is_outside_the_bar(tmp_path):
    pred = _two_level_gt()
    pred[:, :8] = -2.0  # a bad affine fit's negative depths: 1/8 of the pixels, below 1 m
    pred[0, 32:40] = 50.0  # 8 pixels (0.26 %) far beyond 3 m
    titles, extends = _panels(tmp_path, pred)
    assert titles == ["ground truth (m)",
                      "prediction, GT (m)\n13% outside the colour bar",  # 12.76 %
                      "|pred - gt| / gt\n13% outside the colour bar"]  # errors 3 and 16
    assert extends == ["both", "max"]


def test_the_table_names_the_one_map_score_and_the_scale_change_with_their_numbers():
    lines = report.summary_lines(_result("model", [T0, T0 + 0.1, T0 + 0.2]))
    one_map = next(line for line in lines if line.startswith("depth, one map"))
    assert one_map.split()[6:10] == ["0.1500", "0.8500", "30", "scale"]
    assert one_map.endswith("scale 2.1, shift 0.4")
    assert "scale change, frame to frame: 0.0100 (1.00 % a frame), 2 pairs, LiDAR-aligned " \
        "depth" in lines


def test_without_metric_depth_there_is_no_scale_change_row_and_the_plot_says_why(tmp_path):
    result = _result("recorded-relative", [T0, T0 + 0.1], metric=False)
    lines = report.summary_lines(result)
    assert any(line.startswith("depth, one map for the sequence") for line in lines)
    assert not any(line.startswith("scale change") for line in lines)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no empty legend on the top panel
        name = report._plot_temporal(result, tmp_path / "temporal_consistency.png")
    assert (tmp_path / name).stat().st_size > 0


def test_metrics_json_holds_the_one_map_and_the_scale_change():
    saved = _result("model", [T0, T0 + 0.1, T0 + 0.2]).to_json()
    assert saved["depth_one_map"] == {"abs_rel": 0.15, "delta1": 0.85, "valid": 30,
                                      "scale": 2.1, "shift": 0.4, "pixels_per_frame": 20_000}
    assert saved["scale_change"] == {"mean_abs_log_change": 0.01, "pairs": 2}
    assert [f["log_scale_ratio"] for f in saved["per_frame"]] == [0.0, 0.01, 0.02]
    assert [f["one_map_abs_rel"] for f in saved["per_frame"]] == [0.15] * 3
    assert _result("model", [T0], metric=False).to_json()["scale_change"] is None

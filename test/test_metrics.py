"""Tests of e2e_depth_ros.core.metrics against hand-computed values on tiny arrays."""

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from e2e_depth_ros.core.metrics import (
    DepthMetrics,
    NormalErrorAccumulator,
    NormalMetrics,
    OneMapAccumulator,
    align_scale_shift,
    aligned_depth_metrics,
    angular_errors,
    depth_metrics,
    log_median_ratio,
    normal_metrics,
    scale_change,
    summarize_depth,
    valid_depth_mask,
)

NAN = float("nan")


def _all_nan_depth(m: DepthMetrics) -> bool:
    return m.valid == 0 and math.isnan(m.abs_rel) and math.isnan(m.delta1)


# --- valid_depth_mask -------------------------------------------------------------------

def test_valid_depth_mask_excludes_nan_inf_zero_negative():
    gt = np.array([[1.0, NAN, 0.0], [-2.0, np.inf, 3.0]])
    np.testing.assert_array_equal(
        valid_depth_mask(gt), [[True, False, False], [False, False, True]]
    )


def test_valid_depth_mask_uses_strict_range_bounds():
    gt = np.array([[0.5, 1.0, 2.0, 10.0, 11.0]])
    mask = valid_depth_mask(gt, min_depth=1.0, max_depth=10.0)
    np.testing.assert_array_equal(mask, [[False, False, True, False, False]])


def test_valid_depth_mask_accepts_integer_depth():
    np.testing.assert_array_equal(valid_depth_mask(np.array([[0, 1500]], np.uint16)),
                                  [[False, True]])


def test_valid_depth_mask_rejects_inverted_range():
    with pytest.raises(ValueError, match="min_depth must be below max_depth"):
        valid_depth_mask(np.ones((2, 2)), min_depth=5.0, max_depth=1.0)


def test_valid_depth_mask_rejects_nan_bound():
    with pytest.raises(ValueError, match="max_depth must be a finite number"):
        valid_depth_mask(np.ones((2, 2)), max_depth=NAN)


# --- align_scale_shift ------------------------------------------------------------------

def test_alignment_recovers_known_scale_and_shift():
    pred = np.array([[0.1, 0.4, 0.25], [0.9, 0.6, 0.0]])
    gt = 3.5 * pred + 0.75
    s, t = align_scale_shift(pred, gt, np.ones(pred.shape, bool))
    assert s == pytest.approx(3.5, abs=1e-12)
    assert t == pytest.approx(0.75, abs=1e-12)


def test_alignment_recovers_negative_scale_for_inverted_depth():
    pred = np.array([[0.0, 1.0, 2.0, 3.0]])
    gt = -2.0 * pred + 10.0
    s, t = align_scale_shift(pred, gt, np.ones(pred.shape, bool))
    assert (s, t) == pytest.approx((-2.0, 10.0), abs=1e-12)


def test_alignment_is_least_squares_on_hand_computed_noisy_points():
    # p = 0, 1, 2 ; g = 1, 2, 4 -> s = 1.5, t = 5/6 (normal equations by hand).
    pred = np.array([[0.0, 1.0, 2.0]])
    gt = np.array([[1.0, 2.0, 4.0]])
    s, t = align_scale_shift(pred, gt, np.ones(pred.shape, bool))
    assert (s, t) == pytest.approx((1.5, 5.0 / 6.0), abs=1e-12)


def test_alignment_ignores_masked_and_non_finite_pixels():
    pred = np.array([[1.0, 2.0, 3.0, NAN, 5.0]])
    gt = np.array([[3.0, 5.0, 7.0, 9.0, 100.0]])  # last pixel is an outlier, masked out
    mask = np.array([[True, True, True, True, False]])
    s, t = align_scale_shift(pred, gt, mask)
    assert (s, t) == pytest.approx((2.0, 1.0), abs=1e-12)


def test_alignment_with_fewer_than_two_pixels_raises():
    pred = np.array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least 2 pixels.*got 1"):
        align_scale_shift(pred, pred, np.array([[True, False]]))


def test_alignment_of_constant_prediction_raises():
    pred = np.full((2, 2), 0.3)
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="prediction is constant"):
        align_scale_shift(pred, gt, np.ones((2, 2), bool))


def test_alignment_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(2, 3\)"):
        align_scale_shift(np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 2), bool))


def test_alignment_rejects_non_boolean_mask():
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        align_scale_shift(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)))


def test_alignment_rejects_mask_of_wrong_shape():
    with pytest.raises(ValueError, match=r"got \(1, 4\)"):
        align_scale_shift(np.ones((2, 2)), np.ones((2, 2)), np.ones((1, 4), bool))


# --- depth_metrics ----------------------------------------------------------------------

def test_depth_metrics_on_hand_computed_values():
    # |p-g|/g = 0.1, 0.25, 0.5, 0.0 -> AbsRel 0.2125
    # max(p/g, g/p) = 1.1, 1.25, 2.0, 1.0 -> hits (strict < 1.25): 1.1 and 1.0 -> 0.5
    pred = np.array([[1.1, 2.5], [1.0, 4.0]])
    gt = np.array([[1.0, 2.0], [2.0, 4.0]])
    m = depth_metrics(pred, gt, np.ones((2, 2), bool))
    assert m.abs_rel == pytest.approx(0.2125, abs=1e-12)
    assert m.delta1 == pytest.approx(0.5)
    assert m.valid == 4


def test_depth_metrics_excludes_invalid_ground_truth_by_default():
    pred = np.array([[2.0, 5.0, 5.0, 1.5]])
    gt = np.array([[2.0, NAN, 0.0, 1.0]])
    m = depth_metrics(pred, gt)
    assert m.valid == 2
    assert m.abs_rel == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert m.delta1 == pytest.approx(0.5)


def test_depth_metrics_never_divides_by_zero_ground_truth_inside_a_loose_mask():
    pred = np.array([[1.0, 1.0]])
    gt = np.array([[1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = depth_metrics(pred, gt, np.ones((1, 2), bool))
    assert (m.abs_rel, m.delta1, m.valid) == (0.0, 1.0, 1)


def test_depth_metrics_leaves_non_finite_predictions_out_and_lowers_valid():
    pred = np.array([[1.0, NAN, np.inf, 3.0]])
    gt = np.array([[1.0, 1.0, 1.0, 2.0]])
    m = depth_metrics(pred, gt, np.ones((1, 4), bool))
    assert m.valid == 2
    assert m.abs_rel == pytest.approx(0.25)  # (0 + 0.5) / 2
    assert m.delta1 == pytest.approx(0.5)


def test_depth_metrics_counts_non_positive_prediction_as_delta1_miss():
    # A negative p makes both ratios negative, which would wrongly pass "< 1.25".
    pred = np.array([[-1.0, 0.0]])
    gt = np.array([[1.0, 1.0]])
    m = depth_metrics(pred, gt, np.ones((1, 2), bool))
    assert m.delta1 == 0.0
    assert m.abs_rel == pytest.approx(1.5)  # (2 + 1) / 2


def test_depth_metrics_of_extreme_finite_prediction_is_a_miss_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = depth_metrics(np.array([[1e308, 2.0]]), np.array([[1e-10, 2.0]]),
                          np.ones((1, 2), bool))
    assert m.valid == 2 and m.delta1 == 0.5 and math.isinf(m.abs_rel)


def test_depth_metrics_with_empty_mask_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = depth_metrics(np.ones((2, 2)), np.ones((2, 2)), np.zeros((2, 2), bool))
        m_gt = depth_metrics(np.ones((2, 2)), np.full((2, 2), NAN))
    assert _all_nan_depth(m) and _all_nan_depth(m_gt)


def test_depth_metrics_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred_metric and gt .*\(1, 4\) and \(4, 1\)"):
        depth_metrics(np.ones((1, 4)), np.ones((4, 1)))


def test_depth_metrics_rejects_boolean_prediction():
    with pytest.raises(ValueError, match="pred_metric must be a real numeric array"):
        depth_metrics(np.ones((2, 2), bool), np.ones((2, 2)))


# --- aligned_depth_metrics --------------------------------------------------------------

def test_aligned_metrics_of_an_affine_prediction_are_perfect():
    rel = np.array([[0.2, 0.4], [0.6, 0.8]])
    gt = 5.0 * rel + 1.0
    m, s, t = aligned_depth_metrics(rel, gt)
    assert (s, t) == pytest.approx((5.0, 1.0), abs=1e-12)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-12)
    assert m.delta1 == 1.0 and m.valid == 4


def test_aligned_metrics_fit_and_score_only_inside_the_depth_range():
    rel = np.array([[0.0, 1.0, 2.0, 3.0, 0.5]])
    gt = np.array([[1.0, 3.0, 5.0, 7.0, 50.0]])  # 50 m is out of range and off the line
    m, s, t = aligned_depth_metrics(rel, gt, min_depth=0.5, max_depth=10.0)
    assert (s, t) == pytest.approx((2.0, 1.0), abs=1e-12)
    assert m.valid == 4 and m.abs_rel == pytest.approx(0.0, abs=1e-12)


def test_aligned_metrics_on_hand_computed_residuals():
    # Fit from test above: s = 1.5, t = 5/6 -> aligned 5/6, 7/3, 23/6 against 1, 2, 4.
    rel = np.array([[0.0, 1.0, 2.0]])
    gt = np.array([[1.0, 2.0, 4.0]])
    m, _, _ = aligned_depth_metrics(rel, gt)
    expected = np.mean([(1 / 6) / 1, (1 / 3) / 2, (1 / 6) / 4])
    assert m.abs_rel == pytest.approx(expected, abs=1e-12)
    assert m.delta1 == 1.0  # ratios 1.2, 7/6, 24/23


def test_aligned_metrics_without_enough_ground_truth_are_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m, s, t = aligned_depth_metrics(np.array([[0.1, 0.2]]), np.array([[NAN, 2.0]]))
    assert _all_nan_depth(m) and math.isnan(s) and math.isnan(t)


def test_aligned_metrics_of_constant_prediction_raise():
    with pytest.raises(ValueError, match="prediction is constant"):
        aligned_depth_metrics(np.zeros((2, 2)), np.array([[1.0, 2.0], [3.0, 4.0]]))


# --- summarize_depth --------------------------------------------------------------------

def test_summarize_depth_averages_per_frame_and_sums_valid():
    frames = [DepthMetrics(0.1, 1.0, 10), DepthMetrics(0.3, 0.5, 1000)]
    m = summarize_depth(frames)
    assert m.abs_rel == pytest.approx(0.2) and m.delta1 == pytest.approx(0.75)
    assert m.valid == 1010


def test_summarize_depth_skips_frames_without_valid_pixels():
    m = summarize_depth([DepthMetrics(0.1, 0.9, 5), DepthMetrics(NAN, NAN, 0)])
    assert (m.abs_rel, m.delta1, m.valid) == (0.1, 0.9, 5)


def test_summarize_depth_of_nothing_is_nan():
    assert _all_nan_depth(summarize_depth([]))
    assert _all_nan_depth(summarize_depth([DepthMetrics(NAN, NAN, 0)]))


# --- normals ----------------------------------------------------------------------------

def _normals_1x4():
    """Ground truth +z everywhere; predictions at 0°, 90°, 180° and 45°."""
    gt = np.tile([0.0, 0.0, 1.0], (1, 4, 1))
    pred = np.array([[[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 1.0]]])
    return pred, gt


def test_angular_errors_on_known_vectors():
    pred, gt = _normals_1x4()
    np.testing.assert_allclose(angular_errors(pred, gt), [0.0, 90.0, 180.0, 45.0], atol=1e-6)


def test_normal_metrics_on_known_vectors():
    pred, gt = _normals_1x4()
    m = normal_metrics(pred, gt)
    assert m.mean == pytest.approx(315.0 / 4, abs=1e-6)
    assert m.median == pytest.approx(67.5, abs=1e-6)
    assert (m.a11, m.a22, m.a30, m.valid) == (0.25, 0.25, 0.25, 4)


def test_normal_thresholds_separate_each_band():
    angles = np.radians([5.0, 15.0, 25.0, 40.0])
    pred = np.stack([np.sin(angles), np.zeros(4), np.cos(angles)], axis=-1)[None]
    gt = np.tile([0.0, 0.0, 1.0], (1, 4, 1))
    m = normal_metrics(pred, gt)
    assert (m.a11, m.a22, m.a30) == (0.25, 0.5, 0.75)


def test_normal_metrics_skip_non_finite_zero_and_masked_pixels():
    pred, gt = _normals_1x4()
    pred[0, 1] = [NAN, 0.0, 1.0]
    gt[0, 2] = [0.0, 0.0, 0.0]
    mask = np.array([[True, True, True, False]])
    m = normal_metrics(pred, gt, mask)
    assert m.valid == 1 and m.mean == pytest.approx(0.0, abs=1e-6)


def test_normal_metrics_with_nothing_valid_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = normal_metrics(np.zeros((2, 2, 3)), np.ones((2, 2, 3)))
    assert m.valid == 0
    assert all(math.isnan(v) for v in (m.mean, m.median, m.a11, m.a22, m.a30))


def test_normal_metrics_reject_wrong_channel_count_and_mismatched_shapes():
    with pytest.raises(ValueError, match="last axis of size 3"):
        normal_metrics(np.ones((2, 2, 4)), np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match=r"\(2, 2, 3\) and \(2, 3, 3\)"):
        normal_metrics(np.ones((2, 2, 3)), np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match=r"without the channel axis.*got \(2, 2, 3\)"):
        normal_metrics(np.ones((2, 2, 3)), np.ones((2, 2, 3)), np.ones((2, 2, 3), bool))


def test_accumulator_pools_pixels_not_frame_means():
    pred, gt = _normals_1x4()  # errors 0, 90, 180, 45
    acc = NormalErrorAccumulator()
    first = acc.add(pred[:, :1], gt[:, :1])  # one pixel at 0°
    acc.add(pred[:, 1:], gt[:, 1:])  # three pixels at 90°, 180°, 45°
    assert first == NormalMetrics(0.0, 0.0, 1.0, 1.0, 1.0, 1)
    m = acc.result()
    assert acc.frames == 2 and m.valid == 4
    assert m.mean == pytest.approx(315.0 / 4, abs=1e-4)  # a frame mean would give 52.5
    assert m.median == pytest.approx(67.5, abs=1e-4)
    assert m.a11 == 0.25


def test_empty_accumulator_gives_nan():
    m = NormalErrorAccumulator().result()
    assert m.valid == 0 and math.isnan(m.mean) and math.isnan(m.median)


# --- over time: scale change of metric depth -------------------------------------------

def _ramp(shape=(6, 8)):
    """Ground truth from 1 to 5 m, rows != columns so no transposition hides."""
    return np.linspace(1.0, 5.0, shape[0] * shape[1]).reshape(shape)


def test_log_median_ratio_of_a_prediction_1_1_times_the_truth_is_log_1_1():
    gt = _ramp()
    assert log_median_ratio(gt, gt) == 0.0
    assert log_median_ratio(1.1 * gt, gt) == pytest.approx(math.log(1.1), abs=1e-12)


def test_log_median_ratio_is_the_median_so_a_few_wild_pixels_do_not_move_it():
    gt = _ramp()
    pred = 1.1 * gt
    pred[0, :3] = 1e6  # 3 of 48 pixels
    assert log_median_ratio(pred, gt) == pytest.approx(math.log(1.1), abs=1e-12)


def test_log_median_ratio_leaves_out_invalid_truth_non_finite_prediction_and_the_mask():
    gt = np.array([[1.0, 2.0, NAN, 0.0], [4.0, 1.0, 1.0, 1.0]])
    pred = np.array([[2.0, 4.0, 1.0, 1.0], [np.inf, NAN, 9.0, 9.0]])
    # scored: ratios 2, 2 (top row) and 9, 9 (bottom right): median 5.5
    assert log_median_ratio(pred, gt) == pytest.approx(math.log(5.5), abs=1e-12)
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    assert log_median_ratio(pred, gt, mask) == pytest.approx(math.log(2.0), abs=1e-12)


def test_log_median_ratio_without_a_pixel_or_a_positive_median_is_nan_without_warnings():
    gt = _ramp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(log_median_ratio(np.full(gt.shape, NAN), gt))
        assert math.isnan(log_median_ratio(-gt, gt))
        assert math.isnan(log_median_ratio(gt, np.zeros(gt.shape)))


def test_log_median_ratio_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(6, 8\) and \(8, 6\)"):
        log_median_ratio(_ramp(), _ramp((8, 6)))


def test_a_1_1_times_jump_on_the_second_frame_is_a_scale_change_of_log_1_1():
    gt = _ramp()
    ratios = [log_median_ratio(gt, gt), log_median_ratio(1.1 * gt, gt)]
    change = scale_change(ratios)
    assert change.pairs == 1
    assert change.mean_abs_change == pytest.approx(math.log(1.1), abs=1e-12)  # ~ 9.5 %


def test_scale_change_is_the_mean_of_the_absolute_steps():
    # 1.0 -> 1.0 -> 1.1 -> 1.0 x the truth: steps 0, log 1.1, log 1.1
    change = scale_change([0.0, 0.0, math.log(1.1), 0.0])
    assert change.pairs == 3
    assert change.mean_abs_change == pytest.approx(2 * math.log(1.1) / 3, abs=1e-12)


def test_a_frame_without_metric_depth_breaks_the_chain_of_scale_changes():
    # Across the missing frame the scale moved by log 2; that step is not taken.
    for gap in (None, NAN):
        change = scale_change([0.0, 0.01, gap, math.log(2.0), math.log(2.0) + 0.03])
        assert change.pairs == 2
        assert change.mean_abs_change == pytest.approx(0.02, abs=1e-12)


def test_scale_change_of_fewer_than_two_linked_frames_is_nan_with_no_pairs():
    for ratios in ([], [0.1], [0.1, None, 0.2]):
        change = scale_change(ratios)
        assert change.pairs == 0 and math.isnan(change.mean_abs_change)


# --- over time: one affine map for a sequence of relative depth --------------------------

def test_one_map_of_a_sequence_that_is_one_affine_map_of_the_truth_scores_zero():
    acc = OneMapAccumulator()
    for k in range(4):
        gt = _ramp() + 0.5 * k  # the scene changes, the map does not
        acc.add((gt - 0.7) / 2.5, gt)
    one = acc.result()
    assert one.scale == pytest.approx(2.5, rel=1e-6)
    assert one.shift == pytest.approx(0.7, abs=1e-5)
    assert one.metrics.abs_rel < 1e-6 and one.metrics.delta1 == 1.0
    assert one.metrics.valid == one.pixels == 4 * 48 and len(one.per_frame) == 4
    assert all(m.abs_rel < 1e-6 for m in one.per_frame)


def test_one_map_on_a_hand_computed_two_frame_jitter():
    # Frame 0 is the truth, frame 1 twice it: each frame's own fit is perfect, the one map
    # (least squares over all 4 pixels) is s = 6/19, t = 15/19.
    gt = np.array([[1.0, 2.0]])
    acc = OneMapAccumulator()
    assert acc.add(gt, gt) == 2
    acc.add(2.0 * gt, gt)
    for relative in (gt, 2.0 * gt):
        assert aligned_depth_metrics(relative, gt)[0].abs_rel == pytest.approx(0.0, abs=1e-12)
    one = acc.result()
    assert (one.scale, one.shift) == (pytest.approx(6 / 19), pytest.approx(15 / 19))
    # frame 0 -> [21, 27] / 19: AbsRel (2/19 + 11/38) / 2; frame 1 -> [27, 39] / 19
    assert one.per_frame[0].abs_rel == pytest.approx(15 / 76)
    assert one.per_frame[1].abs_rel == pytest.approx(17 / 76)
    assert one.metrics.abs_rel == pytest.approx(4 / 19)  # the mean of the frames
    assert one.per_frame[0].delta1 == 0.5  # 21/19 vs 1 m within 1.25, 27/19 vs 2 m not
    assert one.metrics.valid == 4


def test_one_map_keeps_a_fixed_repeatable_subsample_of_each_frame():
    rng = np.random.default_rng(3)
    frames = []
    for k in range(3):
        gt = rng.uniform(1.0, 8.0, (200, 300))
        gt[:10] = NAN  # not valid: never kept
        scale, shift = 1.0 + 0.2 * k, 0.3 * k  # a map that wanders
        relative = (gt - shift) / scale * rng.normal(1.0, 0.02, gt.shape)
        frames.append((relative, gt))

    def run(pixels_per_frame, seed=0):
        acc = OneMapAccumulator(pixels_per_frame=pixels_per_frame, seed=seed)
        kept = [acc.add(relative, gt) for relative, gt in frames]
        return kept, acc.result()

    kept, sub = run(1000)
    assert kept == [1000, 1000, 1000] and sub.pixels == 3000 and sub.pixels_per_frame == 1000
    assert run(1000)[1] == sub  # the same pixels every run
    assert run(1000, seed=1)[1] != sub
    _, full = run(200 * 300)  # every valid pixel
    assert full.pixels == 3 * 190 * 300
    assert full.metrics.abs_rel > 0.05  # the wandering map costs, the noise alone ~1.6 %
    assert sub.metrics.abs_rel == pytest.approx(full.metrics.abs_rel, rel=0.05)
    assert sub.scale == pytest.approx(full.scale, rel=0.02)


def test_one_map_fits_and_scores_only_inside_the_depth_range():
    gt = _ramp()
    relative = gt.copy()
    relative[gt > 4.0] = 100.0  # garbage beyond the range: left out of fit and score
    acc = OneMapAccumulator(max_depth=4.0)
    acc.add(relative, gt)
    one = acc.result()
    assert one.metrics.abs_rel < 1e-6
    assert one.pixels == int(np.count_nonzero(gt < 4.0))


def test_one_map_of_nothing_or_of_a_constant_sequence_is_nan():
    empty = OneMapAccumulator().result()
    assert _all_nan_depth(empty.metrics) and math.isnan(empty.scale) and empty.pixels == 0
    acc = OneMapAccumulator()
    acc.add(np.ones((6, 8)), _ramp())
    acc.add(np.full((6, 8), NAN), _ramp())
    one = acc.result()
    assert _all_nan_depth(one.metrics) and math.isnan(one.shift)
    assert len(one.per_frame) == 2 and all(_all_nan_depth(m) for m in one.per_frame)


def test_one_map_rejects_a_bad_subsample_size_and_mismatched_shapes():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match=f"pixels_per_frame must be an integer >= 2, "
                                             f"got {bad!r}"):
            OneMapAccumulator(pixels_per_frame=bad)
    with pytest.raises(ValueError, match="min_depth must be below max_depth"):
        OneMapAccumulator(min_depth=5.0, max_depth=1.0)
    with pytest.raises(ValueError, match=r"\(6, 8\) and \(8, 6\)"):
        OneMapAccumulator().add(_ramp(), _ramp((8, 6)))


# --- module boundary --------------------------------------------------------------------

def test_metrics_imports_without_heavy_dependencies():
    code = (
        "import sys, e2e_depth_ros.core.metrics; "
        "print(sorted(m for m in ('torch', 'rclpy', 'rosbags', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

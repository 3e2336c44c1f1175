"""LiDAR scale fit (docs/lidar_scale.md) and the temporal scale filter."""

import subprocess
import sys
import time

import numpy as np
import pytest

from e2e_depth_ros.errors import ScaleFitError
from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth
from e2e_depth_ros.core.scale import ScaleFilter, ScaleFit, fit_depth_to_lidar
from e2e_depth_ros.offline.synthetic import lidar_in_camera, make_sequence

CAMERA = PinholeCamera(96, 64, fx=80.0, fy=75.0, cx=47.3, cy=31.6)
SCALE, SHIFT = 3.0, 0.8


def slanted_depth(camera: PinholeCamera = CAMERA) -> np.ndarray:
    v, u = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
    return 2.0 + 2.0 * u / camera.width + 1.0 * v / camera.height


def plane_points(depth: np.ndarray, camera: PinholeCamera = CAMERA, step: int = 3
                 ) -> np.ndarray:
    """One exact point every ``step`` pixels of a depth image, optical frame."""
    return unproject_depth(depth, camera)[::step, ::step].reshape(-1, 3).astype(np.float64)


def relative_of(depth: np.ndarray) -> np.ndarray:
    return ((depth - SHIFT) / SCALE).astype(np.float32)


def abs_rel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


def blur3(image: np.ndarray) -> np.ndarray:
    """3x3 box blur: the soft depth edges a diffusion model produces."""
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def test_fit_recovers_scale_and_shift_of_an_exact_plane():
    depth = slanted_depth()
    fit = fit_depth_to_lidar(relative_of(depth), plane_points(depth), CAMERA.projection)
    assert fit.ok, fit.reason
    assert fit.reason == ""
    assert fit.scale == pytest.approx(SCALE, rel=1e-4)
    assert fit.shift == pytest.approx(SHIFT, abs=1e-3)
    assert fit.inliers == fit.candidates > 100
    assert fit.rmse < 1e-3


def test_fit_on_rendered_scene_with_outliers_and_model_errors_is_accurate_to_half_a_percent():
    sequence = make_sequence(1, width=160, height=120, seed=3)
    frame = sequence.frames[0]
    camera, depth = sequence.camera, frame.depth
    rng = np.random.default_rng(7)
    points = lidar_in_camera(frame.lidar_points, sequence.extrinsic)  # 1 % range noise
    outliers = rng.random(len(points)) < 0.2
    points[outliers] *= rng.uniform(0.3, 2.0, (np.count_nonzero(outliers), 1))
    relative = blur3(relative_of(depth)) + rng.normal(0, 0.003, depth.shape)
    wrong = np.zeros(depth.shape, dtype=bool)
    wrong[20:60, 30:80] = True
    relative[wrong] += 0.4  # a region the model got badly wrong
    relative = relative.astype(np.float32)

    fit = fit_depth_to_lidar(relative, points, camera.projection)

    assert fit.ok, fit.reason
    valid = np.isfinite(depth) & (depth > 0)
    # Measured: AbsRel 0.14 % and 0.30 %; the signed bias (nearest point of each pixel
    # wins the z-buffer, so the fit reads short) -0.14 % and -0.12 %.
    for rel, mask in ((relative_of(depth), valid), (relative, valid & ~wrong)):
        pred = fit.apply(rel)
        assert abs_rel(pred, depth, mask) <= 0.005
        bias = float(np.mean((pred[mask] - depth[mask]) / depth[mask]))
        assert -0.004 <= bias <= 0.001
    assert fit.inliers < fit.candidates  # the outliers were recognised as such


def test_fit_refuses_lidar_on_a_plane_square_to_the_camera_as_unobservable():
    """Every point at 3 m: any (scale, shift) with the right sum fits; do not pick one."""
    rng = np.random.default_rng(5)
    wall = np.full((CAMERA.height, CAMERA.width), 3.0, dtype=np.float32)
    points = plane_points(wall)
    points *= rng.normal(1.0, 0.01, (len(points), 1))  # 1 % range noise
    relative = (0.5 + rng.normal(0, 0.01, wall.shape)).astype(np.float32)  # model noise

    fit = fit_depth_to_lidar(relative, points, CAMERA.projection)

    assert not fit.ok
    assert fit.reason.startswith("scale unobservable") and "square to the camera" in fit.reason


def test_fit_accepts_a_slanted_plane_that_spans_enough_depth():
    depth = 3.0 + 0.3 * np.mgrid[0:CAMERA.height, 0:CAMERA.width][1] / CAMERA.width
    fit = fit_depth_to_lidar(relative_of(depth).astype(np.float32), plane_points(depth),
                             CAMERA.projection)
    assert fit.ok, fit.reason
    assert fit.scale == pytest.approx(SCALE, rel=1e-3)


def test_fit_refuses_fewer_than_min_points():
    depth = slanted_depth()
    points = plane_points(depth, step=9)[:9]
    fit = fit_depth_to_lidar(relative_of(depth), points, CAMERA.projection, min_points=10)
    assert not fit.ok
    assert fit.candidates == 9
    assert "9 valid LiDAR points" in fit.reason and ">= 10" in fit.reason


def test_fit_refuses_points_all_behind_the_camera():
    depth = slanted_depth()
    points = plane_points(depth) * np.array([1.0, 1.0, -1.0])
    fit = fit_depth_to_lidar(relative_of(depth), points, CAMERA.projection)
    assert not fit.ok
    assert "in front of the camera" in fit.reason


def test_fit_refuses_an_empty_cloud():
    fit = fit_depth_to_lidar(relative_of(slanted_depth()), np.zeros((0, 3)), CAMERA.projection)
    assert not fit.ok
    assert fit.reason == "empty LiDAR cloud"
    assert fit.candidates == 0


def test_fit_refuses_a_cloud_of_only_nan_and_inf():
    points = np.full((50, 3), np.nan)
    points[::2] = np.inf
    fit = fit_depth_to_lidar(relative_of(slanted_depth()), points, CAMERA.projection)
    assert not fit.ok
    assert "in front of the camera" in fit.reason


def test_fit_ignores_nan_and_inf_points_without_propagating_them():
    depth = slanted_depth()
    good = plane_points(depth)
    bad = np.array([[np.nan, 0, 2], [0, np.inf, 3], [1, 1, -np.inf], [np.nan] * 3] * 20)
    mixed = np.concatenate([bad[:40], good, bad[40:]])
    clean = fit_depth_to_lidar(relative_of(depth), good, CAMERA.projection)
    fit = fit_depth_to_lidar(relative_of(depth), mixed, CAMERA.projection)
    assert fit.ok and np.isfinite([fit.scale, fit.shift, fit.rmse]).all()
    assert fit.candidates == clean.candidates
    assert fit.scale == pytest.approx(clean.scale, rel=1e-9)


def test_fit_ignores_pixels_where_relative_depth_is_nan():
    depth = slanted_depth()
    relative = relative_of(depth)
    relative[:, :40] = np.nan
    fit = fit_depth_to_lidar(relative, plane_points(depth), CAMERA.projection)
    all_pixels = fit_depth_to_lidar(relative_of(depth), plane_points(depth), CAMERA.projection)
    assert fit.ok and fit.candidates < all_pixels.candidates
    assert fit.scale == pytest.approx(SCALE, rel=1e-4)


def test_fit_refuses_negative_scale():
    depth = slanted_depth()
    fit = fit_depth_to_lidar(-relative_of(depth), plane_points(depth), CAMERA.projection)
    assert not fit.ok
    assert "<= 0" in fit.reason
    assert fit.scale < 0


def test_fit_refuses_a_low_inlier_ratio():
    depth = slanted_depth()
    points = plane_points(depth)
    points *= np.random.default_rng(1).uniform(0.2, 3.0, (len(points), 1))
    fit = fit_depth_to_lidar(relative_of(depth), points, CAMERA.projection)
    assert not fit.ok
    assert "inlier" in fit.reason


def test_fit_keeps_the_nearest_point_of_each_pixel():
    depth = slanted_depth()
    near = plane_points(depth, step=1)
    far = near * 1.8  # same pixels, farther along the ray
    cloud = np.concatenate([far, near])
    fit = fit_depth_to_lidar(relative_of(depth), cloud, CAMERA.projection, edge_window=1)
    assert fit.ok
    assert fit.candidates == CAMERA.width * CAMERA.height
    assert fit.inliers == fit.candidates


def test_fit_drops_points_seen_through_foreground_edges():
    depth = slanted_depth()
    relative = relative_of(depth)
    near = plane_points(depth, step=6)
    # shift each background point one pixel to the right and push it to 3x the depth
    behind = np.stack([(near[:, 0] / near[:, 2] + 1.0 / CAMERA.fx) * near[:, 2] * 3.0,
                       near[:, 1] * 3.0, near[:, 2] * 3.0], axis=1)
    cloud = np.concatenate([near, behind])
    kept = fit_depth_to_lidar(relative, cloud, CAMERA.projection)
    unfiltered = fit_depth_to_lidar(relative, cloud, CAMERA.projection, edge_window=1)
    assert kept.ok and kept.candidates == len(near)
    assert kept.inliers == kept.candidates
    assert unfiltered.candidates > kept.candidates


def test_fit_is_deterministic_for_a_seed():
    depth = slanted_depth()
    rng = np.random.default_rng(5)
    points = plane_points(depth, step=1)
    points *= np.where(rng.random((len(points), 1)) < 0.3, rng.uniform(0.5, 2.0), 1.0)
    relative = relative_of(depth)
    first = fit_depth_to_lidar(relative, points, CAMERA.projection, seed=11)
    again = fit_depth_to_lidar(relative, points, CAMERA.projection, seed=11)
    assert first.ok and first == again


@pytest.mark.parametrize(
    "relative, points, P, match",
    [
        (np.zeros((4, 4, 1), np.float32), np.zeros((5, 3)), CAMERA.projection, "relative"),
        (np.zeros((4, 4), np.int32), np.zeros((5, 3)), CAMERA.projection, "floating"),
        (np.zeros((4, 4), np.float32), np.zeros((5, 2)), CAMERA.projection, "points_cam"),
        (np.zeros((4, 4), np.float32), np.zeros((5, 3)), np.eye(3), "P must be"),
    ],
)
def test_fit_raises_on_malformed_arguments(relative, points, P, match):
    with pytest.raises(ScaleFitError, match=match):
        fit_depth_to_lidar(relative, points, P)


def test_scale_module_imports_without_torch_rclpy_or_rosbags():
    code = ("import sys, e2e_depth_ros.core.scale; "
            "bad = {'torch', 'rclpy', 'rosbags'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- temporal filter


def good(scale: float, shift: float = 0.5) -> ScaleFit:
    return ScaleFit(True, scale, shift, 100, 0.01, 120, "")


BAD = ScaleFit(False, float("nan"), float("nan"), 0, float("nan"), 3,
               "3 valid LiDAR points, need >= 10")


def test_filter_reports_none_before_any_fit():
    state = ScaleFilter().state(5.0)
    assert state.status == "none" and state.scale is None and state.age is None
    assert not state.usable


def test_filter_takes_the_first_fit_and_smooths_scale_and_shift_together():
    filt = ScaleFilter(smoothing=0.3)
    first = filt.update(good(2.0, 1.0), 0.0)
    assert (first.status, first.scale, first.shift) == ("ok", 2.0, 1.0)
    second = filt.update(good(2.4, 0.0), 0.1)
    assert second.status == "ok"
    assert second.scale == pytest.approx(2.0 + 0.3 * 0.4)
    assert second.shift == pytest.approx(1.0 - 0.3)
    assert second.age == 0.0 and second.fit == good(2.4, 0.0)


def test_filter_rejects_a_jump_and_holds_the_previous_scale():
    filt = ScaleFilter(max_jump=0.5, jump_confirm=3)
    filt.update(good(2.0), 0.0)
    state = filt.update(good(5.0), 0.1)
    assert state.status == "holding"
    assert state.scale == 2.0
    assert "jump" in state.message


def test_filter_accepts_a_jump_that_persists():
    filt = ScaleFilter(max_jump=0.5, jump_confirm=3)
    filt.update(good(2.0), 0.0)
    filt.update(good(5.0), 0.1)
    filt.update(good(5.1), 0.2)
    state = filt.update(good(5.2, 0.7), 0.3)
    assert state.status == "ok"
    assert (state.scale, state.shift) == (5.2, 0.7)  # reset, not smoothed


def test_filter_forgets_a_jump_streak_after_an_accepted_fit():
    filt = ScaleFilter(max_jump=0.5, jump_confirm=2)
    filt.update(good(2.0), 0.0)
    filt.update(good(5.0), 0.1)
    filt.update(good(2.0), 0.2)
    state = filt.update(good(5.0), 0.3)
    assert state.status == "holding" and state.scale == pytest.approx(2.0)


def test_filter_holds_through_refused_fits_then_reports_none_after_the_timeout():
    filt = ScaleFilter(hold_timeout=2.0)
    filt.update(good(2.0), 10.0)
    held = filt.update(BAD, 11.5)
    assert held.status == "holding" and held.usable
    assert held.scale == 2.0 and held.age == pytest.approx(1.5)
    assert "3 valid LiDAR points" in held.message
    gone = filt.update(BAD, 12.5)
    assert gone.status == "none" and not gone.usable and gone.scale is None
    assert gone.age == pytest.approx(2.5)


def test_filter_state_without_updates_expires_after_the_timeout():
    filt = ScaleFilter(hold_timeout=2.0)
    filt.update(good(2.0), 0.0)
    assert filt.state(0.2).status == "ok"  # within fresh_timeout of the last fit
    assert filt.state(1.0).status == "holding"
    assert filt.state(2.01).status == "none"


def test_filter_recovers_with_the_next_good_fit_after_timing_out():
    filt = ScaleFilter(hold_timeout=1.0, max_jump=0.1)
    filt.update(good(2.0), 0.0)
    filt.update(BAD, 0.5)
    assert filt.state(3.0).status == "none"
    state = filt.update(good(4.0, 0.2), 3.0)  # a big change, but the old scale is stale
    assert state.status == "ok" and (state.scale, state.shift) == (4.0, 0.2)


def test_filter_resets_when_time_goes_back():
    filt = ScaleFilter()
    filt.update(good(2.0), 100.0)
    state = filt.update(good(9.0), 1.0)
    assert state.status == "ok" and state.scale == 9.0


def test_filter_reset_forgets_the_fit():
    filt = ScaleFilter()
    filt.update(good(2.0), 0.0)
    filt.reset()
    assert filt.state(0.0).status == "none"


def test_filter_state_is_safe_to_read_while_another_thread_resets_and_updates():
    """The diagnostics timer reads the filter while the worker feeds and resets it."""
    import threading

    filt = ScaleFilter(hold_timeout=1e9)
    stop = threading.Event()
    errors = []

    def writer():
        stamp = 0.0
        while not stop.is_set():
            stamp += 0.1
            filt.update(good(2.0), stamp)
            filt.reset()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose races
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not errors:
            try:
                state = filt.state(1e6)
            except Exception as err:  # noqa: BLE001 - any error here is the bug
                errors.append(err)
                continue
            if state.usable and (state.scale is None or state.shift is None):
                errors.append(f"torn read: {state}")
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
    assert not errors, errors


def test_filter_rejects_bad_settings():
    with pytest.raises(ScaleFitError, match="smoothing"):
        ScaleFilter(smoothing=0.0)
    with pytest.raises(ScaleFitError, match="hold_timeout"):
        ScaleFilter(hold_timeout=-1.0)

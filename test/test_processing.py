"""One frame through the shared pipeline (the node and the evaluation both use it)."""

import numpy as np
import pytest

from e2e_depth_ros.estimator import Estimator
from e2e_depth_ros.geometry import PinholeCamera
from e2e_depth_ros.processing import FrameProcessor, Needs, ProcessingConfig

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)


@pytest.fixture(scope="module")
def estimator(tiny_depth, tiny_normals):
    return Estimator(tiny_depth, tiny_normals, device="cpu", processing_resolution=0)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_fixed_scale_maps_relative_depth_and_clips_to_the_depth_limits(estimator, rgb):
    proc = FrameProcessor(estimator, ProcessingConfig(fixed_scale=4.0, fixed_shift=1.0))
    free = proc.process(rgb, 0.0, camera=CAMERA)
    np.testing.assert_allclose(free.metric, 4.0 * free.relative + 1.0, rtol=1e-6)
    lo, hi = np.percentile(free.metric, [25, 75])
    proc.reconfigure(ProcessingConfig(fixed_scale=4.0, fixed_shift=1.0, min_depth=float(lo),
                                      max_depth=float(hi)))
    clipped = proc.process(rgb, 0.1, camera=CAMERA).metric
    inside = (free.metric >= lo) & (free.metric <= hi)
    np.testing.assert_array_equal(np.isfinite(clipped), inside)
    assert free.scale_source == "fixed"


def test_nothing_metric_without_a_scale_source(estimator, rgb):
    result = FrameProcessor(estimator).process(rgb, 0.0, camera=CAMERA)
    assert result.metric is None and result.points is None and result.scale_source == "none"
    assert result.relative is not None


def test_decimated_cloud_keeps_every_nth_pixel_of_the_metric_depth(estimator, rgb):
    proc = FrameProcessor(estimator, ProcessingConfig(fixed_scale=2.0, points_decimation=3))
    result = proc.process(rgb, 0.0, camera=CAMERA, needs=Needs(points_normals=True))
    assert result.points.shape == (16, 22, 3)
    np.testing.assert_array_equal(result.points[..., 2], result.metric[::3, ::3])
    np.testing.assert_array_equal(result.points_rgb, rgb[::3, ::3])
    np.testing.assert_array_equal(result.points_normals, result.normals[::3, ::3])


def test_unwanted_normals_are_not_computed(estimator, rgb):
    result = FrameProcessor(estimator).process(
        rgb, 0.0, needs=Needs(normals=False, points=False, metric=False))
    assert result.normals is None and result.relative is not None


def test_camera_of_another_size_skips_the_cloud_with_a_reason(estimator, rgb):
    proc = FrameProcessor(estimator, ProcessingConfig(fixed_scale=1.0))
    result = proc.process(rgb, 0.0, camera=CAMERA.scaled(128, 96))
    assert result.metric is not None and result.points is None
    assert any("128x96" in note for note in result.notes)


def test_an_all_invalid_metric_frame_says_why_it_is_empty(estimator, rgb):
    proc = FrameProcessor(estimator, ProcessingConfig(fixed_scale=1.0, min_depth=50.0))
    result = proc.process(rgb, 0.0, camera=CAMERA)
    assert np.isnan(result.metric).all()
    assert any(note.startswith("every metric pixel is invalid") and "min_depth 50" in note
               for note in result.notes)


@pytest.mark.parametrize("config, match", [
    (ProcessingConfig(fixed_scale=1.0, fixed_shift=-10000.0), "all outside"),
    (ProcessingConfig(fixed_scale=1.0, fixed_shift=0.5, max_depth=0.2), "all outside"),
    (ProcessingConfig(fixed_scale=1.0, min_depth=5.0), "all outside"),
])
def test_fixed_map_conflict_names_a_map_that_leaves_no_valid_pixel(config, match):
    from e2e_depth_ros.processing import fixed_map_conflict

    assert match in fixed_map_conflict(config)


def test_fixed_map_conflict_accepts_a_map_that_reaches_the_valid_depths():
    from e2e_depth_ros.processing import fixed_map_conflict

    assert fixed_map_conflict(ProcessingConfig(fixed_scale=4.0, fixed_shift=-1.0,
                                               max_depth=10.0)) is None
    assert fixed_map_conflict(ProcessingConfig(fixed_shift=-10000.0)) is None  # scale off

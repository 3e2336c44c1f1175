"""One frame through the shared pipeline (the node and the evaluation both use it)."""

import numpy as np
import pytest

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.processing import Frame, FrameProcessor, Needs, ProcessingConfig
from e2e_depth_ros.core.scale import ScaleFit

pytestmark = pytest.mark.needs_torch
CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)


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


class _CountingModel:
    """The real estimator, counting model calls and their batch sizes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, rgb, **kwargs):
        self.calls.append(1 if rgb.ndim == 3 else rgb.shape[0])
        return self.inner.predict(rgb, **kwargs)


def _frames(count: int, shape=(48, 64, 3), seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def test_batch_of_three_equals_three_single_frames_in_one_model_call(estimator):
    counting = _CountingModel(estimator)
    proc = FrameProcessor(counting, ProcessingConfig(fixed_scale=3.0, fixed_shift=0.5))
    frames = [Frame(rgb, 0.1 * i, CAMERA, stream=name)
              for i, (rgb, name) in enumerate(zip(_frames(3), ("front", "left", "right")))]
    batched = proc.process_batch(frames)
    assert counting.calls == [3]
    singles = [proc.process(f.rgb, f.stamp, camera=f.camera, stream=f.stream) for f in frames]
    for got, want in zip(batched, singles):
        # Measured float noise of the batched model call: depth <= 1e-6, normals <= 1e-4
        # (renormalising amplifies it); another frame's output (a logic error) is >= 0.1 off.
        np.testing.assert_allclose(got.relative, want.relative, atol=1e-5)
        np.testing.assert_allclose(got.normals, want.normals, atol=1e-3)
        np.testing.assert_allclose(got.metric, want.metric, atol=5e-5)
        np.testing.assert_allclose(got.points, want.points, atol=5e-5, equal_nan=True)
    assert np.abs(batched[0].relative - singles[1].relative).max() > 1e-2


def test_frames_of_different_sizes_go_through_the_model_in_one_call_per_size(estimator):
    counting = _CountingModel(estimator)
    small, large = _frames(2), _frames(1, (40, 56, 3), seed=2)
    frames = [Frame(small[0], 0.0), Frame(large[0], 0.0), Frame(small[1], 0.0)]
    results = FrameProcessor(counting).process_batch(frames)
    assert sorted(counting.calls) == [1, 2]
    assert [r.relative.shape for r in results] == [(48, 64), (40, 56), (48, 64)]


def test_each_stream_keeps_its_own_scale_filter(estimator, rgb):
    proc = FrameProcessor(estimator)
    proc.filter_for("front").update(
        ScaleFit(ok=True, scale=2.0, shift=0.0, inliers=100, rmse=0.01, candidates=100), 0.0)
    assert proc.scale_state(0.5, "front").usable
    assert not proc.scale_state(0.5, "left").usable
    front, left = proc.process_batch([Frame(rgb, 0.5, stream="front",
                                            needs=Needs(points=False)),
                                      Frame(rgb, 0.5, stream="left", needs=Needs(points=False))])
    assert front.scale_source == "lidar" and left.scale_source == "none"
    np.testing.assert_allclose(front.metric, 2.0 * front.relative, rtol=1e-6)
    assert left.metric is None


def test_a_frame_that_does_not_want_normals_gets_none_from_a_batch_that_computed_them(
        estimator, rgb):
    frames = [Frame(rgb, 0.0, needs=Needs(normals=False, points=False, metric=False)),
              Frame(rgb.copy(), 0.0)]
    lean, full = FrameProcessor(estimator).process_batch(frames)
    assert lean.normals is None and full.normals is not None


def test_the_estimator_and_a_minimal_fake_both_satisfy_the_depth_model_protocol(estimator):
    from e2e_depth_ros.core.depth_model import DepthModel

    class Fake:
        model_names = {"depth": "fake", "normals": None}
        device, dtype, processing_resolution = "cpu", "float32", 0

        def processing_size(self, height, width):
            return height, width

        def predict(self, rgb, *, depth=True, normals=True):
            raise NotImplementedError

    assert isinstance(estimator, DepthModel) and isinstance(Fake(), DepthModel)
    assert not isinstance(object(), DepthModel)


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
    from e2e_depth_ros.core.processing import fixed_map_conflict

    assert match in fixed_map_conflict(config)


def test_fixed_map_conflict_accepts_a_map_that_reaches_the_valid_depths():
    from e2e_depth_ros.core.processing import fixed_map_conflict

    assert fixed_map_conflict(ProcessingConfig(fixed_scale=4.0, fixed_shift=-1.0,
                                               max_depth=10.0)) is None
    assert fixed_map_conflict(ProcessingConfig(fixed_shift=-10000.0)) is None  # scale off

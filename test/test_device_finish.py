"""Post-processing on the model's device gives what the numpy path gives (run here on CPU).

The GPU path finishes frames with torch (``device_finish``); these tests force it on the CPU
and compare every array and picture with the numpy path's, so a GPU run inherits them.
"""

import numpy as np
import pytest

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.visualize import colorize_depth, normals_to_rgb8
from e2e_depth_ros.ros.outputs import BY_KEY, PICTURES, needs_for, rclpy_types
from e2e_depth_ros.core.processing import FrameProcessor, Needs, ProcessingConfig

pytestmark = pytest.mark.needs_torch
CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
ALL_PICTURES = Needs(points_normals=True, pictures=PICTURES)


@pytest.fixture
def rgb():
    return np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def cutting(estimator, rgb, **kwargs) -> ProcessingConfig:
    """A fixed metric map whose depth limits cut the frame's nearest and farthest fifth."""
    metric = 3.0 * estimator.predict(rgb, normals=False).depth + 0.2
    lo, hi = np.percentile(metric, [20, 80])
    return ProcessingConfig(fixed_scale=3.0, fixed_shift=0.2, min_depth=float(lo),
                            max_depth=float(hi), **kwargs)


def device_finisher(estimator):
    """The GPU path's finisher on the estimator's device (torch imported here: Humble)."""
    from e2e_depth_ros.model.device_finish import DeviceFinisher

    return DeviceFinisher(estimator.device)


def both(estimator, config, rgb, **kwargs):
    """The same frame finished by numpy and by torch (on the CPU here)."""
    on_cpu = FrameProcessor(estimator, config, finisher=None).process(rgb, 0.0, **kwargs)
    on_device = FrameProcessor(estimator, config, finisher=device_finisher(estimator)).process(
        rgb, 0.0, **kwargs)
    return on_cpu, on_device


def assert_same(a, b, rtol=1e-6):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=rtol, atol=1e-6)


def levels_apart(a, b) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_predict_on_device_returns_the_same_values_as_tensors(estimator, rgb):
    import torch

    arrays = estimator.predict(rgb)
    tensors = estimator.predict(rgb, on_device=True)
    assert isinstance(tensors.depth, torch.Tensor) and isinstance(tensors.normals, torch.Tensor)
    np.testing.assert_array_equal(tensors.depth.numpy(), arrays.depth)
    np.testing.assert_array_equal(tensors.normals.numpy(), arrays.normals)


def test_the_gpu_path_is_chosen_only_for_cuda_models(estimator):
    assert FrameProcessor(estimator).finisher is None  # a CPU model: numpy finishes


@pytest.mark.parametrize("decimation", [1, 3])
def test_metric_map_and_cloud_equal_the_numpy_path(estimator, rgb, decimation):
    config = cutting(estimator, rgb, points_decimation=decimation)
    cpu, dev = both(estimator, config, rgb, camera=CAMERA, needs=ALL_PICTURES)
    assert 0 < np.isnan(cpu.metric).sum() < cpu.metric.size  # the limits cut some pixels
    for name in ("relative", "normals", "metric", "points", "points_normals"):
        assert_same(getattr(cpu, name), getattr(dev, name))
    np.testing.assert_array_equal(cpu.points_rgb, dev.points_rgb)
    assert dev.scale_source == cpu.scale_source == "fixed" and dev.notes == cpu.notes


def test_pictures_equal_what_the_cpu_builders_draw(estimator, rgb):
    from e2e_depth_ros.ros.outputs import _millimetres

    cpu, dev = both(estimator, cutting(estimator, rgb), rgb, camera=CAMERA,
                    needs=ALL_PICTURES)
    assert set(dev.pictures) == set(PICTURES) and not cpu.pictures
    depth_vis = colorize_depth(cpu.relative)
    assert dev.pictures["depth_vis"].dtype == np.uint8
    assert dev.pictures["depth_vis"].shape == depth_vis.shape
    # the same TURBO colours; a level may round the other way at a .5 (float op order)
    assert np.mean(np.any(dev.pictures["depth_vis"] != depth_vis, axis=-1)) < 0.01
    assert levels_apart(dev.pictures["normals_vis"], normals_to_rgb8(cpu.normals)) <= 1
    mm = _millimetres(cpu.metric)
    assert dev.pictures["depth_mm"].dtype == np.uint16
    assert (mm == 0).sum() > 0 and levels_apart(dev.pictures["depth_mm"], mm) <= 1


def test_outputs_built_from_either_path_carry_the_same_pixels(estimator, rgb):
    from e2e_depth_ros.ros.messages import image_to_array, pointcloud_to_xyz

    config = cutting(estimator, rgb)
    wanted = [BY_KEY[k] for k in ("relative", "depth", "depth_mm", "depth_vis", "normals",
                                  "normals_vis", "points")]
    needs = needs_for(wanted)
    assert set(needs.pictures) == set(PICTURES)
    cpu, dev = both(estimator, config, rgb, camera=CAMERA, needs=needs)
    types = rclpy_types()
    header = types["std_msgs/msg/Header"](frame_id="camera_optical")
    for output in wanted:
        a = output.build(types, header, None, cpu)
        b = output.build(types, header, None, dev)
        if output.key == "points":
            assert a.fields == b.fields and a.point_step == b.point_step
            assert_same(pointcloud_to_xyz(a), pointcloud_to_xyz(b))
            continue
        assert a.encoding == b.encoding, output.key
        pa, pb = image_to_array(a), image_to_array(b)
        if pa.dtype == np.float32:
            assert_same(pa, pb)
        elif output.key == "depth_vis":  # TURBO colours of levels that may differ by 1
            assert np.mean(np.any(pa != pb, axis=-1)) < 0.01
        else:
            assert levels_apart(pa, pb) <= 1, output.key


def test_lidar_fit_reads_only_the_lidar_pixels_and_agrees(estimator, rgb):
    relative = estimator.predict(rgb).depth
    rows, cols = np.mgrid[2:46:3, 2:62:3]
    z = 0.5 + 4.0 * relative[rows, cols]  # LiDAR agrees with scale 4, shift 0.5
    x = (cols - CAMERA.cx) * z / CAMERA.fx
    y = (rows - CAMERA.cy) * z / CAMERA.fy
    lidar = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    cpu, dev = both(estimator, ProcessingConfig(), rgb, camera=CAMERA, lidar_points=lidar)
    assert cpu.fit.ok and dev.fit.ok
    assert dev.fit.scale == pytest.approx(cpu.fit.scale, rel=1e-6)
    assert dev.fit.scale == pytest.approx(4.0, rel=1e-3)
    assert dev.fit.inliers == cpu.fit.inliers
    assert_same(cpu.metric, dev.metric, rtol=1e-5)


def test_each_frame_gets_its_own_buffer(estimator, rgb):
    proc = FrameProcessor(estimator, ProcessingConfig(fixed_scale=2.0),
                          finisher=device_finisher(estimator))
    first = proc.process(rgb, 0.0, camera=CAMERA, needs=ALL_PICTURES)
    kept = first.metric.copy(), first.pictures["depth_vis"].copy()
    proc.process(255 - rgb, 0.1, camera=CAMERA, needs=ALL_PICTURES)
    np.testing.assert_array_equal(first.metric, kept[0])
    np.testing.assert_array_equal(first.pictures["depth_vis"], kept[1])
    for array in (first.metric, first.points, first.normals):
        assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous


def test_all_metric_invalid_gives_the_same_note(estimator, rgb):
    config = ProcessingConfig(fixed_scale=1.0, fixed_shift=10.0, max_depth=5.0)
    cpu, dev = both(estimator, config, rgb, camera=CAMERA)
    assert np.isnan(dev.metric).all() and dev.notes == cpu.notes
    assert any("every metric pixel is invalid" in note for note in dev.notes)

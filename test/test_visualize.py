"""The pictures for people: depth colour map and normals as bytes."""

import numpy as np
import pytest

from e2e_depth_ros.core.visualize import colorize_depth, normals_to_rgb8
from e2e_depth_ros.errors import MessageError


def test_colorize_depth_paints_near_warm_far_cold_and_invalid_black():
    depth = np.tile(np.linspace(1.0, 5.0, 40, dtype=np.float32), (30, 1))
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    bgr = colorize_depth(depth)
    assert bgr.dtype == np.uint8 and bgr.shape == (30, 40, 3)
    assert (bgr[0, :2] == 0).all()
    near, far = bgr[5, 2].astype(int), bgr[5, -1].astype(int)
    assert near[2] > near[0] + 50  # red over blue
    assert far[0] > far[2]  # TURBO's far end is dark blue
    assert near.sum() > far.sum()


def test_colorize_depth_saturates_outside_an_explicit_range():
    depth = np.array([[0.5, 1.0, 4.0, 9.0]], dtype=np.float32)
    bgr = colorize_depth(depth, vmin=1.0, vmax=4.0)
    np.testing.assert_array_equal(bgr[0, 0], bgr[0, 1])
    np.testing.assert_array_equal(bgr[0, 2], bgr[0, 3])
    assert not np.array_equal(bgr[0, 1], bgr[0, 2])


def test_colorize_depth_of_an_all_invalid_image_is_black():
    assert not colorize_depth(np.full((3, 4), np.nan, dtype=np.float32)).any()


def test_colorize_depth_rejects_images_with_channels():
    with pytest.raises(MessageError, match=r"depth must be \(H, W\)"):
        colorize_depth(np.zeros((3, 4, 1), np.float32))


def test_normals_to_rgb8_maps_unit_vectors_to_bytes_and_nan_to_black():
    normals = np.array(
        [[[0, 0, -1], [1, 0, 0], [0, -1, 0], [np.nan, 0, 1]]], dtype=np.float32
    )
    rgb = normals_to_rgb8(normals)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    expected = [[128, 128, 0], [255, 128, 128], [128, 0, 128], [0, 0, 0]]
    np.testing.assert_array_equal(rgb[0], expected)


def test_normals_to_rgb8_rejects_images_without_three_channels():
    with pytest.raises(MessageError, match=r"normals must be \(H, W, 3\)"):
        normals_to_rgb8(np.zeros((3, 4), np.float32))

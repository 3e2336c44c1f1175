"""Tests of e2e_depth_ros.ros.messages with rclpy messages and rosbags dataclasses alike."""

import array
import copy
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
import sensor_msgs.msg as rclpy_sensor
from std_msgs.msg import Header as RclpyHeader

from e2e_depth_ros.errors import CameraError, MessageError
from e2e_depth_ros.ros.messages import (
    ENCODINGS,
    build_image,
    build_pointcloud,
    camera_from_info,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    pointcloud_to_xyz,
    same_calibration,
    scaled_camera_info,
)

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
LIBS = ["rclpy", "rosbags"]
H, W = 5, 6  # H != W, even width for YUV 4:2:2


def lib_types(lib: str) -> SimpleNamespace:
    """Message classes and a header factory of one message library."""
    if lib == "rclpy":
        return SimpleNamespace(
            Image=rclpy_sensor.Image,
            CompressedImage=rclpy_sensor.CompressedImage,
            CameraInfo=rclpy_sensor.CameraInfo,
            RegionOfInterest=rclpy_sensor.RegionOfInterest,
            PointCloud2=rclpy_sensor.PointCloud2,
            PointField=rclpy_sensor.PointField,
            header=lambda: RclpyHeader(frame_id="camera_optical"),
            data=lambda raw: array.array("B", raw),
        )
    t = TYPESTORE.types
    stamp = t["builtin_interfaces/msg/Time"]
    return SimpleNamespace(
        Image=t["sensor_msgs/msg/Image"],
        CompressedImage=t["sensor_msgs/msg/CompressedImage"],
        CameraInfo=t["sensor_msgs/msg/CameraInfo"],
        RegionOfInterest=t["sensor_msgs/msg/RegionOfInterest"],
        PointCloud2=t["sensor_msgs/msg/PointCloud2"],
        PointField=t["sensor_msgs/msg/PointField"],
        header=lambda: t["std_msgs/msg/Header"](
            stamp=stamp(sec=12, nanosec=345), frame_id="camera_optical"
        ),
        data=lambda raw: np.frombuffer(bytes(raw), dtype=np.uint8).copy(),
    )


def raw_image(lib, encoding, wire_rows, width, *, bigendian=False, step=None, height=None):
    """An Image message from rows of wire bytes (H, row_bytes), padded to ``step``."""
    types = lib_types(lib)
    rows = np.asarray(wire_rows, dtype=np.uint8)
    step = rows.shape[1] if step is None else step
    padded = np.full((rows.shape[0], step), 0xAB, dtype=np.uint8)  # junk in the padding
    padded[:, : rows.shape[1]] = rows[:, :step]
    return types.Image(
        header=types.header(),
        height=rows.shape[0] if height is None else height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=types.data(padded.tobytes()),
    )


def wire(values: np.ndarray, bigendian: bool) -> np.ndarray:
    """Rows of bytes (H, W * bytes per pixel) of an (H, W[, C]) array in the given order."""
    order = ">" if bigendian else "<"
    raw = values.astype(values.dtype.newbyteorder(order)).tobytes()
    return np.frombuffer(raw, dtype=np.uint8).reshape(values.shape[0], -1)


def sample_pixels(encoding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Native pixels of a test image in ``encoding`` and the RGB it shows (None: not colour)."""
    rng = np.random.default_rng(sum(map(ord, encoding)))
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    low = rng.integers(0, 256, (H, W, 3), dtype=np.uint16)
    rgb16 = (rgb.astype(np.uint16) << 8) | low  # high byte is the 8-bit value
    gray = rgb[..., 0]
    gray3 = np.repeat(gray[..., None], 3, axis=2)
    table = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[..., ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], axis=2), rgb),
        "bgra8": (np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb),
        "rgb16": (rgb16, rgb),
        "bgr16": (rgb16[..., ::-1], rgb),
        "mono8": (gray, gray3),
        "mono16": (rgb16[..., 0], gray3),
        "8UC1": (gray, gray3),
        "8UC3": (rgb[..., ::-1], rgb),
        "8UC4": (np.concatenate([rgb[..., ::-1], alpha], axis=2), rgb),
        "16UC1": (rgb16[..., 0], None),
        "16UC3": (rgb16, None),
        "32FC1": (rng.normal(size=(H, W)).astype(np.float32), None),
        "32FC3": (rng.normal(size=(H, W, 3)).astype(np.float32), None),
        "64FC1": (rng.normal(size=(H, W)), None),
    }
    if encoding in table:
        pixels, shown = table[encoding]
        return np.ascontiguousarray(pixels), shown
    # YUV 4:2:2: pixel pairs share chroma, so a picture with equal pairs survives the trip.
    smooth = np.repeat(rgb[:, ::2], 2, axis=1)
    return yuv422(smooth, uyvy=encoding in ("yuv422", "uyvy")), smooth


def yuv422(rgb, *, uyvy):
    """(H, W, 2) packed 4:2:2 of ``rgb`` (equal pixel pairs), BT.601 limited range as OpenCV's
    decoders read it; OpenCV < 4.7 (Humble's 4.5) has no RGB -> 4:2:2 encoder."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    chroma = np.where(np.arange(rgb.shape[1]) % 2 == 0, u, v)  # U for even x, V for odd x
    return np.stack([chroma, y] if uyvy else [y, chroma], axis=-1)


def image_cases():
    for encoding, enc in ENCODINGS.items():
        for bigendian in ([False, True] if enc.dtype.itemsize > 1 else [False]):
            for pad in (0, 3, 8):
                for lib in LIBS:
                    yield pytest.param(
                        lib, encoding, bigendian, pad,
                        id=f"{lib}-{encoding}-{'be' if bigendian else 'le'}-pad{pad}",
                    )


@pytest.mark.parametrize("lib, encoding, bigendian, pad", list(image_cases()))
def test_image_to_array_reads_every_encoding_with_padding_and_byte_order(
    lib, encoding, bigendian, pad
):
    pixels, _ = sample_pixels(encoding)
    rows = wire(pixels, bigendian)
    msg = raw_image(lib, encoding, rows, W, bigendian=bigendian, step=rows.shape[1] + pad)
    out = image_to_array(msg)
    assert out.dtype == pixels.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize(
    "lib, encoding, bigendian, pad",
    [p for p in image_cases() if ENCODINGS[p.values[1]].to_rgb is not None],
)
def test_image_to_rgb_shows_every_colour_encoding_as_rgb8(lib, encoding, bigendian, pad):
    pixels, shown = sample_pixels(encoding)
    rows = wire(pixels, bigendian)
    msg = raw_image(lib, encoding, rows, W, bigendian=bigendian, step=rows.shape[1] + pad)
    rgb = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    if ENCODINGS[encoding].channels == 2:
        reference = cv2.cvtColor(pixels, ENCODINGS[encoding].to_rgb)
        np.testing.assert_array_equal(rgb, reference)
        assert np.abs(rgb.astype(int) - shown).max() <= 6  # right byte order, not just any
    else:
        np.testing.assert_array_equal(rgb, shown)


@pytest.mark.parametrize("lib", LIBS)
def test_image_to_rgb_returns_an_array_that_does_not_alias_the_message(lib):
    pixels, _ = sample_pixels("rgb8")
    msg = raw_image(lib, "rgb8", wire(pixels, False), W)
    out = image_to_rgb(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_to_rgb(msg), pixels)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize(
    "encoding, width, height, step, nbytes, match",
    [
        ("bayer_rggb8", 6, 5, 6, 30, "unsupported image encoding 'bayer_rggb8'"),
        ("rgb8", 0, 5, 0, 0, r"rgb8 image is empty \(0x5\)"),
        ("rgb8", 6, 0, 18, 0, r"rgb8 image is empty \(6x0\)"),
        ("rgb8", 6, 5, 17, 85, "step 17 is less than width 6 x 3 bytes per pixel = 18"),
        ("mono16", 6, 5, 12, 59, "needs 60 bytes of data, got 59"),
        ("rgb8", 6, 5, 20, 99, "with step 20 needs 100 bytes of data, got 99"),
        ("uyvy", 5, 5, 10, 50, "width must be even, got 5"),
        ("yuv422", 3, 2, 6, 12, "width must be even, got 3"),
    ],
)
def test_image_decoding_rejects_inconsistent_messages_by_name(
    lib, encoding, width, height, step, nbytes, match
):
    types = lib_types(lib)
    msg = types.Image(
        header=types.header(), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=step, data=types.data(bytes(nbytes)),
    )
    with pytest.raises(MessageError, match=match):
        image_to_array(msg)
    with pytest.raises(MessageError, match=match):
        image_to_rgb(msg)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "64FC1"])
def test_image_to_rgb_refuses_depth_encodings_naming_only_what_it_reads(lib, encoding):
    depth, _ = sample_pixels(encoding)
    msg = raw_image(lib, encoding, wire(depth, False), W)
    with pytest.raises(MessageError, match=f"'{encoding}' holds depth or data, not a picture: "
                       "the camera input needs a colour or grey image, one of rgb8, ") as err:
        image_to_rgb(msg)
    listed = str(err.value).rpartition("one of ")[2].split(", ")
    assert "mono16" in listed and not {"16UC1", "32FC1", "64FC1"} & set(listed)


def compressed(lib: str, payload: bytes, fmt: str):
    types = lib_types(lib)
    return types.CompressedImage(header=types.header(), format=fmt, data=types.data(payload))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8"])
def test_compressed_png_decodes_to_the_exact_rgb(lib, fmt):
    _, rgb = sample_pixels("rgb8")
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_to_rgb(compressed(lib, png.tobytes(), fmt)), rgb)


@pytest.mark.parametrize("lib", LIBS)
def test_compressed_payload_declared_rgb8_is_not_swapped(lib):
    _, rgb = sample_pixels("rgb8")
    ok, png = cv2.imencode(".png", rgb)  # the bytes of an RGB array, written as is
    assert ok
    msg = compressed(lib, png.tobytes(), "rgb8; png compressed rgb8")
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


@pytest.mark.parametrize("lib", LIBS)
def test_compressed_jpeg_decodes_close_to_the_original(lib):
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    out = compressed_to_rgb(compressed(lib, jpeg.tobytes(), "rgb8; jpeg compressed bgr8"))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 4


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize(
    "payload, fmt, match",
    [
        (b"", "jpeg", "has no data"),
        (b"definitely not a jpeg", "jpeg", r"could not be decoded .*corrupt"),
        (b"\x89PNG", "16UC1; compressedDepth png", "is a depth image"),
    ],
)
def test_compressed_to_rgb_rejects_bad_payloads(lib, payload, fmt, match):
    with pytest.raises(MessageError, match=match):
        compressed_to_rgb(compressed(lib, payload, fmt))


BUILDABLE = ["32FC1", "32FC3", "16UC1", "64FC1", "mono8", "rgb8", "bgr8"]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("encoding", BUILDABLE)
def test_build_image_round_trips_through_image_to_array(lib, encoding):
    types = lib_types(lib)
    pixels, _ = sample_pixels(encoding)
    header = types.header()
    msg = build_image(types.Image, header, pixels, encoding)
    assert isinstance(msg, types.Image)
    assert msg.header is header
    enc = ENCODINGS[encoding]
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * enc.channels * enc.dtype.itemsize and not msg.is_bigendian
    assert len(msg.data) == msg.step * H
    np.testing.assert_array_equal(image_to_array(msg), pixels)


@pytest.mark.parametrize("encoding", BUILDABLE)
def test_build_image_gives_rclpy_field_types_that_pass_its_checks_and_serialize(encoding):
    pixels, _ = sample_pixels(encoding)
    msg = build_image(rclpy_sensor.Image, RclpyHeader(frame_id="cam"), pixels, encoding)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    fields = {name: getattr(msg, name) for name in msg.get_fields_and_field_types()}
    rclpy_sensor.Image(check_fields=True, **fields)  # asserts on any wrongly typed field
    as_rosbags = TYPESTORE.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(image_to_array(as_rosbags), pixels)


@pytest.mark.parametrize("encoding", BUILDABLE)
def test_build_image_gives_rosbags_messages_it_can_serialize(encoding):
    types = lib_types("rosbags")
    pixels, _ = sample_pixels(encoding)
    msg = build_image(types.Image, types.header(), pixels, encoding)
    assert isinstance(msg.data, np.ndarray) and msg.data.dtype == np.uint8
    raw = TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image")
    back = deserialize_message(bytes(raw), rclpy_sensor.Image)
    assert back.header.frame_id == "camera_optical" and back.header.stamp.nanosec == 345
    np.testing.assert_array_equal(image_to_array(back), pixels)


def test_build_image_does_not_alias_the_callers_array():
    types = lib_types("rosbags")
    depth = np.ones((H, W), dtype=np.float32)
    msg = build_image(types.Image, types.header(), depth, "32FC1")
    depth[:] = 7.0
    np.testing.assert_array_equal(image_to_array(msg), np.ones((H, W), dtype=np.float32))


def test_build_image_accepts_a_trailing_single_channel_axis():
    msg = build_image(rclpy_sensor.Image, RclpyHeader(), np.zeros((H, W, 1), np.float32), "32FC1")
    assert image_to_array(msg).shape == (H, W)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize(
    "array_, encoding, match",
    [
        (np.zeros((H, W), np.float64), "32FC1", r"32FC1 needs a float32 array of shape \(H, W\)"),
        (np.zeros((H, W, 3), np.float32), "32FC1", r"got float32 \(5, 6, 3\)"),
        (np.zeros((H, W), np.float32), "32FC3", r"shape \(H, W, 3\), got float32 \(5, 6\)"),
        (np.zeros((H, W, 3), np.float32), "rgb8", "rgb8 needs a uint8 array"),
        (np.zeros((H, W), np.int32), "16UC1", "16UC1 needs a uint16 array"),
        (np.zeros((0, W), np.uint8), "mono8", "empty mono8 image"),
        (np.zeros((H, W), np.uint8), "bayer_rggb8", "unsupported image encoding"),
    ],
)
def test_build_image_rejects_arrays_that_do_not_match_the_encoding(lib, array_, encoding, match):
    types = lib_types(lib)
    with pytest.raises(MessageError, match=match):
        build_image(types.Image, types.header(), array_, encoding)


# CameraInfo ------------------------------------------------------------------------------


def camera_info(lib, *, k=None, p=None, width=1280, height=960, binning=(0, 0), roi=None):
    types = lib_types(lib)
    k = np.array([800.0, 0, 650, 0, 820, 470, 0, 0, 1]) if k is None else np.asarray(k, float)
    p = np.array([790.0, 0, 640, -39.5, 0, 810, 460, 0, 0, 0, 1, 0]) if p is None else p
    x, y, w, h = (0, 0, 0, 0) if roi is None else roi
    return types.CameraInfo(
        header=types.header(),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.array([0.1, -0.05, 0.001, 0.002, 0.0]),
        k=k,
        r=np.eye(3).reshape(-1),
        p=np.asarray(p, dtype=float),
        binning_x=binning[0],
        binning_y=binning[1],
        roi=types.RegionOfInterest(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False),
    )


@pytest.mark.parametrize("lib", LIBS)
def test_same_calibration_ignores_the_stamp_and_sees_any_other_change(lib):
    base = camera_info(lib)
    restamped = camera_info(lib)
    restamped.header.stamp.sec = 42
    assert same_calibration(base, restamped)
    assert not same_calibration(base, camera_info(lib, p=[791.0] + [0.0] * 11))
    assert not same_calibration(base, camera_info(lib, width=640))
    assert not same_calibration(base, camera_info(lib, binning=(2, 2)))
    assert not same_calibration(base, camera_info(lib, roi=(8, 8, 640, 480)))
    moved = camera_info(lib)
    moved.header.frame_id = "other_optical"
    assert not same_calibration(base, moved)


@pytest.mark.parametrize("lib", LIBS)
def test_camera_from_info_uses_the_rectified_projection(lib):
    cam = camera_from_info(camera_info(lib))
    assert (cam.width, cam.height) == (1280, 960)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.tx) == (790, 810, 640, 460, -39.5)


@pytest.mark.parametrize("lib", LIBS)
def test_camera_from_info_falls_back_to_k_when_p_is_zero(lib):
    cam = camera_from_info(camera_info(lib, p=np.zeros(12)))
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.tx) == (800, 820, 650, 470, 0)


@pytest.mark.parametrize("lib", LIBS)
def test_camera_from_info_applies_binning_and_roi(lib):
    info = camera_info(lib, binning=(2, 4), roi=(100, 40, 640, 480))
    cam = camera_from_info(info)
    assert (cam.width, cam.height) == (320, 120)
    assert cam.fx == 790 / 2 and cam.fy == 810 / 4
    assert cam.cx == (640 - 100) / 2 and cam.cy == (460 - 40) / 4
    assert cam.tx == -39.5 / 2


@pytest.mark.parametrize("lib", LIBS)
def test_camera_from_info_refuses_an_uncalibrated_camera(lib):
    with pytest.raises(CameraError, match="K = 0 and P = 0"):
        camera_from_info(camera_info(lib, k=np.zeros(9), p=np.zeros(12)))


def info_snapshot(info) -> tuple:
    roi = info.roi
    return (
        info.width, info.height, info.binning_x, info.binning_y,
        roi.x_offset, roi.y_offset, roi.width, roi.height, info.header.frame_id,
        np.array(info.k).tolist(), np.array(info.p).tolist(),
        np.array(info.d).tolist(), np.array(info.r).tolist(),
    )


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_follows_image_procs_resize_rule(lib):
    info = camera_info(lib)
    before = info_snapshot(info)
    out = scaled_camera_info(info, 640, 240)  # sx = 1/2, sy = 1/4
    assert type(out) is type(info) and out is not info
    assert info_snapshot(info) == before
    assert (out.width, out.height) == (640, 240)
    np.testing.assert_allclose(out.k, [400, 0, 325, 0, 205, 117.5, 0, 0, 1])
    np.testing.assert_allclose(out.p, [395, 0, 320, -19.75, 0, 202.5, 115, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(out.d, info.d)
    assert out.header.frame_id == "camera_optical"


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_folds_binning_and_roi_into_the_matrices(lib):
    info = camera_info(lib, binning=(2, 2), roi=(100, 40, 640, 480))
    before = info_snapshot(info)
    out = scaled_camera_info(info, 160, 60)  # received image is 320 x 240
    assert info_snapshot(info) == before
    assert (out.binning_x, out.binning_y) == (0, 0)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (0, 0, 0, 0)
    expected = camera_from_info(info).scaled(160, 60)
    got = camera_from_info(out)
    for name in ("width", "height", "fx", "fy", "cx", "cy", "tx", "ty"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name)), name


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_replaces_the_header_only_when_given(lib):
    types = lib_types(lib)
    info = camera_info(lib)
    header = types.header()
    header.frame_id = "resized"
    assert scaled_camera_info(info, 640, 480, header=header).header is header
    assert info.header.frame_id == "camera_optical"


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_output_shares_no_arrays_with_the_input(lib):
    info = camera_info(lib)
    out = scaled_camera_info(info, 640, 480)
    for name in ("d", "k", "r", "p"):
        getattr(out, name)[0] = 123.0
    assert info.d[0] == 0.1 and info.k[0] == 800 and info.r[0] == 1 and info.p[0] == 790


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_rejects_empty_sizes(lib):
    with pytest.raises(CameraError, match="to 0x480"):
        scaled_camera_info(camera_info(lib), 0, 480)
    with pytest.raises(CameraError, match="of a 0x0 image"):
        scaled_camera_info(camera_info(lib, width=0, height=0), 640, 480)


# PointCloud2 -----------------------------------------------------------------------------


def cloud_inputs(height=4, width=7):
    rng = np.random.default_rng(3)
    points = rng.uniform(-3, 3, (height, width, 3)).astype(np.float32)
    points[1, 2] = np.nan
    points[3, 6] = np.nan
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[0, 0] = (200, 100, 50)
    normals = rng.normal(size=(height, width, 3)).astype(np.float32)
    return points, rgb, normals


def decode_cloud(msg, names_offsets):
    """Read float32/uint32 fields out of the raw bytes with explicit offsets (little-endian)."""
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = raw.reshape(msg.height, msg.row_step)[:, : msg.point_step * msg.width]
    points = rows.reshape(msg.height, msg.width, msg.point_step)
    out = {}
    for name, offset, dtype in names_offsets:
        out[name] = points[..., offset:offset + 4].copy().view(dtype)[..., 0]
    return out


@pytest.mark.parametrize("lib", LIBS)
def test_build_pointcloud_xyz_uses_the_depth_image_proc_layout(lib):
    types = lib_types(lib)
    points, _, _ = cloud_inputs()
    header = types.header()
    msg = build_pointcloud(types.PointCloud2, types.PointField, header, points)
    assert msg.header is header
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 7, 16, 16 * 7)
    assert msg.is_dense is False and msg.is_bigendian is False
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)
    ]
    assert len(msg.data) == 16 * 7 * 4
    fields = decode_cloud(msg, [(n, 4 * i, "<f4") for i, n in enumerate("xyz")])
    for i, n in enumerate("xyz"):
        np.testing.assert_array_equal(fields[n], points[..., i])  # NaNs in the same places
    assert np.isnan(fields["x"][1, 2]) and np.isnan(fields["z"][3, 6])


@pytest.mark.parametrize("lib", LIBS)
def test_build_pointcloud_packs_rgb_and_normals_at_fixed_offsets(lib):
    types = lib_types(lib)
    points, rgb, normals = cloud_inputs()
    msg = build_pointcloud(
        types.PointCloud2, types.PointField, types.header(), points, rgb=rgb, normals=normals
    )
    assert (msg.point_step, msg.row_step) == (32, 32 * 7)
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 16, 7),
        ("normal_x", 20, 7), ("normal_y", 24, 7), ("normal_z", 28, 7),
    ]
    fields = decode_cloud(msg, [
        ("x", 0, "<f4"), ("y", 4, "<f4"), ("z", 8, "<f4"), ("pad", 12, "<u4"),
        ("rgb", 16, "<u4"), ("nx", 20, "<f4"), ("ny", 24, "<f4"), ("nz", 28, "<f4"),
    ])
    assert fields["rgb"][0, 0] == 0x00C86432  # r=200, g=100, b=50
    expected = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
    np.testing.assert_array_equal(fields["rgb"], expected | rgb[..., 2])
    np.testing.assert_array_equal(fields["nz"], normals[..., 2])
    np.testing.assert_array_equal(fields["y"], points[..., 1])
    assert not fields["pad"].any()


@pytest.mark.parametrize("lib", LIBS)
def test_build_pointcloud_with_normals_only_keeps_the_rgb_bytes_zero(lib):
    types = lib_types(lib)
    points, _, normals = cloud_inputs()
    msg = build_pointcloud(
        types.PointCloud2, types.PointField, types.header(), points, normals=normals
    )
    assert msg.point_step == 32 and "rgb" not in [f.name for f in msg.fields]
    fields = decode_cloud(msg, [("gap", 16, "<u4"), ("nx", 20, "<f4")])
    assert not fields["gap"].any()
    np.testing.assert_array_equal(fields["nx"], normals[..., 0])


def test_build_pointcloud_for_rclpy_serializes_and_reads_back_with_rosbags():
    points, rgb, _ = cloud_inputs()
    msg = build_pointcloud(
        rclpy_sensor.PointCloud2, rclpy_sensor.PointField, RclpyHeader(), points, rgb=rgb
    )
    fields = {name: getattr(msg, name) for name in msg.get_fields_and_field_types()}
    rclpy_sensor.PointCloud2(check_fields=True, **fields)
    assert msg._check_fields == rclpy_sensor.PointCloud2()._check_fields  # restored
    back = TYPESTORE.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/PointCloud2")
    flat = points.reshape(-1, 3)
    np.testing.assert_array_equal(pointcloud_to_xyz(back), flat[np.isfinite(flat).all(axis=1)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"points": np.zeros((4, 7, 3))}, r"points must be float32 \(H, W, 3\), got float64"),
        ({"points": np.zeros((28, 3), np.float32)}, r"got float32 \(28, 3\)"),
        ({"points": np.zeros((0, 7, 3), np.float32)}, "empty point cloud"),
        ({"rgb": np.zeros((4, 7, 3), np.float32)}, "rgb must be uint8"),
        ({"rgb": np.zeros((4, 6, 3), np.uint8)}, r"rgb must be uint8 \(4, 7, 3\)"),
        ({"normals": np.zeros((4, 7, 3), np.float64)}, "normals must be float32"),
    ],
)
def test_build_pointcloud_rejects_malformed_arrays(kwargs, match):
    args = {"points": np.zeros((4, 7, 3), np.float32), **kwargs}
    with pytest.raises(MessageError, match=match):
        build_pointcloud(rclpy_sensor.PointCloud2, rclpy_sensor.PointField, RclpyHeader(), **args)


def foreign_cloud(lib, *, bigendian, dtype, height=2, width=3, row_pad=5):
    """A cloud in an unusual layout: y, then padding, x, intensity, z; padded rows."""
    types = lib_types(lib)
    rng = np.random.default_rng(11)
    xyz = rng.uniform(-10, 10, (height, width, 3))
    xyz[0, 1, 2] = np.nan
    xyz[1, 2, 0] = np.inf
    order = ">" if bigendian else "<"
    size = np.dtype(dtype).itemsize
    point = np.dtype({
        "names": ["y", "x", "intensity", "z"],
        "formats": [order + dtype, order + dtype, order + "f4", order + dtype],
        "offsets": [0, size + 4, 2 * size + 4, 2 * size + 8],
        "itemsize": 3 * size + 12,
    })
    records = np.zeros((height, width), dtype=point)
    records["x"], records["y"], records["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    records["intensity"] = 5.0
    row_step = point.itemsize * width + row_pad
    rows = np.full((height, row_step), 0xEE, dtype=np.uint8)
    rows[:, : point.itemsize * width] = records.view(np.uint8).reshape(height, -1)
    kind = 7 if dtype == "f4" else 8
    fields = [
        types.PointField(name=name, offset=point.fields[name][1], datatype=d, count=1)
        for name, d in (("y", kind), ("x", kind), ("intensity", 7), ("z", kind))
    ]
    msg = types.PointCloud2(
        header=types.header(), height=height, width=width, fields=fields,
        is_bigendian=bigendian, point_step=point.itemsize, row_step=row_step,
        data=types.data(rows.tobytes()), is_dense=False,
    )
    flat = xyz.reshape(-1, 3)
    return msg, flat[np.isfinite(flat).all(axis=1)].astype(np.float32)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_pointcloud_to_xyz_reads_any_layout_byte_order_and_float_width(lib, bigendian, dtype):
    msg, expected = foreign_cloud(lib, bigendian=bigendian, dtype=dtype)
    xyz = pointcloud_to_xyz(msg)
    assert xyz.dtype == np.float32 and xyz.shape == (4, 3)  # 6 points, 2 non-finite
    np.testing.assert_array_equal(xyz, expected)


@pytest.mark.parametrize("lib", LIBS)
def test_pointcloud_to_xyz_round_trips_build_pointcloud(lib):
    types = lib_types(lib)
    points, rgb, _ = cloud_inputs()
    msg = build_pointcloud(types.PointCloud2, types.PointField, types.header(), points, rgb=rgb)
    flat = points.reshape(-1, 3)
    np.testing.assert_array_equal(pointcloud_to_xyz(msg), flat[np.isfinite(flat).all(axis=1)])


@pytest.mark.parametrize("lib", LIBS)
def test_pointcloud_to_xyz_rejects_clouds_it_cannot_read(lib):
    types = lib_types(lib)
    msg, _ = foreign_cloud(lib, bigendian=False, dtype="f4")
    short = copy.deepcopy(msg)
    short.data = types.data(bytes(msg.data)[:-1])
    with pytest.raises(MessageError, match=f"needs {msg.row_step * 2} bytes of data, got"):
        pointcloud_to_xyz(short)
    no_z = copy.deepcopy(msg)
    no_z.fields = [f for f in msg.fields if f.name != "z"]
    with pytest.raises(MessageError, match="has no field z"):
        pointcloud_to_xyz(no_z)
    ints = copy.deepcopy(msg)
    ints.fields[1].datatype = 5  # INT32
    with pytest.raises(MessageError, match="field x has datatype 5"):
        pointcloud_to_xyz(ints)
    narrow = copy.deepcopy(msg)
    narrow.row_step = msg.point_step * msg.width - 1
    with pytest.raises(MessageError, match="row_step .* is less than point_step"):
        pointcloud_to_xyz(narrow)
    overflow = copy.deepcopy(msg)
    overflow.fields[3].offset = msg.point_step - 2
    with pytest.raises(MessageError, match="field z at offset .* does not fit"):
        pointcloud_to_xyz(overflow)


# The module ------------------------------------------------------------------------------


def test_messages_module_imports_neither_rclpy_nor_rosbags_nor_torch():
    code = (
        "import sys, e2e_depth_ros.ros.messages; "
        "print(sorted(m for m in ('rclpy', 'rosbags', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("lib", LIBS)
def test_scaled_camera_info_serializes_for_the_other_library(lib):
    out = scaled_camera_info(camera_info(lib, binning=(2, 2)), 320, 240)
    if lib == "rclpy":
        fields = {name: getattr(out, name) for name in out.get_fields_and_field_types()}
        rclpy_sensor.CameraInfo(check_fields=True, **fields)
        back = TYPESTORE.deserialize_cdr(serialize_message(out), "sensor_msgs/msg/CameraInfo")
    else:
        raw = TYPESTORE.serialize_cdr(out, "sensor_msgs/msg/CameraInfo")
        back = deserialize_message(bytes(raw), rclpy_sensor.CameraInfo)
    np.testing.assert_array_equal(back.p, out.p)
    assert (back.width, back.binning_x, back.roi.width) == (320, 0, 0)

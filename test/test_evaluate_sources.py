"""evaluate's metric scale sources: sensor depth, the floor from TF, fixed, none, and auto.

The recorded prediction is the ground truth under a known affine map, so no model runs and
every error left in the metric depth is the source's own (its fit and filter)."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from e2e_depth_ros.offline import evaluate
from e2e_depth_ros.offline.eval_sources import resolve_source, sibling_info_topic
from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS, EXTRA_TOPICS, write_sample_bag
from e2e_depth_ros.offline.tf_buffer import TransformBuffer

N_FRAMES = 4
WIDTH, HEIGHT = 64, 48
SCALE, SHIFT = 2.5, 0.7  # ground truth = SCALE * recorded relative depth + SHIFT
PRED = "/pred/depth"
ARGS = ["--image-topic", DEFAULT_TOPICS["image"],
        "--camera-info-topic", DEFAULT_TOPICS["camera_info"],
        "--gt-depth-topic", DEFAULT_TOPICS["depth_gt"], "--pred-topic", PRED, "--no-progress"]


def _copy(src, dst, *, drop=(), predict=True):
    """``src`` without the ``drop`` topics, plus (``predict``) its ground truth as relative
    depth (GT - SHIFT) / SCALE on PRED."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from e2e_depth_ros.ros.messages import image_to_array

    store = get_typestore(Stores.ROS2_HUMBLE)
    with AnyReader([Path(src)]) as reader, Writer(dst, version=9) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store,
                                                offered_qos_profiles=c.ext.offered_qos_profiles)
                 for c in reader.connections if c.topic not in drop}
        pred = writer.add_connection(PRED, "sensor_msgs/msg/Image", typestore=store) \
            if predict else None
        for conn, stamp, raw in reader.messages():
            if conn.topic not in drop:
                writer.write(conns[conn.topic], stamp, raw)
            if conn.topic == DEFAULT_TOPICS["depth_gt"] and predict:
                msg = reader.deserialize(raw, conn.msgtype)
                relative = ((image_to_array(msg) - SHIFT) / SCALE).astype("<f4")
                msg = replace(msg, data=relative.view(np.uint8).reshape(-1).copy())
                writer.write(pred, stamp, store.serialize_cdr(msg, conn.msgtype))
    return dst


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Prediction bags: registered sensor depth with /tf to the floor; an offset depth camera;
    the plain sample bag (LiDAR, no /tf)."""
    root = tmp_path_factory.mktemp("source_bags")
    made = {"registered": dict(sensor_depth="registered", ground_tf=True),
            "offset": dict(sensor_depth="offset"), "plain": {}}
    return {name: _copy(
                write_sample_bag(root / f"{name}_src", n_frames=N_FRAMES, width=WIDTH,
                                 height=HEIGHT, **extras), root / name)
            for name, extras in made.items()}


def _run(bag, out, *flags):
    """``evaluate`` on a prediction bag; (exit code, metrics.json or None)."""
    code = evaluate.main([str(bag), *ARGS, "--out", str(out), *flags])
    metrics = out / "metrics.json"
    return code, json.loads(metrics.read_text()) if metrics.exists() else None


def _assert_metric_from(metrics, source, abs_rel_below):
    assert metrics["scale_source"] == source
    assert metrics["frames"] == metrics["lidar_frames"] == N_FRAMES
    assert {f["scale_source"] for f in metrics["per_frame"]} == {source}
    assert metrics["depth_lidar_aligned"]["abs_rel"] <= abs_rel_below
    assert metrics["depth_gt_aligned"]["abs_rel"] < 1e-4  # the prediction is exact


def test_sensor_depth_registered_to_the_image_scales_recorded_depth_within_1_5_percent(
        bags, tmp_path, capsys):
    code, metrics = _run(bags["registered"], tmp_path / "eval", "--scale-source", "depth",
                         "--sensor-depth-topic", EXTRA_TOPICS["sensor_depth"])
    assert code == 0, capsys.readouterr().err
    # Measured: AbsRel 0.012 %, scale 2.499 (0.3 % noise on the sensor, 16UC1 millimetres).
    _assert_metric_from(metrics, "depth", 0.015)
    for frame in metrics["per_frame"]:
        assert frame["scale"] == pytest.approx(SCALE, rel=0.01)
        assert frame["scale_status"] == "ok"


def test_sensor_depth_of_another_camera_is_reprojected_with_its_sibling_camera_info_and_tf(
        bags, tmp_path, capsys):
    assert sibling_info_topic(EXTRA_TOPICS["sensor_depth"]) == EXTRA_TOPICS["sensor_depth_info"]
    code, metrics = _run(bags["offset"], tmp_path / "eval", "--scale-source", "depth",
                         "--sensor-depth-topic", EXTRA_TOPICS["sensor_depth"])
    assert code == 0, capsys.readouterr().err
    # Measured: AbsRel 0.27 %, scale 2.489-2.495 (reprojected points: nearest per pixel).
    _assert_metric_from(metrics, "depth", 0.015)


def test_the_floor_from_tf_at_each_image_stamp_scales_recorded_depth_within_3_percent(
        bags, tmp_path, capsys):
    out = tmp_path / "eval"
    code, metrics = _run(bags["registered"], out, "--scale-source", "ground")
    assert code == 0, capsys.readouterr().err
    # Measured: AbsRel 0.19 %, scale 2.504-2.540: the floor's depth is exact, boxes standing
    # on it are the fit's outliers.
    _assert_metric_from(metrics, "ground", 0.03)
    report = (out / "report.md").read_text()
    assert "Scale source: ground" in report and "depth, floor-aligned (robot)" in report
    assert "## Floor scale over time vs the best possible" in report
    assert (out / "scale_over_time.png").stat().st_size > 0


def _headers(bag):
    """{topic: [(sec, nanosec, frame_id), ...]} of a bag (a TFMessage: its first transform's)."""
    from rosbags.highlevel import AnyReader

    found = {}
    with AnyReader([Path(bag)]) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            header = msg.transforms[0].header if hasattr(msg, "transforms") else msg.header
            found.setdefault(conn.topic, []).append(
                (header.stamp.sec, header.stamp.nanosec, header.frame_id))
    return found


def test_recorded_predictions_through_a_source_write_the_nodes_outputs_under_their_headers(
        bags, tmp_path, capsys):
    out = tmp_path / "eval"
    code, _ = _run(bags["registered"], out, "--scale-source", "ground")
    assert code == 0, capsys.readouterr().err
    recorded, written = _headers(bags["registered"]), _headers(out / "out.mcap")
    for topic in ("depth/image", "depth/relative", "depth/camera_info", "points"):
        assert written[f"/e2e_depth/{topic}"] == recorded[PRED], topic
    assert written["/tf"] == recorded["/tf"]  # the moving transforms travel with the outputs


def test_a_ground_frame_missing_from_tf_is_refused_in_one_line_before_any_work(
        bags, tmp_path, capsys):
    out = tmp_path / "eval"
    code, metrics = _run(bags["registered"], out, "--scale-source", "ground",
                         "--ground-frame", "floor")
    err = capsys.readouterr().err
    assert code == 2 and metrics is None and not out.exists()
    assert err.count("\n") == 1 and err.startswith("evaluate: error: ")
    assert "ground frame 'floor' is not connected to the camera frame 'camera_optical'" in err
    assert "base_footprint" in err and "--ground-frame" in err  # what is there, the remedy


def test_a_bag_without_tf_cannot_serve_the_ground_source(bags, tmp_path, capsys):
    code, _ = _run(bags["plain"], tmp_path / "eval", "--scale-source", "ground")
    err = capsys.readouterr().err
    assert code == 2 and "ground frame 'base_footprint' is not connected" in err


def test_sensor_depth_in_another_frame_without_its_camera_info_is_refused_in_one_line(
        bags, tmp_path, capsys):
    bag = _copy(bags["offset"], tmp_path / "no_info", predict=False,
                drop=(EXTRA_TOPICS["sensor_depth_info"],))
    out = tmp_path / "eval"
    code, _ = _run(bag, out, "--scale-source", "depth",
                   "--sensor-depth-topic", EXTRA_TOPICS["sensor_depth"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert "is in frame 'depth_optical', not the image's 'camera_optical'" in err
    assert EXTRA_TOPICS["sensor_depth_info"] in err and "--sensor-depth-info-topic" in err


def test_the_fixed_source_applies_the_users_map_and_plots_it(bags, tmp_path, capsys):
    code, metrics = _run(bags["plain"], tmp_path / "eval", "--scale-source", "fixed",
                         "--fixed-scale", str(SCALE), "--fixed-shift", str(SHIFT),
                         "--lidar-topic", DEFAULT_TOPICS["points_lidar"])
    assert code == 0, capsys.readouterr().err
    _assert_metric_from(metrics, "fixed", 1e-4)  # the exact map: nothing lost
    assert all(f["scale"] == SCALE and f["scale_status"] is None for f in metrics["per_frame"])
    assert (tmp_path / "eval" / "scale_over_time.png").exists()


def test_source_none_scores_no_metric_depth_even_with_lidar(bags, tmp_path, capsys):
    code, metrics = _run(bags["plain"], tmp_path / "eval", "--scale-source", "none",
                         "--lidar-topic", DEFAULT_TOPICS["points_lidar"])
    assert code == 0, capsys.readouterr().err
    assert metrics["scale_source"] == "none" and metrics["depth_lidar_aligned"] is None
    assert metrics["lidar_frames"] == 0


def test_auto_takes_lidar_when_a_lidar_topic_is_given(bags, tmp_path, capsys):
    code, metrics = _run(bags["plain"], tmp_path / "eval",
                         "--lidar-topic", DEFAULT_TOPICS["points_lidar"])
    assert code == 0, capsys.readouterr().err
    _assert_metric_from(metrics, "lidar", 0.01)


@pytest.mark.parametrize("lidar, fixed, expected", [
    ("/lidar/points", 2.0, "lidar"), (None, 2.0, "fixed"), (None, 0.0, "none")])
def test_auto_is_lidar_then_fixed_then_none_like_the_node(lidar, fixed, expected):
    assert resolve_source("auto", lidar_topic=lidar, fixed_scale=fixed) == expected
    assert resolve_source("ground", lidar_topic=lidar, fixed_scale=fixed) == "ground"


@pytest.mark.parametrize("flags, fragment", [
    (["--scale-source", "depth"], "--scale-source depth needs --sensor-depth-topic"),
    (["--scale-source", "fixed"], "--scale-source fixed needs --fixed-scale > 0"),
    (["--scale-source", "lidar"], "--scale-source lidar needs --lidar-topic"),
    (["--fixed-scale", "nan"], "--fixed-scale must be a finite number >= 0")])
def test_a_source_without_what_it_needs_is_a_one_line_usage_error(flags, fragment, bags,
                                                                  tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(bags["plain"], tmp_path / "eval", *flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err


# --------------------------------------------------------------------------- /tf

def _tf(parent, child, stamp_ns, translation, yaw):
    from types import SimpleNamespace as NS

    sec, nanosec = divmod(stamp_ns, 10**9)
    t = NS(translation=NS(x=translation[0], y=translation[1], z=translation[2]),
           rotation=NS(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
    return NS(transforms=[NS(header=NS(frame_id=parent, stamp=NS(sec=sec, nanosec=nanosec)),
                             child_frame_id=child, transform=t)])


def test_moving_transforms_interpolate_between_samples_and_never_extrapolate():
    tree = TransformBuffer()
    tree.add_message(_tf("base_link", "camera", 0, (0.0, 0.0, 1.0), 0.0))  # static
    tree.add_message(_tf("odom", "base_link", 10**9, (0.0, 0.0, 0.0), 0.0), moving=True)
    tree.add_message(_tf("odom", "base_link", 3 * 10**9, (2.0, 0.0, 0.0), math.pi / 2),
                     moving=True)
    halfway = tree.lookup("odom", "camera", 2 * 10**9)
    np.testing.assert_allclose(halfway.translation, [1.0, 0.0, 1.0], atol=1e-12)
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(halfway.rotation @ [1.0, 0.0, 0.0], [c, c, 0.0], atol=1e-12)
    exact = tree.lookup("camera", "odom", 3 * 10**9)  # the inverse, on a sample
    np.testing.assert_allclose(exact.rotation @ [2.0, 0.0, 0.0] + exact.translation,
                               [0.0, 0.0, -1.0], atol=1e-12)
    assert tree.lookup("odom", "camera", 0) is None  # before the first sample
    assert tree.lookup("odom", "camera", 4 * 10**9) is None  # after the last
    assert tree.lookup("odom", "camera") is None  # no stamp: static edges only
    assert tree.lookup("base_link", "camera") is not None
    assert tree.frames == ["base_link", "camera", "odom"]

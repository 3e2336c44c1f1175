"""The offline evaluation: bag -> node pipeline -> scores, output bag and report; its errors."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2e_depth_ros.offline import evaluate
from e2e_depth_ros.ros.messages import depth_image_meters
from e2e_depth_ros.offline.eval_types import SKIP_REASONS, EvalOptions, EvalTopics
from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS, write_sample_bag
from e2e_depth_ros.offline.tf_static import StaticTransforms

N_FRAMES = 4
WIDTH, HEIGHT = 64, 48
TOPIC_ARGS = ["--image-topic", DEFAULT_TOPICS["image"],
              "--camera-info-topic", DEFAULT_TOPICS["camera_info"],
              "--gt-depth-topic", DEFAULT_TOPICS["depth_gt"]]
DATA_FILE = {"mcap": "*.mcap", "sqlite3": "*.db3"}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """A small synthetic bag with ground truth in each storage format."""
    root = tmp_path_factory.mktemp("bags")
    return {storage: write_sample_bag(root / storage, storage=storage, n_frames=N_FRAMES,
                                      width=WIDTH, height=HEIGHT)
            for storage in DATA_FILE}


def _read_bag(path):
    """{topic: [(msgtype, message), ...]} of a whole bag, in bag order."""
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([Path(path)]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


def _rewrite_bag(src, dst, edit, *, storage="mcap", extra=None):
    """Copy ``src`` to a new bag, passing every (topic, message) through ``edit``.

    ``edit`` returns the message to write (or None to drop it); ``extra`` maps a new topic
    to (msgtype, function of the copied message's topic and message -> new message or None).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with AnyReader([Path(src)]) as reader, \
            Writer(dst, version=9, storage_plugin=plugin) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store,
                                                offered_qos_profiles=c.ext.offered_qos_profiles)
                 for c in reader.connections}
        for topic, (msgtype, _) in (extra or {}).items():
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            for topic, (msgtype, make) in (extra or {}).items():
                new = make(conn.topic, msg)
                if new is not None:
                    writer.write(conns[topic], stamp, store.serialize_cdr(new, msgtype))
            msg = edit(conn.topic, msg)
            if msg is not None:
                writer.write(conns[conn.topic], stamp, store.serialize_cdr(msg, conn.msgtype))
    return dst


def _stamp(header):
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


SCALE, SHIFT = 4.0, 0.5  # ground truth = SCALE * oracle relative depth + SHIFT


class GroundTruthDepth:
    """The real tiny estimator (normals, names, settings) whose depth is replaced by the
    bag's ground truth under a known affine map: random tiny weights give the LiDAR fit
    nothing to find, so without this no frame would ever be metric."""

    def __init__(self, inner, bag):
        from e2e_depth_ros.ros.messages import image_to_rgb

        self.inner = inner
        msgs = _read_bag(bag)
        gt = {_stamp(m.header): depth_image_meters(m)
              for m in msgs[DEFAULT_TOPICS["depth_gt"]]}
        self.depth = {}
        for msg in msgs[DEFAULT_TOPICS["image"]]:
            depth = gt[_stamp(msg.header)]
            relative = (np.where(np.isfinite(depth), depth, np.nanmax(depth)) - SHIFT) / SCALE
            self.depth[image_to_rgb(msg).tobytes()] = relative.astype(np.float32)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, rgb, *, depth=True, normals=True):
        from dataclasses import replace

        prediction = self.inner.predict(rgb, depth=depth, normals=normals)
        return replace(prediction, depth=self.depth[rgb.tobytes()] if depth else None)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.needs_torch
def test_model_run_scores_writes_node_outputs_with_input_headers_and_a_report(
        storage, bags, tiny_depth, tiny_normals, tmp_path, capsys, monkeypatch):
    factory = evaluate._estimator_factory

    def oracle_factory(args):
        make = factory(args)
        return lambda: GroundTruthDepth(make(), bags[storage])

    monkeypatch.setattr(evaluate, "_estimator_factory", oracle_factory)
    out = tmp_path / "eval"
    code = evaluate.main([
        str(bags[storage]), *TOPIC_ARGS, "--gt-normals-topic", DEFAULT_TOPICS["normals_gt"],
        "--lidar-topic", DEFAULT_TOPICS["points_lidar"], "--depth-model", tiny_depth,
        "--normals-model", tiny_normals, "--device", "cpu", "--processing-resolution", "0",
        "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "GT-aligned" in captured.out and "LiDAR-aligned" in captured.out

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == N_FRAMES and metrics["mode"] == "model"
    for key in ("abs_rel", "delta1"):
        assert math.isfinite(metrics["depth_gt_aligned"][key])
    assert metrics["depth_lidar_aligned"] is not None
    assert set(metrics["normals"]) >= {"mean", "median", "a11", "a22", "a30"}
    assert all(math.isfinite(v) for v in metrics["normals"].values())
    assert 0 <= metrics["normals"]["a11"] <= metrics["normals"]["a22"] \
        <= metrics["normals"]["a30"] <= 1
    assert set(metrics["skipped"]) == set(SKIP_REASONS)
    assert sum(metrics["skipped"].values()) == 0
    frame_keys = {"stamp", "abs_rel", "delta1", "lidar_abs_rel", "lidar_delta1", "scale",
                  "shift", "best_scale", "best_shift", "inliers", "scale_status"}
    assert len(metrics["per_frame"]) == N_FRAMES
    assert all(frame_keys <= set(f) for f in metrics["per_frame"])
    assert all(f["scale_status"] in ("ok", "holding", "none") for f in metrics["per_frame"])

    written = _read_bag(out / "out.mcap")
    source = _read_bag(bags[storage])
    inputs = [_stamp(m.header) for m in source[DEFAULT_TOPICS["image"]]]
    for topic in ("depth/relative", "normals/image"):
        assert [_stamp(m.header) for m in written[f"/e2e_depth/{topic}"]] == inputs
    for topic in ("depth/image", "depth/camera_info", "points"):  # only frames with a scale
        assert {_stamp(m.header) for m in written.get(f"/e2e_depth/{topic}", [])} <= set(inputs)
    # Every frame metric: the LiDAR fit finds the oracle's map and the node's outputs follow.
    assert metrics["lidar_frames"] == N_FRAMES
    assert all(f["lidar_abs_rel"] is not None for f in metrics["per_frame"])
    for topic in ("depth/image", "depth/camera_info", "points"):
        assert [_stamp(m.header) for m in written[f"/e2e_depth/{topic}"]] == inputs, topic
    error = _signed_errors(written["/e2e_depth/depth/image"], source[DEFAULT_TOPICS["depth_gt"]])
    # Measured: AbsRel 0.51 %, signed mean -0.43 % (the LiDAR z-buffer keeps the nearest
    # noisy point per pixel, so the fit reads a little short, as in test_node_lidar).
    assert metrics["depth_lidar_aligned"]["abs_rel"] < 0.01
    assert np.mean(np.abs(error)) == pytest.approx(metrics["depth_lidar_aligned"]["abs_rel"],
                                                   rel=1e-3)
    assert -0.01 < np.mean(error) < 0.0
    relative = written["/e2e_depth/depth/relative"][0]
    assert (relative.encoding, relative.width, relative.height) == ("32FC1", WIDTH, HEIGHT)
    assert len(written[DEFAULT_TOPICS["camera_info"]]) == N_FRAMES
    assert written[DEFAULT_TOPICS["tf_static"]][0].transforms[0].child_frame_id == "lidar"

    report = (out / "report.md").read_text()
    for png in ("errors_over_time.png", "frames.png", "scale_over_time.png"):
        assert (out / png).stat().st_size > 0 and f"]({png})" in report


def _one_frame_model_run(bag, model, out):
    """``evaluate`` on the bag's first frame with ``model``; its exit code."""
    return evaluate.main([
        str(bag), *TOPIC_ARGS, "--depth-model", model, "--normals-model", "none",
        "--device", "cpu", "--processing-resolution", "0", "--max-frames", "1",
        "--no-progress", "--out", str(out)])


@pytest.mark.needs_torch
def test_evaluate_main_opts_in_to_the_allocator_tuning(bags, tiny_depth, tmp_path, monkeypatch):
    import e2e_depth_ros.model.allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_cpu_buffers_mapped", lambda: calls.append(1))
    assert _one_frame_model_run(bags["mcap"], tiny_depth, tmp_path / "eval") == 0
    assert calls == [1]


@pytest.mark.needs_torch
def test_evaluate_says_when_a_checkpoint_is_a_tiny_random_one(bags, tiny_depth, tmp_path,
                                                              capsys):
    assert _one_frame_model_run(bags["mcap"], tiny_depth, tmp_path / "eval") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1, notes
    assert notes[0].startswith("evaluate: note: ") and tiny_depth in notes[0]
    assert "MEANINGLESS" in notes[0]


def _signed_errors(metric_msgs, gt_msgs):
    """(metric - GT) / GT over the pixels where both are valid, all frames pooled."""
    from e2e_depth_ros.ros.messages import image_to_array

    gt = {_stamp(m.header): depth_image_meters(m) for m in gt_msgs}
    errors = []
    for msg in metric_msgs:
        metric, truth = image_to_array(msg), gt[_stamp(msg.header)]
        valid = np.isfinite(metric) & np.isfinite(truth) & (truth > 0)
        errors.append((metric[valid] - truth[valid]) / truth[valid])
    return np.concatenate(errors)


def _recorded_signed_errors(per_frame, bag, *, scale, shift):
    """(metric - GT) / GT of each frame's published metric depth, ``frame.scale * relative +
    frame.shift``, where the recorded relative depth is (GT - shift) / scale."""
    gt = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: depth_image_meters(m)
          for m in _read_bag(bag)[DEFAULT_TOPICS["depth_gt"]]}
    errors = []
    for frame in per_frame:
        truth = gt[frame.stamp_ns]
        valid = np.isfinite(truth)
        metric = frame.scale * (truth[valid] - shift) / scale + frame.shift
        errors.append((metric - truth[valid]) / truth[valid])
    return np.concatenate(errors)


def _pred_bag(src, dst, scale, shift, *, topic="/pred/depth"):
    """The sample bag plus GT depth written as (d - shift) / scale on ``topic``.

    Frame 0's image is made undecodable and the last frame's GT is dropped, so the two
    counted skips show up next to the exact scores.
    """
    stamps = [_stamp(m.header) for m in _read_bag(src)[DEFAULT_TOPICS["image"]]]
    first, last = stamps[0], stamps[-1]

    def edit(name, msg):
        if name == DEFAULT_TOPICS["image"] and _stamp(msg.header) == first:
            msg.encoding = "not_an_encoding"
        if name == DEFAULT_TOPICS["depth_gt"] and _stamp(msg.header) == last:
            return None
        return msg

    def pred(name, msg):
        if name != DEFAULT_TOPICS["depth_gt"]:
            return None
        from dataclasses import replace

        from e2e_depth_ros.ros.messages import image_to_array

        depth = image_to_array(msg)
        values = ((depth - shift) / scale).astype(np.float32)
        return replace(msg, data=values.astype("<f4").view(np.uint8).reshape(-1).copy())

    return _rewrite_bag(src, dst, edit,
                        extra={topic: ("sensor_msgs/msg/Image", pred)})


def test_recorded_affine_prediction_scores_zero_error_and_lidar_recovers_the_map(
        bags, tmp_path):
    bag = _pred_bag(bags["mcap"], tmp_path / "pred_bag", scale=2.5, shift=0.7)
    topics = EvalTopics(
        image=DEFAULT_TOPICS["image"], camera_info=DEFAULT_TOPICS["camera_info"],
        gt_depth=DEFAULT_TOPICS["depth_gt"], lidar=DEFAULT_TOPICS["points_lidar"],
        pred="/pred/depth")
    result = evaluate.evaluate_bag(bag, topics, out_dir=tmp_path / "eval",
                                   options=EvalOptions(progress=False))
    assert result.mode == "recorded-relative"
    assert result.frames == N_FRAMES - 2
    assert result.skipped["undecodable_image"] == 1 and result.skipped["no_gt_match"] == 1
    # One clock: t = 0 is the bag's first image stamp, even though that frame is not scored.
    first = _read_bag(bag)[DEFAULT_TOPICS["image"]][0].header.stamp
    assert result.time_origin == pytest.approx(first.sec + first.nanosec * 1e-9, abs=1e-6)
    assert result.time_origin < min(f.stamp for f in result.per_frame)
    assert result.depth_gt_aligned.abs_rel < 1e-4
    assert result.depth_gt_aligned.delta1 == 1.0
    assert result.lidar_frames == result.frames
    # Measured: AbsRel 0.55 %, signed mean -0.54 %, scale 2.469-2.470 (-1.2 %): the LiDAR
    # fit reads a little short, as in test_node_lidar.
    assert result.depth_lidar_aligned.abs_rel < 0.01
    error = _recorded_signed_errors(result.per_frame, bag, scale=2.5, shift=0.7)
    assert -0.01 < np.mean(error) < 0.0
    for frame in result.per_frame:
        assert frame.best_scale == pytest.approx(2.5, rel=1e-4)
        assert frame.best_shift == pytest.approx(0.7, abs=1e-3)
        assert -0.02 < (frame.scale - 2.5) / 2.5 < 0.0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["skipped"]["no_gt_match"] == 1
    assert saved["scale_source"] == "lidar"
    # out.mcap: what the node would publish from the recorded depth, under its headers (the
    # frame whose image is undecodable has none; the one without GT is published all the same)
    written = _read_bag(tmp_path / "eval" / "out.mcap")
    recorded = {_stamp(m.header): m for m in _read_bag(bag)["/pred/depth"]}
    published = [_stamp(m.header) for m in _read_bag(bag)[DEFAULT_TOPICS["image"]]][1:]
    for topic in ("depth/relative", "depth/image", "depth/camera_info", "points"):
        assert [_stamp(m.header) for m in written[f"/e2e_depth/{topic}"]] == published, topic
    from e2e_depth_ros.ros.messages import image_to_array

    for msg in written["/e2e_depth/depth/relative"]:
        np.testing.assert_array_equal(image_to_array(msg),
                                      image_to_array(recorded[_stamp(msg.header)]))


def test_recorded_metric_depth_is_scored_as_is(bags, tmp_path):
    bag = _pred_bag(bags["mcap"], tmp_path / "pred_bag", scale=1.0, shift=0.0,
                    topic="/robot/depth/image")
    topics = EvalTopics(
        image=DEFAULT_TOPICS["image"], camera_info=DEFAULT_TOPICS["camera_info"],
        gt_depth=DEFAULT_TOPICS["depth_gt"], pred="/robot/depth/image")
    result = evaluate.evaluate_bag(bag, topics, out_dir=tmp_path / "eval",
                                   options=EvalOptions(progress=False,
                                                       write_report=False))
    assert result.mode == "recorded-metric"
    assert result.depth_lidar_aligned.abs_rel < 1e-6
    assert result.depth_lidar_aligned.delta1 == 1.0
    assert all(f.scale is None for f in result.per_frame)


# --------------------------------------------------------------------------- errors

def _expect_error(capsys, argv, *fragments):
    code = evaluate.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err


# Bag checks come before the model loads: this path would fail if it were loaded.
NO_MODEL = ["--depth-model", "/nonexistent/checkpoint", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("value", ["4", "2049", "-1"])
def test_a_processing_resolution_the_node_refuses_is_refused_in_one_line(
        value, bags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(bags["mcap"]), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o"),
                       "--processing-resolution", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("evaluate: error: argument "
                                                   "--processing-resolution: ")
    assert f"16..2048, got {value}" in err
    assert not (tmp_path / "o").exists()


def test_missing_topic_is_named_with_the_topics_the_bag_has(bags, tmp_path, capsys):
    _expect_error(capsys, [str(bags["mcap"]), *TOPIC_ARGS, "--lidar-topic", "/velodyne",
                           *NO_MODEL, "--out", str(tmp_path)],
                  "/velodyne", "not in the bag", DEFAULT_TOPICS["depth_gt"])


def test_topic_of_the_wrong_type_says_which_type_it_has(bags, tmp_path, capsys):
    argv = [str(bags["sqlite3"]), "--image-topic", DEFAULT_TOPICS["image"],
            "--camera-info-topic", DEFAULT_TOPICS["camera_info"],
            "--gt-depth-topic", DEFAULT_TOPICS["camera_info"], *NO_MODEL, "--out", str(tmp_path)]
    _expect_error(capsys, argv, "has type sensor_msgs/msg/CameraInfo",
                  "expected sensor_msgs/msg/Image")


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "64FC1"])
def test_a_depth_image_given_as_the_camera_is_refused_naming_its_encoding(
        encoding, bags, tmp_path, capsys):
    def as_depth(topic, msg):
        from dataclasses import replace

        if topic != DEFAULT_TOPICS["image"]:
            return msg
        size = {"16UC1": 2, "32FC1": 4, "64FC1": 8}[encoding]
        return replace(msg, encoding=encoding, step=msg.width * size,
                       data=np.zeros(msg.width * msg.height * size, np.uint8))

    bag = _rewrite_bag(bags["mcap"], tmp_path / "depth_as_camera", as_depth)
    _expect_error(capsys, [str(bag), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o")],
                  f"{DEFAULT_TOPICS['image']} carries {encoding} images, not a camera's picture",
                  "--image-topic needs a colour or grey image, one of rgb8, ")
    assert not (tmp_path / "o").exists()


def test_unmatched_stamps_are_an_error_not_an_empty_score(bags, tmp_path, capsys):
    def shift(name, msg):
        if name == DEFAULT_TOPICS["depth_gt"]:
            msg.header.stamp.sec += 1
        return msg

    bag = _rewrite_bag(bags["mcap"], tmp_path / "shifted", shift)
    _expect_error(capsys, [str(bag), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o")],
                  "no image/GT pairs", "--stamp-tolerance")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_bag_file_is_one_line(storage, bags, tmp_path, capsys):
    bag = shutil.copytree(bags[storage], tmp_path / "corrupt")
    data = next(bag.glob(DATA_FILE[storage]))
    data.write_bytes(os.urandom(4096))
    _expect_error(capsys, [str(bag), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o")],
                  str(bag))


def test_truncated_mcap_is_one_line(bags, tmp_path, capsys):
    bag = shutil.copytree(bags["mcap"], tmp_path / "truncated")
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    _expect_error(capsys, [str(bag), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o")],
                  "not a readable rosbag2")


def test_nonexistent_path_is_one_line(tmp_path, capsys):
    missing = tmp_path / "no_such_bag"
    _expect_error(capsys, [str(missing), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path)],
                  str(missing), "no such bag")


@pytest.mark.needs_torch
def test_model_that_cannot_load_is_one_line_after_the_bag_checks(bags, tmp_path, capsys):
    _expect_error(capsys, [str(bags["mcap"]), *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path)],
                  "/nonexistent/checkpoint")


def test_console_entry_prints_no_traceback_on_a_corrupt_bag(bags, tmp_path):
    bag = shutil.copytree(bags["mcap"], tmp_path / "corrupt")
    next(bag.glob("*.mcap")).write_bytes(b"\x89MCAP0\r\n" + os.urandom(512))
    proc = subprocess.run([sys.executable, "-m", "e2e_depth_ros.offline.evaluate", str(bag),
                           *TOPIC_ARGS, *NO_MODEL, "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("evaluate: error: ") and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("module", ["offline.evaluate", "offline.bag_io", "offline.report",
                                    "offline.eval_types", "offline.frame_plan",
                                    "offline.frame_eval", "offline.eval_messages"])
def test_import_and_help_stay_light(module):
    code = (f"import sys, e2e_depth_ros.{module} as e\n"
            "heavy = [m for m in ('torch', 'rosbags', 'matplotlib', 'cv2', 'rclpy') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- tf_static

def _tf_message(parent, child, translation, quaternion):
    from types import SimpleNamespace as NS

    t = NS(translation=NS(x=translation[0], y=translation[1], z=translation[2]),
           rotation=NS(x=quaternion[0], y=quaternion[1], z=quaternion[2], w=quaternion[3]))
    return NS(transforms=[NS(header=NS(frame_id=parent), child_frame_id=child, transform=t)])


def test_static_transforms_chain_edges_in_both_directions():
    s = math.sqrt(0.5)
    tree = StaticTransforms()
    tree.add_message(_tf_message("base_link", "camera_optical", (0.1, 0.0, 0.5),
                                 (-0.5, 0.5, -0.5, 0.5)))
    tree.add_message(_tf_message("/base_link", "lidar", (0.0, 0.2, 0.8), (0.0, 0.0, s, s)))
    p_lidar = np.array([[2.0, -1.0, 0.3]])
    cam_from_lidar = tree.lookup("camera_optical", "lidar")
    base_from_lidar = tree.lookup("base_link", "lidar")
    base_from_cam = tree.lookup("base_link", "camera_optical")
    p_base = p_lidar @ base_from_lidar.rotation.T + base_from_lidar.translation
    p_cam = p_lidar @ cam_from_lidar.rotation.T + cam_from_lidar.translation
    np.testing.assert_allclose(p_cam @ base_from_cam.rotation.T + base_from_cam.translation,
                               p_base, atol=1e-12)
    np.testing.assert_allclose(p_base, [[1.0, 2.2, 1.1]], atol=1e-12)  # yaw 90°: x -> y
    assert tree.lookup("camera_optical", "odom") is None
    assert tree.frames == ["base_link", "camera_optical", "lidar"]


# --------------------------------------------------------------------------- ground truth

def _image(array, encoding):
    from rosbags.typesys import Stores, get_typestore

    from e2e_depth_ros.ros.messages import build_image

    types = get_typestore(Stores.ROS2_HUMBLE).types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam")
    return build_image(types["sensor_msgs/msg/Image"], header, array, encoding)


def test_gt_depth_16uc1_is_millimeters_and_32fc1_meters_with_invalid_values_nan():
    mm = np.array([[0, 1500, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(depth_image_meters(_image(mm, "16UC1")),
                                  np.array([[np.nan, 1.5, 65.535]], dtype=np.float32))
    meters = np.array([[np.inf, 2.25, np.nan, 0.0, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(depth_image_meters(_image(meters, "32FC1")),
                                  np.array([[np.nan, 2.25, np.nan, np.nan, np.nan]], np.float32))
    from e2e_depth_ros.errors import MessageError

    with pytest.raises(MessageError, match="16UC1 .* or 32FC1 .*got 'mono8'"):
        depth_image_meters(_image(np.zeros((2, 2), np.uint8), "mono8"))


# --------------------------------------------------------------------------- bare files, output

def test_bare_mcap_file_is_evaluated_and_its_out_mcap_scores_again_as_a_bare_file(
        bags, tiny_depth, tmp_path, capsys):
    bare = next(bags["mcap"].glob("*.mcap"))  # the file itself, no metadata.yaml beside it
    first = tmp_path / "first"
    code = evaluate.main([str(bare), *TOPIC_ARGS, "--lidar-topic", DEFAULT_TOPICS["points_lidar"],
                          "--depth-model", tiny_depth, "--device", "cpu", "--no-progress",
                          "--processing-resolution", "0", "--out", str(first)])
    assert code == 0, capsys.readouterr().err
    # out.mcap holds what a second evaluation needs: the node's relative depth, the inputs
    # and the ground truth, so the tool's own output feeds back in as a bare file.
    again = tmp_path / "again"
    code = evaluate.main([str(first / "out.mcap"), *TOPIC_ARGS,
                          "--lidar-topic", DEFAULT_TOPICS["points_lidar"],
                          "--pred-topic", "/e2e_depth/depth/relative", "--no-progress",
                          "--out", str(again)])
    assert code == 0, capsys.readouterr().err
    scored = [json.loads((d / "metrics.json").read_text()) for d in (first, again)]
    assert scored[1]["mode"] == "recorded-relative"
    assert scored[1]["frames"] == scored[0]["frames"] == N_FRAMES
    assert scored[1]["depth_gt_aligned"] == scored[0]["depth_gt_aligned"]
    assert [f["stamp"] for f in scored[1]["per_frame"]] == \
        [f["stamp"] for f in scored[0]["per_frame"]]
    copied = _read_bag(first / "out.mcap")
    for topic in ("depth_gt", "points_lidar", "camera_info", "image"):
        assert len(copied[DEFAULT_TOPICS[topic]]) == N_FRAMES, topic


def _fake_earlier_run(folder):
    folder.mkdir()
    (folder / "metrics.json").write_text("earlier run\n")
    return folder


def test_existing_metrics_json_is_refused_without_overwrite_before_the_bag_is_read(
        bags, tmp_path, capsys):
    out = _fake_earlier_run(tmp_path / "out")
    _expect_error(capsys, [str(bags["mcap"]), *TOPIC_ARGS, *NO_MODEL, "--out", str(out)],
                  str(out / "metrics.json"), "exists", "--overwrite")
    assert (out / "metrics.json").read_text() == "earlier run\n"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_overwrite_replaces_an_earlier_runs_files(bags, tiny_depth, tmp_path, capsys):
    out = _fake_earlier_run(tmp_path / "out")
    (out / "out.mcap").write_bytes(b"earlier bag")
    code = evaluate.main([str(bags["mcap"]), *TOPIC_ARGS, "--depth-model", tiny_depth,
                          "--device", "cpu", "--processing-resolution", "0", "--no-progress",
                          "--out", str(out), "--overwrite"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["frames"] == N_FRAMES
    assert len(_read_bag(out / "out.mcap")["/e2e_depth/depth/relative"]) == N_FRAMES


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_named_out_mcap_is_never_deleted_even_with_overwrite(
        overwrite, bags, tmp_path, capsys):
    out = tmp_path / "out"
    keep = out / "out.mcap" / "user_data.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("not the tool's")
    _expect_error(capsys, [str(bags["mcap"]), *TOPIC_ARGS, *NO_MODEL, "--out", str(out),
                           *overwrite],
                  str(out / "out.mcap"), "is not a file")
    assert keep.read_text() == "not the tool's"
    assert sorted(p.name for p in out.iterdir()) == ["out.mcap"]


def _gt_edit(kind):
    """An edit for _rewrite_bag that makes every ground-truth depth unusable in one way."""
    def edit(name, msg):
        if name != DEFAULT_TOPICS["depth_gt"]:
            return msg
        from dataclasses import replace

        from e2e_depth_ros.ros.messages import build_image, image_to_array

        depth = image_to_array(msg)
        if kind == "wrong_size":
            return build_image(type(msg), msg.header, depth[: HEIGHT // 2], "32FC1")
        if kind == "wrong_encoding":
            return build_image(type(msg), msg.header,
                               np.zeros(depth.shape, np.uint8), "mono8")
        values = {"all_nan": np.nan, "all_zero": 0.0, "all_inf": np.inf, "all_negative": -2.0}
        new = np.full(depth.shape, values[kind], np.float32)
        return replace(msg, data=new.view(np.uint8).reshape(-1).copy())
    return edit


@pytest.mark.parametrize("kind, fragment", [
    ("wrong_size", "64x24, the image is 64x48"), ("all_nan", "fewer than 2 valid pixels"),
    ("all_zero", "fewer than 2 valid pixels"), ("all_inf", "fewer than 2 valid pixels"),
    ("all_negative", "fewer than 2 valid pixels"), ("wrong_encoding", "got 'mono8'")])
def test_unusable_ground_truth_exits_2_and_writes_nothing(kind, fragment, bags, tmp_path,
                                                          capsys):
    bag = _rewrite_bag(bags["mcap"], tmp_path / kind, _gt_edit(kind))
    out = tmp_path / "out"
    # NO_MODEL: refused before the model loads (this path would fail if it did)
    _expect_error(capsys, [str(bag), *TOPIC_ARGS, *NO_MODEL, "--out", str(out)],
                  "no usable ground-truth depth", fragment, "nothing written")
    assert not out.exists()


def test_no_scorable_frame_after_the_run_leaves_no_files(bags, tmp_path):
    # A constant recorded prediction passes the ground-truth checks but cannot be aligned.
    bag = _pred_bag(bags["mcap"], tmp_path / "pred_bag", scale=1.0, shift=0.0)

    def flat(name, msg):
        from dataclasses import replace

        if name != "/pred/depth":
            return msg
        return replace(msg, data=np.full(WIDTH * HEIGHT, 0.5, "<f4").view(np.uint8))

    constant = _rewrite_bag(bag, tmp_path / "constant", flat)
    topics = EvalTopics(image=DEFAULT_TOPICS["image"],
                        camera_info=DEFAULT_TOPICS["camera_info"],
                        gt_depth=DEFAULT_TOPICS["depth_gt"], pred="/pred/depth")
    out = tmp_path / "existing"
    out.mkdir()
    from e2e_depth_ros.errors import BagError

    with pytest.raises(BagError, match="no frame could be scored:.*prediction constant.*"
                       "nothing written"):
        evaluate.evaluate_bag(constant, topics, out_dir=out,
                              options=EvalOptions(progress=False))
    assert list(out.iterdir()) == []

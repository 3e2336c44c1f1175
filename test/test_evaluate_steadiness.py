"""evaluate's steadiness over time: the scale change of metric depth and one map for the
relative depth of the whole sequence, from recorded predictions with a known jitter.

The recorded prediction of frame k is its ground truth under a known map, so every number
has a closed form: no model runs, no scale source fits."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from e2e_depth_ros.offline import evaluate
from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS, write_sample_bag

N_FRAMES = 5
WIDTH, HEIGHT = 64, 48  # 3072 pixels a frame: under the one map's subsample, all are kept
ARGS = ["--image-topic", DEFAULT_TOPICS["image"],
        "--camera-info-topic", DEFAULT_TOPICS["camera_info"],
        "--gt-depth-topic", DEFAULT_TOPICS["depth_gt"], "--no-progress"]
# Recorded relative depth of frame k: (GT - shift_k) / scale_k, a map that jitters.
JITTER = [(2.5, 0.7), (2.0, 0.2), (3.0, 1.0), (2.5, 0.0), (1.5, 0.5)]
# Recorded metric depth of frame k: factor_k * GT.
FACTORS = [1.0, 1.1, 1.1, 1.0, 1.05]


def _with_prediction(src, dst, topic, make):
    """``src`` plus, on ``topic``, ``make(k, gt)`` of the k-th ground-truth image as 32FC1."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from e2e_depth_ros.ros.messages import image_to_array

    store = get_typestore(Stores.ROS2_HUMBLE)
    with AnyReader([Path(src)]) as reader, Writer(dst, version=9) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store,
                                                offered_qos_profiles=c.ext.offered_qos_profiles)
                 for c in reader.connections}
        pred = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        k = 0
        for conn, stamp, raw in reader.messages():
            writer.write(conns[conn.topic], stamp, raw)
            if conn.topic == DEFAULT_TOPICS["depth_gt"]:
                msg = reader.deserialize(raw, conn.msgtype)
                values = make(k, image_to_array(msg)).astype("<f4")
                msg = replace(msg, data=values.view(np.uint8).reshape(-1).copy())
                writer.write(pred, stamp, store.serialize_cdr(msg, conn.msgtype))
                k += 1
    return dst


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """The sample bag and its ground-truth frames in stamp order."""
    from rosbags.highlevel import AnyReader

    from e2e_depth_ros.ros.messages import depth_image_meters

    bag = write_sample_bag(tmp_path_factory.mktemp("temporal") / "src", n_frames=N_FRAMES,
                           width=WIDTH, height=HEIGHT)
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == DEFAULT_TOPICS["depth_gt"]]
        gt = [depth_image_meters(reader.deserialize(raw, c.msgtype))
              for c, _, raw in reader.messages(connections=conns)]
    return bag, gt


def _expected_one_map(gt):
    """Per-frame AbsRel under one least-squares map over every valid pixel of JITTER."""
    valid = [np.isfinite(g) & (g > 0) for g in gt]
    rel = [(g[v] - shift) / scale for g, v, (scale, shift) in zip(gt, valid, JITTER)]
    truth = [g[v] for g, v in zip(gt, valid)]
    s, t = np.polyfit(np.concatenate(rel).astype(np.float64), np.concatenate(truth), 1)
    per_frame = [float(np.mean(np.abs(s * r + t - g) / g)) for r, g in zip(rel, truth)]
    return s, t, per_frame


def test_recorded_relative_with_a_jittering_map_scores_one_map_apart_from_per_frame_fits(
        ground_truth, tmp_path, capsys):
    src, gt = ground_truth
    bag = _with_prediction(src, tmp_path / "bag", "/pred/depth",
                           lambda k, g: (g - JITTER[k][1]) / JITTER[k][0])
    out = tmp_path / "eval"
    code = evaluate.main([str(bag), *ARGS, "--pred-topic", "/pred/depth", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "recorded-relative" and metrics["frames"] == N_FRAMES
    # each frame's own fit undoes its map; one map for all five cannot
    assert metrics["depth_gt_aligned"]["abs_rel"] < 1e-5
    s, t, per_frame = _expected_one_map(gt)
    one = metrics["depth_one_map"]
    assert one["scale"] == pytest.approx(s, rel=1e-4)
    assert one["shift"] == pytest.approx(t, rel=1e-4, abs=1e-4)
    assert one["pixels_per_frame"] == 20_000
    assert one["valid"] == sum(int(np.count_nonzero(np.isfinite(g))) for g in gt)
    assert [f["one_map_abs_rel"] for f in metrics["per_frame"]] == \
        pytest.approx(per_frame, rel=1e-4)
    assert one["abs_rel"] == pytest.approx(np.mean(per_frame), rel=1e-4)
    assert one["abs_rel"] > 0.1  # measured 0.33: the jitter is large
    # no metric depth here: no scale change, and the table says the one map's score
    assert metrics["scale_change"] is None
    assert all(f["log_scale_ratio"] is None for f in metrics["per_frame"])
    row = next(line for line in stdout.splitlines() if line.startswith("depth, one map"))
    assert f"{one['abs_rel']:.4f}" in row
    report = (out / "report.md").read_text()
    assert "## Steadiness over time" in report and "depth, one map for the sequence" in report
    assert "![Steadiness over time](temporal_consistency.png)" in report
    assert (out / "temporal_consistency.png").stat().st_size > 0


def test_recorded_metric_with_scale_jumps_reports_the_mean_frame_to_frame_change(
        ground_truth, tmp_path):
    src, gt = ground_truth
    bag = _with_prediction(src, tmp_path / "bag", "/robot/depth/image",
                           lambda k, g: FACTORS[k] * g)
    out = tmp_path / "eval"
    assert evaluate.main([str(bag), *ARGS, "--pred-topic", "/robot/depth/image",
                          "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "recorded-metric"
    logs = [math.log(f) for f in FACTORS]
    ratios = [f["log_scale_ratio"] for f in metrics["per_frame"]]
    assert ratios == pytest.approx(logs, abs=1e-6)
    steps = [abs(b - a) for a, b in zip(logs, logs[1:])]  # log 1.1, 0, log 1.1, log 1.05
    change = metrics["scale_change"]
    assert change["pairs"] == N_FRAMES - 1
    assert change["mean_abs_log_change"] == pytest.approx(np.mean(steps), abs=1e-6)
    assert metrics["scale_change"]["mean_abs_log_change"] == pytest.approx(0.0599, abs=1e-4)
    # recorded metric depth is also scored under one map: the factors wander, so it is > 0
    assert 0.01 < metrics["depth_one_map"]["abs_rel"] < 0.1
    report = (out / "report.md").read_text()
    assert "scale change, frame to frame: 0.0599 (5.99 % a frame), 4 pairs, recorded " \
        "metric depth" in report

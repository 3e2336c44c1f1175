"""evaluate --temporal on recorded bags: the bag's /tf as odometry, gaps bridged, out.mcap.

The bags are rendered drives (offline.drives) with flickering recorded predictions on
/camera/depth_pred, exact odometry on /tf and a sparse sensor depth with a gap.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from e2e_depth_ros.offline.drives import make_drive, write_drive_bag
from e2e_depth_ros.offline.evaluate import main

GAP = (8, 14)  # frames without sensor depth: 0.6 s


def _args(bag, out, *extra):
    return [str(bag), "--image-topic", "/camera/image_raw",
            "--camera-info-topic", "/camera/camera_info", "--gt-depth-topic",
            "/camera/depth_gt", "--pred-topic", "/camera/depth_pred", "--no-progress",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def drive():
    return make_drive("forward", 20, width=160, height=120, speed=1.0)


@pytest.fixture(scope="module")
def bags(tmp_path_factory, drive):
    root = tmp_path_factory.mktemp("drive_bags")
    camera, frames = drive
    return {
        "gap": write_drive_bag(root / "gap", camera, frames, metric_every=1, metric_gap=GAP),
        "relative": write_drive_bag(root / "relative", camera, frames),
        "no_tf": write_drive_bag(root / "no_tf", camera, frames, tf=False),
    }


def _images(path, topic):
    """{stamp ns: array} of one image topic of a written bag."""
    from rosbags.highlevel import AnyReader

    from e2e_depth_ros.ros.messages import image_to_array

    out = {}
    with AnyReader([Path(path)]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            out[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = \
                image_to_array(msg)
    return out


def _truth(drive):
    _, frames = drive
    return [f.depth for f in frames]


def _one_map(relative, truth):
    p = np.concatenate([r.ravel() for r in relative])
    g = np.concatenate([t.ravel() for t in truth])
    s, t = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), g, rcond=None)[0]
    return float(np.mean(np.abs(s * p + t - g) / g))


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_a_sensor_depth_gap_stays_metric_in_out_mcap(bags, drive, tmp_path, capsys):
    sources = ["--scale-source", "depth", "--sensor-depth-topic", "/depth_sensor/image"]
    assert main(_args(bags["gap"], tmp_path / "on", "--temporal", *sources)) == 0
    assert main(_args(bags["gap"], tmp_path / "off", "--no-temporal", *sources)) == 0
    truth = _truth(drive)
    aligned = list(_images(tmp_path / "on" / "out.mcap", "/e2e_depth/depth/image").values())
    held = list(_images(tmp_path / "off" / "out.mcap", "/e2e_depth/depth/image").values())
    assert len(aligned) == len(held) == 20  # the filter holds too, with a wrong scale

    def gap_abs_rel(metric):
        return max(float(np.nanmean(np.abs(metric[i] - truth[i]) / truth[i]))
                   for i in range(*GAP))

    assert gap_abs_rel(aligned) < 0.04
    assert gap_abs_rel(held) > 0.1  # the per-frame jitter the hold cannot follow
    on, off = _metrics(tmp_path / "on"), _metrics(tmp_path / "off")
    statuses = [f["scale_status"] for f in on["per_frame"]]
    assert statuses[GAP[0]:GAP[1]] == ["propagated"] * (GAP[1] - GAP[0])
    assert on["scale_change"]["pairs"] == off["scale_change"]["pairs"] == 19
    assert on["scale_change"]["mean_abs_log_change"] < 0.01
    assert off["scale_change"]["mean_abs_log_change"] > 0.05


def test_recorded_relative_depth_is_aligned_with_the_bags_odometry(bags, drive, tmp_path):
    assert main(_args(bags["relative"], tmp_path / "on", "--temporal")) == 0
    assert main(_args(bags["relative"], tmp_path / "off")) == 0
    truth = _truth(drive)
    on = list(_images(tmp_path / "on" / "out.mcap", "/e2e_depth/depth/relative").values())
    off = list(_images(tmp_path / "off" / "out.mcap", "/e2e_depth/depth/relative").values())
    assert len(on) == len(off) == 20
    assert _one_map(off, truth) > 0.1
    assert _one_map(on, truth) < 0.025
    # the evaluation's own score says the same (a pixel subsample of each frame)
    one_map_on = _metrics(tmp_path / "on")["depth_one_map"]["abs_rel"]
    assert one_map_on == pytest.approx(_one_map(on, truth), rel=0.1)
    assert _metrics(tmp_path / "off")["depth_one_map"]["abs_rel"] > 0.1


def test_without_odometry_in_the_bag_the_note_says_so(bags, drive, tmp_path):
    assert main(_args(bags["no_tf"], tmp_path / "out", "--temporal")) == 0
    notes = json.loads((tmp_path / "out" / "metrics.json").read_text())["notes"]
    assert notes == {"no transform odom -> camera_optical at the image's stamp: aligned "
                     "without odometry": 20}
    relative = list(_images(tmp_path / "out" / "out.mcap", "/e2e_depth/depth/relative").values())
    assert 0.025 < _one_map(relative, _truth(drive)) < 0.04  # the same pixels: worse, steady


def test_a_negative_max_gap_is_refused(bags, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args(bags["relative"], tmp_path / "out", "--temporal-max-gap", "-1"))
    assert "--temporal-max-gap must be a finite number >= 0, got -1.0" in \
        capsys.readouterr().err


@pytest.mark.needs_torch
def test_a_models_relative_depth_is_one_affine_map_of_its_own_per_frame(
        bags, tiny_depth, tmp_path):
    """With a model (a tiny random one), --temporal publishes each frame's own output under
    an affine map, the first frame unchanged: alignment never reshapes a depth map."""
    model = ["--depth-model", tiny_depth, "--device", "cpu", "--processing-resolution", "0",
             "--max-frames", "4"]
    for name, flag in (("on", "--temporal"), ("off", "--no-temporal")):
        args = _args(bags["relative"], tmp_path / name, flag, *model)
        args.remove("--pred-topic")
        args.remove("/camera/depth_pred")
        assert main(args) == 0
    on = list(_images(tmp_path / "on" / "out.mcap", "/e2e_depth/depth/relative").values())
    off = list(_images(tmp_path / "off" / "out.mcap", "/e2e_depth/depth/relative").values())
    assert len(on) == len(off) == 4
    np.testing.assert_array_equal(on[0], off[0])
    maps = []
    for aligned, raw in zip(on[1:], off[1:]):
        a, b = np.polyfit(raw.ravel(), aligned.ravel(), 1)
        assert a > 0
        np.testing.assert_allclose(aligned, a * raw + b, atol=1e-5 * max(1.0, abs(b)))
        maps.append((a, b))
    assert any(abs(a - 1) > 1e-3 or abs(b) > 1e-3 for a, b in maps)  # it did align

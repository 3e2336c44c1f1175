"""The demo end to end: sample bag -> the real node (a child process) -> recording -> scores."""

import json
import os
import subprocess
import sys
import threading

import pytest

from e2e_depth_ros.offline import demo
from e2e_depth_ros.offline.recording import Recording
from e2e_depth_ros.offline.scenes import matrix_to_quaternion
from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS, default_extrinsic

# conftest's domain D is in 1..100; D + 50 (mod 100) is too, and never D: no cross-talk
# between the demo's DDS participants and the in-process node tests'.
DEMO_DOMAIN = str(1 + (int(os.environ["ROS_DOMAIN_ID"]) + 49) % 100)
SMALL = ["--frames", "4", "--width", "64", "--height", "48", "--processing-resolution", "64",
         "--device", "cpu"]


def run_demo(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=DEMO_DOMAIN, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "e2e_depth_ros.offline.demo", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def read_stamps(bag) -> dict[str, list[int]]:
    """Header stamps (ns) per topic, in bag order; /tf_static by its transforms' header."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    stamps: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for conn in reader.connections:
            stamps.setdefault(conn.topic, [])
        for conn, _, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            header = msg.transforms[0].header if conn.topic == "/tf_static" else msg.header
            stamps[conn.topic].append(header.stamp.sec * 1_000_000_000 + header.stamp.nanosec)
    return stamps


@pytest.mark.slow
@pytest.mark.needs_torch
def test_tiny_demo_runs_end_to_end_and_records_outputs_with_the_sample_headers(tmp_path):
    out = tmp_path / "demo"
    # A fixed scale makes every frame metric with random tiny weights (a LiDAR fit to them
    # may or may not succeed), so the metric outputs and their pairing are checked on all.
    done = run_demo("--tiny", "--out", str(out), "--fixed-scale", "4", "--fixed-shift", "0.5",
                    *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "MEANINGLESS" in done.stdout and f"ROS_DOMAIN_ID={DEMO_DOMAIN}" in done.stdout
    assert "Traceback" not in (out / "node.log").read_text()

    sample, recorded = read_stamps(out / "sample"), read_stamps(out / "recording")
    images = sample[DEFAULT_TOPICS["image"]]
    assert len(images) == 4
    for topic in DEFAULT_TOPICS.values():  # inputs, ground truth and /tf_static copied as-is
        assert recorded[topic] == sample[topic], topic
    for name in demo.OUTPUTS:  # every output listed, even one the tiny model left empty
        assert f"{demo.NAMESPACE}/{name}" in recorded
    assert recorded[f"{demo.NAMESPACE}/depth/relative"] == images  # lock-step: every frame
    assert recorded[f"{demo.NAMESPACE}/normals/image"] == images
    # Every frame metric, and each depth/image with the camera_info of its stamp (the pair
    # depth_image_proc and RTAB-Map need), and its cloud.
    for name in ("depth/image", "depth/camera_info", "points"):
        assert sorted(recorded[f"{demo.NAMESPACE}/{name}"]) == images, name
    assert "warning" not in done.stdout

    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["mode"] == "recorded-relative"
    assert (out / "evaluation" / "report.md").is_file()
    published = json.loads((out / "evaluation" / "published_metric" / "metrics.json")
                           .read_text())
    assert published["mode"] == "recorded-metric"
    assert published["frames"] == published["lidar_frames"] == 4
    assert "fixed scale: metric depth = 4 * relative + 0.5 m" in done.stdout
    assert "AbsRel" in done.stdout and "frames received 4, processed 4" in done.stdout


@pytest.mark.needs_torch
def test_unreachable_hub_models_exit_2_with_one_sentence_on_how_to_run_offline(tmp_path):
    done = run_demo("--out", str(tmp_path / "demo"), "--frames", "1", "--width", "32",
                    "--height", "24", "--device", "cpu", env_extra={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("demo: error: the published models")
    for hint in ("`bash run.sh demo --depth-model DIR --normals-model DIR`",
                 "`bash run.sh demo --tiny`"):
        assert hint in errors[0]


def test_node_command_passes_models_namespace_remaps_and_the_lidar_extrinsic():
    extrinsic = default_extrinsic()
    settings = demo.NodeSettings("/ckpt/depth", None, "cpu", 256, lidar_frame="lidar",
                                 translation=tuple(extrinsic.translation),
                                 quaternion_xyzw=matrix_to_quaternion(extrinsic.rotation))
    topics = demo.BagTopics("/camera/image_raw", "/camera/camera_info", "/lidar/points",
                            None, None)
    argv = demo.node_command(settings, topics)
    assert argv[1:4] == ["-m", "e2e_depth_ros.node", "--ros-args"]
    pairs = {argv[i + 1] for i in range(len(argv) - 1) if argv[i] in ("-p", "-r")}
    assert {"depth_model:=/ckpt/depth", 'normals_model:=""', "processing_resolution:=256",
            "lidar_extrinsic_frame:=lidar", "__ns:=/e2e_depth", "image:=/camera/image_raw",
            "camera_info:=/camera/camera_info", "points_lidar:=/lidar/points"} <= pairs
    translation = next(p for p in pairs if p.startswith("lidar_extrinsic_translation:="))
    values = [float(v) for v in translation.split(":=")[1].strip("[]").split(",")]
    assert values == pytest.approx(list(extrinsic.translation), abs=1e-12)
    assert all("." in v for v in translation.split(":=")[1].strip("[]").split(","))


def test_tiny_with_an_explicit_model_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--tiny", "--depth-model", "/somewhere"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "demo: error: --tiny makes its own checkpoints; leave out --depth-model/--normals-model")


def test_a_split_depth_image_and_camera_info_pair_is_found_by_stamp():
    from e2e_depth_ros.ros.bag_player import ReplayPeer

    peer = object.__new__(ReplayPeer)  # its pair bookkeeping only, without DDS
    peer._cond = threading.Condition()
    peer.pair = tuple(f"{demo.NAMESPACE}/{name}" for name in demo.PAIRED)
    peer._seen = {f"{demo.NAMESPACE}/depth/image": {1, 2, 3},
                  f"{demo.NAMESPACE}/depth/camera_info": {1, 3, 4}}
    assert peer.unpaired() == [2, 4]
    assert peer.wait_pairs(0.05) == [2, 4]
    peer._seen[f"{demo.NAMESPACE}/depth/camera_info"] = {1, 2, 3}
    assert peer.wait_pairs(0.05) == []


def test_recording_copies_messages_of_a_bare_mcap_file(tmp_path):
    from rosbags.rosbag2 import Reader

    from e2e_depth_ros.offline.synthetic import write_sample_bag

    bare = next(write_sample_bag(tmp_path / "bag", n_frames=2, width=32, height=24)
                .glob("*.mcap"))
    recording = Recording(tmp_path / "recording")
    with Reader(bare) as reader:  # no metadata.yaml: the connections carry no type hash
        assert not any(c.digest for c in reader.connections)
        for conn, bag_time, raw in reader.messages():
            recording.copy(conn, bag_time, raw)
    recording.close()
    assert read_stamps(tmp_path / "recording") == read_stamps(bare)


@pytest.mark.parametrize("name", ["sample", "recording"])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_an_output_name_the_demo_did_not_write_is_refused_not_removed(
        name, kind, tmp_path, capsys):
    out = tmp_path / "demo"
    theirs = out / name
    if kind == "folder":
        theirs.mkdir(parents=True)
        (theirs / "thesis.tex").write_text("months of work")
    else:
        out.mkdir()
        theirs.write_text("months of work")
    assert demo.main(["--out", str(out), "--tiny", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"demo: error: {theirs} exists and was not "
                                               "written by the demo")
    kept = theirs / "thesis.tex" if kind == "folder" else theirs
    assert kept.read_text() == "months of work"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else was written


def test_an_earlier_demo_output_carrying_its_marker_is_replaced(tmp_path):
    (tmp_path / "recording").mkdir()
    earlier = demo._mark(tmp_path / "recording")  # what the demo's previous run left
    (earlier / "old.mcap").write_bytes(b"old")
    assert demo._fresh(earlier) == earlier and not earlier.exists()
    assert demo._fresh(earlier) == earlier  # nothing there: nothing to do


@pytest.mark.parametrize("module", ["offline.demo", "offline.node_process", "offline.recording",
                                    "ros.bag_player"])
def test_importing_the_demo_and_its_player_loads_no_rclpy(module):
    code = (f"import sys, e2e_depth_ros.{module}\n"
            "heavy = [m for m in ('rclpy', 'torch', 'rosbags') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("bare", [False, True])
def test_the_lidar_extrinsic_of_a_given_bag_comes_from_its_tf_static(bare, tmp_path):
    import numpy as np

    from e2e_depth_ros.offline.synthetic import write_sample_bag

    bag = write_sample_bag(tmp_path / "bag", n_frames=2, width=32, height=24)
    if bare:  # a lone .mcap file, no metadata.yaml
        bag = next(bag.glob("*.mcap"))
    d = DEFAULT_TOPICS
    topics = demo.BagTopics(d["image"], d["camera_info"], d["points_lidar"], d["depth_gt"],
                            d["normals_gt"])
    frame, extrinsic = demo.lidar_extrinsic(bag, topics, sample=False)
    assert frame == "lidar"
    np.testing.assert_allclose(extrinsic.rotation, default_extrinsic().rotation, atol=1e-9)
    np.testing.assert_allclose(extrinsic.translation, default_extrinsic().translation,
                               atol=1e-9)

"""``demo``: the whole pipeline on a synthetic sequence, through the REAL node, in one command.

    demo [--out DIR] [--tiny | --depth-model M --normals-model M] [--device D]
         [--processing-resolution N] [--frames N --width W --height H | --bag PATH]
         [--rate R] [--frame-timeout S] [--startup-timeout S]

1. writes a small sample rosbag2 with ground truth (``synthetic.write_sample_bag``) into
   DIR/sample, unless ``--bag`` names one;
2. starts ``python -m e2e_depth_ros.node`` as a child process in namespace /e2e_depth, with
   the models, device, processing resolution and the LiDAR extrinsic as parameters, and
   waits until discovery shows its topics (model loading happens before that);
3. replays the bag's camera_info, LiDAR and image messages with their ORIGINAL headers:
   lock-step by default (one frame, wait for its depth/relative, the next), or in real
   time with ``--rate R`` (the node then drops frames it cannot keep up with);
4. records the node's outputs plus copies of the inputs, ground truth and /tf_static into
   DIR/recording (MCAP), so the recording is self-contained and replays into RViz;
5. scores the recording with ``evaluate.evaluate_bag`` into DIR/evaluation and prints the
   table and the node's last /diagnostics summary.

The node child process lives in ``node_process``, the recording in ``recording``, and the
live rclpy part (the player/recorder peer) in ``e2e_depth_ros.ros.bag_player``, imported
inside ``run`` only, so importing this module never loads rclpy.
No ROS install is needed (rclpy from wheels, rosbags for bags). DDS discovery stays on the
machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID (the environment's, or
a random one that is printed) are set for this process and the node. Expected failures print
one line ``demo: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.offline.cli import OneLineParser  # standard library only
from e2e_depth_ros.offline.node_process import (NAMESPACE, NODE_NAME, BagTopics, NodeProcess,
                                                NodeSettings, node_command, startup_failure)
from e2e_depth_ros.offline.recording import Recording
from e2e_depth_ros.ros.outputs import RECORDED  # standard library only: --help stays instant

if TYPE_CHECKING:  # the live part (rclpy) is imported inside run(), never at import
    from e2e_depth_ros.ros.bag_player import ReplayedFrame, ReplayPeer

PROG = "demo"
PAIR_TIMEOUT_S = 5.0  # for a depth/camera_info to follow its depth/image
GPU_RESOLUTION = 768  # the paper's processing resolution
CPU_RESOLUTION = 256  # ~9x fewer pixels: seconds, not minutes, per frame on a CPU
# The node's outputs the demo records (relative name, ROS 2 message type).
OUTPUTS = {output.topic: output.msgtype for output in RECORDED}
# depth_image_proc and RTAB-Map need both of one stamp: the recording never splits them.
PAIRED = ("depth/image", "depth/camera_info")
TINY_NOTE = ("TINY RANDOM-WEIGHT checkpoints: the pipeline runs for real, but the predictions "
             "and scores are MEANINGLESS")


class DemoError(Exception):
    """An expected failure; ``main`` prints it as one line and exits with code 2."""


def say(text: str) -> None:
    """Progress goes to stdout, flushed, so a piped or captured run shows it in order."""
    print(f"{PROG}: {text}", flush=True)


# ----------------------------------------------------------------------- environment

def ros_environment(environ: dict[str, str] | None = None) -> int:
    """Keep DDS on this machine and pick the domain; must run before rclpy.init.

    The same ``os.environ`` is inherited by the node child process, so both agree.
    """
    env = os.environ if environ is None else environ
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the range above
    domain = env.get("ROS_DOMAIN_ID", "").strip()
    if not domain.isdigit():
        domain = str(random.randint(1, 100))
        env["ROS_DOMAIN_ID"] = domain
    return int(domain)


def choose_resolution(device: str, requested: int | None) -> tuple[str, int, str]:
    """(device type, processing resolution, why): 768 on CUDA, a CPU-friendly one else."""
    import torch

    if device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = "cuda" if device.startswith("cuda") else "cpu"
    if requested is not None:
        return kind, requested, "from --processing-resolution"
    if kind == "cuda":
        return kind, GPU_RESOLUTION, "the paper's default on CUDA"
    return kind, CPU_RESOLUTION, (f"CPU-friendly; {GPU_RESOLUTION} on CUDA, or set "
                                  "--processing-resolution")


# ----------------------------------------------------------------------- inputs

DEMO_MARKER = ".written_by_e2e_depth_demo"  # in each folder the demo creates


def _mark(path: Path) -> Path:
    """Sign a folder the demo just created, so its next run may replace it (and only it)."""
    (path / DEMO_MARKER).write_text("written by e2e_depth_ros.offline.demo; its next run with the "
                                    "same --out replaces this folder\n")
    return path


def _check_ours(path: Path) -> None:
    """Refuse anything at ``path`` that does not carry the demo's marker: never remove what
    the demo did not create (a user's folder or file that happens to have its name)."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and (path / DEMO_MARKER).is_file():
        return
    raise DemoError(f"{path} exists and was not written by the demo (no {DEMO_MARKER} "
                    "in it); move it away or choose another --out")


def _fresh(path: Path) -> Path:
    """Remove a previous demo run's output at ``path``; anything else there is refused."""
    _check_ours(path)
    if path.exists():
        shutil.rmtree(path)
    return path


def prepare_bag(args: argparse.Namespace, out: Path) -> tuple[Path, BagTopics]:
    """The bag to replay: ``--bag``, or a freshly written synthetic one in DIR/sample."""
    from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS

    if args.bag is not None:
        if not args.bag.exists():
            raise DemoError(f"--bag {args.bag}: no such rosbag2 folder")
        topics = BagTopics(args.image_topic, args.camera_info_topic, args.lidar_topic or None,
                           args.gt_depth_topic or None, args.gt_normals_topic or None)
        say(f"[1/5] replaying {args.bag}")
        return args.bag, topics
    from e2e_depth_ros.offline.synthetic import write_sample_bag

    path = _mark(write_sample_bag(_fresh(out / "sample"), n_frames=args.frames,
                                  width=args.width, height=args.height, seed=args.seed))
    say(f"[1/5] sample sequence: {path} ({args.frames} frames, {args.width}x{args.height}, "
        "camera + 16-beam LiDAR + ground-truth depth/normals, MCAP)")
    d = DEFAULT_TOPICS
    return path, BagTopics(d["image"], d["camera_info"], d["points_lidar"], d["depth_gt"],
                           d["normals_gt"], d["tf_static"])


def lidar_extrinsic(bag: Path, topics: BagTopics, sample: bool
                    ) -> tuple[str | None, Any | None]:
    """(LiDAR frame, Extrinsic-like with rotation/translation) for the node's parameters.

    The sample bag's is ``synthetic.default_extrinsic()``; another bag's comes from its
    /tf_static (image frame <- LiDAR frame), or none (the node then warns, no metric depth).
    """
    from e2e_depth_ros.offline.synthetic import LIDAR_FRAME, default_extrinsic

    if topics.lidar is None:
        return None, None
    if sample:
        return LIDAR_FRAME, default_extrinsic()
    from e2e_depth_ros.offline.bag_io import open_reader
    from e2e_depth_ros.offline.tf_static import StaticTransforms

    tree, frames = StaticTransforms(), {}
    reader = open_reader(bag)  # rosbags' AnyReader: each message by the bag's own definition
    try:
        wanted = [c for c in reader.connections
                  if c.topic in (topics.image, topics.lidar, topics.tf_static)]
        for conn, _, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == topics.tf_static:
                tree.add_message(msg)
            else:
                frames.setdefault(conn.topic, msg.header.frame_id)
    finally:
        reader.close()
    image_frame, lidar_frame = frames.get(topics.image), frames.get(topics.lidar)
    if image_frame is None or lidar_frame is None:
        return None, None
    return lidar_frame, tree.lookup(image_frame, lidar_frame)


def prepare_models(args: argparse.Namespace, out: Path) -> tuple[str, str | None]:
    """Model arguments for the node; ``--tiny`` writes random-weight ones to DIR/checkpoints."""
    if not args.tiny:
        from e2e_depth_ros.model.model_args import model_or_none

        return args.depth_model, model_or_none(args.normals_model)
    from e2e_depth_ros.model.estimator import quiet_model_libraries
    from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint

    quiet_model_libraries()  # no "Writing model shards" bars in the demo's output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # inherited by the node
    folders = {}
    for task in ("depth", "normals"):
        folder = out / "checkpoints" / task
        if not (folder / "model_index.json").is_file():
            make_tiny_checkpoint(folder, task=task)
        folders[task] = str(folder)
    say(f"models: {TINY_NOTE} ({out / 'checkpoints'})")
    return folders["depth"], folders["normals"]


# ----------------------------------------------------------------------- replay

def wait_ready(peer: ReplayPeer, node: NodeProcess, settings: NodeSettings,
               topics: BagTopics, timeout: float) -> float:
    """Seconds until discovery shows the node's topics; it creates them after model load."""
    start = last_note = time.monotonic()
    while not peer.connected(topics.inputs):
        if not node.running():
            raise DemoError(startup_failure(node, settings))
        now = time.monotonic()
        if now - start > timeout:
            raise DemoError(f"the node did not come up within {timeout:.0f} s (still loading "
                            f"or downloading models?); raise --startup-timeout, see "
                            f"{node.log_path}")
        if now - last_note > 30:
            say(f"  still loading models ({now - start:.0f} s; first runs download them)")
            last_note = now
        time.sleep(0.1)
    time.sleep(1.0)  # let the node's side of discovery see our recorder too
    return time.monotonic() - start


# ----------------------------------------------------------------------- evaluation / report

def evaluate_recording(recording: Path, topics: BagTopics, counts: dict[str, int],
                       out: Path) -> list[Any]:
    """Score the recorded relative depth (LiDAR scale recovered as the node does), and the
    node's own metric depth/image when it published any. Returns the EvalResults."""
    from e2e_depth_ros.offline.eval_types import EvalOptions, EvalTopics
    from e2e_depth_ros.offline.evaluate import evaluate_bag
    from e2e_depth_ros.offline.report import summary_lines

    if topics.gt_depth is None:
        say("[5/5] no ground-truth depth topic: evaluation skipped")
        return []
    normals = f"{NAMESPACE}/normals/image"
    base = EvalTopics(image=topics.image, camera_info=topics.camera_info,
                      gt_depth=topics.gt_depth, gt_normals=topics.gt_normals,
                      lidar=topics.lidar, pred=f"{NAMESPACE}/depth/relative",
                      pred_normals=normals if counts.get(normals) and topics.gt_normals
                      else None, tf_static=topics.tf_static)
    runs = [("recorded depth/relative, LiDAR scale recovered as the node does", base,
             EvalOptions(pred_is_metric=False, progress=False, overwrite=True,
                         write_bag=False), out)]  # the recording holds the node's outputs
    metric = f"{NAMESPACE}/depth/image"
    if counts.get(metric):
        runs.append((f"the node's metric {metric}",
                     EvalTopics(image=topics.image, camera_info=topics.camera_info,
                                gt_depth=topics.gt_depth, pred=metric,
                                tf_static=topics.tf_static),
                     EvalOptions(pred_is_metric=True, progress=False, overwrite=True,
                                 write_bag=False),
                     out / "published_metric"))
    else:
        say(f"  (no {metric}: the node had no LiDAR scale fit, so nothing metric to score)")
    results = []
    for title, eval_topics, options, folder in runs:
        result = evaluate_bag(recording, eval_topics, out_dir=folder, options=options)
        say(f"{'[5/5]' if not results else '     '} evaluation of {title}:")
        print("\n".join("    " + line for line in summary_lines(result)), flush=True)
        say("  wrote " + ", ".join(str(folder / Path(p).name) if not Path(p).is_absolute()
                                   else p for p in result.files.values()))
        results.append(result)
    return results


def _latency(value: str | None) -> str:
    """The node's latency is its clock minus the image stamp: years for an old bag."""
    try:
        seconds = float(value or "nan")
    except ValueError:
        return str(value)
    if abs(seconds) < 3600:
        return f"{seconds:.3f} s (node clock minus image stamp)"
    return f"not meaningful here ({seconds:.3g} s: the replayed stamps are old)"


def print_diagnostics(peer: ReplayPeer, frames: list[ReplayedFrame]) -> None:
    """The node's last /diagnostics (counts, timing, scale), plus the round trips we saw."""
    d = peer.diagnostics
    if not d:
        say("no /diagnostics from the node were received")
        return
    trips = sorted(r.round_trip for r in frames if r.round_trip is not None
                   and r.round_trip == r.round_trip)
    trip = f"{trips[len(trips) // 2]:.2f} s median" if trips else "-"
    say(f"node diagnostics ({d.get('_message', '')}):")
    lines = [
        f"model {d.get('depth_model')} + {d.get('normals_model')} on {d.get('device')} "
        f"({d.get('dtype')}), processing resolution {d.get('processing_resolution')}",
        f"frames received {d.get('frames_received')}, processed {d.get('frames_processed')}, "
        f"dropped {d.get('frames_dropped')}, failed {d.get('frames_failed')}, "
        f"bad input {d.get('frames_bad_input')}",
        f"rates in {d.get('input_rate_hz')} Hz / out {d.get('output_rate_hz')} Hz (last 1 s "
        f"window), inference {d.get('inference_s')} s, image -> outputs round trip {trip}",
        f"latency {_latency(d.get('latency_s'))}",
        f"scale: {d.get('scale_status')}, s = {d.get('scale')}, t = {d.get('shift')} m, "
        f"inliers {d.get('scale_inliers')}, rmse {d.get('scale_rmse_m')} m, "
        f"age {d.get('scale_age_s')} s",
    ]
    for key in ("scale_message", "last_warning", "last_error"):
        if d.get(key):
            lines.append(f"{key.replace('_', ' ')}: {d[key]}")
    print("\n".join("    " + line for line in lines), flush=True)


# ----------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    from e2e_depth_ros.offline.synthetic import DEFAULT_TOPICS as T

    p = OneLineParser(prog=PROG, description="Sample bag -> the real depth node -> recording "
                      "-> evaluation, in one command (no ROS install needed).")
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="output folder (default ./demo_output); an earlier demo run's "
                   "sample/, recording/, evaluation/ and node.log in it are replaced (a "
                   "sample/ or recording/ the demo did not write is refused)")
    m = p.add_argument_group("models")
    m.add_argument("--depth-model", default="GonzaloMG/marigold-e2e-ft-depth",
                   help="hub id or local checkpoint folder")
    m.add_argument("--normals-model", default="GonzaloMG/marigold-e2e-ft-normals",
                   help="hub id or local folder; 'none' disables normals")
    m.add_argument("--tiny", action="store_true", help="generate tiny random-weight "
                   "checkpoints into DIR/checkpoints and use them (meaningless predictions)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--processing-resolution", type=int, default=None,
                   help=f"default {GPU_RESOLUTION} on CUDA, {CPU_RESOLUTION} on CPU")
    m.add_argument("--fixed-scale", type=float, default=0.0, metavar="S",
                   help="> 0: the node publishes metric depth = S * relative + --fixed-shift "
                   "instead of fitting the LiDAR (a bag without LiDAR, or a known scale)")
    m.add_argument("--fixed-shift", type=float, default=0.0, metavar="T", help="meters")
    s = p.add_argument_group("sample sequence (when no --bag)")
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--width", type=int, default=160)
    s.add_argument("--height", type=int, default=120)
    s.add_argument("--seed", type=int, default=0)
    b = p.add_argument_group("your own bag")
    b.add_argument("--bag", type=Path, default=None, help="rosbag2 folder to replay instead")
    b.add_argument("--image-topic", default=T["image"])
    b.add_argument("--camera-info-topic", default=T["camera_info"])
    b.add_argument("--lidar-topic", default=T["points_lidar"], help="'' for none")
    b.add_argument("--gt-depth-topic", default=T["depth_gt"], help="'' for none")
    b.add_argument("--gt-normals-topic", default=T["normals_gt"], help="'' for none")
    r = p.add_argument_group("replay")
    r.add_argument("--rate", type=float, default=None, help="real-time replay at this speed "
                   "factor instead of lock-step (the node may drop frames)")
    r.add_argument("--frame-timeout", type=float, default=300.0,
                   help="seconds to wait for a frame's outputs (default 300)")
    r.add_argument("--startup-timeout", type=float, default=1800.0,
                   help="seconds to wait for the node to load (download) models")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Values argparse cannot check alone, each named with what was received."""
    defaults = parser.parse_args([])
    if args.tiny and (args.depth_model != defaults.depth_model
                      or args.normals_model != defaults.normals_model):
        parser.error("--tiny makes its own checkpoints; leave out --depth-model/--normals-model")
    if args.frames < 1 or args.width < 16 or args.height < 16:
        parser.error(f"need --frames >= 1 and an image of at least 16x16, got {args.frames} "
                     f"frames of {args.width}x{args.height}")
    if args.processing_resolution is not None and args.processing_resolution < 0:
        parser.error(f"--processing-resolution must be >= 0, got {args.processing_resolution}")
    if not (math.isfinite(args.fixed_scale) and args.fixed_scale >= 0
            and math.isfinite(args.fixed_shift)):
        parser.error(f"--fixed-scale must be a finite number >= 0 and --fixed-shift finite, "
                     f"got {args.fixed_scale} and {args.fixed_shift}")
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    if not (args.frame_timeout > 0 and args.startup_timeout > 0):
        parser.error("--frame-timeout and --startup-timeout must be > 0")


def inspect_bag(bag: Path, topics: BagTopics) -> tuple[BagTopics, dict[str, str]]:
    """Topics as present in the bag (absent optional ones become None) and their types."""
    from rosbags.rosbag2 import Reader, ReaderError

    try:
        with Reader(bag) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
    except (ReaderError, OSError, ValueError, KeyError) as err:
        raise DemoError(f"{bag}: cannot be read as a rosbag2 ({err})") from err
    missing = [t for t in (topics.image, topics.camera_info) if t not in types]
    if missing:
        raise DemoError(f"{bag}: no topic {', '.join(missing)} (topics: "
                        f"{', '.join(sorted(types))})")
    present = {name: (value if value in types else None)
               for name in ("lidar", "gt_depth", "gt_normals")
               for value in [getattr(topics, name)]}
    return dataclasses.replace(topics, **present), types


def node_settings(args: argparse.Namespace, out: Path, bag: Path, topics: BagTopics,
                  types: dict[str, str]) -> NodeSettings:
    """Models, device, resolution and LiDAR extrinsic for the node, each printed."""
    depth_model, normals_model = prepare_models(args, out)
    kind, resolution, why = choose_resolution(args.device, args.processing_resolution)
    say(f"device {args.device} ({kind}): processing resolution {resolution} ({why})")
    compressed = types[topics.image] == "sensor_msgs/msg/CompressedImage"
    settings = NodeSettings(depth_model, normals_model, args.device, resolution, compressed,
                            fixed_scale=args.fixed_scale, fixed_shift=args.fixed_shift)
    if settings.fixed_scale > 0:
        say(f"fixed scale: metric depth = {settings.fixed_scale:g} * relative + "
            f"{settings.fixed_shift:g} m (the LiDAR fit is not used)")
    lidar_frame, extrinsic = lidar_extrinsic(bag, topics, sample=args.bag is None)
    if extrinsic is None:
        if topics.lidar:
            say(f"no /tf_static path from the LiDAR to the camera in {bag}: no metric depth")
        return settings
    from e2e_depth_ros.offline.scenes import matrix_to_quaternion

    translation = tuple(float(v) for v in extrinsic.translation)
    quaternion = matrix_to_quaternion(extrinsic.rotation)
    say(f"LiDAR extrinsic ({lidar_frame} -> camera optical frame): t = "
        f"[{', '.join(f'{v:.3f}' for v in translation)}] m, q = "
        f"[{', '.join(f'{v:.4f}' for v in quaternion)}]")
    return dataclasses.replace(settings, lidar_frame=lidar_frame, translation=translation,
                               quaternion_xyzw=quaternion)


def replay_and_record(args: argparse.Namespace, bag: Path, topics: BagTopics,
                      types: dict[str, str], settings: NodeSettings, node: NodeProcess,
                      recording: Recording) -> tuple[ReplayPeer, list[ReplayedFrame]]:
    """Steps 2-4 inside one rclpy context: wait for the node, replay, record."""
    from rosbags.rosbag2 import Reader

    from e2e_depth_ros.ros.bag_player import Player, ReplayPeer

    published = {t: types[t] for t in (*topics.inputs, topics.tf_static) if t in types}
    done = ("depth/relative",) + (("normals/image",) if settings.normals_model else ())
    peer = ReplayPeer(recording, published, topics.tf_static,
                      outputs={f"{NAMESPACE}/{name}": t for name, t in OUTPUTS.items()},
                      done=tuple(f"{NAMESPACE}/{name}" for name in done),
                      pair=tuple(f"{NAMESPACE}/{name}" for name in PAIRED),
                      status_name=f"{NAMESPACE}/{NODE_NAME}: depth")
    try:
        ready = wait_ready(peer, node, settings, topics, args.startup_timeout)
        mode = "lock-step" if args.rate is None else f"real time x{args.rate}"
        say(f"  node ready after {ready:.1f} s; [3/5] replaying ({mode}) with the original "
            "headers")
        with Reader(bag) as reader:
            player = Player(peer, recording, topics, rate=args.rate,
                            frame_timeout=args.frame_timeout, pair_timeout=PAIR_TIMEOUT_S,
                            alive=node.running, check_alive=lambda: _check_running(node),
                            say=say)
            frames = player.run(reader)
        peer.wait_diagnostics(peer.diagnostics_count, timeout=2.5)  # counts after the end
    except BaseException:
        peer.close()
        raise
    return peer, frames


def _check_running(node: NodeProcess) -> None:
    """During the replay: a node that exited ends the demo with its log's place."""
    if not node.running():
        raise DemoError(f"the node exited (code {node.proc.returncode}) during the replay; "
                        f"see {node.log_path}")


def run(args: argparse.Namespace) -> int:
    """The five steps; the node is stopped and the recording closed whatever happens."""
    from e2e_depth_ros.ros.bag_player import ros_context

    out = args.out.resolve()
    for name in ("recording",) if args.bag is not None else ("sample", "recording"):
        _check_ours(out / name)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    domain = ros_environment()
    say(f"ROS_DOMAIN_ID={domain}, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (DDS stays on "
        "this machine; use the same domain to watch live)")
    bag, topics = prepare_bag(args, out)
    topics, types = inspect_bag(bag, topics)
    settings = node_settings(args, out, bag, topics, types)
    recording = Recording(_fresh(out / "recording"))
    _mark(recording.path)
    node = NodeProcess(node_command(settings, topics), out / "node.log")
    say(f"[2/5] starting the node: depth={settings.depth_model} "
        f"normals={settings.normals_model or 'off'} (log: {node.log_path})")
    with ros_context():
        return _run_live(args, out, bag, topics, types, settings, node, recording)


def _run_live(args: argparse.Namespace, out: Path, bag: Path, topics: BagTopics,
              types: dict[str, str], settings: NodeSettings, node: NodeProcess,
              recording: Recording) -> int:
    """Steps 2-5 once rclpy is up; the node is stopped and the recording closed always."""
    peer = None
    try:
        peer, frames = replay_and_record(args, bag, topics, types, settings, node, recording)
        recording.close()
        say(f"[4/5] recording: {recording.path} (MCAP; " + ", ".join(
            f"{t} {n}" for t, n in recording.counts.items()) + ")")
        if not any(r.round_trip is not None for r in frames):
            raise DemoError(f"no frame produced outputs; see {node.log_path}")
        evaluate_recording(recording.path, topics, recording.counts, out / "evaluation")
        print_diagnostics(peer, frames)
        say(f"replay it: ros2 bag play {recording.path} --loop, and rviz2 -d rviz/depth.rviz "
            f"--ros-args -r __ns:={NAMESPACE} (fixed frame: the image's frame_id)")
        if args.tiny:
            say(f"reminder: {TINY_NOTE}")
        return 0
    finally:
        recording.close()
        node.stop()
        if peer is not None:
            peer.close()


def main(argv: list[str] | None = None) -> int:
    """``demo``: 0 on success, 2 with one error line on any expected failure."""
    from e2e_depth_ros.errors import E2EDepthError

    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        return run(args)
    except (DemoError, E2EDepthError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

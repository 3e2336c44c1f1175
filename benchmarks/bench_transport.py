"""Large-message transport between processes: what fraction arrives, and how late.

Every case runs a publisher process and a subscriber process over loopback DDS (never one
process: intra-process delivery hides transport loss), with best-effort or reliable QoS on
each side, with and without the shipped Fast DDS profile (config/fastdds_large_data.xml) in
both processes' environment. Payloads: rgb8 images from 320x240 to 1280x720 (a camera) and
the node's 640x480 coloured cloud at decimation 1/2/4 (point_step 32). The publisher sends a
bounded number of messages at a fixed rate; the subscriber counts distinct stamps and the
latency (receive time minus the stamp set just before publishing; one clock, one machine).

    python benchmarks/bench_transport.py [--count 30] [--rate 10] [--domain 67]
    python benchmarks/bench_transport.py --payloads image640x480,cloud1 --profiles none,both

``--node`` measures the node itself instead, as ``launch/depth.launch.py`` runs it (its
params file, the profile in its environment; tiny random checkpoints, ``fixed_scale`` for
metric outputs since there is no LiDAR; the model at 128 px so a CPU keeps up with 10 Hz:
the outputs are 640x480 whatever the model's resolution): a 640x480 camera process at
10 Hz (reliable, or best-effort with and without the profile) ->
``python -m e2e_depth_ros.ros.node`` -> a best-effort (Nav2's sensor QoS) and a reliable
subscriber process on ``points``, ``depth/image`` and ``depth/relative``. It prints what
the node counted as received, its stamp-based loss estimate, and what each subscriber got.
The "before" row runs the node as it was (best-effort input, no profile).

    python benchmarks/bench_transport.py --node [--count 100]

``--quick`` (with or without ``--node``) is a smoke run in seconds: one small payload without
the profile, or the node's "reliable camera" case only, a few messages.

A best-effort publisher with a reliable subscriber is not a case: DDS does not match them
(the node avoids this by matching its subscription to the publisher, see e2e_depth_ros.ros.qos).
Loopback only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), one ROS domain of your choosing
(``--domain``; by default ROS_DOMAIN_ID, else 67).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import harness

harness.ros_loopback(67)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "config" / "fastdds_large_data.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
PAYLOADS = {  # name: (kind, width, height)
    "image320x240": ("image", 320, 240),
    "image640x480": ("image", 640, 480),
    "image1280x720": ("image", 1280, 720),
    "cloud1": ("cloud", 640, 480),
    "cloud2": ("cloud", 320, 240),
    "cloud4": ("cloud", 160, 120),
}
QUICK = {"payloads": "image320x240", "profiles": "none", "count": 5, "rate": 20.0,
         "node_cases": ["reliable camera"], "processing_resolution": 64}
# (publisher, subscriber) reliabilities; best-effort -> reliable never matches in DDS.
PAIRS = (("reliable", "reliable"), ("reliable", "best_effort"),
         ("best_effort", "best_effort"))


def _qos(reliability: str, depth: int):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    policy = {"reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


def build_message(payload: str):
    """One message of the payload (built once; only the stamp changes per send)."""
    import numpy as np
    from sensor_msgs.msg import Image, PointCloud2, PointField
    from std_msgs.msg import Header

    from e2e_depth_ros.ros import messages

    kind, width, height = PAYLOADS[payload]
    rng = np.random.default_rng(0)
    if kind == "image":
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        return Image, messages.build_image(Image, Header(frame_id="camera"), rgb, "rgb8")
    points = rng.uniform(0.5, 5.0, (height, width, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PointCloud2, messages.build_pointcloud(PointCloud2, PointField,
                                                  Header(frame_id="camera"), points, rgb=rgb)


def message_type(payload: str):
    from sensor_msgs.msg import Image, PointCloud2

    return Image if PAYLOADS[payload][0] == "image" else PointCloud2


def run_publisher(args) -> int:
    import rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node("bench_transport_publisher")
    msg_type, msg = build_message(args.payload)
    pub = node.create_publisher(msg_type, args.topic, _qos(args.reliability, args.depth))
    deadline = time.monotonic() + 15.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let the reader's side of the match settle as well
    period = 1.0 / args.rate
    start = time.monotonic()
    for index in range(args.count):
        now_ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
        pub.publish(msg)
        time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
    time.sleep(args.linger)  # a reliable writer may still be repairing
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_subscriber(args) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    rclpy.init()
    node = Node("bench_transport_subscriber")
    stamps: dict[int, float] = {}

    def on_message(msg) -> None:
        received_ns = time.time_ns()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        stamps.setdefault(stamp_ns, (received_ns - stamp_ns) * 1e-6)

    node.create_subscription(message_type(args.payload), args.topic, on_message,
                             _qos(args.reliability, args.depth))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and time.monotonic() < deadline and len(stamps) < args.count:
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({"received": len(stamps), "latency_ms": list(stamps.values())}),
          flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


NODE_OUTPUTS = ("points", "depth/image", "depth/relative")
NODE_CASES = {  # name: (camera reliability, camera has profile, node has profile, input_qos)
    "before: old node, reliable camera": ("reliable", False, False, "best_effort"),
    "reliable camera": ("reliable", False, True, "auto"),
    "best-effort camera + profile": ("best_effort", True, True, "auto"),
    "best-effort camera, no profile": ("best_effort", False, True, "auto"),
}


def run_camera(args) -> int:
    """640x480 rgb8 + camera_info at ``--rate``; waits for the node, sends ``--count``."""
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    from e2e_depth_ros.ros import messages

    rclpy.init()
    node = Node("bench_camera")
    qos = _qos(args.reliability, 5)
    image_pub = node.create_publisher(Image, "camera/image_raw", qos)
    info_pub = node.create_publisher(CameraInfo, "camera/camera_info", qos)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = messages.build_image(Image, Header(frame_id="camera_optical"), rgb, "rgb8")
    info = CameraInfo(header=image.header, width=640, height=480,
                      distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [500.0, 0.0, 319.5, 0.0, 480.0, 239.5, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [500.0, 0.0, 319.5, 0.0, 0.0, 480.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    deadline = time.monotonic() + 60.0
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)  # the node re-checks its input QoS every second
    start = time.monotonic()
    for index in range(args.count):
        sec, nanosec = divmod(time.time_ns(), 1_000_000_000)
        for msg in (info, image):
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        info_pub.publish(info)
        image_pub.publish(image)
        time.sleep(max(0.0, start + (index + 1) / args.rate - time.monotonic()))
    time.sleep(args.linger)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_output_subscriber(args) -> int:
    """Counts distinct stamps on the node's outputs; also keeps the node's last diagnostics."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    rclpy.init()
    node = Node(f"bench_outputs_{args.reliability}")
    stamps: dict[str, set] = {topic: set() for topic in NODE_OUTPUTS}
    diagnostics: dict = {}

    def collector(topic):
        return lambda msg: stamps[topic].add((msg.header.stamp.sec, msg.header.stamp.nanosec))

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.endswith("e2e_depth_node: depth"):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    for topic in NODE_OUTPUTS:
        node.create_subscription(PointCloud2 if topic == "points" else Image, topic,
                                 collector(topic), _qos(args.reliability, 5))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    print(json.dumps({"received": {t: len(v) for t, v in stamps.items()},
                      "diagnostics": diagnostics}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_node_case(name: str, *, count: int, rate: float, domain: int, checkpoint: str,
                  resolution: int, log) -> dict:
    camera_rel, camera_profile, node_profile, input_qos = NODE_CASES[name]
    me = [sys.executable, str(Path(__file__).resolve())]
    timeout = str(count / rate + 300)
    subs = {rel: harness.start(me + ["--role", "outputs", "--reliability", rel,
                                     "--timeout", timeout],
                               env=_environment(domain, False), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
            for rel in ("best_effort", "reliable")}
    node = harness.start(
        [sys.executable, "-m", "e2e_depth_ros.ros.node", "--ros-args",
         "--params-file", str(ROOT / "config" / "depth.yaml"),
         "-p", f"depth_model:={checkpoint}", "-p", "normals_model:=''", "-p", "device:=cpu",
         "-p", "fixed_scale:=2.0", "-p", f"input_qos:={input_qos}",
         "-p", f"processing_resolution:={resolution}",
         "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"],
        env=_environment(domain, node_profile), stdout=log, stderr=subprocess.STDOUT)
    results = {}
    try:
        for sub in subs.values():
            assert sub.stdout.readline().strip() == "ready", "subscriber did not start"
        time.sleep(2.0)
        if node.poll() is not None:
            raise RuntimeError(f"the node exited ({node.returncode}): see {log.name}")
        camera = harness.run(
            me + ["--role", "camera", "--reliability", camera_rel, "--count", str(count),
                  "--rate", str(rate), "--linger", "4"],
            env=_environment(domain, camera_profile), timeout=count / rate + 200)
        if camera.returncode:
            raise RuntimeError(f"camera failed: {camera.stderr[-500:]}")
        time.sleep(4.0)  # the frame in flight, then one more diagnostics message
        for rel, sub in subs.items():
            try:
                sub.stdin.write("stop\n")
                sub.stdin.flush()
            except BrokenPipeError:
                pass
            out, _ = sub.communicate(timeout=30)
            results[rel] = json.loads(out.strip().splitlines()[-1])
    finally:
        harness.stop(*subs.values(), node, grace=10.0)
    diag = results["reliable"]["diagnostics"] or results["best_effort"]["diagnostics"]
    return {"case": name, "count": count, "diagnostics": diag,
            "best_effort": results["best_effort"]["received"],
            "reliable": results["reliable"]["received"]}


def print_node_table(rows: list[dict]) -> None:
    print(f"{'case':<34} {'node received':>14} {'stamps Hz':>9} {'loss est':>8} "
          f"{'processed':>9} " + " ".join(f"{t + ' BE/R':>18}" for t in NODE_OUTPUTS))
    for row in rows:
        diag = row["diagnostics"]
        received = int(diag.get("frames_received", 0))
        cells = []
        for topic in NODE_OUTPUTS:
            be, rel = row["best_effort"][topic], row["reliable"][topic]
            cells.append(f"{be:>4}/{rel:<4} {be / rel if rel else float('nan'):5.0%}")
        print(f"{row['case']:<34} {received:>4}/{row['count']:<4} {received / row['count']:4.0%} "
              f"{diag.get('input_rate_from_stamps_hz', '?'):>9} "
              f"{diag.get('input_loss_estimate', '?'):>8} "
              f"{diag.get('frames_processed', '?'):>9} " + " ".join(f"{c:>18}" for c in cells))


def node_suite(args) -> int:
    import tempfile

    print(f"# node: {args.count} frames 640x480 at {args.rate:g} Hz per case, ROS domain "
          f"{args.domain}, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "node.log", "w") as log:
        checkpoint = harness.ensure_checkpoint(args.ckpt_dir or tmp, "tiny", "depth")
        for repeat in range(args.repeats):
            for name in args.node_cases:
                rows.append(run_node_case(name, count=args.count, rate=args.rate,
                                          domain=args.domain, checkpoint=checkpoint,
                                          resolution=args.processing_resolution, log=log))
                print(f"#   {name}: node received "
                      f"{rows[-1]['diagnostics'].get('frames_received')}, "
                      f"BE {rows[-1]['best_effort']}, R {rows[-1]['reliable']}", flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print_node_table(rows)
    return 0


def _environment(domain: int, profile: bool) -> dict:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(domain), PYTHONPATH=f"{ROOT}{os.pathsep}"
               f"{os.environ.get('PYTHONPATH', '')}")
    env.pop("ROS_LOCALHOST_ONLY", None)
    for name in PROFILE_VARIABLES:
        env.pop(name, None)
        if profile:
            env[name] = str(PROFILE)
    return env


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_case(payload: str, pub_rel: str, sub_rel: str, profile: str, *, count: int,
             rate: float, domain: int, index: int) -> dict:
    """One publisher/subscriber pair; ``profile`` is none, pub (publisher only) or both."""
    kind = PAYLOADS[payload][0]
    topic = f"bench_transport_{os.getpid()}_{index}"
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--payload", payload, "--topic", topic, "--count", str(count)]
    sub_depth = "1" if kind == "image" else "5"  # the node's image input; Nav2's sensor QoS
    pub_depth = "5" if kind == "image" else "2"  # a camera driver; the node's outputs
    sub = harness.start(
        me + ["--role", "sub", "--reliability", sub_rel, "--depth", sub_depth,
              "--timeout", str(count / rate + 30)] + common,
        env=_environment(domain, profile == "both"), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready", "subscriber did not start"
        pub = harness.run(
            me + ["--role", "pub", "--reliability", pub_rel, "--depth", pub_depth,
                  "--rate", str(rate)] + common,
            env=_environment(domain, profile in ("pub", "both")), timeout=count / rate + 60)
        if pub.returncode:
            raise RuntimeError(f"publisher failed: {pub.stderr[-500:]}")
        try:
            sub.stdin.write("stop\n")
            sub.stdin.flush()
        except BrokenPipeError:  # it already has every message and has exited
            pass
        out, _ = sub.communicate(timeout=30)
    finally:
        harness.stop(sub)
    result = json.loads(out.strip().splitlines()[-1])
    latency = result["latency_ms"]
    return {"payload": payload, "pub": pub_rel, "sub": sub_rel, "profile": profile,
            "received": result["received"], "count": count,
            "p50_ms": percentile(latency, 0.5), "p95_ms": percentile(latency, 0.95)}


def payload_megabytes(payload: str) -> float:
    kind, width, height = PAYLOADS[payload]
    return width * height * (3 if kind == "image" else 32) / 1e6


def print_table(rows: list[dict]) -> None:
    print(f"{'payload':<14} {'MB':>5} {'publisher':<11} {'subscriber':<11} {'profile':<7} "
          f"{'delivered':>12} {'p50 ms':>8} {'p95 ms':>8}")
    for row in rows:
        delivered = f"{row['received']}/{row['count']} {row['received'] / row['count']:4.0%}"
        print(f"{row['payload']:<14} {payload_megabytes(row['payload']):5.2f} "
              f"{row['pub']:<11} {row['sub']:<11} {row['profile']:<7} {delivered:>12} "
              f"{row['p50_ms']:8.1f} {row['p95_ms']:8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payloads", default=",".join(PAYLOADS),
                        help=f"comma list of {', '.join(PAYLOADS)}")
    parser.add_argument("--profiles", default="none,both",
                        help="comma list: none, pub (publisher process only), both")
    parser.add_argument("--count", type=int, default=30, help="messages per case")
    parser.add_argument("--rate", type=float, default=10.0, help="publish rate (Hz)")
    parser.add_argument("--domain", type=int, default=int(os.environ["ROS_DOMAIN_ID"]),
                        help="ROS_DOMAIN_ID of the cases (default: this environment's, else "
                        "67)")
    parser.add_argument("--node", action="store_true",
                        help="measure the node (launch defaults) instead of raw transport")
    parser.add_argument("--repeats", type=int, default=1, help="--node: rounds of the cases")
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="--node: keep/reuse the tiny checkpoint here")
    parser.add_argument("--node-cases", nargs="+", choices=list(NODE_CASES),
                        default=list(NODE_CASES), metavar="CASE",
                        help=f"--node: the cases to run, of {list(NODE_CASES)}")
    parser.add_argument("--processing-resolution", type=int, default=128,
                        help="--node: the model's resolution; outputs stay 640x480 (the "
                             "launch default 768 is far below 10 Hz on a CPU)")
    parser.add_argument("--role", choices=("pub", "sub", "camera", "outputs"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--reliability", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--linger", type=float, default=1.5, help=argparse.SUPPRESS)
    args = harness.parse(parser, argv, QUICK)
    if args.role == "pub":
        return run_publisher(args)
    if args.role == "sub":
        return run_subscriber(args)
    if args.role == "camera":
        return run_camera(args)
    if args.role == "outputs":
        return run_output_subscriber(args)
    if args.node:
        return node_suite(args)
    payloads = args.payloads.split(",")
    profiles = args.profiles.split(",")
    unknown = set(payloads) - set(PAYLOADS) | set(profiles) - {"none", "pub", "both"}
    if unknown:
        parser.error(f"unknown payload/profile: {sorted(unknown)}")
    print(f"# {args.count} messages per case at {args.rate:g} Hz, ROS domain {args.domain}, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rows, index = [], 0
    for payload in payloads:
        for pub_rel, sub_rel in PAIRS:
            for profile in profiles:  # interleaved, so load drifts hit every column alike
                rows.append(run_case(payload, pub_rel, sub_rel, profile, count=args.count,
                                     rate=args.rate, domain=args.domain, index=index))
                index += 1
                row = rows[-1]
                print(f"#   {payload} {pub_rel}->{sub_rel} profile={profile}: "
                      f"{row['received']}/{row['count']}", flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

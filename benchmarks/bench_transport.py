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

A best-effort publisher with a reliable subscriber is not a case: DDS does not match them
(the node avoids this by matching its subscription to the publisher, see e2e_depth_ros.qos).
Loopback only (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), one ROS domain of your choosing.
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

    from e2e_depth_ros import messages

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
    sub = subprocess.Popen(
        me + ["--role", "sub", "--reliability", sub_rel, "--depth", sub_depth,
              "--timeout", str(count / rate + 30)] + common,
        env=_environment(domain, profile == "both"), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready", "subscriber did not start"
        pub = subprocess.run(
            me + ["--role", "pub", "--reliability", pub_rel, "--depth", pub_depth,
                  "--rate", str(rate)] + common,
            env=_environment(domain, profile in ("pub", "both")), timeout=count / rate + 60,
            capture_output=True, text=True)
        if pub.returncode:
            raise RuntimeError(f"publisher failed: {pub.stderr[-500:]}")
        try:
            sub.stdin.write("stop\n")
            sub.stdin.flush()
        except BrokenPipeError:  # it already has every message and has exited
            pass
        out, _ = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
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
    parser.add_argument("--domain", type=int, default=67, help="ROS_DOMAIN_ID of the cases")
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--reliability", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--linger", type=float, default=1.5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "pub":
        return run_publisher(args)
    if args.role == "sub":
        return run_subscriber(args)
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
    raise SystemExit(main())

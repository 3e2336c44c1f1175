"""The floor under the node's publishing: rclpy's cost per message, the node's math aside.

Builds the node's real output messages for one 640x480 frame (the outputs table's builders)
and times ``Publisher.publish`` for each, with the node's output QoS: once with no
subscriber (rclpy converts the message to C and serializes it; nothing is sent) and once
with a subscriber in another process (the send too). ``serialize_message`` alone is the
conversion and serialization without DDS. The worker thread holds the GIL through all of
it. Per-thread CPU time is reported beside the wall time, so another program's load on a
small machine shows as the difference.

    python benchmarks/bench_publish.py [--repeats 30] [--width 640 --height 480]
        [--raw-subscriber] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import harness

harness.ros_loopback(78)

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth  # noqa: E402
from e2e_depth_ros.core.processing import FrameResult  # noqa: E402
from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped  # noqa: E402
from e2e_depth_ros.ros.node import OUTPUT_QOS  # noqa: E402
from e2e_depth_ros.ros.outputs import OUTPUTS, rclpy_types  # noqa: E402

NAV2_OUTPUTS = ("depth/image", "depth/camera_info", "points")
QUICK = {"repeats": 3, "width": 160, "height": 120}


def frame_messages(width: int, height: int) -> dict[str, object]:
    """Output key -> the message the node publishes for one frame of this size."""
    rng = np.random.default_rng(0)
    camera = PinholeCamera(width, height, fx=0.8 * width, fy=0.8 * width, cx=width / 2,
                           cy=height / 2)
    relative = rng.uniform(0, 1, (height, width)).astype(np.float32)
    normals = rng.normal(size=(height, width, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    metric = 2.0 * relative + 0.5
    result = FrameResult(relative=relative, normals=normals, metric=metric,
                         points=unproject_depth(metric, camera),
                         points_rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob",
                      header=Header(frame_id="camera"))
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    info.p = camera.projection.ravel().tolist()
    types, header = rclpy_types(), Header(frame_id="camera")
    return {o.key: o.build(types, header, info, result) for o in OUTPUTS}


def subscribe_only(raw: bool) -> int:
    """Subscriber process: take every output until stopped."""
    from rclpy.executors import ExternalShutdownException

    types = rclpy_types()
    rclpy.init()
    node = Node("bench_publish_subscriber", namespace="/bench_publish")
    for output in OUTPUTS:
        node.create_subscription(types[output.msgtype], output.topic, lambda msg: None, 10,
                                 raw=raw)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # stopped by the benchmark
    return 0


def time_publishing(node: Node, msgs: dict[str, object], repeats: int
                    ) -> dict[str, tuple[float, float]]:
    """Output key -> median (wall, thread CPU) seconds of one publish."""
    types = rclpy_types()
    found = {}
    for output in OUTPUTS:
        pub = node.create_publisher(types[output.msgtype], output.topic, OUTPUT_QOS)
        wall, cpu = [], []
        for _ in range(repeats + 2):
            start, start_cpu = time.perf_counter(), time.thread_time()
            pub.publish(msgs[output.key])
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
            time.sleep(0.02)  # let a subscriber take it, as between the node's frames
        found[output.key] = (statistics.median(wall[2:]), statistics.median(cpu[2:]))
        node.destroy_publisher(pub)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--subscribe-only"]:
        return subscribe_only(argv[1:] == ["--raw"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--raw-subscriber", action="store_true",
                        help="the subscriber takes serialized bytes, not Python messages")
    args = harness.parse(parser, argv, QUICK)
    keep_cpu_buffers_mapped()  # as the node's main does
    msgs = frame_messages(args.width, args.height)
    serialize = {}
    for key, msg in msgs.items():
        times = []
        for _ in range(args.repeats + 2):
            start = time.perf_counter()
            serialize_message(msg)
            times.append(time.perf_counter() - start)
        serialize[key] = statistics.median(times[2:])
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node("bench_publish", namespace="/bench_publish")
        alone = time_publishing(node, msgs, args.repeats)
        harness.start([sys.executable, __file__, "--subscribe-only",
                       *(["--raw"] if args.raw_subscriber else [])])
        types = rclpy_types()
        probe = node.create_publisher(types[OUTPUTS[-1].msgtype], OUTPUTS[-1].topic,
                                      OUTPUT_QOS)
        deadline = time.monotonic() + 30
        while probe.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        node.destroy_publisher(probe)
        time.sleep(1.0)  # the subscriber's other readers are discovered too
        sent = time_publishing(node, msgs, args.repeats)
    finally:
        rclpy.shutdown()
    subscriber = "raw bytes" if args.raw_subscriber else "Python messages"
    print(f"rclpy publish at {args.width}x{args.height}, median of {args.repeats}; ms: "
          f"serialize_message | no subscriber: wall cpu | one subscriber ({subscriber}) in "
          "another process: wall cpu")
    sets = {"all": [o.key for o in OUTPUTS],
            "nav2": [o.key for o in OUTPUTS if o.topic in NAV2_OUTPUTS]}
    for key, msg in msgs.items():
        print(f"  {key:12s} {len(serialize_message(msg)) / 1e6:6.2f} MB "
              f"{serialize[key] * 1e3:7.2f} | {alone[key][0] * 1e3:6.2f} "
              f"{alone[key][1] * 1e3:6.2f} | {sent[key][0] * 1e3:6.2f} {sent[key][1] * 1e3:6.2f}")
    for name, keys in sets.items():
        size = sum(len(serialize_message(msgs[k])) for k in keys) / 1e6
        total = [sum(table[k][i] for k in keys) * 1e3 for table in (alone, sent) for i in (0, 1)]
        print(f"  {name} ({len(keys)} outputs, {size:.1f} MB): no subscriber {total[0]:.1f} ms "
              f"(cpu {total[1]:.1f}), one subscriber {total[2]:.1f} ms (cpu {total[3]:.1f}), "
              f"serialize_message alone {sum(serialize[k] for k in keys) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

"""Node overhead per frame beyond ``Estimator.predict`` at 640x480, with the tiny model.

Runs the real node in-process over loopback DDS with every output subscribed by a separate
subscriber process (as RViz or Nav2 would be: it must not share the node's GIL), sends
frames in lock-step and splits each frame's time (image publish -> all outputs published)
into predict and everything else: receive, decode, camera matching, metric map, cloud,
message packing and publish. Also times the cloud build alone.

    python benchmarks/bench_node.py [--frames 20] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "77")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from e2e_depth_ros.ros import messages  # noqa: E402
from e2e_depth_ros.model.estimator import Estimator  # noqa: E402
from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth  # noqa: E402
from e2e_depth_ros.ros.node import DepthNode  # noqa: E402
from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402
from rig import EstimatorProxy, Rig, header  # noqa: E402


class TimedEstimator(EstimatorProxy):
    """The real estimator, recording how long each predict call took."""

    def __init__(self, inner):
        super().__init__(inner)
        self.times: list[float] = []

    def predict(self, rgb, **kwargs):
        start = time.perf_counter()
        out = super().predict(rgb, **kwargs)
        self.times.append(time.perf_counter() - start)
        return out


def bench_cloud(camera: PinholeCamera, repeats: int = 30) -> float:
    depth = np.random.default_rng(0).uniform(0.5, 5.0, (camera.height, camera.width))
    depth = depth.astype(np.float32)
    rgb = np.zeros((camera.height, camera.width, 3), np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        points = unproject_depth(depth, camera)
        messages.build_pointcloud(PointCloud2, PointField, header(0), points, rgb=rgb)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


NAV2_OUTPUTS = ("depth/image", "depth/camera_info", "points")


def subscribe_only(namespace: str, topics: list[str]) -> int:
    """Subscriber process: take the given outputs (reliable, depth 10) until killed."""
    from rclpy.node import Node

    from rig import OUTPUTS

    rclpy.init()
    node = Node("bench_subscriber", namespace=namespace)
    for topic in topics:
        node.create_subscription(OUTPUTS[topic], topic, lambda msg: None, 10)
    try:
        rclpy.spin(node)
    except Exception:  # noqa: BLE001 - killed by the benchmark
        pass
    return 0


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--subscribe-only":
        return subscribe_only(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--processing-resolution", type=int, default=64,
                        help="small, so predict does not dominate the run time")
    parser.add_argument("--outputs", choices=["all", "nav2"], default="all",
                        help="all 7 outputs subscribed, or what Nav2 uses: depth/image, "
                        "depth/camera_info, points")
    args = parser.parse_args()
    w, h = args.width, args.height
    camera = PinholeCamera(w, h, fx=0.8 * w, fy=0.78 * w, cx=w / 2 - 0.7, cy=h / 2 + 0.4)

    with tempfile.TemporaryDirectory() as tmp:
        depth = make_tiny_checkpoint(Path(tmp) / "d", task="depth")
        normals = make_tiny_checkpoint(Path(tmp) / "n", task="normals")
        est = TimedEstimator(Estimator(str(depth), str(normals), device="cpu",
                                       processing_resolution=args.processing_resolution))
        from rig import OUTPUTS

        topics = list(OUTPUTS) if args.outputs == "all" else list(NAV2_OUTPUTS)
        subscriber = subprocess.Popen([sys.executable, __file__, "--subscribe-only", "/bench",
                                       *topics])
        rclpy.init()
        params = [Parameter("fixed_scale", value=2.0),
                  Parameter("processing_resolution", value=args.processing_resolution)]
        node = DepthNode(estimator=est, namespace="/bench", parameter_overrides=params)
        rig = Rig(node, "/bench", subscribe=False)
        wanted = {"depth/relative": "relative", "depth/image": "depth",
                  "depth/camera_info": "depth_info", "depth/image_vis": "depth_vis",
                  "normals/image": "normals", "normals/image_vis": "normals_vis",
                  "points": "points"}
        assert rig.wait_for(lambda: all(node._pub[wanted[t]].get_subscription_count() > 0
                                        for t in topics), timeout=20)
        totals, inside = [], []
        try:
            rng = np.random.default_rng(0)
            for i in range(args.frames + 2):
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                stamp = 1_700_000_000_000_000_000 + i * 10**8
                rig.info_pub.publish(__import__("rig").camera_info(camera, stamp))
                time.sleep(0.02)
                start = time.perf_counter()
                rig.send(rgb, stamp)
                done = rig.wait_for(lambda: node.stats.processed == i + 1, timeout=30,
                                    poll=0.0005)
                if not done:
                    print(f"frame {i}: outputs missing", file=sys.stderr)
                    return 1
                totals.append(time.perf_counter() - start)
                inside.append(node.stats.overhead)
        finally:
            rig.close()
            rclpy.shutdown()
            subscriber.kill()
    # the first frames warm caches up
    totals, predicts, inside = totals[2:], est.times[2:], inside[2:]
    overhead = [t - p for t, p in zip(totals, predicts)]
    cloud = bench_cloud(camera)
    print(f"node at {w}x{h}, tiny model at processing_resolution "
          f"{args.processing_resolution}, {len(totals)} frames, subscribed: {', '.join(topics)}")
    print(f"  per frame total (image publish -> outputs published): "
          f"{statistics.median(totals)*1e3:.1f} ms")
    print(f"  Estimator.predict: {statistics.median(predicts)*1e3:.1f} ms")
    print(f"  in the node beyond predict (decode, match, metric, cloud, pack, publish): "
          f"{statistics.median(inside)*1e3:.1f} ms   (target <= 15 ms)")
    print(f"  total beyond predict (adds image delivery to the node): "
          f"{statistics.median(overhead)*1e3:.1f} ms")
    print(f"  organized xyz+rgb cloud build alone:       {cloud*1e3:8.2f} ms"
          "   (target <= 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

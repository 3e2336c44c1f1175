"""Time build_pointcloud on an organized 640 x 480 cloud (target: xyz + rgb <= 5 ms).

Run: ``python benchmarks/bench_cloud.py [--runs N] [--quick]``. Prints the median and best of
N runs for xyz, xyz + rgb and xyz + rgb + normals, with rclpy and rosbags message classes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import harness
from e2e_depth_ros.ros.messages import build_pointcloud

QUICK = {"runs": 3}


def message_classes() -> dict[str, tuple[type, type, object]]:
    """(PointCloud2, PointField, header) per message library that is importable."""
    classes = {}
    try:
        from sensor_msgs.msg import PointCloud2, PointField
        from std_msgs.msg import Header

        classes["rclpy"] = (PointCloud2, PointField, Header(frame_id="camera"))
    except ImportError:
        pass
    try:
        from rosbags.typesys import Stores, get_typestore

        types = get_typestore(Stores.ROS2_HUMBLE).types
        stamp = types["builtin_interfaces/msg/Time"](sec=0, nanosec=0)
        header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="camera")
        classes["rosbags"] = (
            types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"], header
        )
    except ImportError:
        pass
    return classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = harness.parse(parser, argv, QUICK)

    rng = np.random.default_rng(0)
    shape = (args.height, args.width, 3)
    points = rng.uniform(-5, 5, shape).astype(np.float32)
    points[rng.random(shape[:2]) < 0.1] = np.nan
    rgb = rng.integers(0, 256, shape, dtype=np.uint8)
    normals = rng.normal(size=shape).astype(np.float32)
    options = {
        "xyz": {},
        "xyz+rgb": {"rgb": rgb},
        "xyz+rgb+normals": {"rgb": rgb, "normals": normals},
    }
    print(f"build_pointcloud {args.width}x{args.height}, {args.runs} runs (ms)")
    for library, (cloud_cls, field_cls, header) in message_classes().items():
        for name, extra in options.items():
            times = []
            for _ in range(args.runs + 3):
                start = time.perf_counter()
                build_pointcloud(cloud_cls, field_cls, header, points, **extra)
                times.append((time.perf_counter() - start) * 1e3)
            times = times[3:]  # warm-up
            print(f"  {library:8s} {name:16s} median {statistics.median(times):6.2f}"
                  f"  best {min(times):6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

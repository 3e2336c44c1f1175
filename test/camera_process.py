"""A camera in its own process: 640x480 rgb8 frames at a fixed rate (transport tests).

Prints ``matched`` once a subscriber is discovered, waits for ``go`` on stdin, publishes
``--count`` frames and prints ``done``. ``--drop-every N`` skips every Nth frame (a frame
"lost" before it was sent: its stamp never arrives), so the subscriber's stamp-based loss
estimate can be checked against a known loss.
"""

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from e2e_depth_ros.ros import messages

T0 = 1_700_000_000_000_000_000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("topic")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), required=True)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    rclpy.init()
    node = Node("camera_process")
    policy = {"reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}[args.reliability]
    pub = node.create_publisher(Image, args.topic, QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=5, reliability=policy))
    rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    msg = messages.build_image(Image, Header(frame_id="camera_optical"), rgb, "rgb8")
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("matched", flush=True)
    sys.stdin.readline()
    period_ns = int(1e9 / args.rate)
    start = time.monotonic()
    for index in range(args.count):
        stamp = T0 + index * period_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        if not args.drop_every or index % args.drop_every != args.drop_every - 1:
            pub.publish(msg)
        time.sleep(max(0.0, start + (index + 1) / args.rate - time.monotonic()))
    time.sleep(1.0)  # a reliable writer may still be repairing
    print("done", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Node overhead per frame beyond ``Estimator.predict`` at 640x480, with the tiny model.

Runs the real node in-process over loopback DDS with its outputs subscribed by a separate
subscriber process (as RViz or Nav2 would be: it must not share the node's GIL), sends
frames in lock-step and splits each frame's time (image publish -> all outputs published)
into predict and everything else: receive, decode, camera matching, metric map, cloud,
message packing and publish. Also times the cloud build alone.

The process keeps its freed buffers mapped as the node's ``main`` does
(``keep_cpu_buffers_mapped``): without it every large array and message is page-faulted
in again each frame. The node's own time is split into the worker thread's CPU time and
its wait for a free core (Linux ``schedstat``): on a small machine that wait is other
processes' work (the subscriber's, other programs'), not the node's. ``--raw-subscriber``
takes the outputs as serialized bytes, about what a C++ subscriber (RViz, Nav2) spends,
instead of converting 18 MB a frame to Python messages.

``--outputs``: ``all`` is every output of the node's outputs table, the opt-in ones
(``depth/image_mm``) switched on; ``defaults`` those on by default; ``nav2`` what Nav2 takes
(``depth/image``, ``depth/camera_info``, ``points``).

    python benchmarks/bench_node.py [--frames 20] [--width 640 --height 480]
        [--outputs all|defaults|nav2] [--raw-subscriber] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness

harness.ros_loopback(77)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped  # noqa: E402
from e2e_depth_ros.ros import messages  # noqa: E402
from e2e_depth_ros.ros.outputs import OUTPUTS, rclpy_types  # noqa: E402
from e2e_depth_ros.model.estimator import Estimator  # noqa: E402
from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth  # noqa: E402
from e2e_depth_ros.ros.node import DepthNode  # noqa: E402
from rig import EstimatorProxy, Rig, camera_info, header  # noqa: E402

NAV2_OUTPUTS = ("depth/image", "depth/camera_info", "points")
OUTPUT_SETS = {
    "all": list(OUTPUTS),
    "defaults": [o for o in OUTPUTS if o.default],
    "nav2": [o for o in OUTPUTS if o.topic in NAV2_OUTPUTS],
}
TARGETS_MS = {"all": 10.0, "nav2": 6.0}  # issue #16: the node's own time per frame
QUICK = {"frames": 3, "width": 160, "height": 120, "cloud_repeats": 3}


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


def _run_queue_wait_s() -> float:
    """Seconds this thread has waited for a core while runnable (0.0 where Linux does not say)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return 0.0


class MeasuredNode(DepthNode):
    """The node, saying when a frame's outputs are out and what its worker spent on them.

    ``cpu`` and ``waited``: per frame, the worker thread's CPU time and its wait for a core
    over the span ``stats.overhead`` measures (``_prepare`` and ``_finish``).
    """

    def __init__(self, **kwargs):
        self.frame_done = threading.Event()
        self.cpu: list[float] = []
        self.waited: list[float] = []
        self._spent = (0.0, 0.0)
        super().__init__(**kwargs)

    def _prepare(self, stream, msg):
        cpu, wait = time.thread_time(), _run_queue_wait_s()
        try:
            return super()._prepare(stream, msg)
        finally:
            self._spent = (time.thread_time() - cpu, _run_queue_wait_s() - wait)

    def _finish(self, job, prediction, inference, batch_size):
        cpu, wait = time.thread_time(), _run_queue_wait_s()
        super()._finish(job, prediction, inference, batch_size)
        self.cpu.append(self._spent[0] + time.thread_time() - cpu)
        self.waited.append(self._spent[1] + _run_queue_wait_s() - wait)
        self.frame_done.set()


def bench_cloud(camera: PinholeCamera, repeats: int) -> float:
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


def subscribe_only(namespace: str, topics: list[str], raw: bool = False) -> int:
    """Subscriber process: take the given outputs (reliable, depth 10) until stopped;
    ``raw``: as serialized bytes, not converted to Python messages."""
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    types = rclpy_types()
    by_topic = {output.topic: types[output.msgtype] for output in OUTPUTS}
    rclpy.init()
    node = Node("bench_subscriber", namespace=namespace)
    for topic in topics:
        node.create_subscription(by_topic[topic], topic, lambda msg: None, 10, raw=raw)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # stopped by the benchmark
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--subscribe-only"]:
        raw = argv[2] == "--raw"
        return subscribe_only(argv[1], argv[3:] if raw else argv[2:], raw)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--processing-resolution", type=int, default=64,
                        help="small, so predict does not dominate the run time")
    parser.add_argument("--outputs", choices=list(OUTPUT_SETS), default="all",
                        help="every output (opt-in ones switched on), those on by default, "
                        "or what Nav2 uses: depth/image, depth/camera_info, points")
    parser.add_argument("--raw-subscriber", action="store_true",
                        help="the subscriber process takes serialized bytes (about a C++ "
                        "subscriber's cost) instead of Python messages")
    parser.add_argument("--cloud-repeats", type=int, default=30)
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="keep/reuse checkpoints here instead of a temporary folder")
    args = harness.parse(parser, argv, QUICK)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        return run(args, args.ckpt_dir or Path(tmp))


def run(args: argparse.Namespace, ckpt_dir: Path) -> int:
    w, h = args.width, args.height
    camera = PinholeCamera(w, h, fx=0.8 * w, fy=0.78 * w, cx=w / 2 - 0.7, cy=h / 2 + 0.4)
    wanted = OUTPUT_SETS[args.outputs]
    topics = [output.topic for output in wanted]
    est = TimedEstimator(Estimator(harness.ensure_checkpoint(ckpt_dir, "tiny", "depth"),
                                   harness.ensure_checkpoint(ckpt_dir, "tiny", "normals"),
                                   device="cpu",
                                   processing_resolution=args.processing_resolution))
    keep_cpu_buffers_mapped()  # as the node's main does: this process runs inference
    harness.start([sys.executable, __file__, "--subscribe-only", "/bench",
                   *(["--raw"] if args.raw_subscriber else []), *topics])
    # Every wanted output's enabling parameter on: opt-in outputs are off by default.
    params = [Parameter("fixed_scale", value=2.0),
              Parameter("processing_resolution", value=args.processing_resolution),
              *(Parameter(enable, value=True) for enable in {o.enable for o in wanted})]
    # rclpy's own signal handlers stay out: harness.main turns SIGTERM into an exit.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    totals, inside = [], []
    try:
        node = MeasuredNode(estimator=est, namespace="/bench", parameter_overrides=params)
        rig = Rig(node, "/bench", subscribe=False)
        try:
            publishers = node.stream("").pub
            if not rig.wait_for(lambda: all(publishers[o.key].get_subscription_count() > 0
                                            for o in wanted), timeout=30):
                print("the subscriber process did not subscribe within 30 s", file=sys.stderr)
                return 1
            rng = np.random.default_rng(0)
            for i in range(args.frames + 2):
                rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                stamp = 1_700_000_000_000_000_000 + i * 10**8
                rig.info_pub.publish(camera_info(camera, stamp))
                time.sleep(0.02)
                node.frame_done.clear()
                start = time.perf_counter()
                rig.send(rgb, stamp)
                # an event, not polling: a polling thread would take the GIL from the worker
                done = node.frame_done.wait(timeout=30) and node.stats.processed == i + 1
                if not done:
                    print(f"frame {i}: outputs missing", file=sys.stderr)
                    return 1
                totals.append(time.perf_counter() - start)
                inside.append(node.stats.overhead)
        finally:
            rig.close()
    finally:
        rclpy.shutdown()
    # the first frames warm caches up
    totals, predicts, inside = totals[2:], est.times[2:], inside[2:]
    cpu, waited = node.cpu[2:], node.waited[2:]
    overhead = [t - p for t, p in zip(totals, predicts)]
    cloud = bench_cloud(camera, args.cloud_repeats)
    print(f"node at {w}x{h}, tiny model at processing_resolution "
          f"{args.processing_resolution}, {len(totals)} frames, {len(wanted)} outputs "
          f"({args.outputs}) subscribed: {', '.join(topics)}")
    print(f"  per frame total (image publish -> outputs published): "
          f"{statistics.median(totals)*1e3:.1f} ms")
    print(f"  Estimator.predict: {statistics.median(predicts)*1e3:.1f} ms")
    target = TARGETS_MS.get(args.outputs)
    print(f"  in the node beyond predict (decode, match, metric, cloud, pack, publish): "
          f"{statistics.median(inside)*1e3:.1f} ms"
          + (f"   (target <= {target:g} ms)" if target else ""))
    print(f"    of which the worker's CPU time: {statistics.median(cpu)*1e3:.1f} ms, "
          f"waiting for a core: {statistics.median(waited)*1e3:.1f} ms"
          + ("  (subscriber: serialized bytes)" if args.raw_subscriber else ""))
    print(f"  total beyond predict (adds image delivery to the node): "
          f"{statistics.median(overhead)*1e3:.1f} ms")
    print(f"  organized xyz+rgb cloud build alone:       {cloud*1e3:8.2f} ms"
          "   (target <= 5 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

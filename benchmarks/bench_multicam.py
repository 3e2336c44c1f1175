"""One node serving N cameras vs N single-camera nodes: frame rate, latency, memory.

Every node is a separate process (``python -m e2e_depth_ros.ros.node``) with random-weight
checkpoints of two sizes (tiny; mid, where convolutions dominate) on the CPU. This process
publishes an image on every camera at ``--rate`` Hz with the wall clock as stamp and
subscribes to each camera's ``depth/relative``. Reported per configuration: outputs per
second over all cameras, latency (receive time - stamp) p50/p95 over every camera's frames
and the worst camera's p50/p95, resident memory (VmRSS at the end of the run and the peak
VmHWM, each summed over the node processes) and CPU seconds per output frame (all node
processes). The two layouts alternate for each N, so
both see the same machine load. On a shared machine N processes get N shares of the CPU
against other load where one process gets one, so compare CPU s/frame for efficiency.

    python benchmarks/bench_multicam.py [--sizes tiny mid] [--cameras 1 2 3 4] [--seconds 12]
        [--max-batch 0]    (the one node's max_batch; 0: its auto, one frame per call on a CPU)
        [--quick]          (tiny model, one camera, two seconds per layout)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import harness

harness.ros_loopback(78)

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from e2e_depth_ros.ros import messages  # noqa: E402
from e2e_depth_ros.ros.sync import stamp_to_ns  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"sizes": ["tiny"], "cameras": [1], "seconds": 2.0, "warmup": 1.0, "resolution": 64}


@dataclass
class Run:
    size: str
    layout: str  # "one node" or "N nodes"
    cameras: int
    fps: float
    p50_ms: float
    p95_ms: float
    worst_p50_ms: float  # the camera with the highest p50 / p95
    worst_p95_ms: float
    rss_mb: float
    peak_mb: float
    cpu_per_frame: float  # CPU seconds (all node processes) per output frame


def status_mb(pid: int, key: str = "VmRSS") -> float:
    """A memory figure of /proc/PID/status in MB (VmRSS now, VmHWM its peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def quantiles_ms(latencies: list[float]) -> tuple[float, float]:
    """p50 and p95 of latencies in seconds, in ms."""
    if len(latencies) < 2:
        return float("nan"), float("nan")
    q = statistics.quantiles(latencies, n=20)
    return q[9] * 1e3, q[18] * 1e3


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node(namespace: str, cameras: list[str], depth: str, normals: str,
               resolution: int, max_batch: int, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "e2e_depth_ros.ros.node", "--ros-args", "-r",
            f"__ns:={namespace}", "-p", f"depth_model:={depth}", "-p",
            f"normals_model:={normals}", "-p", "device:=cpu", "-p",
            f"processing_resolution:={resolution}", "-p",
            f"max_batch:={max_batch}", "--log-level", "warn"]
    if cameras:
        args += ["-p", f"cameras:=[{', '.join(cameras)}]"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with log.open("w") as out:
        return harness.start(args, stdout=out, stderr=subprocess.STDOUT, env=env)


class Driver:
    """Publishes the cameras' images and records each depth/relative's latency."""

    def __init__(self, prefixes: list[str], width: int, height: int) -> None:
        self.node = Node(f"bench_multicam_driver_{os.getpid()}")
        reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = [self.node.create_publisher(Image, f"{p}/image", 2) for p in prefixes]
        self.latency: list[list[float]] = [[] for _ in prefixes]
        self.arrivals: list[list[float]] = [[] for _ in prefixes]
        self.subs = [self.node.create_subscription(Image, f"{p}/depth/relative",
                                                   self._recorder(i), reliable)
                     for i, p in enumerate(prefixes)]
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                       for _ in prefixes]
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _recorder(self, index: int):
        def record(msg) -> None:
            now = time.time_ns()
            self.latency[index].append((now - stamp_to_ns(msg.header.stamp)) * 1e-9)
            self.arrivals[index].append(time.monotonic())
        return record

    def ready(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs) and \
            all(s.get_publisher_count() > 0 for s in self.subs)

    def stream(self, seconds: float, rate: float) -> None:
        period, next_at = 1.0 / rate, time.monotonic()
        end = next_at + seconds
        while next_at < end:
            sec, nanosec = divmod(time.time_ns(), 10**9)
            header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera_optical")
            for pub, rgb in zip(self.pubs, self.images):
                pub.publish(messages.build_image(Image, header, rgb, "rgb8"))
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()


def measure(layout: str, size: str, n: int, ckpt: dict[str, str], args,
            logs: Path) -> Run:
    tag = f"{size}_{n}_{'one' if layout == 'one node' else 'many'}_{os.getpid()}"
    if layout == "one node":
        names = [f"cam{i}" for i in range(n)]
        procs = [start_node(f"/bm_{tag}", names, ckpt["depth"], ckpt["normals"],
                            args.resolution, args.max_batch, logs / f"{tag}.log")]
        prefixes = [f"/bm_{tag}/{name}" for name in names]
    else:
        procs = [start_node(f"/bm_{tag}_{i}", [], ckpt["depth"], ckpt["normals"],
                            args.resolution, 0, logs / f"{tag}_{i}.log") for i in range(n)]
        prefixes = [f"/bm_{tag}_{i}" for i in range(n)]
    driver = None
    try:
        driver = Driver(prefixes, args.width, args.height)
        deadline = time.monotonic() + 180
        while not driver.ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{layout} x{n} ({size}) did not come up; see {logs}")
            time.sleep(0.2)
        driver.stream(args.warmup, args.rate)
        start = time.monotonic()
        counted = [len(a) for a in driver.latency]
        cpu_start = sum(cpu_seconds(p.pid) for p in procs)
        driver.stream(args.seconds, args.rate)
        time.sleep(1.0)  # the frames in flight
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_start
        frames = sum(sum(1 for t in arr if t >= start) for arr in driver.arrivals)
        span = max(max((arr[-1] for arr in driver.arrivals if arr), default=start) - start,
                   1e-6)
        per_camera = [arr[c:] for arr, c in zip(driver.latency, counted)]
        rss = sum(status_mb(p.pid) for p in procs)
        peak = sum(status_mb(p.pid, "VmHWM") for p in procs)
    finally:
        if driver is not None:
            driver.close()
        harness.stop(*procs, grace=10.0)
    p50, p95 = quantiles_ms([x for arr in per_camera for x in arr])
    worst = [quantiles_ms(arr) for arr in per_camera]
    return Run(size, layout, n, frames / span, p50, p95, max(w[0] for w in worst),
               max(w[1] for w in worst), rss, peak, cpu / max(frames, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    parser.add_argument("--cameras", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=5.0, help="Hz per camera")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=0,
                        help="the one node's max_batch; 0 = the node's auto (1 on a CPU)")
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="keep/reuse checkpoints here instead of a temporary folder")
    args = harness.parse(parser, argv, QUICK)

    # rclpy's own signal handlers stay out: harness.main turns SIGTERM into an exit.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench_multicam_") as tmp:
        logs = Path(tmp)
        for size in args.sizes:
            ckpt = {task: harness.ensure_checkpoint(args.ckpt_dir or logs, size, task)
                    for task in ("depth", "normals")}
            for n in args.cameras:
                for layout in ("one node", "N nodes"):
                    run = measure(layout, size, n, ckpt, args, logs)
                    runs.append(run)
                    print(f"  {size} {layout} x{n}: {run.fps:.2f} fps, p50 {run.p50_ms:.0f} ms"
                          f", p95 {run.p95_ms:.0f} ms, RSS {run.rss_mb:.0f} MB (peak "
                          f"{run.peak_mb:.0f}), {run.cpu_per_frame:.2f} CPU s/frame",
                          flush=True)
    rclpy.shutdown()

    print(f"\n{args.width}x{args.height} at processing_resolution {args.resolution}, "
          f"{args.rate:g} Hz per camera, depth+normals loaded, depth/relative subscribed, "
          f"one node's max_batch {args.max_batch or 'auto'}, CPU ({os.cpu_count()} cores)")
    print("| model | cameras | layout | fps (all cameras) | latency p50 / p95 ms | worst camera "
          "p50 / p95 ms | CPU s/frame | RSS MB (peak) | RSS one / N nodes (peak) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        pair = next(r for r in runs if (r.size, r.cameras) == (run.size, run.cameras)
                    and r.layout == "N nodes")
        ratio = (f"{run.rss_mb / pair.rss_mb:.2f}x ({run.peak_mb / pair.peak_mb:.2f}x)"
                 if run.layout == "one node" else "")
        print(f"| {run.size} | {run.cameras} | {run.layout} | {run.fps:.2f} | "
              f"{run.p50_ms:.0f} / {run.p95_ms:.0f} | {run.worst_p50_ms:.0f} / "
              f"{run.worst_p95_ms:.0f} | {run.cpu_per_frame:.2f} | {run.rss_mb:.0f} "
              f"({run.peak_mb:.0f}) | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

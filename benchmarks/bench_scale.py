"""Time fit_depth_to_lidar on a 640 x 480 relative depth and 100k LiDAR points.

Run: ``python benchmarks/bench_scale.py [--repeats N] [--quick]``; prints the median in ms
(target <= 20 ms on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from e2e_depth_ros.core.geometry import PinholeCamera  # noqa: E402
from e2e_depth_ros.core.scale import fit_depth_to_lidar  # noqa: E402

QUICK = {"repeats": 3}


def make_inputs(width: int = 640, height: int = 480, n_points: int = 100_000,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A slanted-plane scene: relative depth, a noisy cloud with 20 % outliers, and P."""
    rng = np.random.default_rng(seed)
    camera = PinholeCamera(width, height, fx=520.0, fy=500.0, cx=322.0, cy=238.0)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = 2.0 + 3.0 * u / width + 1.5 * v / height
    relative = ((depth - 0.7) / 4.0).astype(np.float32)
    pu = rng.uniform(-20, width + 20, n_points)
    pv = rng.uniform(-20, height + 20, n_points)
    z = 2.0 + 3.0 * np.clip(pu, 0, width) / width + 1.5 * np.clip(pv, 0, height) / height
    z *= 1.0 + 0.01 * rng.standard_normal(n_points)
    outliers = rng.random(n_points) < 0.2
    z[outliers] = rng.uniform(0.5, 10.0, np.count_nonzero(outliers))
    points = np.stack([(pu - camera.cx) * z / camera.fx, (pv - camera.cy) * z / camera.fy, z], 1)
    return relative, points, camera.projection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = harness.parse(parser, argv, QUICK)
    relative, points, P = make_inputs()
    fit = fit_depth_to_lidar(relative, points, P)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fit_depth_to_lidar(relative, points, P)
        times.append(time.perf_counter() - start)
    print(f"fit_depth_to_lidar 640x480, {len(points)} points: median "
          f"{1e3 * float(np.median(times)):.1f} ms (scale {fit.scale:.4f}, shift "
          f"{fit.shift:.4f}, {fit.inliers}/{fit.candidates} inliers, ok={fit.ok})")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

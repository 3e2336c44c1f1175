"""The GPU torch path: first frame after warm-up vs steady state, depth and depth+normals.

Run on a CUDA machine (under 8 minutes on an H200):
``python benchmarks/bench_gpu_path.py --size real --device cuda [--compile] [--cuda-graphs]``.
Targets at 768x576 fp16: depth <= 20 ms/frame after warm-up, depth+normals <= 33 ms, the
first frame after ready <= 1.5x the steady state. ``--device cpu --size tiny`` is a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_backends import ensure_checkpoint  # noqa: E402

from e2e_depth_ros.estimator import Estimator, quiet_model_libraries  # noqa: E402


def frame_ms(est: Estimator, image: np.ndarray, normals: bool) -> float:
    if est.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    est.predict(image, normals=normals)  # returns numpy: the copy back is included
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="real", choices=["tiny", "mid", "real"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--work", default="/tmp/e2e-bench-gpu")
    args = parser.parse_args(argv)
    quiet_model_libraries()
    work = Path(args.work)
    depth = ensure_checkpoint(work, args.size, "depth")
    normals = ensure_checkpoint(work, args.size, "normals")
    lines = []
    est = Estimator(depth, normals, device=args.device, precision=args.precision,
                    processing_resolution=768, compile=args.compile,
                    cuda_graphs=args.cuda_graphs, log=lines.append)
    warm = est.warm_up(force=True)  # what the node does before "ready"
    image = np.random.default_rng(0).integers(0, 256, (576, 768, 3), dtype=np.uint8)
    first = frame_ms(est, image, normals=True)
    both = [frame_ms(est, image, normals=True) for _ in range(args.frames)]
    only = [frame_ms(est, image, normals=False) for _ in range(args.frames)]
    steady = statistics.median(both)
    print("\n".join(lines))
    print(f"{est.describe()}, compile {args.compile}, CUDA graphs {args.cuda_graphs}, "
          f"{args.size} model, 768x576, warm-up {warm:.1f} s")
    print(f"depth:          {statistics.median(only):8.1f} ms/frame (median of {args.frames})")
    print(f"depth+normals:  {steady:8.1f} ms/frame")
    print(f"first frame after warm-up: {first:.1f} ms = {first / steady:.2f}x steady state")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

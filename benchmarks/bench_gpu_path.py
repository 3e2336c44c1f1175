"""The GPU torch path: first frame after warm-up vs steady state, depth and depth+normals.

Then the whole frame (model, metric map, cloud, the three pictures) finished on the device
with one pinned copy back, against the same frame finished in numpy.

Run on a CUDA machine (under 8 minutes on an H200):
``python benchmarks/bench_gpu_path.py --size real --device cuda [--compile] [--cuda-graphs]``.
Targets at 768x576 fp16: depth <= 20 ms/frame after warm-up, depth+normals <= 33 ms, the
first frame after ready <= 1.5x the steady state. ``--quick`` is a smoke run in seconds (tiny
model, 64 px, a few frames; on the CPU where there is no GPU: then the figures say nothing
about the GPU path, and the output says so).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries  # noqa: E402
from e2e_depth_ros.core.geometry import PinholeCamera  # noqa: E402
from e2e_depth_ros.ros.outputs import OUTPUTS, PICTURES, needs_for  # noqa: E402
from e2e_depth_ros.core.processing import FrameProcessor, ProcessingConfig  # noqa: E402

QUICK = {"size": "tiny", "frames": 2, "resolution": 64,
         "device": "cuda" if torch.cuda.is_available() else "cpu"}


def frame_ms(est: Estimator, image: np.ndarray, normals: bool) -> float:
    if est.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    est.predict(image, normals=normals)  # returns numpy: the copy back is included
    return (time.perf_counter() - start) * 1e3


def pipeline_ms(proc: FrameProcessor, image: np.ndarray, camera: PinholeCamera) -> float:
    """One frame to every output's array, pictures included (drawn here when not on the
    device, as the node's message builders would)."""
    needs = needs_for(OUTPUTS, points_normals=True)
    if proc.estimator.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = proc.process(image, 0.0, camera=camera, needs=needs)
    for output in OUTPUTS:
        if output.key in PICTURES and output.key not in result.pictures:
            field = {"depth_vis": "relative", "normals_vis": "normals"}.get(output.key, "metric")
            _draw(output.key, getattr(result, field))
    return (time.perf_counter() - start) * 1e3


def _draw(key: str, array: np.ndarray) -> np.ndarray:
    from e2e_depth_ros.core import visualize
    from e2e_depth_ros.ros import outputs

    return {"depth_vis": visualize.colorize_depth, "normals_vis": visualize.normals_to_rgb8,
            "depth_mm": outputs._millimetres}[key](array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="real", choices=["tiny", "mid", "real"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--work", default="/tmp/e2e-bench-gpu")
    parser.add_argument("--resolution", type=int, default=768,
                        help="processing resolution; the image is that wide, 4:3")
    args = harness.parse(parser, argv, QUICK)
    quiet_model_libraries()
    depth = harness.ensure_checkpoint(args.work, args.size, "depth")
    normals = harness.ensure_checkpoint(args.work, args.size, "normals")
    lines = []
    width, height = args.resolution, args.resolution * 3 // 4
    est = Estimator(depth, normals, device=args.device, precision=args.precision,
                    processing_resolution=args.resolution, compile=args.compile,
                    cuda_graphs=args.cuda_graphs, log=lines.append)
    warm = est.warm_up(force=True)  # what the node does before "ready"
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    first = frame_ms(est, image, normals=True)
    both = [frame_ms(est, image, normals=True) for _ in range(args.frames)]
    only = [frame_ms(est, image, normals=False) for _ in range(args.frames)]
    steady = statistics.median(both)
    print("\n".join(lines))
    if est.device.type != "cuda":
        print(f"CPU only ({est.device}): these figures say nothing about the GPU path")
    print(f"{est.describe()}, compile {args.compile}, CUDA graphs {args.cuda_graphs}, "
          f"{args.size} model, {width}x{height}, warm-up {warm:.1f} s")
    print(f"depth:          {statistics.median(only):8.1f} ms/frame (median of {args.frames})")
    print(f"depth+normals:  {steady:8.1f} ms/frame")
    print(f"first frame after warm-up: {first:.1f} ms = {first / steady:.2f}x steady state")
    camera = PinholeCamera(width, height, fx=0.78 * width, fy=0.8 * width,
                           cx=width / 2 - 0.5, cy=height / 2 - 0.5)
    config = ProcessingConfig(fixed_scale=10.0, fixed_shift=0.5)
    from e2e_depth_ros.model.device_finish import DeviceFinisher

    for on_device in (False, True):
        proc = FrameProcessor(est, config,
                              finisher=DeviceFinisher(est.device) if on_device else None)
        pipeline_ms(proc, image, camera)
        times = [pipeline_ms(proc, image, camera) for _ in range(args.frames)]
        where = "on the device, one pinned copy" if on_device else "numpy after the copy"
        print(f"whole frame, every output ({where}): {statistics.median(times):8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

"""How far a CPU backend can go in fp32: each stage's multiply-adds against the CPU's peak.

Run: ``python benchmarks/bench_flops.py [--size real] [--resolutions 384 768] [--quick]``.

Counts each stage's floating-point operations with torch's FlopCounterMode (one torch fp32
frame per resolution), measures this machine's fp32 matrix-multiply rate (4096^2 sgemm,
the best any backend's convolutions reach), and prints the time a frame needs at that
rate: no fp32 backend can beat it, so "seconds at peak / torch seconds" is the lowest
ratio to torch fp32 any fp32 backend can reach here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from e2e_depth_ros.model.backend_torch import (  # noqa: E402
    DecoderStage, EncoderStage, UNetStage, load_checkpoint)
from e2e_depth_ros.model.estimator import quiet_model_libraries  # noqa: E402

QUICK = {"size": "tiny", "resolutions": [64], "sgemm_size": 512}


def sgemm_gflops(n: int, rounds: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(rounds):
        a @ b
    return 2 * n ** 3 * rounds / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="real", choices=["tiny", "mid", "real"])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[384, 768])
    parser.add_argument("--work", default="/tmp/e2e-bench-backends")
    parser.add_argument("--sgemm-size", type=int, default=4096,
                        help="side of the square matrices of the peak measurement")
    args = harness.parse(parser, argv, QUICK)
    quiet_model_libraries()
    loaded = load_checkpoint(harness.ensure_checkpoint(args.work, args.size, "depth"))
    stages = {"encoder": EncoderStage(loaded.vae),
              "unet": UNetStage(loaded.unet, loaded.text_embedding, loaded.timestep),
              "decoder": DecoderStage(loaded.vae)}
    peak = sgemm_gflops(args.sgemm_size)
    print(f"fp32 sgemm {args.sgemm_size}^2 on this CPU ({torch.get_num_threads()} threads): "
          f"{peak:.0f} GFLOP/s")
    print("| processing | stage | GFLOP | torch s | torch GFLOP/s | s at sgemm peak |")
    print("|---|---|---|---|---|---|")
    for res in args.resolutions:
        h, w = res * 3 // 4, res
        inputs = {"encoder": torch.randn(1, 3, h, w),
                  "unet": torch.randn(1, 4, h // 8, w // 8),
                  "decoder": torch.randn(1, 4, h // 8, w // 8)}
        total_flops = total_torch = 0.0
        for name, stage in stages.items():
            with torch.inference_mode():
                stage(inputs[name])  # warm
                start = time.perf_counter()
                stage(inputs[name])
                seconds = time.perf_counter() - start
                with FlopCounterMode(display=False) as counter:
                    stage(inputs[name])
            gflop = counter.get_total_flops() / 1e9
            total_flops += gflop
            total_torch += seconds
            print(f"| {res} | {name} | {gflop:.0f} | {seconds:.2f} | {gflop / seconds:.0f} "
                  f"| {gflop / peak:.2f} |")
        floor = total_flops / peak
        print(f"| {res} | frame | {total_flops:.0f} | {total_torch:.2f} | "
              f"{total_flops / total_torch:.0f} | {floor:.2f} = {floor / total_torch:.2f}x "
              "torch |")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

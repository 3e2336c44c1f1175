"""Time Estimator.predict against diffusers' MarigoldDepthPipeline on the same weights.

Run: ``python benchmarks/bench_estimator.py [--size mid|real|tiny] [--repeats N] [--quick]``.
Prints (a) depth-only Estimator vs a MarigoldDepthPipeline set up to compute the same thing
(one step at t = 999, zero latents, no ensembling; target ratio <= 1.0) and (b) one
Estimator with depth + normals vs the sum of a depth-only and a normals-only one (target
ratio <= 0.9: the shared VAE encode and the batched decode should pay). Weights are random
(tiny_checkpoint), which does not change the cost. Timings are medians of interleaved runs
after one warm-up. On a GPU: ``--size real --dtype float16 --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from e2e_depth_ros.model.estimator import (  # noqa: E402
    Estimator, quiet_model_libraries, resolve_device,
    resolve_dtype)

QUICK = {"size": "tiny", "width": 64, "height": 48, "resolution": 64, "repeats": 1}


def marigold_depth_pipeline(path: Path, device: torch.device, dtype: torch.dtype,
                            compile: bool):
    """diffusers' MarigoldDepthPipeline on the checkpoint's components, returning x0 itself."""
    from diffusers import (AutoencoderKL, DDIMScheduler, MarigoldDepthPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = MarigoldDepthPipeline(
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype),
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype),
        # set_alpha_to_one: the last DDIM step returns x0 itself, as the estimator does
        scheduler=DDIMScheduler.from_pretrained(path, subfolder="scheduler",
                                                set_alpha_to_one=True),
        text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder",
                                                   torch_dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        prediction_type="depth",
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    if compile:  # the same modules the estimator compiles
        pipe.unet = torch.compile(pipe.unet)
        pipe.vae.encoder = torch.compile(pipe.vae.encoder)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder)
    return pipe


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                     device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function: one warm-up each, then rounds in rotating order."""
    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for fn in fns.values():
        fn()  # warm-up: allocator, kernels, compilation
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(fns[name]))
    return times


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float]) -> str:
    """Median and, in brackets, the minimum: the minimum shows through a busy machine."""
    return f"{med(values):.3f} s (min {min(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--size", choices=["tiny", "mid", "real"], default="mid",
                        help="checkpoint widths (real = Stable Diffusion 2 shapes; GPU only)")
    parser.add_argument("--width", type=int, default=384, help="input image width")
    parser.add_argument("--height", type=int, default=288, help="input image height")
    parser.add_argument("--resolution", type=int, default=384,
                        help="processing_resolution (the resized size must divide by 8, as "
                        "diffusers pads otherwise)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the estimator and the diffusers UNet/VAE")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--ckpt-dir", type=Path, default=None,
                        help="keep/reuse checkpoints here instead of a temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = harness.parse(parser, argv, QUICK)

    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_model_libraries()  # no info logs or loading bars in the printed figures
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory(prefix="bench_estimator_") as tmp:
        ckpts = {task: Path(harness.ensure_checkpoint(args.ckpt_dir or tmp, args.size, task))
                 for task in ("depth", "normals")}
        figures = run(args, ckpts, device, dtype)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def run(args: argparse.Namespace, ckpts: dict[str, Path], device: torch.device,
        dtype: torch.dtype) -> dict:
    """Build the estimators and the pipeline, time (a) and (b), print and return figures."""
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3),
                                              dtype=np.uint8)

    def estimator(depth: Path | None, normals: Path | None) -> Estimator:
        return Estimator(str(depth) if depth else None, str(normals) if normals else None,
                         device=str(device), dtype=str(dtype).removeprefix("torch."),
                         processing_resolution=args.resolution, compile=args.compile)

    est_depth = estimator(ckpts["depth"], None)
    est_normals = estimator(None, ckpts["normals"])
    est_both = estimator(ckpts["depth"], ckpts["normals"])
    h, w = est_depth.processing_size(args.height, args.width)
    if h % 8 or w % 8:
        print(f"warning: processing size {w}x{h} is not a multiple of 8: diffusers pads, so "
              "(a) compares slightly different work")
    pipe = marigold_depth_pipeline(ckpts["depth"], device, dtype, args.compile)
    latents = torch.zeros(1, 4, -(-h // 8), -(-w // 8), device=device, dtype=dtype)

    def diffusers_depth() -> np.ndarray:
        # A uint8 [1, 3, H, W] tensor: its check_inputs reads numpy arrays as channels-first.
        chw = torch.from_numpy(image).permute(2, 0, 1)[None]
        out = pipe(chw, num_inference_steps=1, ensemble_size=1,
                   processing_resolution=args.resolution, latents=latents, batch_size=1,
                   output_type="np")
        return out.prediction[0, ..., 0]

    print(f"device {device} ({torch.get_num_threads()} threads), dtype "
          f"{str(dtype).removeprefix('torch.')}, size {args.size}, image "
          f"{args.width}x{args.height}, resolution {args.resolution} (runs at {w}x{h}), "
          f"compile {args.compile}, torch {torch.__version__}, shared VAE {est_both.shared_vae}, "
          f"median of {args.repeats} after 1 warm-up")

    diff = float(np.abs(est_depth.predict(image).depth - diffusers_depth()).max())
    a = time_interleaved({"estimator": lambda: est_depth.predict(image),
                          "diffusers": diffusers_depth}, args.repeats, device)
    ratio_a = med(a["estimator"]) / med(a["diffusers"])
    ratio_a_min = min(a["estimator"]) / min(a["diffusers"])
    print(f"(a) depth only: estimator {fmt(a['estimator'])}, diffusers Marigold "
          f"{fmt(a['diffusers'])}, ratio {ratio_a:.3f} (of minima {ratio_a_min:.3f}; target "
          f"<= 1.0; max |depth diff| {diff:.2e})")

    b = time_interleaved({"both": lambda: est_both.predict(image),
                          "depth": lambda: est_depth.predict(image),
                          "normals": lambda: est_normals.predict(image)}, args.repeats, device)
    ratio_b = med(b["both"]) / (med(b["depth"]) + med(b["normals"]))
    ratio_b_min = min(b["both"]) / (min(b["depth"]) + min(b["normals"]))
    print(f"(b) depth + normals: one estimator {fmt(b['both'])}, depth-only "
          f"{fmt(b['depth'])} + normals-only {fmt(b['normals'])}, ratio {ratio_b:.3f} (of "
          f"minima {ratio_b_min:.3f}; target <= 0.9)")
    return {
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "size": args.size,
        "threads": torch.get_num_threads(), "width": args.width, "height": args.height,
        "resolution": args.resolution, "compile": args.compile, "repeats": args.repeats,
        "max_abs_depth_diff": diff, "times_s": {**a, **{f"{k}_b": v for k, v in b.items()}},
        "estimator_depth_s": med(a["estimator"]), "diffusers_depth_s": med(a["diffusers"]),
        "ratio_estimator_over_diffusers": ratio_a, "ratio_a_of_minima": ratio_a_min,
        "both_s": med(b["both"]), "depth_only_s": med(b["depth"]),
        "normals_only_s": med(b["normals"]), "ratio_both_over_sum": ratio_b,
        "ratio_b_of_minima": ratio_b_min,
    }


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

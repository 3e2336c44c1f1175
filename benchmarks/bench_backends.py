"""Every available backend and precision against torch fp32, seconds per frame and agreement.

Run: ``python benchmarks/bench_backends.py [--size real|mid|tiny] [--resolutions 384 768]
[--repeats N] [--work DIR] [--backends openvino onnxruntime] [--quick]``.

For each processing resolution and each configuration (openvino fp32/bf16, onnxruntime fp32,
as installed and supported here), the configuration and torch fp32 are timed in alternating
rounds on the same depth model (random weights: tiny_checkpoint, which does not change the
cost), so each ratio compares runs made under the same machine load; only the torch
reference and one other configuration are in memory at a time. Agreement with torch fp32
on the same weights: depth max abs difference (over [0, 1] depth) on the benchmark model,
and the normals' mean angle on a ``--normals-size`` normals model (the real size would
need two more multi-minute conversions). Conversions are cached in ``--work``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries  # noqa: E402

BACKENDS = ("openvino", "onnxruntime")
# One backend: each conversion, even of the tiny model, takes seconds.
QUICK = {"size": "tiny", "normals_size": "tiny", "resolutions": [64], "repeats": 1,
         "backends": ["onnxruntime"]}


def configurations(backends: list[str]) -> list[tuple[str, str]]:
    """(backend, precision) pairs of ``backends`` this machine can run, besides the torch
    fp32 reference."""
    found = []
    if "openvino" in backends and importlib.util.find_spec("openvino"):
        import openvino as ov

        found.append(("openvino", "fp32"))
        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            found.append(("openvino", "bf16"))
    if "onnxruntime" in backends and importlib.util.find_spec("onnxruntime"):
        found.append(("onnxruntime", "fp32"))
    return found


def timed(est: Estimator, image: np.ndarray):
    start = time.perf_counter()
    pred = est.predict(image, normals=False)
    return time.perf_counter() - start, pred


def mean_angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = np.clip((a * b).sum(-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="real", choices=["tiny", "mid", "real"])
    parser.add_argument("--normals-size", default="mid", choices=["tiny", "mid", "real"])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[384, 768])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds per pair")
    parser.add_argument("--work", default="/tmp/e2e-bench-backends")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="those to compare with torch, where installed")
    args = harness.parse(parser, argv, QUICK)
    quiet_model_libraries()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = str(work / "cache")
    depth_ckpt = harness.ensure_checkpoint(work, args.size, "depth")
    normals_ckpt = harness.ensure_checkpoint(work, args.normals_size, "normals")
    configs = configurations(args.backends)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; configurations "
        f"{configs}; model {args.size}; normals agreement on {args.normals_size}")

    # Conversions first, one at a time, before any model is resident (they need the RAM).
    for backend in sorted({b for b, _ in configs}):
        start = time.perf_counter()
        from e2e_depth_ros.model.export import default_cache_dir, export_folder_for  # noqa: F401

        fmt = "onnx" if backend == "onnxruntime" else "openvino"
        export_folder_for(depth_ckpt, fmt, "depth", Path(cache), log=log)
        export_folder_for(normals_ckpt, fmt, "normals", Path(cache), log=log)
        log(f"{backend}: export ready ({time.perf_counter() - start:.0f} s)")
        gc.collect()

    rng = np.random.default_rng(0)
    rows = []
    for res in args.resolutions:
        image = rng.integers(0, 256, (res * 3 // 4, res, 3), dtype=np.uint8)
        torch_est = Estimator(depth_ckpt, None, device="cpu", processing_resolution=res)
        ref_time, ref = timed(torch_est, image)  # warm-up
        log(f"{res}: torch fp32 warm-up {ref_time:.2f} s")
        torch_times = []
        for backend, precision in configs:
            start = time.perf_counter()
            est = Estimator(depth_ckpt, None, device="cpu", processing_resolution=res,
                            backend=backend, precision=precision, cache_dir=cache)
            load = time.perf_counter() - start
            first, pred = timed(est, image)  # compiles this shape
            log(f"{res}: {backend} {precision} loaded in {load:.1f} s, first frame "
                f"{first:.2f} s")
            ours, theirs = [], []
            for _ in range(args.repeats):  # alternate: same load on both sides of the ratio
                t, _ = timed(torch_est, image)
                theirs.append(t)
                t, _ = timed(est, image)
                ours.append(t)
            torch_times += theirs
            ratio = statistics.median(ours) / statistics.median(theirs)
            rows.append(dict(res=res, config=f"{backend} {precision}",
                             seconds=statistics.median(ours), ratio=ratio,
                             depth_diff=float(np.abs(pred.depth - ref.depth).max())))
            log(f"{res}: {backend} {precision}: {statistics.median(ours):.2f} s/frame, "
                f"torch {statistics.median(theirs):.2f} s/frame, ratio {ratio:.2f}")
            del est, pred
            gc.collect()
        rows.append(dict(res=res, config="torch fp32",
                         seconds=statistics.median(torch_times or [ref_time]), ratio=1.0,
                         depth_diff=0.0))
        del torch_est
        gc.collect()

    # Normals agreement on the normals model (one image at the first resolution).
    res = args.resolutions[0]
    image = rng.integers(0, 256, (res * 3 // 4, res, 3), dtype=np.uint8)
    ref = Estimator(None, normals_ckpt, device="cpu", processing_resolution=res).predict(image)
    angles = {"torch fp32": 0.0}
    for backend, precision in configs:
        est = Estimator(None, normals_ckpt, device="cpu", processing_resolution=res,
                        backend=backend, precision=precision, cache_dir=cache)
        angles[f"{backend} {precision}"] = mean_angle(est.predict(image).normals, ref.normals)
        del est
        gc.collect()

    print(f"\nbackends on this CPU ({torch.get_num_threads()} threads), {args.size} depth "
          f"model, median of {args.repeats} interleaved rounds; normals angle on the "
          f"{args.normals_size} normals model at {res}")
    print("| processing | configuration | s/frame | x torch fp32 | depth max abs diff "
          "| normals mean angle (deg) |")
    print("|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: (r["res"], r["config"] != "torch fp32")):
        print(f"| {row['res']} | {row['config']} | {row['seconds']:.2f} | {row['ratio']:.2f} "
              f"| {row['depth_diff']:.2e} | {angles.get(row['config'], float('nan')):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

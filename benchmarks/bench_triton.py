"""What Triton costs over local inference, and what one server gives several clients.

    python benchmarks/bench_triton.py [--quick] [--frames N] [--size 480x640]
        [--processing-resolution PX] [--serve-python PATH]

Starts its own ``e2e-depth serve`` (tiny checkpoints, CPU, 127.0.0.1, the server
environment of ci/serve.sh) and stops it by PID at the end, whatever happens. Reports:

1. overhead: p50/p90 of (triton round trip - local ``Estimator.predict``) for one frame,
   the same model and processing resolution, depth only and depth + normals. The tiny model
   at a small processing resolution keeps the model's share small, so what is left is the
   transport of a 640x480 frame in and its outputs at 640x480 back, over loopback;
2. 1 vs 4 clients at once against one server: frames/s and Triton's own counters
   (nv_inference_count vs nv_inference_exec_count: fewer executions = batched).

``--quick`` (seconds): few frames, for CI and a smoke test.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few frames (seconds)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", default="480x640", help="HxW of the frame")
    p.add_argument("--processing-resolution", type=int, default=64)
    p.add_argument("--serve-python", type=Path, default=None)
    args = p.parse_args()
    frames = 8 if args.quick else args.frames
    height, width = map(int, args.size.split("x"))

    from e2e_depth_ros.model.backend_triton import TritonModel
    from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries
    from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint
    from e2e_depth_ros.offline.serve_process import ServeProcess, serve_python

    python = args.serve_python or serve_python(REPOSITORY)
    if python is None:
        raise SystemExit("no server environment: bash ci/serve.sh setup (or --serve-python)")
    quiet_model_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        depth = str(make_tiny_checkpoint(Path(tmp) / "depth", task="depth"))
        normals = str(make_tiny_checkpoint(Path(tmp) / "normals", task="normals"))
        local = Estimator(depth, normals, device="cpu",
                          processing_resolution=args.processing_resolution)
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
        server = ServeProcess(python, depth, normals, REPOSITORY,
                              log_path=Path(tmp) / "server.log")
        started = time.monotonic()
        with server:
            print(f"server ready in {time.monotonic() - started:.1f} s at {server.grpc_url}")
            for protocol in ("grpc", "http"):
                remote = TritonModel(getattr(server, f"{protocol}_url"), timeout=60.0,
                                     processing_resolution=args.processing_resolution)
                for label, kwargs in (("depth", {"normals": False}), ("depth+normals", {})):
                    overhead(local, remote, server, rgb, frames, f"{protocol} {label}", kwargs)
                remote.close()
            for clients in (1, 4):
                throughput(server, rgb, clients, frames, args.processing_resolution)
        print(f"server stopped (exit code {server.proc.returncode}); "
              f"{width}x{height} frame, processing resolution {args.processing_resolution}")
    return 0


def overhead(local, remote, server, rgb, frames: int, label: str, kwargs: dict) -> None:
    """Triton's overhead per frame: the round trip minus the model's own time inside the
    server (Triton's nv_inference_compute_infer_duration_us of that request), i.e. transport,
    (de)serialisation, queueing and the Python backend's hand-over. Also shown: the plain
    difference to a local ``predict`` in this process, which on a shared CPU mixes in two
    processes' model timings."""
    local.predict(rgb, **kwargs)
    remote.predict(rgb, **kwargs)  # warm: connection, server-side first call
    extra, naive, base = [], [], []
    key = "nv_inference_compute_infer_duration_us"
    for _ in range(frames):
        t0 = time.perf_counter()
        local.predict(rgb, **kwargs)
        t1 = time.perf_counter()
        before = server.metrics()[key]
        t2 = time.perf_counter()
        remote.predict(rgb, **kwargs)
        t3 = time.perf_counter()
        model_s = (server.metrics()[key] - before) * 1e-6
        base.append(t1 - t0)
        naive.append((t3 - t2) - (t1 - t0))
        extra.append((t3 - t2) - model_s)
    ms, naive_ms = np.array(extra) * 1e3, np.array(naive) * 1e3
    print(f"overhead {label:>20}: p50 {np.percentile(ms, 50):6.1f} ms, p90 "
          f"{np.percentile(ms, 90):6.1f} ms over the server's model time; vs local predict "
          f"p50 {np.percentile(naive_ms, 50):+.1f} ms (local p50 {np.median(base) * 1e3:.1f} "
          f"ms, {frames} frames)")


def throughput(server, rgb, clients: int, frames: int, resolution: int) -> None:
    """``clients`` threads, each its own connection, ``frames`` requests each."""
    from e2e_depth_ros.model.backend_triton import TritonModel

    models = [TritonModel(server.grpc_url, timeout=120.0, processing_resolution=resolution)
              for _ in range(clients)]
    for model in models:
        model.predict(rgb, normals=False)
    before = server.metrics()

    def run(model):
        for _ in range(frames):
            model.predict(rgb, normals=False)

    threads = [threading.Thread(target=run, args=(m,)) for m in models]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    after = server.metrics()
    inferences = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    print(f"{clients} client(s): {clients * frames / seconds:6.1f} frames/s in all, "
          f"nv_inference_count +{inferences:.0f}, nv_inference_exec_count +{executions:.0f} "
          f"({inferences / max(executions, 1):.2f} frames per model call)")
    for model in models:
        model.close()


if __name__ == "__main__":
    raise SystemExit(main())

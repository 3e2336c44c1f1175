"""Temporal alignment on camera drives: steady relative depth, bridged metric gaps, drift, cost.

The drives (``e2e_depth_ros.offline.drives``) render a room along a camera path with the
exact pose as odometry; the "model" is the truth under a fresh affine jitter per frame
(scale and shift +-25 %) with 1 % noise. Every frame goes through ``FrameProcessor`` as on
the robot. Prints, with the figure each row is judged by:

- relative only, static camera, no odometry: one-map AbsRel (ONE affine map fitted to the
  whole sequence) of the raw output, of the aligned output, and the per-frame fit's AbsRel;
- relative only, moving camera (1 m/s, 30 frames): one-map AbsRel without alignment, aligned
  on the same pixels (no odometry), aligned with odometry (and the units it found);
- a metric source (2 % sparse depth, 1 % noise) dropped for 1 s: frames metric in the gap
  and their AbsRel;
- a metric source on every frame: frame-to-frame scale change, mean |d log median(p/g)|,
  aligned vs the per-frame fit vs the scale filter;
- 300 frames back and forth: drift (largest |log median(p/g)|) with a metric source every
  2 s, and one-map AbsRel with none;
- the cost of alignment per 640x480 frame (median of the frame's finish with it minus
  without it).

Run: ``python benchmarks/bench_temporal.py [--quick]``. Exits 1 when a threshold is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout

from e2e_depth_ros.core.metrics import (OneMapAccumulator, log_median_ratio,  # noqa: E402
                                        scale_change)
from e2e_depth_ros.core.processing import (Frame, FrameProcessor, Needs,  # noqa: E402
                                           ProcessingConfig)
from e2e_depth_ros.core.scale_sources import SensorDepth  # noqa: E402
from e2e_depth_ros.offline.drives import make_drive, sparse_metric  # noqa: E402
import harness  # noqa: E402  (beside this script)

QUICK = {"frames": 12, "long_frames": 30, "width": 160, "height": 120, "cost_frames": 3,
         "cost_width": 320, "cost_height": 240}
NEEDS = Needs(normals=False, points=False)


class StandIn:
    """The model: returns the drive frame's flickering prediction."""

    def __init__(self) -> None:
        self.next: np.ndarray | None = None

    def predict(self, rgb, *, depth=True, normals=True, **_):
        return type("P", (), {"depth": self.next if depth else None, "normals": None})()


def replay(camera, frames, *, temporal: bool, odometry: bool = True, metric_every: int = 0,
           gap: tuple[int, int] = (0, 0), smoothing: float = 0.3, max_gap: float = 2.0,
           seed: int = 0):
    """Every frame through a FrameProcessor; returns the results and each finish's time."""
    model = StandIn()
    config = ProcessingConfig(temporal_alignment=temporal, temporal_max_gap=max_gap,
                              scale_smoothing=smoothing)
    processor = FrameProcessor(model, config, finisher=None)
    rng = np.random.default_rng(seed)
    results, times = [], []
    for f in frames:
        model.next = f.relative
        reference = None
        if metric_every and f.index % metric_every == 0 and not gap[0] <= f.index < gap[1]:
            reference = SensorDepth(sparse_metric(f.depth, rng))
        frame = Frame(f.rgb, f.stamp, camera, needs=NEEDS, reference=reference,
                      odometry=f.odometry if odometry else None)
        prediction = processor.predict([frame])[0]
        start = time.perf_counter()
        results.append(processor.finish(frame, prediction))
        times.append(time.perf_counter() - start)
    return results, times


def one_map_abs_rel(relative, truth) -> float:
    """AbsRel of a sequence under ONE affine map fitted to all of it (the evaluation's)."""
    accumulator = OneMapAccumulator()
    for r, g in zip(relative, truth):
        accumulator.add(r, g)
    return accumulator.result().metrics.abs_rel


def _one_map(results, frames) -> float:
    return one_map_abs_rel([r.relative for r in results], [f.depth for f in frames])


def _per_frame(results, frames) -> float:
    return float(np.mean([one_map_abs_rel([r.relative], [f.depth])
                          for r, f in zip(results, frames)]))


def _ratios(metric, truth) -> list[float | None]:
    return [None if m is None else log_median_ratio(m, g) for m, g in zip(metric, truth)]


def _change(metric, truth) -> float:
    return scale_change(_ratios(metric, truth)).mean_abs_change


def _row(name: str, value: float, limit: str, ok: bool | None = None) -> bool:
    verdict = "" if ok is None else ("pass" if ok else "FAIL")
    print(f"  {name:<58} {value:>9.4f}  {limit:<16} {verdict}")
    return ok is not False


def relative_only(args) -> bool:
    ok = True
    print("relative only (one-map AbsRel)")
    camera, frames = make_drive("static", args.frames, width=args.width, height=args.height)
    raw, _ = replay(camera, frames, temporal=False, odometry=False)
    aligned, _ = replay(camera, frames, temporal=True, odometry=False)
    per_frame = _per_frame(raw, frames)
    one = _one_map(aligned, frames)
    _row("static, no odometry: raw output", _one_map(raw, frames), "(about 0.5)")
    ok &= _row("static, no odometry: aligned", one, "<= 0.03", one <= 0.03)
    ok &= _row("static: per-frame fit (aligned / this <= 1.5)", per_frame, "",
               one <= 1.5 * per_frame)
    camera, frames = make_drive("forward", args.frames, width=args.width, height=args.height)
    raw, _ = replay(camera, frames, temporal=False)
    same_pixels, _ = replay(camera, frames, temporal=True, odometry=False)
    moved, _ = replay(camera, frames, temporal=True)
    _row(f"moving 1 m/s, {args.frames} frames: raw output", _one_map(raw, frames), "")
    _row("moving: aligned on the same pixels (no odometry)", _one_map(same_pixels, frames), "")
    one = _one_map(moved, frames)
    ok &= _row("moving: aligned with odometry", one, "<= 0.05", one <= 0.05)
    _row("moving: per-frame fit", _per_frame(raw, frames), "")
    return ok


def metric_gap(args) -> bool:
    print("a metric source dropped for 1 s (10 frames at 10 Hz)")
    n = max(args.frames, 30)
    camera, frames = make_drive("forward", n, width=args.width, height=args.height)
    gap = (n // 2 - 5, n // 2 + 5)
    results, _ = replay(camera, frames, temporal=True, metric_every=1, gap=gap)
    inside = [(r, f) for r, f in zip(results, frames) if gap[0] <= f.index < gap[1]]
    metric = [(r, f) for r, f in inside if r.metric is not None]
    abs_rel = float(np.mean([np.nanmean(np.abs(r.metric - f.depth) / f.depth)
                             for r, f in metric])) if metric else float("nan")
    every = all(r.metric is not None for r in results)
    ok = _row(f"frames metric in the gap (of {len(inside)}; all {len(results)} metric: "
              f"{every})", len(metric), f"= {len(inside)}", every)
    return ok & _row("AbsRel in the gap", abs_rel, "<= 0.04", abs_rel <= 0.04)


def steady_scale(args) -> bool:
    print("a metric source on every frame: frame-to-frame scale change")
    n = max(args.frames, 30)
    camera, frames = make_drive("forward", n, width=args.width, height=args.height)
    truth = [f.depth for f in frames]

    def change(results) -> float:
        return _change([r.metric for r in results], truth)

    aligned = change(replay(camera, frames, temporal=True, metric_every=1)[0])
    ok = _row("aligned", aligned, "<= 0.01", aligned <= 0.01)
    filtered, _ = replay(camera, frames, temporal=False, metric_every=1)
    own = [r.fit.apply(f.relative) if r.fit is not None and r.fit.ok else None
           for r, f in zip(filtered, frames)]
    _row("each frame's own fit (no filter, no alignment)", _change(own, truth), "")
    _row("the scale filter (smoothing 0.3, no alignment)", change(filtered), "")
    return ok


def drift(args) -> bool:
    n = args.long_frames
    print(f"{n} frames back and forth: drift")
    camera, frames = make_drive("loop", n, width=args.width, height=args.height)
    truth = [f.depth for f in frames]
    results, _ = replay(camera, frames, temporal=True, metric_every=20)
    ratios = _ratios([r.metric for r in results], truth)
    worst = max((abs(v) for v in ratios if v is not None), default=float("nan"))
    metric = sum(r.metric is not None for r in results)
    ok = _row(f"metric every 2 s: largest |log median(p/g)| ({metric}/{n} metric)", worst,
              "<= 0.03", worst <= 0.03 and metric == n)
    relative, _ = replay(camera, frames, temporal=True)
    _row("no metric source: one-map AbsRel", _one_map(relative, frames), "")
    raw, _ = replay(camera, frames, temporal=False)
    _row("no metric source: raw output", _one_map(raw, frames), "")
    return ok


def cost(args) -> bool:
    print(f"cost per {args.cost_width}x{args.cost_height} frame")
    camera, frames = make_drive("forward", args.cost_frames, width=args.cost_width,
                                height=args.cost_height)
    _, off = replay(camera, frames, temporal=False, metric_every=1)
    _, on = replay(camera, frames, temporal=True, metric_every=1)
    _, alone = replay(camera, frames, temporal=True)
    extra = 1e3 * (np.median(on[1:]) - np.median(off[1:]))
    _row("finish without alignment (ms, LiDAR-like fit)", 1e3 * np.median(off[1:]), "")
    _row("finish with alignment (ms)", 1e3 * np.median(on[1:]), "")
    _row("alignment's own cost (ms)", extra, "<= 10", extra <= 10)
    _row("relative only, with odometry (ms, whole finish, median)",
         1e3 * np.median(alone[1:]), "")
    _row("relative only, with odometry (ms, whole finish, mean: with the units search)",
         1e3 * np.mean(alone[1:]), "")
    return extra <= 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--long-frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--cost-width", type=int, default=640)
    parser.add_argument("--cost-height", type=int, default=480)
    parser.add_argument("--cost-frames", type=int, default=12)
    args = harness.parse(parser, argv, QUICK)
    print(harness.machine())
    ok = relative_only(args) & metric_gap(args) & steady_scale(args) & drift(args) & cost(args)
    if args.quick:
        print("quick run: figures mean little, thresholds not judged")
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(harness.main(main))

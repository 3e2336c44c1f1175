"""Offline replay evaluation (docs/evaluation.md): bag -> pairs -> estimator/scale -> scores.

    evaluate BAG --image-topic T --camera-info-topic T --gt-depth-topic T
             [--gt-normals-topic T] [--lidar-topic T] [--pred-topic T] [--pred-normals-topic T]
             [--scale-source S] [--sensor-depth-topic T] [--sensor-depth-info-topic T]
             [--ground-frame F] [--fixed-scale X] [--fixed-shift X]
             [--depth-model M] [--normals-model M] [--device D] [--dtype D]
             [--processing-resolution N] [--min-depth X] [--max-depth X]
             [--stamp-tolerance S] [--max-frames N] [--out DIR] [--overwrite]

Frames go through the node's own ``FrameProcessor`` in header-stamp order, so the scale
filter sees the sequence the robot saw and the scores are those of what it publishes; the
metric reference (LiDAR, sensor depth, the floor from TF) is chosen like the node's
``scale_source`` (``eval_sources``). The bag is read twice: once for a small index (header
stamps and bag times per topic, /tf_static and /tf in full), then one frame at a time.

``evaluate_bag`` is the library entry point (tests, the demo); ``main`` is the command line.
Reading and writing bags lives in ``bag_io``, the pairing and the checks before a model
loads in ``frame_plan``, the per-frame pipeline and scores in ``frame_eval``, the types
they share in ``eval_types``, the summary, report and plots in ``report``; this module opens
the bag, guards the output folder, drives the frames and parses the command line.
Heavy imports (rosbags, torch, matplotlib) happen inside functions, so ``--help`` is instant.
Every expected failure is one line ``evaluate: error: ...`` and exit code 2, and leaves the
output folder as it was: files an earlier run wrote are replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from e2e_depth_ros.core.scale_sources import SOURCES
from e2e_depth_ros.errors import BagError, E2EDepthError
from e2e_depth_ros.model.model_args import model_or_none
from e2e_depth_ros.offline.bag_io import (OutputBag, bag_read_errors, check_topics, index_bag,
                                          open_reader)
from e2e_depth_ros.offline.cli import (OneLineParser, add_triton_arguments, open_triton,
                                       processing_resolution_arg, tiny_notes)
from e2e_depth_ros.offline.eval_types import SKIP_REASONS, EvalOptions, EvalResult, EvalTopics
from e2e_depth_ros.offline.frame_eval import FrameEvaluation, sample_indices
from e2e_depth_ros.offline.frame_plan import (FramePlan, check_ground_truth, check_image_encoding,
                                              check_pairs, lidar_transform, plan_frames)
from e2e_depth_ros.offline.report import REPORT_FILES, summary_lines, write_outputs

PROG = "evaluate"
OUT_BAG = "out.mcap"


def evaluate_bag(
    bag: str | Path,
    topics: EvalTopics,
    *,
    estimator: Any | None = None,
    make_estimator: Callable[[], Any] | None = None,
    out_dir: str | Path = "evaluation",
    options: EvalOptions | None = None,
) -> EvalResult:
    """Replay ``bag`` through the node's pipeline and score it against ground truth.

    Give ``estimator`` (an ``Estimator``) or ``make_estimator`` (called only after the bag
    has been checked, so a bad bag fails before a slow model load), unless
    ``topics.pred`` names recorded predictions. Writes ``metrics.json``, ``report.md``
    with PNG plots and ``out.mcap`` into ``out_dir``.
    Raises BagError for a missing/corrupt bag, missing or mistyped topics, no image/GT
    pair, a LiDAR frame with no static transform or a scale source the bag cannot serve
    (``eval_sources.check_source``); ValueError for an unknown source or ``fixed`` without
    a fixed scale; CheckpointError from the model load.
    """
    options = options or EvalOptions()
    bag = Path(bag)
    if topics.pred is None and estimator is None and make_estimator is None:
        raise ValueError("give an estimator (or make_estimator), or topics.pred to score "
                         "recorded predictions")
    out_dir = Path(out_dir)
    check_out_dir(out_dir, planned_files(options), overwrite=options.overwrite)
    reader = open_reader(bag)
    try:
        return _evaluate_open(reader, bag, topics, estimator, make_estimator, out_dir, options)
    finally:
        reader.close()


def planned_files(options: EvalOptions) -> list[str]:
    """Names of every file an evaluation with these options may write into its folder."""
    names = ["metrics.json"]
    if options.write_report:
        names += [name for name in REPORT_FILES if name != "metrics.json"]
    if options.write_bag:
        names.append(OUT_BAG)
    return names


def check_out_dir(out_dir: Path, names: list[str], *, overwrite: bool) -> None:
    """Refuse to replace an earlier run's files unless asked, and anything not a file ever.

    Checked before the bag is read, so a refusal costs nothing and changes nothing.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} exists and is not a folder")
    for name in names:
        path = out_dir / name
        if not (path.exists() or path.is_symlink()):
            continue
        if not path.is_file() or path.is_symlink():
            raise FileExistsError(f"{path} exists and is not a file this tool wrote; move it "
                                  "away or choose another --out")
        if not overwrite:
            raise FileExistsError(f"{path} exists (an earlier run?); pass --overwrite to "
                                  "replace it, or choose another --out")


def _evaluate_open(reader: Any, bag: Path, topics: EvalTopics, estimator: Any,
                   make_estimator: Callable[[], Any] | None, out_dir: Path,
                   options: EvalOptions) -> EvalResult:
    from e2e_depth_ros.offline.eval_sources import (check_source, processing_for,
                                                    resolve_source, with_source_topics)
    from e2e_depth_ros.core.processing import ProcessingConfig
    from e2e_depth_ros.offline.tf_buffer import TransformBuffer

    source = resolve_source(options.scale_source, lidar_topic=topics.lidar,
                            fixed_scale=(options.processing or ProcessingConfig()).fixed_scale)
    if topics.pred is None or not _metric_recording(topics, options):
        # refuses "fixed" without a fixed scale, before the bag is read
        processing_for(source, options.processing or ProcessingConfig())
    topics = with_source_topics(topics, {c.topic for c in reader.connections})
    indexes = check_topics(reader, bag, topics)
    tf_messages = index_bag(reader, bag, indexes)
    plans = plan_frames(indexes, options)
    check_pairs(plans, indexes, bag, options)
    if topics.pred is not None and not any(p.pred for p in plans):
        raise BagError(f"{bag}: no recorded prediction on {topics.pred} within "
                       f"{options.stamp_tolerance} s of any image stamp")
    transforms = TransformBuffer()
    for conn, _, raw in tf_messages:
        try:
            transforms.add_message(reader.deserialize(raw, conn.msgtype),
                                   moving=conn.topic != topics.tf_static)
        except bag_read_errors() as err:
            raise BagError(f"{bag}: {conn.topic} cannot be read ({err})") from err
    lidar_tf = None
    if source == "lidar":
        lidar_tf = lidar_transform(transforms, indexes, topics, bag)
    if topics.pred is None or not _metric_recording(topics, options):
        check_source(source, bag=bag, indexes=indexes, topics=topics, options=options,
                     plans=plans, transforms=transforms)
    check_image_encoding(reader, bag, indexes["image"], plans)
    check_ground_truth(reader, bag, indexes, plans, options)
    if topics.pred is None and estimator is None:
        estimator = make_estimator()
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = None
    if options.write_bag:
        out = OutputBag(out_dir / OUT_BAG, options.output_prefix)
    ev = FrameEvaluation(reader, bag, topics, options, indexes,
                         None if topics.pred is not None else estimator, out,
                         source=source, transforms=transforms, lidar_tf=lidar_tf)
    ev.sample_at = sample_indices(len(plans))
    ev.skipped["undecodable_image"] += indexes["image"].undecodable
    try:
        if out is not None:
            for conn, bag_time, raw in tf_messages:
                out.copy(conn, bag_time, raw)
        for i, plan in enumerate(_progress(plans, options.progress)):
            ev.run_frame(i, plan)
        result = ev.result(len(plans))
        if result.frames == 0:
            skips = "; ".join(f"{v} frame(s) {SKIP_REASONS[k]}" for k, v in
                              result.skipped.items() if v) or "no frame matched"
            why = f" (first image: {ev.image_error})" if ev.image_error else ""
            raise BagError(f"{bag}: no frame could be scored: {skips}{why}; nothing written")
    except BaseException:
        if out is not None:
            out.abort()
        if created:
            _remove_if_empty(out_dir)
        raise
    if out is not None:
        out.close()
    write_outputs(result, ev.samples, out_dir, options, out)
    return result


def _metric_recording(topics: EvalTopics, options: EvalOptions) -> bool:
    """Recorded metric predictions are scored as they are: no scale source applies."""
    from e2e_depth_ros.offline.eval_messages import is_metric_topic

    if topics.pred is None:
        return False
    if options.pred_is_metric is not None:
        return options.pred_is_metric
    return is_metric_topic(topics.pred)


def _remove_if_empty(folder: Path) -> None:
    """Undo a folder this run created, when nothing was left in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _progress(plans: list[FramePlan], enabled: bool) -> Iterator[FramePlan]:
    from tqdm import tqdm

    return iter(tqdm(plans, desc=PROG, unit="frame", file=sys.stderr, disable=not enabled,
                     dynamic_ncols=True))


# ----------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Replay a rosbag2 (sqlite3 or MCAP) through the "
                      "depth node's pipeline and score it against ground truth "
                      "(docs/evaluation.md).")
    p.add_argument("bag", type=Path, help="rosbag2 folder, or a .mcap / .db3 file")
    t = p.add_argument_group("topics")
    t.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    t.add_argument("--camera-info-topic", required=True)
    t.add_argument("--gt-depth-topic", required=True,
                   help="ground truth: 16UC1 (mm, 0 invalid) or 32FC1 (m, NaN invalid)")
    t.add_argument("--gt-normals-topic", help="32FC3 optical-frame normals")
    t.add_argument("--lidar-topic", help="PointCloud2; its frame is found in /tf_static")
    t.add_argument("--sensor-depth-topic", help="depth from an RGB-D or stereo camera for "
                   "--scale-source depth: 16UC1 (mm, 0 invalid) or 32FC1 (m, NaN/0 invalid), "
                   "paired by stamp like camera_info")
    t.add_argument("--sensor-depth-info-topic", help="its CameraInfo, needed only when its "
                   "frame is not the image's (default: the sibling camera_info of "
                   "--sensor-depth-topic)")
    t.add_argument("--tf-static-topic", default="/tf_static")
    t.add_argument("--tf-topic", default="/tf", help="moving transforms, looked up at each "
                   "image stamp (default /tf; optional)")
    t.add_argument("--pred-topic", help="score this recorded 32FC1 depth instead of running a "
                   "model (metric when it ends with depth/image or with --pred-is-metric)")
    t.add_argument("--pred-is-metric", action="store_true", default=None,
                   help="the --pred-topic values are meters")
    t.add_argument("--pred-normals-topic", help="recorded 32FC3 normals to score")
    m = p.add_argument_group("model")
    m.add_argument("--depth-model", default=None, help="hub id or folder (default: the "
                   "published marigold-e2e-ft-depth)")
    m.add_argument("--normals-model", default=None, help="hub id or folder; default: the "
                   "published normals model when --gt-normals-topic is given, else none")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--dtype", default="auto", help="older name of --precision")
    m.add_argument("--backend", default="torch",
                   choices=["torch", "openvino", "onnxruntime", "triton"],
                   help="torch (default), openvino or onnxruntime (an export folder, or a "
                   "checkpoint converted once), or triton (e2e-depth serve at --triton-url)")
    add_triton_arguments(m)
    m.add_argument("--precision", default="auto",
                   help="auto (fp16 on GPUs, fp32 on CPUs), fp32, fp16 or bf16")
    m.add_argument("--processing-resolution", type=processing_resolution_arg, default=768,
                   help="16..2048, or 0 = native (default: 768)")
    s = p.add_argument_group("metric scale (the node's scale_source)")
    s.add_argument("--scale-source", choices=SOURCES, default="auto",
                   help="what gives the published depth metric scale; auto (default): lidar "
                   "when --lidar-topic is given, else fixed when --fixed-scale is, else none")
    s.add_argument("--ground-frame", default="base_footprint", help="for --scale-source "
                   "ground: the frame whose z = 0 plane is the floor, z up (default "
                   "base_footprint), found in /tf_static and /tf")
    s.add_argument("--fixed-scale", type=float, default=0.0,
                   help="> 0: metric = fixed-scale * relative + fixed-shift (source fixed)")
    s.add_argument("--fixed-shift", type=float, default=0.0)
    o = p.add_argument_group("steady depth over time (the node's temporal_alignment)")
    o.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=False,
                   help="align each frame to the previous one moved by the bag's odometry "
                   "(/tf: --odom-frame -> the image's frame), as the node with "
                   "temporal_alignment; default --no-temporal")
    o.add_argument("--odom-frame", default="odom", help="the odometry frame (default odom)")
    o.add_argument("--temporal-max-gap", type=float, default=2.0,
                   help="longest time (s) a frame stays metric without a metric fit of its "
                   "own (default 2.0)")
    o.add_argument("--relative-per-frame", action="store_true",
                   help="keep depth/relative in each frame's own [0, 1]")
    e = p.add_argument_group("evaluation")
    e.add_argument("--min-depth", type=float, default=None, help="valid GT range (m)")
    e.add_argument("--max-depth", type=float, default=None)
    e.add_argument("--stamp-tolerance", type=float, default=0.02,
                   help="max header-stamp gap image-GT (s) when not exact (default 0.02)")
    e.add_argument("--lidar-tolerance", type=float, default=0.1,
                   help="max header-stamp gap image-LiDAR (s) (default 0.1, as the node)")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--out", type=Path, default=Path("evaluation"), help="output folder")
    e.add_argument("--overwrite", action="store_true", help="replace metrics.json, report.md, "
                   "its plots and out.mcap left in --out by an earlier run (without it, "
                   "evaluate refuses)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Values argparse cannot check alone, each named with what was received."""
    if args.stamp_tolerance < 0 or args.lidar_tolerance < 0:
        parser.error(f"tolerances must be >= 0, got --stamp-tolerance {args.stamp_tolerance}"
                     f" --lidar-tolerance {args.lidar_tolerance}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    for name in ("min_depth", "max_depth"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if not (math.isfinite(args.fixed_scale) and args.fixed_scale >= 0
            and math.isfinite(args.fixed_shift)):
        parser.error(f"--fixed-scale must be a finite number >= 0 and --fixed-shift finite, "
                     f"got {args.fixed_scale} and {args.fixed_shift}")
    if not (math.isfinite(args.temporal_max_gap) and args.temporal_max_gap >= 0):
        parser.error(f"--temporal-max-gap must be a finite number >= 0, got "
                     f"{args.temporal_max_gap}")
    if args.scale_source == "fixed" and args.fixed_scale == 0:
        parser.error("--scale-source fixed needs --fixed-scale > 0 (metric = fixed-scale * "
                     "relative + fixed-shift)")
    if args.scale_source == "depth" and not args.sensor_depth_topic:
        parser.error("--scale-source depth needs --sensor-depth-topic")
    if args.scale_source == "lidar" and not args.lidar_topic:
        parser.error("--scale-source lidar needs --lidar-topic")
    if args.min_depth is not None and args.max_depth is not None \
            and args.min_depth >= args.max_depth:
        parser.error(f"--min-depth {args.min_depth} must be below --max-depth {args.max_depth}")


def _processing(args: argparse.Namespace) -> Any:
    """The node's settings this run changes (the fixed map, temporal alignment); None: the
    node's defaults."""
    if args.fixed_scale == 0 and args.fixed_shift == 0 and not args.temporal:
        return None
    from e2e_depth_ros.core.processing import ProcessingConfig

    return ProcessingConfig(fixed_scale=args.fixed_scale, fixed_shift=args.fixed_shift,
                            temporal_alignment=args.temporal,
                            temporal_max_gap=args.temporal_max_gap,
                            relative_per_frame=args.relative_per_frame)


def _model_choice(value: str | None, default: str | None) -> str | None:
    if value is None:
        return default
    return model_or_none(value)


def _estimator_factory(args: argparse.Namespace) -> Callable[[], Any]:
    """Loads the model only when called (after the bag checks), quietly."""
    def make() -> Any:
        remote = args.backend == "triton"  # the server's models; only on/off matters here
        if remote:
            default_depth = default_normals = "the server's"
        else:
            from e2e_depth_ros.model.estimator import DEFAULT_DEPTH_MODEL as default_depth
            from e2e_depth_ros.model.estimator import DEFAULT_NORMALS_MODEL as default_normals
        depth = _model_choice(args.depth_model, default_depth)
        wants_normals = args.gt_normals_topic and not args.pred_normals_topic
        normals = _model_choice(args.normals_model, default_normals if wants_normals else None)
        if args.pred_normals_topic:
            normals = None
        if depth is None:
            raise ValueError("--depth-model none: the evaluation needs a depth model "
                             "(or --pred-topic)")
        if remote:
            return open_triton(args, depth, normals)
        from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped
        from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries

        quiet_model_libraries()
        keep_cpu_buffers_mapped()  # this process runs inference: keep its buffers mapped
        estimator = Estimator(depth, normals, device=args.device, dtype=args.dtype,
                              processing_resolution=args.processing_resolution,
                              backend=args.backend, precision=args.precision)
        for note in tiny_notes(depth, normals, prog=PROG):
            print(note, file=sys.stderr)
        return estimator
    return make


def main(argv: list[str] | None = None) -> int:
    """``evaluate BAG ...``: 0 on success, 2 with one error line on any expected failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    topics = EvalTopics(
        image=args.image_topic, camera_info=args.camera_info_topic,
        gt_depth=args.gt_depth_topic, gt_normals=args.gt_normals_topic,
        lidar=args.lidar_topic, pred=args.pred_topic, pred_normals=args.pred_normals_topic,
        tf_static=args.tf_static_topic, tf=args.tf_topic, sensor_depth=args.sensor_depth_topic,
        sensor_depth_info=args.sensor_depth_info_topic)
    options = EvalOptions(
        min_depth=args.min_depth, max_depth=args.max_depth,
        stamp_tolerance=args.stamp_tolerance, lidar_tolerance=args.lidar_tolerance,
        max_frames=args.max_frames, pred_is_metric=args.pred_is_metric,
        progress=not args.no_progress, overwrite=args.overwrite,
        scale_source=args.scale_source, ground_frame=args.ground_frame,
        odom_frame=args.odom_frame, processing=_processing(args))
    try:
        result = evaluate_bag(args.bag, topics, out_dir=args.out, options=options,
                              make_estimator=_estimator_factory(args))
    except (E2EDepthError, ValueError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(result)))
    print("wrote " + ", ".join(result.files[k] for k in ("metrics", "report", "bag")
                               if k in result.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``e2e-depth``: the package's one console command.

    e2e-depth predict IMG_OR_DIR --out DIR [--depth-model M] [--normals-model M]
                      [--max-pixels N] [--overwrite]
    e2e-depth evaluate BAG --image-topic T ... --out DIR     (e2e_depth_ros.offline.evaluate)
    e2e-depth demo [--tiny | --depth-model M --normals-model M]  (e2e_depth_ros.offline.demo)
    e2e-depth tiny-checkpoint OUT --task depth|normals [--seed N] [--size tiny|mid|real]
    e2e-depth export CKPT OUT --format onnx|openvino [--size HxW | --dynamic]

Heavy imports (torch, diffusers, the estimator) happen inside the commands, so ``--help``
is instant. Every expected failure prints one line ``e2e-depth: error: <message>`` to
stderr and exits with code 2; no tracebacks. ``predict`` goes on past an input it cannot
use (empty, unreadable, truncated, too small, too large), names each on one stderr line, and
exits with code 1 when any input failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from e2e_depth_ros.offline.image_files import (MIN_SIDE, ImageFileError, load_image, shown,
                                               write_png)

PROG = "e2e-depth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo fits; 20000 x 20000 does not
EXIT_SOME_FAILED = 1
# Subcommands whose own module parses the rest of the line: name -> (module with
# ``main(argv) -> int``, one-line help).
MODULE_COMMANDS = {
    "evaluate": ("e2e_depth_ros.offline.evaluate", "replay a rosbag2 through the node's pipeline "
                 "and score it"),
    "demo": ("e2e_depth_ros.offline.demo",
             "run the node on the bundled sample sequence and report"),
    "export": ("e2e_depth_ros.model.export", "export a checkpoint to ONNX or OpenVINO"),
    "serve": ("e2e_depth_ros.offline.serve", "serve the models through Triton (PyTriton) "
              "with dynamic batching"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line ``PROG: error: ...`` and exit code 2, like every
    other error of the tools (a usage dump would bury the reason)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def processing_resolution_arg(text: str) -> int:
    """argparse type of ``--processing-resolution``: the node's own range (0 or 16..2048), so
    a value the node would refuse is refused here before a model loads."""
    from e2e_depth_ros.core.input_checks import processing_resolution_problem

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    problem = processing_resolution_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


class UsageError(Exception):
    """A command-line argument that names something unusable (a missing path, ...)."""


def _model_arg(value: str) -> str | None:
    """A model argument; "" or "none" (any case) disables that model."""
    from e2e_depth_ros.model.model_args import model_or_none

    return model_or_none(value)


# What predict writes for each input, per model: the endings after the output stem. The .npy
# comes first: the pictures are drawn from it, and a picture beside its .npy is how an earlier
# run's output is told from an input.
OUTPUTS = {"depth": ("_depth.npy", "_depth.png", "_depth_vis.png"),
           "normals": ("_normals.npy", "_normals.png")}


@dataclass(frozen=True)
class Inputs:
    """What predict found at IMG_OR_DIR."""

    images: list[Path]  # sorted; the inputs
    earlier_outputs: list[Path]  # pictures an earlier run wrote into the folder: not read


def list_inputs(source: Path) -> Inputs:
    """The image file itself, or every image in a folder (sorted, not recursive) except the
    pictures an earlier run of predict wrote there (is_earlier_output)."""
    if source.is_file():
        return Inputs([source], [])
    if not source.is_dir():
        raise UsageError(f"{shown(source)}: no such image file or folder")
    found = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    earlier = {p for p in found if is_earlier_output(p)}
    return Inputs([p for p in found if p not in earlier], sorted(earlier))


def is_earlier_output(path: Path) -> bool:
    """True for a picture predict writes (<stem>_depth.png, _depth_vis.png, _normals.png)
    lying beside the .npy written with it (<stem>_depth.npy, <stem>_normals.npy)."""
    for array, *pictures in OUTPUTS.values():
        for ending in pictures:
            stem = path.name[:-len(ending)]
            if path.name.endswith(ending) and stem and (path.parent / (stem + array)).is_file():
                return True
    return False


def check_outputs(out: Path, stems: dict[Path, str], tasks: list[str], *,
                  overwrite: bool) -> None:
    """Refuse, before any model loads, an output that would replace an input (always), a
    link or folder (always) or a file an earlier run left in --out (unless ``overwrite``)."""
    inputs = {p.resolve() for p in stems}
    existing = []
    for image, stem in stems.items():
        for path in (out / (stem + ending) for task in tasks for ending in OUTPUTS[task]):
            if path.resolve() in inputs:
                raise UsageError(f"{shown(path)} is an input, and the outputs of "
                                 f"{shown(image.name)} would replace it; choose another --out")
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise UsageError(f"{shown(path)} exists and is not a file predict wrote; move "
                                 "it away or choose another --out")
            if path.exists():
                existing.append(path)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{shown(existing[0])}{more} exists (an earlier run?); pass "
                         "--overwrite to replace, or choose another --out")


def _colorize(depth):
    """bgr8 picture of depth for people, as the node's depth/image_vis draws it."""
    from e2e_depth_ros.core.visualize import colorize_depth

    return colorize_depth(depth)


def _write_outputs(out: Path, stem: str, prediction) -> None:
    """Write the OUTPUTS of one input: <stem>_depth.{npy,png}, <stem>_depth_vis.png,
    <stem>_normals.{npy,png}."""
    import cv2
    import numpy as np

    if prediction.depth is not None:
        array, picture, vis = (out / (stem + ending) for ending in OUTPUTS["depth"])
        depth = prediction.depth.astype(np.float32)  # (H, W) affine-invariant, [0, 1]
        np.save(array, depth)
        write_png(picture, np.rint(np.clip(depth, 0.0, 1.0) * 65535.0).astype(np.uint16))
        write_png(vis, _colorize(depth))
    if prediction.normals is not None:
        array, picture = (out / (stem + ending) for ending in OUTPUTS["normals"])
        normals = prediction.normals.astype(np.float32)  # (H, W, 3) optical frame, unit
        np.save(array, normals)
        rgb = np.rint(np.clip((normals + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)
        write_png(picture, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def output_stems(images: list[Path]) -> dict[Path, str]:
    """The output name stem of each input: its file stem, or stem_suffix (x_jpg, x_png)
    when several inputs share a stem, so no input overwrites another's outputs."""
    shared = Counter(p.stem for p in images)
    stems = {p: p.stem if shared[p.stem] == 1 else f"{p.stem}_{p.suffix[1:].lower()}"
             for p in images}
    clash = [s for s, n in Counter(stems.values()).items() if n > 1]
    if clash:
        names = ", ".join(shown(p.name) for p, s in stems.items() if s == clash[0])
        raise UsageError(f"inputs {names} would write the same outputs {shown(clash[0])}_*; "
                         "rename one of them")
    return stems


def tiny_notes(*models: str | None, prog: str = PROG) -> list[str]:
    """One line per model that is a tiny random-weight checkpoint (tiny_checkpoint's marker),
    so nobody mistakes its scores or pictures for the method's."""
    from e2e_depth_ros.model.tiny_checkpoint import TINY_NOTE, is_tiny_checkpoint

    return [f"{prog}: note: {model} is a {TINY_NOTE}" for model in models
            if is_tiny_checkpoint(model)]


def cmd_predict(args: argparse.Namespace) -> int:
    """Run the estimator on an image or a folder of images and write the outputs."""
    source = Path(args.input)
    inputs = list_inputs(source)
    images = inputs.images
    if not images:
        raise UsageError(f"{shown(source)}: no images ({', '.join(IMAGE_SUFFIXES)}) in this "
                         "folder" + (f", only {len(inputs.earlier_outputs)} earlier outputs "
                                     "of predict" if inputs.earlier_outputs else ""))
    if args.max_pixels < MIN_SIDE * MIN_SIDE:
        raise UsageError(f"--max-pixels must be at least {MIN_SIDE * MIN_SIDE}, "
                         f"got {args.max_pixels}")
    stems = output_stems(images)
    depth_model = _model_arg(args.depth_model)
    normals_model = _model_arg(args.normals_model)
    if depth_model is None and normals_model is None:
        raise UsageError("both --depth-model and --normals-model are disabled; enable one")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {shown(out)}: exists and is not a folder")
    tasks = [task for task, model in (("depth", depth_model), ("normals", normals_model))
             if model is not None]
    check_outputs(out, stems, tasks, overwrite=args.overwrite)
    if inputs.earlier_outputs:
        print(f"{PROG}: note: not reading {len(inputs.earlier_outputs)} earlier outputs of "
              f"predict in {shown(source)} (pictures beside their .npy)", file=sys.stderr)
    from e2e_depth_ros.model.model_args import task_warnings

    for warning in task_warnings(depth_model, normals_model):  # the other task's checkpoint
        print(f"{PROG}: warning: {warning}", file=sys.stderr)

    from tqdm import tqdm

    from e2e_depth_ros.errors import InputImageError

    if args.backend == "triton":
        estimator = open_triton(args, depth_model, normals_model)
    else:
        from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped
        from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries

        quiet_model_libraries()
        keep_cpu_buffers_mapped()  # this process runs inference: keep its buffers mapped
        estimator = Estimator(depth_model, normals_model, device=args.device, dtype=args.dtype,
                              processing_resolution=args.processing_resolution,
                              backend=args.backend, precision=args.precision)
        for note in tiny_notes(depth_model, normals_model):
            print(note, file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for path in tqdm(images, desc=PROG, unit="img", disable=args.quiet):
        try:
            image = load_image(path, args.max_pixels)
            prediction = estimator.predict(image.rgb)
        except (ImageFileError, InputImageError) as err:
            tqdm.write(f"{PROG}: skipped {shown(path)}: {err}", file=sys.stderr)
            failed.append(shown(path.name))
            continue
        for line in image.decoder_said:  # kept, but said once and with the file's name
            tqdm.write(f"{PROG}: note: {shown(path)}: the decoder said: {line}", file=sys.stderr)
        _write_outputs(out, stems[path], prediction)
    done = len(images) - len(failed)
    print(f"{PROG}: wrote {done} of {len(images)} image(s) to {shown(out)}"
          + (f"; failed {len(failed)}: {', '.join(failed)}" if failed else ""))
    return EXIT_SOME_FAILED if failed else 0


def open_triton(args: argparse.Namespace, depth_model: str | None,
                normals_model: str | None):
    """``--backend triton``: the server at --triton-url, reached now (or ModelServerError);
    a disabled --depth-model / --normals-model is not asked for."""
    from e2e_depth_ros.model.backend_triton import TritonModel

    model = TritonModel(args.triton_url, depth=depth_model is not None,
                        normals=normals_model is not None, timeout=args.triton_timeout,
                        processing_resolution=args.processing_resolution)
    model.connect()
    return model


def add_triton_arguments(group) -> None:
    """--triton-url and --triton-timeout, for every command with --backend triton."""
    from_docs = "the server of e2e-depth serve"
    group.add_argument("--triton-url", default="grpc://127.0.0.1:8001", metavar="URL",
                       help=f"--backend triton: {from_docs}, grpc://HOST:PORT or "
                       "http://HOST:PORT (default: %(default)s)")
    group.add_argument("--triton-timeout", type=float, default=60.0, metavar="S",
                       help="--backend triton: most seconds one request may take "
                       "(default: %(default)s)")


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    """Write a random-weight checkpoint (see e2e_depth_ros.model.tiny_checkpoint)."""
    from e2e_depth_ros.model.estimator import quiet_model_libraries

    quiet_model_libraries()
    from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.out, task=args.task, seed=args.seed, size=args.size)
    from e2e_depth_ros.model.tiny_checkpoint import TINY_NOTE

    print(f"wrote a {args.size} {args.task} checkpoint to {path}: a {TINY_NOTE}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of ``e2e-depth``; model defaults are the published hub ids."""
    # Literal copies, so --help does not import torch via the estimator; a test pins them.
    default_depth = "GonzaloMG/marigold-e2e-ft-depth"
    default_normals = "GonzaloMG/marigold-e2e-ft-normals"
    parser = OneLineParser(
        prog=PROG, description="Single-step E2E-FT diffusion depth and surface normals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = sub.add_parser(
        "predict", help="depth and normals for an image or a folder of images",
        description="Write <stem>_depth.png (16-bit, depth * 65535), <stem>_depth.npy "
        "(float32, affine-invariant in [0, 1], small = near), <stem>_depth_vis.png, "
        "<stem>_normals.png ((n + 1) / 2 * 255, optical frame) and <stem>_normals.npy; "
        "inputs sharing a stem (x.jpg, x.png) are written as x_jpg_*, x_png_*. Inputs that "
        "cannot be used are named and skipped; the exit code is then 1. Pictures an earlier "
        "run wrote into the folder (beside their .npy) are not read; outputs already in --out "
        "are refused unless --overwrite.")
    predict.add_argument("input", metavar="IMG_OR_DIR",
                         help="an image, or a folder of png/jpg/jpeg/bmp/tif images")
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder")
    predict.add_argument("--depth-model", default=default_depth, metavar="M",
                         help="hub id or local folder; '' or 'none' disables "
                         "(default: %(default)s)")
    predict.add_argument("--normals-model", default=default_normals, metavar="M",
                         help="hub id or local folder; '' or 'none' disables "
                         "(default: %(default)s)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--dtype", default="auto",
                         help="older name of --precision (float32, float16, ...)")
    predict.add_argument("--backend", default="torch",
                         choices=["torch", "openvino", "onnxruntime", "triton"],
                         help="torch (default), openvino (Intel CPUs/GPUs), onnxruntime "
                         "(these two take an export folder or convert a checkpoint once) or "
                         "triton (a server running e2e-depth serve; the models are its own)")
    add_triton_arguments(predict)
    predict.add_argument("--precision", default="auto",
                         help="auto (fp16 on GPUs, fp32 on CPUs), fp32, fp16 or bf16 "
                         "(openvino on CPUs with bf16 support)")
    predict.add_argument("--processing-resolution", type=processing_resolution_arg,
                         default=768, metavar="PX", help="longer side the model runs at: "
                         "16..2048, or 0 = native (default: 768)")
    predict.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                         help="refuse images with more pixels, judged from the file header "
                         "before decoding (default: %(default)s)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace outputs an earlier run left in --out (without it, "
                         "predict refuses to start)")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)

    tiny = sub.add_parser(
        "tiny-checkpoint", help="write a random-weight test checkpoint",
        description="Write a random-weight checkpoint in the published layout. Its "
        "predictions are MEANINGLESS: for tests and smoke runs only.")
    tiny.add_argument("out", metavar="OUT", help="output folder")
    tiny.add_argument("--task", choices=["depth", "normals"], default="depth")
    tiny.add_argument("--seed", type=int, default=0,
                      help="same seed -> shared VAE between depth and normals")
    tiny.add_argument("--size", choices=["tiny", "mid", "real"], default="tiny")
    tiny.set_defaults(func=cmd_tiny_checkpoint)
    for name, (module, text) in MODULE_COMMANDS.items():  # listed here, parsed by main()
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``e2e-depth`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MODULE_COMMANDS:
        return importlib.import_module(MODULE_COMMANDS[argv[0]][0]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from e2e_depth_ros.errors import E2EDepthError

    try:
        return args.func(args)
    except (E2EDepthError, UsageError, ValueError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""``e2e-depth``: depth and normals for image files from the command line.

    e2e-depth predict IMG_OR_DIR --out DIR [--depth-model M] [--normals-model M]
    e2e-depth tiny-checkpoint OUT --task depth|normals [--seed N] [--size tiny|mid|real]

Heavy imports (torch, diffusers, the estimator) happen inside the commands, so ``--help``
is instant. Every expected failure prints one line ``e2e-depth: error: <message>`` to
stderr and exits with code 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "e2e-depth"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DISABLED = ("", "none")


class UsageError(Exception):
    """A command-line argument that names something unusable (a missing path, ...)."""


def _model_arg(value: str) -> str | None:
    """A model argument; "" or "none" (any case) disables that model."""
    return None if value.strip().lower() in _DISABLED else value


def _list_images(source: Path) -> list[Path]:
    """The image file itself, or every image in a folder (sorted, not recursive)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    raise UsageError(f"{source}: no such image file or folder")


def _colorize(depth):
    """bgr8 picture of depth: messages.colorize_depth when present, else TURBO on [0, 1]."""
    import cv2
    import numpy as np

    try:
        from e2e_depth_ros.messages import colorize_depth
    except ImportError:
        levels = np.rint(np.clip(depth, 0.0, 1.0) * 255.0).astype(np.uint8)
        return cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)
    return colorize_depth(depth)


def _write_outputs(out: Path, stem: str, prediction) -> None:
    """Write <stem>_depth.{png,npy}, <stem>_depth_vis.png, <stem>_normals.{png,npy}."""
    import cv2
    import numpy as np

    if prediction.depth is not None:
        depth = prediction.depth.astype(np.float32)  # (H, W) affine-invariant, [0, 1]
        np.save(out / f"{stem}_depth.npy", depth)
        depth16 = np.rint(np.clip(depth, 0.0, 1.0) * 65535.0).astype(np.uint16)
        _imwrite(out / f"{stem}_depth.png", depth16)
        _imwrite(out / f"{stem}_depth_vis.png", _colorize(depth))
    if prediction.normals is not None:
        normals = prediction.normals.astype(np.float32)  # (H, W, 3) optical frame, unit
        np.save(out / f"{stem}_normals.npy", normals)
        rgb = np.rint(np.clip((normals + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)
        _imwrite(out / f"{stem}_normals.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _imwrite(path: Path, image) -> None:
    import cv2

    if not cv2.imwrite(str(path), image):
        raise UsageError(f"{path}: could not be written")


def cmd_predict(args: argparse.Namespace) -> int:
    """Run the estimator on an image or a folder of images and write the outputs."""
    source = Path(args.input)
    images = _list_images(source)
    if not images:
        raise UsageError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    depth_model = _model_arg(args.depth_model)
    normals_model = _model_arg(args.normals_model)
    if depth_model is None and normals_model is None:
        raise UsageError("both --depth-model and --normals-model are disabled; enable one")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")

    import cv2
    from tqdm import tqdm

    from e2e_depth_ros.estimator import Estimator, quiet_model_libraries

    quiet_model_libraries()

    estimator = Estimator(depth_model, normals_model, device=args.device, dtype=args.dtype,
                          processing_resolution=args.processing_resolution)
    out.mkdir(parents=True, exist_ok=True)
    skipped = 0
    for path in tqdm(images, desc=PROG, unit="img", disable=args.quiet):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            tqdm.write(f"{PROG}: skipped {path}: not a readable image", file=sys.stderr)
            skipped += 1
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8 RGB
        _write_outputs(out, path.stem, estimator.predict(rgb))
    done = len(images) - skipped
    print(f"{PROG}: wrote {done} of {len(images)} image(s) to {out}"
          + (f", skipped {skipped} unreadable" if skipped else ""))
    return 0


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    """Write a random-weight checkpoint (see e2e_depth_ros.tiny_checkpoint)."""
    from e2e_depth_ros.estimator import quiet_model_libraries

    quiet_model_libraries()
    from e2e_depth_ros.tiny_checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.out, task=args.task, seed=args.seed, size=args.size)
    print(f"wrote a random-weight {args.size} {args.task} checkpoint to {path} "
          "(meaningless predictions; for tests and smoke runs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of ``e2e-depth``; model defaults are the published hub ids."""
    # Literal copies, so --help does not import torch via the estimator; a test pins them.
    default_depth = "GonzaloMG/marigold-e2e-ft-depth"
    default_normals = "GonzaloMG/marigold-e2e-ft-normals"
    parser = argparse.ArgumentParser(
        prog=PROG, description="Single-step E2E-FT diffusion depth and surface normals.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = sub.add_parser(
        "predict", help="depth and normals for an image or a folder of images",
        description="Write <stem>_depth.png (16-bit, depth * 65535), <stem>_depth.npy "
        "(float32, affine-invariant in [0, 1], small = near), <stem>_depth_vis.png, "
        "<stem>_normals.png ((n + 1) / 2 * 255, optical frame) and <stem>_normals.npy.")
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
                         help="auto (float16 on CUDA, float32 on CPU), float32, float16, ...")
    predict.add_argument("--processing-resolution", type=int, default=768, metavar="PX",
                         help="longer side the model runs at; 0 = native (default: 768)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``e2e-depth`` console script; returns the exit code."""
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

"""Export a diffusers E2E-FT checkpoint's three stages to ONNX or OpenVINO IR (docs/backends.md).

    e2e-depth export CKPT OUT --format onnx|openvino [--size HxW | --dynamic] [--task T]

OUT gets ``encoder``, ``unet`` and ``decoder`` files plus ``e2e_depth_manifest.json`` (scaling
factor, x0 coefficient, timestep, size, model name, task, normals convention), everything the
``openvino`` and ``onnxruntime`` backends need at run time, without diffusers. The ONNX files
are also what TensorRT takes (README, "TensorRT").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from e2e_depth_ros.model.stages import MANIFEST, STAGES, Manifest

FORMATS = ("onnx", "openvino")
OPSET = 17
# Bumped when the traced graphs or the manifest's meaning change (2: sub-pixel upsampling in
# the decoder; 3: the task is the checkpoint's own, not the role it was first loaded for), so
# cached conversions made by an older version are made again; older export folders still load.
GRAPH_REVISION = 3
# A dynamic export is traced at a size whose latent is not a multiple of 8, so the UNet's
# shape-dependent upsampling is what the graph records: then every size runs, odd or not.
_DYNAMIC_EXAMPLE = (88, 120)  # image (h, w) -> latent 11 x 15


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. 288x384) as (h, w); both sides >= 8."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be HxW, e.g. 288x384; got {text!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"size {text!r}: each side must be at least 8 pixels")
    return h, w


def judge_task(checkpoint: str, task: str | None = None) -> tuple[str, str]:
    """(task, evidence) for the manifest: the checkpoint's own files, then ``task``, then its
    name (model_args.task_of); refused when none of them says, or when ``task`` contradicts
    the files (a manifest that says depth for a normals checkpoint publishes normals as depth).
    """
    from e2e_depth_ros.model.model_args import TASKS, task_from_files, task_of

    if task is not None and task not in TASKS:
        raise ValueError(f"task must be depth or normals, got {task!r}")
    found = task_from_files(checkpoint)
    if found is not None and task is not None and found[0] != task:
        raise ValueError(f"--task {task}, but {checkpoint} is a {found[0]} checkpoint "
                         f"({found[1]}); drop --task or export the {task} checkpoint")
    if found is None and task is not None:
        found = (task, f"given as --task {task}")
    found = found or task_of(checkpoint)
    if found is None:
        raise ValueError(f"{checkpoint}: neither its files nor its name say whether it is a "
                         "depth or a normals checkpoint; pass --task depth or --task normals")
    return found


def export_model(checkpoint: str, out: str | Path, *, fmt: str = "onnx",
                 size: tuple[int, int] | None = None, task: str | None = None,
                 overwrite: bool = False, task_evidence: str | None = None) -> Manifest:
    """Write the three stages of ``checkpoint`` and a manifest to ``out``; return the manifest.

    size: static (h, w) with batch 1 (what TensorRT builds fastest for), or None for dynamic
    batch, height and width. Weights stay float32; backends choose precision at run time.
    task: what the checkpoint predicts, when its own files do not say (``judge_task``); with
    ``task_evidence`` the caller has judged it already and both are written as given.
    """
    import torch

    from e2e_depth_ros.model.backend_torch import (DecoderStage, EncoderStage, UNetStage,
                                                   load_checkpoint, weights_digest)

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if task_evidence is None:
        task, task_evidence = judge_task(checkpoint, task)
    out = Path(out)
    _check_target(out, overwrite)
    loaded = load_checkpoint(checkpoint, torch.float32)
    stages = {
        "encoder": EncoderStage(loaded.vae),
        "unet": UNetStage(loaded.unet, loaded.text_embedding, loaded.timestep),
        "decoder": DecoderStage(loaded.vae),
    }
    h, w = size or _DYNAMIC_EXAMPLE
    channels = int(loaded.vae.config.latent_channels)
    examples = {
        "encoder": torch.zeros(1, 3, h, w),
        "unet": torch.zeros(1, channels, (h + 7) // 8, (w + 7) // 8),
        "decoder": torch.zeros(1, channels, (h + 7) // 8, (w + 7) // 8),
    }
    with _staging(out) as staging:
        files = {}
        with tempfile.TemporaryDirectory(prefix=".onnx-", dir=staging) as tmp:
            for stage in STAGES:
                onnx_path = _export_onnx(stages[stage], examples[stage], Path(tmp) / stage,
                                         dynamic=size is None)
                if fmt == "onnx":
                    files[stage] = _place_onnx(onnx_path, staging, stage)
                else:
                    files[stage] = _save_openvino(onnx_path, staging, stage)
        manifest = Manifest(
            model=str(checkpoint),
            task=task,
            task_evidence=task_evidence,
            format=fmt,
            scaling_factor=loaded.scaling_factor,
            x0_coefficient=loaded.x0_coefficient,
            timestep=loaded.timestep,
            prediction_type=loaded.prediction_type,
            vae_digest=weights_digest(loaded.vae),
            latent_channels=channels,
            size=tuple(size) if size else None,
            files=files,
        )
        manifest.save(staging)
    return manifest


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds anything but an earlier export to replace (``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose a new folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out} exists, is not empty and holds no export; choose a new "
                              f"folder (--overwrite replaces only an earlier export)")
    if not overwrite:
        raise FileExistsError(f"{out} holds an earlier export; choose a new folder or pass "
                              "--overwrite to replace it")


@contextlib.contextmanager
def _staging(out: Path):
    """A fresh folder beside ``out`` to write into; renamed to ``out`` when all went well.

    All or nothing: a full disk, an error or Ctrl-C removes the staging folder and leaves
    ``out`` as it was (no partial stage file that blocks the next run); an overwrite replaces
    the whole folder, so files of an earlier export in another format do not stay behind.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(err.errno, f"writing the export to {out} failed ({err.strerror or err}); "
                      f"nothing was written, {out} is as it was") from err
    except BaseException:  # Ctrl-C included: clean up, then let the caller see it
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _export_onnx(module, example, folder: Path, *, dynamic: bool) -> Path:
    """Trace one stage to ONNX (TorchScript exporter: fixed constants, no Python control)."""
    import torch

    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    axes = {"input": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        torch.onnx.export(module, (example,), str(path), input_names=["input"],
                          output_names=["output"], dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    return path


def _place_onnx(path: Path, out: Path, stage: str) -> str:
    """Move one exported stage to ``out``; weights over 2 GB go to one ``.data`` file."""
    target = out / f"{stage}.onnx"
    external = [p for p in path.parent.iterdir() if p != path]
    if not external:
        shutil.move(str(path), target)
        return target.name
    import onnx

    model = onnx.load(str(path))  # reads the per-tensor files the exporter wrote
    onnx.save_model(model, str(target), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{stage}.onnx.data")
    return target.name


def _save_openvino(path: Path, out: Path, stage: str) -> str:
    """Convert one ONNX stage to OpenVINO IR, keeping float32 weights (no fp16 compression)."""
    import openvino as ov

    model = ov.convert_model(str(path))
    target = out / f"{stage}.xml"
    ov.save_model(model, str(target), compress_to_fp16=False)
    return target.name


def checkpoint_key(checkpoint: str, fmt: str) -> str:
    """A cache key for a local checkpoint: its path and its files' sizes and times."""
    from e2e_depth_ros.model.stages import MANIFEST_VERSION

    root = Path(checkpoint).expanduser().resolve()
    digest = hashlib.sha256(f"{root}|{fmt}|{OPSET}|{MANIFEST_VERSION}|{GRAPH_REVISION}".encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/e2e_depth_ros`` (``~/.cache/e2e_depth_ros``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "e2e_depth_ros"


def export_folder_for(model: str, fmt: str, task: str, cache_dir: Path | None,
                      log=print) -> Path:
    """The export folder to load for ``model``: itself, or a cached conversion of it.

    A diffusers checkpoint is exported (dynamic shapes) once into ``cache_dir`` and reused
    while its files are unchanged; without a cache dir, into a temporary folder. OpenVINO
    also reads ONNX exports directly.
    """
    from e2e_depth_ros.errors import CheckpointError
    from e2e_depth_ros.model.stages import is_export_folder

    if is_export_folder(model):
        manifest = Manifest.load(Path(model).expanduser())
        readable = ("openvino", "onnx") if fmt == "openvino" else (fmt,)  # OpenVINO reads ONNX
        if manifest.format not in readable:
            raise CheckpointError(f"{model}: a {manifest.format} export; this backend loads "
                                  f"{' or '.join(readable)} exports (e2e-depth export "
                                  f"--format {fmt})")
        return Path(model).expanduser()
    from e2e_depth_ros.model.backend_torch import checkpoint_source
    from e2e_depth_ros.model.model_args import task_of

    source, is_local = checkpoint_source(model)
    if not is_local:
        raise CheckpointError(f"{model}: converting a hub model for this backend needs it "
                              "downloaded first; pass its local folder or an export folder")
    if cache_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="e2e-depth-export-")) / fmt
    else:
        folder = cache_dir / "exports" / f"{fmt}-{checkpoint_key(source, fmt)}"
        if (folder / MANIFEST).is_file():
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted conversion of our own, in our cache
    log(f"converting {model} to {fmt} (once; cached in {folder})")
    # The manifest says what the checkpoint is; the role it is loaded for decides only when
    # its files and name are silent (the node and predict warn on a mismatch).
    task, evidence = task_of(source) or task_of(model) or (
        task, f"loaded as the {task} model; its files and name do not say")
    export_model(source, folder, fmt=fmt, task=task, task_evidence=evidence)  # all or nothing
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2e-depth export",
        description="Export a diffusers E2E-FT checkpoint's encoder, UNet and decoder to ONNX "
        "or OpenVINO IR, with a manifest the openvino/onnxruntime backends load without "
        "diffusers.",
    )
    parser.add_argument("checkpoint", help="diffusers checkpoint folder (or hub id)")
    parser.add_argument("out", help="output folder (new or empty)")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--size", help="static processing size HxW with batch 1, e.g. 576x768 "
                       "(fastest for TensorRT); the node's processing size must match")
    shape.add_argument("--dynamic", action="store_true",
                       help="dynamic batch, height and width (the default)")
    parser.add_argument("--task", choices=["depth", "normals"],
                        help="what the model predicts, when its files do not say (default: "
                        "from its files, else its name)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in OUT")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size) if args.size else None
        from e2e_depth_ros.model.quiet import quiet_model_libraries

        quiet_model_libraries()
        manifest = export_model(args.checkpoint, args.out, fmt=args.format, size=size,
                                task=args.task, overwrite=args.overwrite)
    except KeyboardInterrupt:  # the command's main only: the library cleans up and re-raises
        print(f"e2e-depth export: interrupted; nothing was written to {args.out}",
              file=sys.stderr)
        return 130
    except ImportError as err:
        print(f"e2e-depth export: error: {err.name or err} is not installed; "
              "pip install 'e2e_depth_ros[backends]' (onnx, openvino)", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a command-line tool: one line, no traceback
        print(f"e2e-depth export: error: {err}", file=sys.stderr)
        return 2
    shape_text = "x".join(map(str, manifest.size)) if manifest.size else "dynamic"
    print(f"wrote {args.format} {manifest.task} stages ({shape_text}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

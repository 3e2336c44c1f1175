"""What every backend runs: the three networks of one model, and the manifest of an export.

A backend runs one E2E-FT model as three stages (docs/backends.md):

1. ``encode``: image [N, 3, h, w] in [-1, 1] -> the VAE posterior mean [N, 4, h/8, w/8]
   (unscaled; not a sample);
2. ``denoise``: image latent [N, 4, h/8, w/8] -> the UNet's output (v) with its constants
   folded in: the empty-prompt embedding, t = 999 and the zeros half of its input;
3. ``decode``: latent z = x0 / scaling_factor -> the VAE decoder's image [N, 3, h, w].

Everything around them (resizes with rounding, scaling, x0 from v, depth and normals maps)
is shared by the estimator, so every backend computes the same thing. This module imports
neither torch nor diffusers: an export folder loads without them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Hashable, Protocol

from e2e_depth_ros.errors import CheckpointError

if TYPE_CHECKING:
    import torch

MANIFEST = "e2e_depth_manifest.json"
MANIFEST_VERSION = 1
STAGES = ("encoder", "unet", "decoder")
BACKENDS = ("torch", "openvino", "onnxruntime")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Older spellings (the estimator's ``dtype``) -> the precision names above.
PRECISION_ALIASES = {
    "auto": "auto", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16",
    "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
}


def normalise_precision(value: str, *, what: str = "precision") -> str:
    """One of ``PRECISIONS`` for any accepted spelling; a clear error for the rest."""
    if not isinstance(value, str) or value.lower() not in PRECISION_ALIASES:
        raise ValueError(
            f"{what} must be one of {', '.join(sorted(PRECISION_ALIASES))}; got {value!r}"
        )
    return PRECISION_ALIASES[value.lower()]


@dataclass(frozen=True)
class Manifest:
    """The constants a backend needs next to the stage files of one exported model.

    scaling_factor: the VAE latent scale (0.18215 for SD VAEs).
    x0_coefficient: x0 = x0_coefficient * unet output, since z_t = 0 at t = 999
        (-sqrt(1 - abar_999) for v-prediction).
    size: (h, w) the stages were exported for, or None when height, width and batch are
        dynamic. A static export has batch 1.
    vae_digest: a hash of the VAE weights; two models with the same digest share the encode.
    task: what the checkpoint predicts, judged by the export from the checkpoint's own files
        (then its name, or ``--task``); ``task_evidence`` says which, e.g. "its README.md says
        task: normals" (empty in exports made before it was recorded).
    """

    model: str
    task: str
    format: str
    scaling_factor: float
    x0_coefficient: float
    timestep: int
    prediction_type: str
    vae_digest: str
    latent_channels: int = 4
    size: tuple[int, int] | None = None
    normals_convention: str = "e2e_ft"
    task_evidence: str = ""
    files: dict[str, str] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST
        data = asdict(self)
        data["size"] = list(self.size) if self.size else None
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        folder = Path(folder)
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot be read as an export manifest ({err})") \
                from err
        if data.get("version") != MANIFEST_VERSION:
            raise CheckpointError(
                f"{path}: manifest version {data.get('version')!r}, this package reads "
                f"{MANIFEST_VERSION}; export the checkpoint again"
            )
        try:
            data["size"] = tuple(data["size"]) if data.get("size") else None
            manifest = cls(**data)
        except TypeError as err:
            raise CheckpointError(f"{path}: not an e2e_depth_ros manifest ({err})") from err
        for stage in STAGES:
            name = manifest.files.get(stage)
            if not name or not (folder / name).is_file():
                raise CheckpointError(f"{folder}: the {stage} stage file {name!r} is missing")
        return manifest


def is_export_folder(model: str | Path) -> bool:
    """True for a folder written by ``e2e-depth export`` (it holds a manifest)."""
    return Path(model).expanduser().joinpath(MANIFEST).is_file()


class StageRunner(Protocol):
    """What the estimator needs from a backend for one loaded model.

    Tensors cross this seam as float32 torch tensors on ``Estimator.device`` in contiguous
    NCHW; a runner casts to its own precision and layout inside and returns float32.
    """

    name: str  # "depth" or "normals"
    scaling_factor: float
    x0_coefficient: float
    vae_key: Hashable  # equal keys: one encode serves both models
    batch_decode: bool  # whether decoding two models' latents as one batch pays

    def encode(self, image: "torch.Tensor") -> "torch.Tensor": ...

    def denoise(self, latent: "torch.Tensor") -> "torch.Tensor": ...

    def decode(self, latent: "torch.Tensor") -> "torch.Tensor": ...


class ExportedStages:
    """What every runner of an export folder reads from its manifest (a base class)."""

    batch_decode = False

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.manifest = Manifest.load(folder)
        self.scaling_factor = self.manifest.scaling_factor
        self.x0_coefficient = self.manifest.x0_coefficient
        self.vae_key = self.manifest.vae_digest

    def stage_path(self, stage: str) -> Path:
        """The file of one stage (encoder, unet, decoder) in the export folder."""
        return self.folder / self.manifest.files[stage]

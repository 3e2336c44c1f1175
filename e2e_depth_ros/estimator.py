"""Single-step E2E-FT depth and normals as the paper's reference pipeline (docs/inference.md).

``Estimator.predict`` reads as the numbered steps of docs/inference.md. It knows nothing of ROS: it
takes uint8 RGB arrays and returns float32 arrays.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from e2e_depth_ros.errors import CheckpointError, InputImageError
from e2e_depth_ros.geometry import NormalConvention, normals_to_optical

DEFAULT_DEPTH_MODEL = "GonzaloMG/marigold-e2e-ft-depth"
DEFAULT_NORMALS_MODEL = "GonzaloMG/marigold-e2e-ft-normals"
MIN_SIDE = 8  # one latent pixel: anything smaller carries no information for the VAE
_SUBFOLDERS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
TIMESTEP_NOTE = "t = T - 1 (999): the 'trailing' single step; 'leading' would give t = 1"


@dataclass(frozen=True)
class Prediction:
    """Outputs of one ``predict`` call, at the input's resolution.

    depth: float32 (H, W) or (N, H, W), affine-invariant depth in [0, 1] (small = near),
        not metric and not disparity; None when depth was not computed.
    normals: float32 (H, W, 3) or (N, H, W, 3), unit normals in the ROS optical frame
        (x right, y down, z forward, pointing toward the camera); None when not computed.
    """

    depth: np.ndarray | None
    normals: np.ndarray | None


@dataclass
class _Branch:
    """One loaded task model: its UNet, its VAE and the constants of its single step."""

    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_embedding: torch.Tensor  # [1, 2, C]: the empty prompt, BOS + EOS, no padding
    timestep: torch.Tensor  # scalar, T - 1
    x0_from_output: float  # x0 = coefficient * unet_output when z_t = 0
    scaling_factor: float


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; explicit CUDA devices are checked to exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA and float32 on CPU; reduced precision on CPU is refused."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(sorted(_DTYPES))}; got {dtype!r}")
    resolved = _DTYPES[dtype]
    if device.type == "cpu" and resolved != torch.float32:
        raise ValueError(
            f"dtype {dtype} on CPU is refused: reduced precision runs ~100x slower than "
            "float32 on CPUs; use dtype auto or float32"
        )
    return resolved


def keep_cpu_buffers_mapped() -> bool:
    """Stop glibc from unmapping and re-faulting large activation buffers on every call.

    CPU inference allocates and frees hundreds of MB per frame; with glibc's defaults each
    buffer goes back to the OS and is page-faulted in again next time, which cost ~10x the
    system time and most of the gain of sharing the VAE encode. Process-wide and harmless
    for an inference process (freed memory stays reserved for the next frame). Returns
    whether it applied (Linux glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum: 32 MiB on 64-bit
    ok &= mallopt(m_trim_threshold, 2**31 - 1)
    ok &= mallopt(m_top_pad, 1 << 30)
    return bool(ok)


def quiet_model_libraries() -> None:
    """Silence hub/diffusers/transformers logs, warnings and "Loading weights" bars.

    Failures still reach the user: the estimator turns them into one CheckpointError.
    Process-wide; for the command-line tools, not for a library caller's process.
    """
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils.logging as hub_logging
    import transformers.utils.logging as transformers_logging

    warnings.filterwarnings("ignore", module="huggingface_hub")
    hub_logging.set_verbosity_error()  # its "Retrying in 1s" lines on a machine offline
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _is_local_reference(model: str) -> bool:
    """A model argument that names a folder rather than a hub id ``owner/name``."""
    if os.path.isdir(model):
        return True
    return model.startswith(("/", ".", "~")) or model.count("/") != 1 or model.endswith("/")


def _checkpoint_source(model: str) -> tuple[str, bool]:
    """Return (where to load from, is_local) and check a local folder's layout first."""
    if not isinstance(model, str) or not model.strip():
        raise CheckpointError(f"model must be a hub id or a folder, got {model!r}")
    if not _is_local_reference(model):
        return model, False
    path = Path(model).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / "model_index.json").is_file():
        raise CheckpointError(f"{path}: no model_index.json (not a diffusers checkpoint folder)")
    for sub in _SUBFOLDERS:
        if not (path / sub).is_dir():
            raise CheckpointError(f"{path}: missing the {sub}/ folder of a diffusers checkpoint")
    return str(path), True


def _load_component(loader, source: str, subfolder: str, is_local: bool, **kwargs):
    try:
        return loader.from_pretrained(
            source, subfolder=subfolder, local_files_only=is_local, **kwargs
        )
    except Exception as err:  # noqa: BLE001 - every loader failure becomes one clear error
        if is_local:
            raise CheckpointError(f"{source}/{subfolder}: cannot be loaded ({err})") from err
        raise CheckpointError(
            f"could not load {source!r} from the Hugging Face Hub ({type(err).__name__}); "
            "pass a local checkpoint folder instead, or make a random-weight test one with "
            "`python -m e2e_depth_ros.tiny_checkpoint DIR`"
        ) from err


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# x0 from a model output when the noisy latent z_t is zero (docs/inference.md step 7), per
# prediction type: v: x0 = sqrt(abar) z - sqrt(1 - abar) v;
# epsilon: x0 = (z - sqrt(1 - abar) e) / sqrt(abar)
_X0_COEFFICIENT = {
    "v_prediction": lambda abar: -math.sqrt(1.0 - abar),
    "epsilon": lambda abar: -math.sqrt(1.0 - abar) / math.sqrt(abar),
    "sample": lambda abar: 1.0,
}


class Estimator:
    """E2E-FT depth and/or normals on one device, with weights loaded once.

    Either model may be None (that output is then None). When both models' VAEs have the
    same weights (the published ones do) one VAE serves both, so an image is encoded once.
    """

    def __init__(
        self,
        depth_model: str | None = DEFAULT_DEPTH_MODEL,
        normals_model: str | None = DEFAULT_NORMALS_MODEL,
        device: str = "auto",
        dtype: str = "auto",
        processing_resolution: int = 768,
        *,
        normals_convention: NormalConvention = "e2e_ft",
        compile: bool = False,
    ) -> None:
        if not depth_model and not normals_model:
            raise ValueError("at least one of depth_model and normals_model must be given")
        if normals_convention not in ("e2e_ft", "marigold"):
            raise ValueError(
                f"normals_convention must be 'e2e_ft' or 'marigold', got {normals_convention!r}"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device.type == "cpu":
            keep_cpu_buffers_mapped()
        self.processing_resolution = processing_resolution
        self.normals_convention = normals_convention
        self.model_names = {"depth": depth_model or None, "normals": normals_model or None}
        self.depth = self._load(depth_model, "depth") if depth_model else None
        self.normals = self._load(normals_model, "normals") if normals_model else None
        self.shared_vae = False
        if self.depth and self.normals and _same_weights(self.depth.vae, self.normals.vae):
            self.normals.vae = self.depth.vae  # one encode per image, one copy in memory
            self.shared_vae = True
        for branch in (self.depth, self.normals):
            if branch is not None:
                branch.unet.to(self.device)
                branch.vae.to(self.device)
        if compile:
            self._compile()

    # -- configuration -------------------------------------------------------------------
    @property
    def processing_resolution(self) -> int:
        """Longer side the image is resized to before inference; 0 keeps the native size."""
        return self._processing_resolution

    @processing_resolution.setter
    def processing_resolution(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"processing_resolution must be an int, got {value!r}")
        if value != 0 and value < MIN_SIDE:
            raise ValueError(
                f"processing_resolution must be 0 (native) or >= {MIN_SIDE}, got {value}"
            )
        self._processing_resolution = int(value)

    def _load(self, model: str, name: str) -> _Branch:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source, is_local = _checkpoint_source(model)
        kwargs = {"torch_dtype": self.dtype}
        unet = _load_component(UNet2DConditionModel, source, "unet", is_local, **kwargs)
        if unet.config.in_channels != 8:
            raise CheckpointError(
                f"{source}: the UNet takes {unet.config.in_channels} input channels, an E2E-FT "
                "checkpoint takes 8 (image latent + prediction latent)"
            )
        vae = _load_component(AutoencoderKL, source, "vae", is_local, **kwargs)
        scheduler = _load_component(DDIMScheduler, source, "scheduler", is_local)
        tokenizer = _load_component(CLIPTokenizer, source, "tokenizer", is_local)
        text_encoder = _load_component(CLIPTextModel, source, "text_encoder", is_local)
        prediction_type = scheduler.config.prediction_type
        if prediction_type not in _X0_COEFFICIENT:
            raise CheckpointError(f"{source}: unsupported prediction_type {prediction_type!r}")

        # Step 4: the empty prompt without padding (BOS, EOS), computed once; the text
        # encoder is then dropped, it is never needed again.
        with torch.inference_mode():
            ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids  # [1, 2]
            embedding = text_encoder(ids)[0]  # [1, 2, C]
        del text_encoder

        # Step 6: t = T - 1 = 999 with the scheduler's own alphas_cumprod.
        last = scheduler.config.num_train_timesteps - 1
        abar = float(scheduler.alphas_cumprod[last])
        unet.eval().requires_grad_(False)
        vae.eval().requires_grad_(False)
        return _Branch(
            name=name,
            unet=unet,
            vae=vae,
            text_embedding=embedding.to(self.device, self.dtype),
            timestep=torch.tensor(last, device=self.device),
            x0_from_output=_X0_COEFFICIENT[prediction_type](abar),
            scaling_factor=float(vae.config.scaling_factor),
        )

    def _compile(self) -> None:
        for branch in (self.depth, self.normals):
            if branch is None:
                continue
            branch.unet = torch.compile(branch.unet)
            if not getattr(branch.vae, "_e2e_compiled", False):
                branch.vae.encoder = torch.compile(branch.vae.encoder)
                branch.vae.decoder = torch.compile(branch.vae.decoder)
                branch.vae._e2e_compiled = True

    # -- inference -----------------------------------------------------------------------
    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model runs at for a ``height`` x ``width`` input (inference step 1)."""
        if self.processing_resolution == 0:
            return height, width
        f = self.processing_resolution / max(height, width)
        return int(height * f), int(width * f)

    def _check_input(self, rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray):
            raise InputImageError(f"image must be a numpy array, got {type(rgb).__name__}")
        if rgb.dtype != np.uint8:
            raise InputImageError(f"image must be uint8 RGB, got dtype {rgb.dtype}")
        if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
            raise InputImageError(
                f"image must be (H, W, 3) or (N, H, W, 3) RGB, got shape {rgb.shape}"
            )
        batch = rgb if rgb.ndim == 4 else rgb[None]
        n, height, width = batch.shape[:3]
        if n == 0:
            raise InputImageError("image batch is empty")
        if height < MIN_SIDE or width < MIN_SIDE:
            raise InputImageError(
                f"image is {width}x{height}; each side must be at least {MIN_SIDE} pixels"
            )
        h, w = self.processing_size(height, width)
        if h < MIN_SIDE or w < MIN_SIDE:
            raise InputImageError(
                f"image {width}x{height} becomes {w}x{h} at processing_resolution "
                f"{self.processing_resolution}: aspect ratio too extreme"
            )
        return batch

    def _preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """Steps 1-2: uint8 resize with torchvision's rounding, then [-1, 1], channels first."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)  # [N, H, W, 3] u8
        x = x.permute(0, 3, 1, 2).float()  # [N, 3, H, W]
        h, w = self.processing_size(*batch.shape[1:3])
        if (h, w) != tuple(batch.shape[1:3]):
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)  # back to uint8 values, as the reference does
        return (x / 255.0 * 2.0 - 1.0).to(self.dtype)  # [N, 3, h, w] in [-1, 1]

    def _encode(self, vae: torch.nn.Module, image: torch.Tensor, scaling: float) -> torch.Tensor:
        """Step 3: posterior mean (not a sample) times the VAE scaling factor."""
        return vae.encode(image).latent_dist.mean * scaling  # [N, 4, h/8, w/8]

    def _denoise(self, branch: _Branch, image_latent: torch.Tensor) -> torch.Tensor:
        """Steps 5-7: one UNet call at t = 999 on [image latent, zeros]; x0 from the output."""
        n = image_latent.shape[0]
        unet_input = torch.cat([image_latent, torch.zeros_like(image_latent)], dim=1)  # [N,8,.]
        text = branch.text_embedding.expand(n, -1, -1)  # [N, 2, C]
        output = branch.unet(unet_input, branch.timestep, encoder_hidden_states=text).sample
        return output * branch.x0_from_output  # [N, 4, h/8, w/8]: x0 = -sqrt(1 - abar) v

    def _decode(self, branch: _Branch, x0: torch.Tensor) -> torch.Tensor:
        """Step 8 (first half): decode x0 / scaling_factor into [N, 3, h, w], float32."""
        return branch.vae.decode(x0 / branch.scaling_factor).sample.float()

    @staticmethod
    def _depth_from_decoded(decoded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Step 8-9 for depth: channel mean, clip, [0, 1], resize back. No per-frame stretch."""
        depth = decoded.mean(dim=1, keepdim=True).clamp(-1.0, 1.0)  # [N, 1, h, w]
        depth = (depth + 1.0) / 2.0
        if depth.shape[-2:] != size:
            depth = F.interpolate(depth, size, mode="bilinear", align_corners=False,
                                  antialias=True)
        return depth[:, 0]  # [N, H, W]

    @staticmethod
    def _normals_from_decoded(decoded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Steps 8-9 for normals: unit length, resize back, unit length again."""
        normals = decoded / (decoded.norm(dim=1, keepdim=True) + 1e-5)  # [N, 3, h, w]
        if normals.shape[-2:] != size:
            normals = F.interpolate(normals, size, mode="bilinear", align_corners=False,
                                    antialias=True)
            normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-6)
        return normals.permute(0, 2, 3, 1)  # [N, H, W, 3]

    def predict(self, rgb: np.ndarray, *, depth: bool = True, normals: bool = True) -> Prediction:
        """Depth and/or normals for a uint8 RGB image (H, W, 3) or batch (N, H, W, 3).

        ``depth`` / ``normals`` = False skip a loaded model for this call (nobody listens).
        """
        batch = self._check_input(rgb)
        size = tuple(batch.shape[1:3])
        want = [b for b, on in ((self.depth, depth), (self.normals, normals)) if b and on]
        with torch.inference_mode():
            image = self._preprocess(batch)  # [N, 3, h, w]
            latents: dict[int, torch.Tensor] = {}  # one encode per distinct VAE
            x0 = {}
            for branch in want:
                key = id(branch.vae)
                if key not in latents:
                    latents[key] = self._encode(branch.vae, image, branch.scaling_factor)
                x0[branch.name] = self._denoise(branch, latents[key])
            decoded = self._decode_all(want, x0)
            depth_out = normals_out = None
            if "depth" in decoded:
                depth_out = self._depth_from_decoded(decoded["depth"], size).cpu().numpy()
            if "normals" in decoded:
                n = self._normals_from_decoded(decoded["normals"], size).cpu().numpy()
                normals_out = normals_to_optical(n, self.normals_convention)
        single = rgb.ndim == 3
        return Prediction(
            depth=None if depth_out is None else (depth_out[0] if single else depth_out),
            normals=None if normals_out is None else (normals_out[0] if single else normals_out),
        )

    def _decode_all(self, branches: list[_Branch], x0: dict) -> dict[str, torch.Tensor]:
        """Decode every requested latent; one batched decode when the VAE is shared on a GPU.

        Batching saves kernel launches on a GPU; on a CPU it only doubles the working set
        (measured 1.12x slower than two decodes at 768x576), so CPUs decode one by one.
        """
        if len(branches) == 2 and self.shared_vae and self.device.type == "cuda":
            n = x0["depth"].shape[0]
            both = self._decode(branches[0], torch.cat([x0["depth"], x0["normals"]]))
            return {"depth": both[:n], "normals": both[n:]}
        return {b.name: self._decode(b, x0[b.name]) for b in branches}

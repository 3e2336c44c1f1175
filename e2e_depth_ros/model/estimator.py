"""Single-step E2E-FT depth and normals as the paper's reference pipeline (docs/inference.md).

``Estimator.predict`` reads as the numbered steps of docs/inference.md. It knows nothing of ROS: it
takes uint8 RGB arrays and returns float32 arrays.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from e2e_depth_ros.model.allocator import keep_cpu_buffers_mapped  # noqa: F401 - public name
from e2e_depth_ros.model.quiet import quiet_model_libraries  # noqa: F401 - public name
from e2e_depth_ros.errors import InputImageError
from e2e_depth_ros.core.geometry import NormalConvention, normals_to_optical
from e2e_depth_ros.model.stages import (BACKENDS, StageRunner, is_export_folder,
                                        normalise_precision)

DEFAULT_DEPTH_MODEL = "GonzaloMG/marigold-e2e-ft-depth"
DEFAULT_NORMALS_MODEL = "GonzaloMG/marigold-e2e-ft-normals"
MIN_SIDE = 8  # one latent pixel: anything smaller carries no information for the VAE
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_TORCH_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOG = logging.getLogger(__name__)
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


def checked_batch(rgb: np.ndarray, processing_size, resolution: int) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) of an (H, W, 3) or (N, H, W, 3) input, or InputImageError
    naming what is wrong; ``processing_size(h, w)`` says what the model would run at."""
    if not isinstance(rgb, np.ndarray):
        raise InputImageError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise InputImageError(f"image must be uint8 RGB, got dtype {rgb.dtype}")
    if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        raise InputImageError(f"image must be (H, W, 3) or (N, H, W, 3) RGB, got shape "
                              f"{rgb.shape}")
    batch = rgb if rgb.ndim == 4 else rgb[None]
    n, height, width = batch.shape[:3]
    if n == 0:
        raise InputImageError("image batch is empty")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputImageError(f"image is {width}x{height}; each side must be at least "
                              f"{MIN_SIDE} pixels")
    h, w = processing_size(height, width)
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputImageError(f"image {width}x{height} becomes {w}x{h} at "
                              f"processing_resolution {resolution}: aspect ratio too extreme")
    return batch


class Estimator:
    """E2E-FT depth and/or normals on one backend and device, with weights loaded once.

    Either model may be None (that output is then None). When both models' VAEs have the
    same weights (the published ones do) one encode serves both.

    backend: ``torch`` (diffusers checkpoints), ``openvino`` or ``onnxruntime`` (an
        ``e2e-depth export`` folder, or a diffusers checkpoint converted on first use and
        kept in ``cache_dir``). Every backend shares the pre- and post-processing below.
    precision: ``auto`` (fp16 on GPUs, fp32 on CPUs), ``fp32``, ``fp16`` or ``bf16``;
        refused at construction where the backend or device cannot run it. ``dtype`` is the
        older name of the same setting (``float16`` etc. are accepted); give one of them.
    compile / cuda_graphs / channels_last: torch backend only. Compilation happens in
        ``warm_up``, never silently in the first frames, and a change of processing size
        re-warms explicitly with a log line.
    """

    def __init__(
        self,
        depth_model: str | None = DEFAULT_DEPTH_MODEL,
        normals_model: str | None = DEFAULT_NORMALS_MODEL,
        device: str = "auto",
        dtype: str = "auto",
        processing_resolution: int = 768,
        *,
        backend: str = "torch",
        precision: str = "auto",
        normals_convention: NormalConvention = "e2e_ft",
        compile: bool = False,
        cuda_graphs: bool = False,
        channels_last: bool | None = None,
        threads: int = 0,
        cache_dir: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not depth_model and not normals_model:
            raise ValueError("at least one of depth_model and normals_model must be given")
        if normals_convention not in ("e2e_ft", "marigold"):
            raise ValueError(
                f"normals_convention must be 'e2e_ft' or 'marigold', got {normals_convention!r}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an int >= 0 (0 = the backend's default), "
                             f"got {threads!r}")
        self.backend = backend
        self.precision = _merge_precision(precision, dtype)
        self._log = log or _LOG.info
        self.processing_resolution = processing_resolution
        self.normals_convention = normals_convention
        self.model_names = {"depth": depth_model or None, "normals": normals_model or None}
        self._warm_shape: tuple[int, int, int] | None = None  # (N, h, w) last warmed up
        self._warm_input: tuple[int, int] | None = None  # the input size it was made for
        self._rewarm = False  # set by warm_up: later size changes re-warm explicitly
        self._compiled = False
        if backend == "torch":
            self._init_torch(device, compile, cuda_graphs, channels_last)
        else:
            if compile or cuda_graphs:
                raise ValueError(f"compile and cuda_graphs are torch options; backend "
                                 f"{backend!r} compiles its own graphs")
            self._init_exported(device, threads, cache_dir)
        self.dtype = _TORCH_DTYPE[self.precision]

    # -- construction --------------------------------------------------------------------
    def _init_torch(self, device: str, compile: bool, cuda_graphs: bool,
                    channels_last: bool | None) -> None:
        from e2e_depth_ros.model.backend_torch import TorchStages, load_checkpoint, same_weights

        self.device = resolve_device(device)
        self.precision = _torch_precision(self.precision, self.device)
        if cuda_graphs and (self.device.type != "cuda" or not compile):
            raise ValueError("cuda_graphs needs compile=True on a CUDA device")
        for name, model in self.model_names.items():
            if model and is_export_folder(model):
                raise ValueError(f"{model} is an export folder; the torch backend loads "
                                 "diffusers checkpoints (use backend openvino or onnxruntime)")
        dtype = _TORCH_DTYPE[self.precision]
        # NHWC convolutions pay with reduced precision on CUDA tensor cores; on CPUs and in
        # fp32 contiguous NCHW is as fast and keeps results independent of the layout.
        if channels_last is None:
            channels_last = self.device.type == "cuda" and self.precision != "fp32"
        self.backend_device = str(self.device)
        self.depth = self.normals = None
        for name, model in self.model_names.items():
            if model:
                runner = TorchStages(name, load_checkpoint(model, dtype), self.device, dtype,
                                     channels_last=channels_last)
                setattr(self, name, runner)
        self.shared_vae = False
        if self.depth and self.normals and same_weights(self.depth.vae, self.normals.vae):
            self.normals.share_vae(self.depth)  # one encode per image, one copy in memory
            self.shared_vae = True
        if compile:
            for runner in (self.depth, self.normals):
                if runner is not None:
                    runner.compile(cuda_graphs=cuda_graphs)
            self._compiled = True

    def _init_exported(self, device: str, threads: int, cache_dir: str | None) -> None:
        if self.backend == "openvino":
            from e2e_depth_ros.model import backend_openvino as module
        else:
            from e2e_depth_ros.model import backend_onnxruntime as module

        session = module.open_backend(device, self.precision, threads=threads,
                                      cache_dir=cache_dir)
        self.precision = session.precision
        self.backend_device = session.device
        self.device = torch.device("cpu")  # where the shared pre/post-processing runs
        self.depth = self.normals = None
        for name, model in self.model_names.items():
            if model:
                setattr(self, name, session.load(model, name))
        self.shared_vae = bool(self.depth and self.normals
                               and self.depth.vae_key == self.normals.vae_key)

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
        changed = getattr(self, "_processing_resolution", None) not in (None, int(value))
        self._processing_resolution = int(value)
        if changed and self._rewarm and self._warm_input is not None:
            h, w = self.processing_size(*self._warm_input)
            self._log(f"processing_resolution changed to {int(value)} (processing size "
                      f"{w}x{h}): warming up again before the next frame")
            self.warm_up(self._warm_input, force=True)

    def device_finisher(self):
        """A ``device_finish.DeviceFinisher`` where finishing on the device pays (CUDA)."""
        if self.device.type != "cuda":
            return None
        from e2e_depth_ros.model.device_finish import DeviceFinisher

        return DeviceFinisher(self.device)

    def describe(self) -> str:
        """One line for logs and diagnostics: backend, device and precision."""
        return f"{self.backend} on {self.backend_device} ({self.precision})"

    @property
    def warm_up_pays(self) -> bool:
        """Whether a warm-up before the first frame avoids a stall (GPU, compiled graphs).

        On CPUs with the torch backend a frame costs seconds either way; a warm-up would
        only delay the start by one frame.
        """
        return self.device.type == "cuda" or self._compiled or self.backend == "openvino"

    def warm_up(self, input_size: tuple[int, int] | None = None, *,
                force: bool = False) -> float | None:
        """Run every stage once at the processing size of ``input_size`` (H, W).

        Compiles (torch ``compile``), records CUDA graphs and lets backends pick kernels
        before the first real frame, so the first frames after "ready" do not stall. After
        a warm-up, a change of processing size (a new ``processing_resolution`` or input
        size) warms up again and says so in the log. ``input_size`` defaults to a 4:3 image
        at the processing resolution. Returns the seconds taken, or None when skipped.
        """
        if not force and not self.warm_up_pays:
            return None
        if input_size is None:
            if self.processing_resolution == 0:
                self._rewarm = True  # native size: the first frame's size warms up
                return None
            side = self.processing_resolution
            input_size = (side * 3 // 4, side)
        height, width = int(input_size[0]), int(input_size[1])
        h, w = self.processing_size(height, width)
        start = time.perf_counter()
        self._rewarm = False  # no recursion from predict
        self._warm_run(np.zeros((1, height, width, 3), np.uint8))
        self._warm_shape, self._warm_input, self._rewarm = (1, h, w), (height, width), True
        seconds = time.perf_counter() - start
        self._log(f"warm-up at processing size {w}x{h} ({self.describe()}): {seconds:.2f} s")
        return seconds

    # -- inference -----------------------------------------------------------------------
    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model runs at for a ``height`` x ``width`` input (inference step 1)."""
        if self.processing_resolution == 0:
            return height, width
        f = self.processing_resolution / max(height, width)
        return int(height * f), int(width * f)

    def _preprocess(self, batch: np.ndarray) -> torch.Tensor:
        """Steps 1-2: uint8 resize with torchvision's rounding, then [-1, 1], channels first.

        Always returns a contiguous NCHW float32 tensor, resized or not: a permuted view of
        the HWC upload would make the VAE's results depend on the input size's layout.
        """
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)  # [N, H, W, 3] u8
        x = x.permute(0, 3, 1, 2).float().contiguous()  # [N, 3, H, W], NCHW in memory
        h, w = self.processing_size(*batch.shape[1:3])
        if (h, w) != tuple(batch.shape[1:3]):
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)  # back to uint8 values, as the reference does
        return (x / 255.0 * 2.0 - 1.0).contiguous()  # [N, 3, h, w] in [-1, 1]

    @staticmethod
    def _encode(runner: StageRunner, image: torch.Tensor) -> torch.Tensor:
        """Step 3: posterior mean (not a sample) times the VAE scaling factor."""
        return runner.encode(image) * runner.scaling_factor  # [N, 4, h/8, w/8]

    @staticmethod
    def _denoise(runner: StageRunner, image_latent: torch.Tensor) -> torch.Tensor:
        """Steps 5-7: one UNet call at t = 999 on [image latent, zeros]; x0 from the output.

        The zeros half, the timestep and the empty-prompt embedding are folded into the
        runner's UNet stage.
        """
        return runner.denoise(image_latent) * runner.x0_coefficient  # x0 = -sqrt(1-abar) v

    @staticmethod
    def _decode(runner: StageRunner, x0: torch.Tensor) -> torch.Tensor:
        """Step 8 (first half): decode x0 / scaling_factor into [N, 3, h, w], float32."""
        return runner.decode(x0 / runner.scaling_factor)

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
        """Steps 8-9 for normals: the reference's v / (|v| + 1e-5), resize back, unit length.

        The final division makes every path (resized or native size) return unit vectors;
        the reference's + 1e-5 alone leaves them slightly short.
        """
        normals = decoded / (decoded.norm(dim=1, keepdim=True) + 1e-5)  # [N, 3, h, w]
        if normals.shape[-2:] != size:
            normals = F.interpolate(normals, size, mode="bilinear", align_corners=False,
                                    antialias=True)
        normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-6)
        # [N, H, W, 3] in memory too: one copy here (threaded, on the model's device, GIL
        # released) instead of a transposing copy in numpy by every consumer of the array
        # (normals/image, normals/image_vis, the cloud's normals: ~1.1 ms each at 640x480)
        return normals.permute(0, 2, 3, 1).contiguous()

    def _warm_run(self, batch: np.ndarray) -> None:
        """Every call shape a frame of this size can take: depth+normals (a batched decode
        on GPUs) and each alone; CUDA graphs are recorded on the second and third call."""
        runs = 3 if getattr(self.depth or self.normals, "cuda_graphs", False) else 1
        combos = [(True, True)]
        if self.depth is not None and self.normals is not None:
            combos += [(True, False), (False, True)]
        for depth, normals in combos:
            for _ in range(runs):
                self.predict(batch, depth=depth, normals=normals)

    def _maybe_rewarm(self, n: int, height: int, width: int) -> None:
        """After a warm-up, a new processing shape is warmed up explicitly, with a log line."""
        shape = (n, *self.processing_size(height, width))
        if not self._rewarm or shape == self._warm_shape:
            return
        self._log(f"processing size changed to {shape[2]}x{shape[1]} (batch {n}): warming "
                  "up again")
        self._rewarm = False
        try:
            self._warm_run(np.zeros((n, height, width, 3), np.uint8))
        finally:
            self._warm_shape, self._warm_input, self._rewarm = shape, (height, width), True

    def predict(self, rgb: np.ndarray, *, depth: bool = True, normals: bool = True,
                on_device: bool = False) -> Prediction:
        """Depth and/or normals for a uint8 RGB image (H, W, 3) or batch (N, H, W, 3).

        ``depth`` / ``normals`` = False skip a loaded model for this call (nobody listens).
        ``on_device``: the outputs stay torch tensors on the model's device (same shapes
        and values), for post-processing there (``device_finish``) without a copy back.
        """
        batch = checked_batch(rgb, self.processing_size, self.processing_resolution)
        size = tuple(batch.shape[1:3])
        self._maybe_rewarm(batch.shape[0], *size)
        want = [r for r, on in ((self.depth, depth), (self.normals, normals)) if r and on]
        with torch.inference_mode():
            image = self._preprocess(batch)  # [N, 3, h, w]
            latents: dict = {}  # one encode per distinct VAE
            x0 = {}
            for runner in want:
                if runner.vae_key not in latents:
                    latents[runner.vae_key] = self._encode(runner, image)
                x0[runner.name] = self._denoise(runner, latents[runner.vae_key])
            decoded = self._decode_all(want, x0)
            depth_out = normals_out = None
            if "depth" in decoded:
                depth_out = self._depth_from_decoded(decoded["depth"], size)
            if "normals" in decoded:
                normals_out = self._to_optical(self._normals_from_decoded(decoded["normals"],
                                                                          size))
        if not on_device:
            depth_out = None if depth_out is None else depth_out.cpu().numpy()
            normals_out = None if normals_out is None else normals_out.cpu().numpy()
        single = rgb.ndim == 3
        return Prediction(
            depth=None if depth_out is None else (depth_out[0] if single else depth_out),
            normals=None if normals_out is None else (normals_out[0] if single else normals_out),
        )

    def _to_optical(self, normals: torch.Tensor) -> torch.Tensor:
        """``geometry.normals_to_optical`` on the device (a sign flip per axis)."""
        if self.normals_convention == "e2e_ft":
            return -normals
        flip = np.sign(normals_to_optical(np.ones(3, np.float32), self.normals_convention))
        return normals * normals.new_tensor(flip)

    def _decode_all(self, runners: list[StageRunner], x0: dict) -> dict[str, torch.Tensor]:
        """Decode every requested latent; one batched decode when the VAE is shared on a GPU.

        Batching saves kernel launches on a GPU; on a CPU it only doubles the working set
        (measured 1.12x slower than two decodes at 768x576), so CPUs decode one by one.
        """
        if len(runners) == 2 and self.shared_vae and runners[0].batch_decode:
            n = x0["depth"].shape[0]
            both = self._decode(runners[0], torch.cat([x0["depth"], x0["normals"]]))
            return {"depth": both[:n], "normals": both[n:]}
        return {r.name: self._decode(r, x0[r.name]) for r in runners}


def _merge_precision(precision: str, dtype: str) -> str:
    """``precision`` is the setting's name; ``dtype`` its older alias. One of them, please."""
    p = normalise_precision(precision)
    d = normalise_precision(dtype, what="dtype")
    if p != "auto" and d != "auto" and p != d:
        raise ValueError(f"precision {precision!r} and dtype {dtype!r} disagree; "
                         "give only precision (dtype is its older name)")
    return p if p != "auto" else d


def _torch_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA and fp32 on CPU; reduced precision on CPU is refused."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and precision != "fp32":
        raise ValueError(
            f"precision {precision} with the torch backend on CPU is refused: reduced "
            "precision runs ~100x slower than fp32 on CPUs; use fp32, or backend openvino "
            "with bf16"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported by {device}; use fp16 or fp32")
    return precision

"""The OpenVINO backend: exported stages on Intel CPUs and GPUs (docs/backends.md).

fp32 by default; bf16 where the CPU supports it (AMX/AVX-512 BF16: 5-7x faster than torch
fp32 on such CPUs), refused with the reason elsewhere. Compiled models are cached on disk
(``CACHE_DIR``), so a restart does not compile again. A dynamic export is compiled once per
processing shape (static shapes run fastest on CPUs). Needs ``openvino``, not diffusers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from e2e_depth_ros.errors import InputImageError
from e2e_depth_ros.model.stages import STAGES, ExportedStages

_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_CAPABILITY = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}


def _import():
    try:
        import openvino
    except ImportError as err:
        raise ValueError("backend openvino needs the openvino package: pip install openvino"
                         ) from err
    return openvino


def choose_device(device: str, available: list[str]) -> str:
    """OpenVINO's device name for ``device``: auto/cpu -> CPU, gpu or gpu.N -> GPU[.N]."""
    if device in ("auto", "cpu"):
        return "CPU"
    if device.lower() == "gpu" or device.lower().startswith("gpu."):
        name = device.upper()
        if name not in available and not (name == "GPU" and any(
                d.startswith("GPU") for d in available)):
            raise ValueError(f"device {device!r}: OpenVINO sees no such device here "
                             f"(available: {', '.join(available)})")
        return name
    raise ValueError(
        f"device {device!r} is not an OpenVINO device; backend openvino runs on auto, cpu, "
        f"gpu or gpu.N (available here: {', '.join(available)}); for CUDA use backend "
        "torch or onnxruntime"
    )


def choose_precision(precision: str, device: str, capabilities: list[str]) -> str:
    """``auto``: fp32 on CPUs, fp16 on GPUs; bf16/fp16 only where the device has them."""
    if precision == "auto":
        return "fp16" if device.startswith("GPU") and "FP16" in capabilities else "fp32"
    if _CAPABILITY[precision] not in capabilities:
        reason = ("this CPU has no bf16 support (needs AVX-512 BF16 or AMX)"
                  if precision == "bf16" and device == "CPU" else
                  f"{device} reports {', '.join(capabilities)}")
        raise ValueError(f"precision {precision} with backend openvino on {device} is refused: "
                         f"{reason}; use fp32")
    return precision


class OpenVINOBackend:
    """One OpenVINO core with the settings every model shares (device, precision, cache)."""

    def __init__(self, device: str, precision: str, *, threads: int = 0,
                 cache_dir: str | None = None) -> None:
        ov = _import()
        self.core = ov.Core()
        self.device = choose_device(device, self.core.available_devices)
        capabilities = list(self.core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        self.precision = choose_precision(precision, self.device, capabilities)
        from e2e_depth_ros.model.export import default_cache_dir

        self.cache_dir = (default_cache_dir() if cache_dir is None
                          else Path(cache_dir) if cache_dir else None)
        # An explicit precision hint: OpenVINO's CPU default is bf16 on AMX CPUs.
        self.config = {"INFERENCE_PRECISION_HINT": _HINT[self.precision],
                       "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            if self.device != "CPU":
                raise ValueError("threads applies to the CPU device only")
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.cache_dir is not None:
            self.core.set_property({"CACHE_DIR": str(self.compiled_cache_dir)})

    @property
    def compiled_cache_dir(self) -> Path | None:
        """Compiled models of this device, precision and thread count, apart from others.

        OpenVINO's cache key does not include INFERENCE_PRECISION_HINT (2026.4): with one
        shared folder, a bf16 run after an fp32 one loaded the fp32 blob and gave NaN (a
        real-size UNet crashed), and fp32 after bf16 ran bf16 silently.
        """
        if self.cache_dir is None:
            return None
        threads = self.config.get("INFERENCE_NUM_THREADS", 0)
        return self.cache_dir / "openvino" / f"{self.device}-{self.precision}-t{threads}"

    def load(self, model: str, name: str) -> "OpenVINOStages":
        from e2e_depth_ros.model.export import export_folder_for

        folder = export_folder_for(model, "openvino", name, self.cache_dir)
        return OpenVINOStages(name, folder, self)


def open_backend(device: str, precision: str, *, threads: int = 0,
                 cache_dir: str | None = None) -> OpenVINOBackend:
    return OpenVINOBackend(device, precision, threads=threads, cache_dir=cache_dir)


class OpenVINOStages(ExportedStages):
    """One exported model's three stages compiled by OpenVINO (a ``StageRunner``)."""

    def __init__(self, name: str, folder: Path, backend: OpenVINOBackend) -> None:
        super().__init__(name, folder)
        self.backend = backend
        self.models = {s: backend.core.read_model(str(self.stage_path(s))) for s in STAGES}
        self.compiled: dict[tuple, object] = {}  # (stage, input shape) -> compiled model
        if self.manifest.size is not None:  # static: compile now, not at the first frame
            for stage in STAGES:
                shape = tuple(self.models[stage].input(0).get_partial_shape().to_shape())
                self._compiled(stage, shape)

    def _compiled(self, stage: str, shape: tuple):
        key = (stage, shape)
        if key not in self.compiled:
            model = self.models[stage]
            if model.is_dynamic():
                model = model.clone()
                model.reshape({0: list(shape)})  # static shapes: the fastest CPU kernels
            self.compiled[key] = self.backend.core.compile_model(
                model, self.backend.device, self.backend.config)
        return self.compiled[key]

    def _run(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy()
        size = self.manifest.size
        if size is not None:
            if stage == "encoder" and tuple(array.shape[2:]) != tuple(size):
                raise InputImageError(
                    f"{self.folder} was exported for processing size {size[1]}x{size[0]}; "
                    f"this frame runs at {array.shape[3]}x{array.shape[2]} (match "
                    "processing_resolution to the export, or export with --dynamic)"
                )
            if array.shape[0] > 1:  # a static export has batch 1
                return torch.cat([self._run(stage, x[i:i + 1]) for i in range(len(x))])
        compiled = self._compiled(stage, tuple(array.shape))
        out = compiled(array)[0]
        return torch.from_numpy(np.array(out, dtype=np.float32))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self._run("encoder", image)

    def denoise(self, latent: torch.Tensor) -> torch.Tensor:
        return self._run("unet", latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self._run("decoder", latent)

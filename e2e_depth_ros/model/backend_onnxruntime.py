"""The ONNX Runtime backend: exported stages on TensorRT, CUDA or CPU (docs/backends.md).

Providers are tried in the order TensorRT, CUDA, CPU, as installed. fp16 on GPUs: TensorRT
builds fp16 engines; the CUDA provider runs an fp16 copy of the graphs (float32 inputs and
outputs kept). Needs ``onnxruntime`` (``onnxruntime-gpu`` for GPUs), not diffusers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from e2e_depth_ros.errors import InputImageError
from e2e_depth_ros.model.stages import STAGES, ExportedStages

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_CPU = "CPUExecutionProvider"


def _import():
    try:
        import onnxruntime
    except ImportError as err:
        raise ValueError("backend onnxruntime needs the onnxruntime package: pip install "
                         "onnxruntime (onnxruntime-gpu for CUDA/TensorRT)") from err
    return onnxruntime


def choose_providers(device: str, available: list[str]) -> tuple[list[str], int]:
    """(providers in the order TensorRT, CUDA, CPU that are installed, CUDA device index)."""
    if device in ("auto", "cpu"):
        gpus = [p for p in _GPU_PROVIDERS if p in available] if device == "auto" else []
        return gpus + [_CPU], 0
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        gpus = [p for p in _GPU_PROVIDERS if p in available]
        if not gpus:
            raise ValueError(
                f"device {device!r} with backend onnxruntime needs the TensorRT or CUDA "
                f"provider; installed: {', '.join(available)} (pip install onnxruntime-gpu)"
            )
        return gpus, int(index or 0)
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def choose_precision(precision: str, on_gpu: bool) -> str:
    """``auto`` is fp16 on GPUs and fp32 on CPUs; fp16 on CPU and bf16 anywhere are refused."""
    if precision == "auto":
        return "fp16" if on_gpu else "fp32"
    if precision == "bf16":
        raise ValueError("precision bf16 is not offered by backend onnxruntime; use fp16 "
                         "(GPU) or fp32, or backend openvino for bf16 on CPUs")
    if precision == "fp16" and not on_gpu:
        raise ValueError("precision fp16 with backend onnxruntime needs a GPU provider "
                         "(TensorRT or CUDA); on CPUs use fp32")
    return precision


class OnnxRuntimeBackend:
    """Shared settings of every model this backend loads (providers, precision, threads)."""

    def __init__(self, device: str, precision: str, *, threads: int = 0,
                 cache_dir: str | None = None) -> None:
        ort = _import()
        self.ort = ort
        self.providers, self.index = choose_providers(device, ort.get_available_providers())
        on_gpu = self.providers[0] != _CPU
        self.precision = choose_precision(precision, on_gpu)
        self.threads = threads
        from e2e_depth_ros.model.export import default_cache_dir

        self.cache_dir = (default_cache_dir() if cache_dir is None
                          else Path(cache_dir) if cache_dir else None)
        self.device = self.providers[0].replace("ExecutionProvider", "")

    def _provider_options(self) -> list:
        options = []
        for name in self.providers:
            if name == "TensorrtExecutionProvider":
                opts = {"device_id": self.index, "trt_fp16_enable": self.precision == "fp16",
                        "trt_engine_cache_enable": self.cache_dir is not None}
                if self.cache_dir is not None:
                    opts["trt_engine_cache_path"] = str(self.cache_dir / "tensorrt")
                options.append((name, opts))
            elif name == "CUDAExecutionProvider":
                options.append((name, {"device_id": self.index}))
            else:
                options.append(name)
        return options

    def load(self, model: str, name: str) -> "OnnxRuntimeStages":
        from e2e_depth_ros.model.export import export_folder_for

        folder = export_folder_for(model, "onnx", name, self.cache_dir)
        return OnnxRuntimeStages(name, folder, self)

    def session(self, path: Path):
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        source = str(path)
        if self.precision == "fp16" and self.providers[0] == "CUDAExecutionProvider":
            source = _fp16_copy(path)
        return self.ort.InferenceSession(source, sess_options=options,
                                         providers=self._provider_options())


def _fp16_copy(path: Path) -> str:
    """An fp16 copy of an ONNX graph next to it, float32 inputs/outputs kept (made once)."""
    target = path.with_name(path.stem + ".fp16.onnx")
    if not target.is_file():
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        onnx.save_model(model, str(target), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=target.name + ".data")
    return str(target)


def open_backend(device: str, precision: str, *, threads: int = 0,
                 cache_dir: str | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(device, precision, threads=threads, cache_dir=cache_dir)


class OnnxRuntimeStages(ExportedStages):
    """One exported model's three stages as ONNX Runtime sessions (a ``StageRunner``)."""

    def __init__(self, name: str, folder: Path, backend: OnnxRuntimeBackend) -> None:
        super().__init__(name, folder)
        self.sessions = {s: backend.session(self.stage_path(s)) for s in STAGES}

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
        out = self.sessions[stage].run(None, {"input": array})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self._run("encoder", image)

    def denoise(self, latent: torch.Tensor) -> torch.Tensor:
        return self._run("unet", latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self._run("decoder", latent)

"""A frame's post-processing on the model's device, with one pinned copy back (GPU path).

On a GPU the model's outputs are already there: the metric map, the point cloud and the
pictures (depth/image_vis, normals/image_vis, depth/image_mm) are computed in place and
every requested array comes back in one transfer into page-locked memory, instead of
copying depth and normals back and redoing the work in numpy. ``FrameProcessor`` uses it
when the estimator runs on CUDA; on a CPU numpy does the same work as fast. The results
equal the numpy path's (``processing``, ``visualize.colorize_depth``/``normals_to_rgb8``,
``outputs``) up to float rounding (a picture level at most 1 apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.visualize import VIS_PERCENTILES, VIS_SAMPLE_STEP

_ALIGN = 64  # bytes


def _turbo_lut() -> np.ndarray:
    """OpenCV's TURBO colormap as a (256, 3) bgr8 table: the same colours as the CPU path."""
    import cv2

    levels = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, 0, :]


def _levels(values: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """cv2.convertScaleAbs: |v * alpha + beta| rounded half to even, saturated to uint8."""
    scaled = (values * alpha + beta).abs().round()
    return scaled.clamp(0, 255).to(torch.uint8)


@dataclass
class DeviceArrays:
    """What comes back for one frame: host arrays, views into one page-locked buffer."""

    relative: np.ndarray | None = None
    normals: np.ndarray | None = None
    metric: np.ndarray | None = None
    points: np.ndarray | None = None
    points_normals: np.ndarray | None = None
    pictures: dict[str, np.ndarray] = field(default_factory=dict)


class DeviceFinisher:
    """Metric map, cloud and pictures of one frame as tensors; one copy back to the host."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda"
        self._lut = torch.from_numpy(_turbo_lut()).to(self.device)

    def samples(self, relative: torch.Tensor, flat_index: np.ndarray) -> np.ndarray:
        """``relative`` at these pixels (for the LiDAR fit): a small copy, not the map."""
        index = torch.from_numpy(np.ascontiguousarray(flat_index, dtype=np.int64))
        return relative.reshape(-1)[index.to(self.device)].float().cpu().numpy()

    def finish(self, relative: torch.Tensor | None, normals: torch.Tensor | None, *,
               keep_relative: bool, scale: float | None, shift: float,
               min_depth: float, max_depth: float, camera: PinholeCamera | None,
               decimation: int, points_normals: bool, pictures: tuple[str, ...] = ()
               ) -> DeviceArrays:
        """Everything the frame wants, computed on the device, then copied back once.

        ``scale`` None: no metric map (and no cloud). ``camera`` None: no cloud.
        """
        out: dict[str, torch.Tensor] = {}
        if relative is not None and keep_relative:
            out["relative"] = relative
        if normals is not None:
            out["normals"] = normals
        metric = None
        if relative is not None and scale is not None:
            metric = relative.float() * np.float32(scale) + np.float32(shift)
            invalid = ~(metric > 0)
            if min_depth > 0:
                invalid |= metric < min_depth
            if max_depth > 0:
                invalid |= metric > max_depth
            metric = metric.masked_fill(invalid, float("nan"))
            out["metric"] = metric
            if camera is not None:
                step = max(int(decimation), 1)
                out["points"] = self._unproject(metric, camera, step)
                if points_normals and normals is not None:
                    out["points_normals"] = normals[::step, ::step]
        drawn = {}
        if "depth_vis" in pictures and relative is not None:
            drawn["depth_vis"] = self._colorize(relative)
        if "normals_vis" in pictures and normals is not None:
            drawn["normals_vis"] = self._normals_rgb8(normals)
        if "depth_mm" in pictures and metric is not None:
            drawn["depth_mm"] = self._millimetres(metric)
        arrays = self._copy_back({**out, **drawn})  # picture keys differ from array names
        return DeviceArrays(**{k: arrays[k] for k in out},
                            pictures={k: arrays[k] for k in drawn})

    def _unproject(self, metric: torch.Tensor, camera: PinholeCamera, step: int
                   ) -> torch.Tensor:
        """Points (h, w, 3) of the kept pixels, as ``geometry.unproject_depth`` then slicing."""
        z = metric[::step, ::step]
        z = z.masked_fill(~(torch.isfinite(z) & (z > 0)), float("nan"))
        u = torch.arange(0, camera.width, step, device=self.device, dtype=torch.float32)
        v = torch.arange(0, camera.height, step, device=self.device, dtype=torch.float32)
        x = z * ((u - np.float32(camera.cx)) / np.float32(camera.fx))[None, :]
        y = z * ((v - np.float32(camera.cy)) / np.float32(camera.fy))[:, None]
        return torch.stack([x, y, z], dim=-1)

    def _colorize(self, depth: torch.Tensor) -> torch.Tensor:
        """``visualize.colorize_depth`` on the device: TURBO, range from a pixel sample."""
        d = depth.float()
        valid = torch.isfinite(d)
        sample = d[::VIS_SAMPLE_STEP, ::VIS_SAMPLE_STEP]
        sample = sample[torch.isfinite(sample)]
        if sample.numel() == 0:
            sample = d[valid]
        if sample.numel() == 0:
            return torch.zeros((*d.shape, 3), dtype=torch.uint8, device=self.device)
        # float64 like numpy's percentile; the range is two numbers, read on the host
        lo, hi = torch.quantile(sample.double(), sample.new_tensor(
            VIS_PERCENTILES, dtype=torch.float64) / 100.0).tolist()
        span = max(hi - lo, 1e-12)
        clipped = d.clamp(np.float32(lo), np.float32(hi))
        colour = self._lut[_levels(clipped, -255.0 / span, 255.0 * hi / span).long()]
        return colour.masked_fill(~valid[..., None], 0)

    @staticmethod
    def _normals_rgb8(normals: torch.Tensor) -> torch.Tensor:
        levels = _levels(normals.float().clamp(-1.0, 1.0), 127.5, 127.5)
        finite = torch.isfinite(normals).all(dim=-1, keepdim=True)
        return levels.masked_fill(~finite, 0)

    @staticmethod
    def _millimetres(metric: torch.Tensor) -> torch.Tensor:
        """uint16 millimetres (REP 118 16UC1), 0 where invalid or beyond 65.535 m."""
        mm = torch.where(torch.isfinite(metric), metric, 0.0).mul(1000.0).round()
        mm = torch.where((mm > 0) & (mm <= 65535), mm, 0.0)
        return mm.to(torch.int32).to(torch.uint16)

    def _copy_back(self, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """One device-to-host transfer of every tensor, into page-locked memory on CUDA.

        The arrays are views into a buffer of torch's pinned-memory cache that lives as long
        as they do, so a later frame never overwrites them.
        """
        if not tensors:
            return {}
        parts, layout, offset = [], [], 0
        for name, tensor in tensors.items():
            tensor = tensor.contiguous()
            raw = tensor.reshape(-1).view(torch.uint8)
            layout.append((name, offset, raw.numel(), tensor.dtype, tuple(tensor.shape)))
            parts.append(raw)
            offset += raw.numel()
            pad = -offset % _ALIGN  # every array starts aligned, as numpy's own would
            if pad:
                parts.append(raw.new_zeros(pad))
                offset += pad
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self._pin:
            host = torch.empty(offset, dtype=torch.uint8, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
        else:
            host = flat.cpu()
        buffer = host.numpy()
        out = {}
        for name, start, size, dtype, shape in layout:
            np_dtype = torch.empty((), dtype=dtype).numpy().dtype
            out[name] = buffer[start:start + size].view(np_dtype).reshape(shape)
        return out

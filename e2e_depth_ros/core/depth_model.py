"""What the node and ``FrameProcessor`` need from a depth model, as a typed protocol.

``estimator.Estimator`` is one implementation; another backend (an exported graph, a fake in
a test) plugs in by providing these attributes, without the node changing. Kept free of
torch so that importing the protocol costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np


class PredictionLike(Protocol):
    """What ``predict`` returns (``estimator.Prediction`` is one): arrays or None."""

    depth: np.ndarray | None  # float32 (H, W) or (N, H, W), affine-invariant, [0, 1]
    normals: np.ndarray | None  # float32 (H, W, 3) or (N, H, W, 3), unit, optical frame


@dataclass(frozen=True)
class ItemPrediction:
    """One frame's slice of a batched prediction (no torch needed to make one)."""

    depth: np.ndarray | None
    normals: np.ndarray | None


@runtime_checkable
class DepthModel(Protocol):
    """A loaded depth and/or normals model on one device.

    Optional, read when present: ``device_finisher()`` (a ``Finisher`` for its device, or
    None), ``describe()`` (the start-up log line), ``backend``,
    ``precision`` and ``backend_device`` (diagnostics; any ``backend_device`` but the CPU
    makes ``max_batch`` auto batch). A model whose ``device.type`` is
    "cuda" is also called with ``predict(..., on_device=True)`` and may then return torch
    tensors on that device for ``device_finish``.
    """

    model_names: Mapping[str, str | None]  # {"depth": id or None, "normals": id or None}
    device: Any  # shown in logs and diagnostics (str() of it)
    dtype: Any  # shown in logs and diagnostics (str() of it)
    processing_resolution: int  # longer side the model runs at; 0 = native; settable

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model runs at for a ``height`` x ``width`` input."""
        ...

    def predict(self, rgb: np.ndarray, *, depth: bool = True,
                normals: bool = True) -> PredictionLike:
        """Depth/normals for uint8 RGB (H, W, 3) or an equal-size batch (N, H, W, 3).

        Outputs are at the input's resolution, (N, ...) for a batch; batch item i must equal
        ``predict(rgb[i])`` up to float rounding.
        """
        ...


class Finisher(Protocol):
    """Finishes a frame on the model's device (``model.device_finish.DeviceFinisher``):
    metric depth, cloud and pictures from device tensors, only the results copied back."""

    def samples(self, relative: Any, flat_index: np.ndarray) -> np.ndarray:
        """float64 values of ``relative`` at the flat pixel indices (the LiDAR fit's pairs)."""
        ...

    def finish(self, relative: Any, normals: Any, **settings: Any) -> Any:
        """The frame's arrays, copied to the host (``device_finish.DeviceArrays``)."""
        ...

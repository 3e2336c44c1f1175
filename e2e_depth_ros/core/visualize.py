"""Pictures of depth and normals for people (depth/image_vis, normals/image_vis, reports).

numpy and OpenCV only; ``model.device_finish`` draws the same pictures on the GPU from the
same constants, so both paths agree to a grey level.
"""

from __future__ import annotations

import cv2
import numpy as np

from e2e_depth_ros.errors import MessageError

# depth/image_vis's range: these percentiles of a 1-in-VIS_SAMPLE_STEP^2 pixel sample
VIS_PERCENTILES = (2.0, 98.0)
VIS_SAMPLE_STEP = 4


def colorize_depth(
    depth: np.ndarray, *, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """bgr8 (H, W, 3) picture of depth (H, W) for people: near is red, far is blue (TURBO).

    The range defaults to the 2nd..98th percentile of the finite values (estimated on a
    1-in-16 pixel sample: this runs on every frame), so a few outliers do not wash the
    picture out; non-finite depth is black.
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise MessageError(f"depth must be (H, W), got shape {d.shape}")
    valid = np.isfinite(d)
    if vmin is None or vmax is None:
        sample = d[::VIS_SAMPLE_STEP, ::VIS_SAMPLE_STEP]
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            sample = d[valid]
        if sample.size == 0:
            return np.zeros(d.shape + (3,), dtype=np.uint8)
        lo, hi = np.percentile(sample, VIS_PERCENTILES)
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    span = max(float(vmax) - float(vmin), 1e-12)
    # level = 255 * (vmax - d) / span, saturated to [0, 255]: near (small) is bright/red
    clipped = np.clip(d, np.float32(vmin), np.float32(vmax))
    levels = cv2.convertScaleAbs(clipped, alpha=-255.0 / span, beta=255.0 * float(vmax) / span)
    colour = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)
    if not valid.all():
        colour[~valid] = 0
    return colour


def normals_to_rgb8(normals: np.ndarray) -> np.ndarray:
    """rgb8 (H, W, 3) picture of unit normals (H, W, 3): round((n + 1) / 2 * 255).

    A pixel with any non-finite component is black (0, 0, 0), which no unit normal maps to.
    """
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim != 3 or n.shape[2] != 3:
        raise MessageError(f"normals must be (H, W, 3), got shape {n.shape}")
    finite = np.isfinite(n.sum())  # cheap test first: the full mask costs 4 ms at 640x480
    if finite and n.min() >= -1.0:
        # Nothing to clip (saves a 3.7 MB float copy): above 1, convertScaleAbs saturates at
        # 255 as the clip would; below -1, |127.5 n + 127.5| would grow again, hence the test.
        return cv2.convertScaleAbs(n, alpha=127.5, beta=127.5)
    levels = cv2.convertScaleAbs(np.clip(n, -1.0, 1.0), alpha=127.5, beta=127.5)
    if not finite:
        levels[~np.isfinite(n).all(axis=2)] = 0
    return levels

"""Metres from motion: what a relative chain's depth units are, from odometry's parallax.

Without a metric source, temporal alignment keeps depth in working units ``M`` that are an
unknown affine map of metres, ``M = kappa * z + beta``. Odometry moves the camera in metres,
so using its translation needs (kappa, beta); the rotation does not (a rotated view moves
every pixel the same way whatever its depth). Parallax tells them apart: a point's pixel
moves by ``t / z``, so only the right map from ``M`` to metres carries a keyframe's depth
onto the pixels where the new frame sees the same surfaces. Once the camera has moved far
enough from a keyframe, a small search scores hypotheses by how well the new frame's
relative depth fits the moved keyframe (a truncated residual), and keeps the best.
Pure numpy, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera

MIN_BASELINE = 0.2  # m the camera moves from the keyframe before the units are searched
MAX_KEYFRAME_AGE = 40  # frames; an older keyframe is replaced without a search
TRUNCATE = 0.05  # residual (of the relative depth's spread) a pixel counts for at most
STEPS = (2.0, 1.41, 1.19, 1.09, 1.04)  # coordinate-descent factors, coarse to fine
REFINE_STEPS = STEPS[1:]  # once an estimate exists: it moves at most ~2.4x per search
MIN_GAIN = 0.02  # a search result must lower the cost this much (relative) to count
SMOOTHING = 0.5  # a new search result moves the estimate this far (log space)
KEY_POINTS = 5000  # a keyframe keeps at most this many grid points: the search runs ~20 fits


@dataclass
class Keyframe:
    """A chain frame kept for the search: its grid rays, working depth and pose."""

    rays: np.ndarray  # (N, 3) z = 1 optical rays of grid pixels
    depth: np.ndarray  # (N,) working units
    rotation: np.ndarray  # camera in odom
    translation: np.ndarray
    age: int = 0


def _moved_pixels(key: Keyframe, rotation: np.ndarray, translation: np.ndarray,
                  camera: PinholeCamera, kappa: float, beta: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index and working depth of the keyframe's points seen from the new pose,
    the keyframe's depth read as metres by (kappa, beta)."""
    metres = (key.depth - beta) / kappa
    r_t = rotation.T
    moved = (key.rays * metres[:, None]) @ (r_t @ key.rotation).T + \
        r_t @ (key.translation - translation)
    z = moved[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(camera.fx * moved[:, 0] / z + camera.cx)
        v = np.rint(camera.fy * moved[:, 1] / z + camera.cy)
    inside = (metres > 0) & (z > 1e-3) & (u >= 0) & (u < camera.width) & (v >= 0) & \
        (v < camera.height)
    index = v[inside].astype(np.int64) * camera.width + u[inside].astype(np.int64)
    return index, kappa * z[inside] + beta


def _cost(values_at: Callable[[np.ndarray], np.ndarray], key: Keyframe, rotation, translation,
          camera: PinholeCamera, kappa: float, beta: float, spread: float) -> float:
    """Truncated mean residual of the new frame's relative depth against the best line of
    the moved keyframe's working depth, in units of ``spread`` (the new frame's own spread
    of relative depth): measured on the new frame's side, a hypothesis cannot look better
    by squeezing the keyframe's depths together. inf when too few points land in view."""
    index, target = _moved_pixels(key, rotation, translation, camera, kappa, beta)
    if index.size < 0.3 * key.depth.size:
        return math.inf
    rel = np.asarray(values_at(index), dtype=np.float64)
    ok = np.isfinite(rel) & (target > 0)
    rel, target = rel[ok], target[ok]
    if rel.size < 10 or np.ptp(target) == 0:
        return math.inf
    design = np.stack([target, np.ones_like(target)], axis=1)
    line = np.linalg.lstsq(design, rel, rcond=None)[0]
    residual = np.abs(design @ line - rel) / spread
    return float(np.mean(np.minimum(residual, TRUNCATE)))


class UnitsFromMotion:
    """The (kappa, beta) of one relative chain, refined at each keyframe (None: unknown)."""

    def __init__(self) -> None:
        self.units: tuple[float, float] | None = None
        self._key: Keyframe | None = None

    def observe(self, values_at: Callable[[np.ndarray], np.ndarray], rays: np.ndarray,
                depth: np.ndarray, camera: PinholeCamera, rotation: np.ndarray,
                translation: np.ndarray) -> tuple[float, float] | None:
        """One chain frame: its relative depth (``values_at``), its grid's rays and working
        depth, its pose. Returns the estimate, updated when a keyframe search ran."""
        key = self._key
        stride = max(1, -(-depth.size // KEY_POINTS))
        rays, depth = rays[::stride], depth[::stride]
        if key is None or key.age >= MAX_KEYFRAME_AGE:
            self._key = Keyframe(rays, depth, rotation, translation)
            return self.units
        key.age += 1
        if np.linalg.norm(translation - key.translation) < MIN_BASELINE:
            return self.units
        found = self._search(values_at, key, rotation, translation, camera)
        if found is not None:
            self.units = found if self.units is None else _blend(self.units, found, depth)
        self._key = Keyframe(rays, depth, rotation, translation)
        return self.units

    def _search(self, values_at, key: Keyframe, rotation, translation, camera
                ) -> tuple[float, float] | None:
        """Coordinate descent over the metric depths (near, far) of the keyframe's 10th and
        90th percentile working depths: 'scale' moves both, 'contrast' moves them apart."""
        m_near, m_far = np.percentile(key.depth, [10.0, 90.0])
        sample = np.asarray(values_at(np.arange(0, camera.width * camera.height, 7)), float)
        spread = float(np.nanstd(sample))
        if not (m_far > m_near and spread > 0):
            return None
        if self.units is None:
            near, far = float(m_near), float(m_far)
        else:
            kappa, beta = self.units
            near, far = (m_near - beta) / kappa, (m_far - beta) / kappa

        def units_of(near: float, far: float) -> tuple[float, float]:
            kappa = (m_far - m_near) / (far - near)
            return kappa, float(m_near - kappa * near)

        start = best = _cost(values_at, key, rotation, translation, camera,
                             *units_of(near, far), spread)
        for step in STEPS if self.units is None else REFINE_STEPS:
            for scale, contrast in ((step, 1.0), (1 / step, 1.0), (1.0, step), (1.0, 1 / step)):
                n, f = near * scale / contrast, far * scale * contrast
                if not (0 < n < f):
                    continue
                cost = _cost(values_at, key, rotation, translation, camera, *units_of(n, f),
                             spread)
                if cost < best:
                    best, near, far = cost, n, f
        if not math.isfinite(best) or (self.units is not None and best > (1 - MIN_GAIN) * start):
            return None  # nothing clearly better: the estimate stays
        return units_of(near, far)


def _blend(old: tuple[float, float], new: tuple[float, float], depth: np.ndarray
           ) -> tuple[float, float]:
    """Move the estimate towards a new search result: the metric depths of the working
    depths' 10th and 90th percentiles, in log space."""
    m = np.percentile(depth, [10.0, 90.0])
    old_z = (m - old[1]) / old[0]
    new_z = (m - new[1]) / new[0]
    if not (np.all(old_z > 0) and np.all(new_z > 0)):
        return new
    z = np.exp((1 - SMOOTHING) * np.log(old_z) + SMOOTHING * np.log(new_z))
    if not z[1] > z[0]:
        return old
    kappa = (m[1] - m[0]) / (z[1] - z[0])
    return float(kappa), float(m[0] - kappa * z[0])

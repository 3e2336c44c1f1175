"""What gives a frame its metric scale: LiDAR, sparse sensor depth, or the ground plane.

Every source answers one question per frame -- which pixels have a known metric depth --
as matched pairs (flat pixel index, metres along the optical axis). ``FrameProcessor`` fits
``metric = scale * relative + shift`` to them with the one robust fit (``scale.fit_samples``:
RANSAC, least squares, the inlier checks) and smooths the result with the one temporal
filter, whatever the source. A source that cannot give pairs says why (a refused
``ScaleFit``), and that reason reaches the diagnostics. Pure numpy, optical frame
(x right, y down, z forward), no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera, unproject_depth
from e2e_depth_ros.core.scale import ScaleFit, lidar_pixels, refused

SOURCES = ("auto", "lidar", "depth", "ground", "fixed", "none")  # the scale_source values
SOURCE_NAMES = {"lidar": "LiDAR", "depth": "sensor depth", "ground": "floor"}  # in messages
GROUND_STEP = 4  # ground candidates on a 1-in-4 pixel grid: enough pairs, a few ms a frame
UP_NORMAL_COS = 0.9  # a predicted normal within ~25 deg of the floor's is floor-like


@dataclass(frozen=True)
class Pairs:
    """Pixels with a known metric depth: flat row-major indices and z in metres."""

    index: np.ndarray  # int64 (N,)
    depth: np.ndarray  # float64 (N,), > 0


class ScaleReference(Protocol):
    """One frame's metric reference from one source (``source`` names it in diagnostics)."""

    source: str

    def pairs(self, camera: PinholeCamera | None, shape: tuple[int, int], *,
              min_range: float, normals: np.ndarray | None = None) -> Pairs | ScaleFit:
        """Matched pairs for an image of ``shape`` (H, W) seen by ``camera``, or a refusal.

        ``normals``: the normals model's (H, W, 3) optical-frame normals when it ran.
        """
        ...


@dataclass(frozen=True)
class Unavailable:
    """A source with nothing usable this frame (no transform, no message): the reason goes
    through the filter like a refused fit, so diagnostics say why metric depth stopped."""

    reason: str
    source: str

    def pairs(self, camera, shape, *, min_range, normals=None):
        return refused(self.reason)


@dataclass(frozen=True)
class LidarPoints:
    """A LiDAR cloud already in the camera optical frame, (N, 3) metres."""

    points: np.ndarray
    source: str = "lidar"

    def pairs(self, camera, shape, *, min_range, normals=None):
        if camera is None:
            return refused("no usable camera_info: LiDAR points cannot be projected")
        found = lidar_pixels(self.points, camera.projection, shape, min_range=min_range)
        return found if isinstance(found, ScaleFit) else Pairs(*found)


@dataclass(frozen=True)
class SensorDepth:
    """Depth from an RGB-D or stereo camera registered to this image (same optical frame).

    ``depth``: float (h, w) metres, NaN or <= 0 invalid, at any resolution: its pixel
    centres are scaled onto the image's grid (pixel coordinates scale with the size, as
    image_proc's resize does), so a 320x240 depth serves a 640x480 image.
    """

    depth: np.ndarray
    source: str = "depth"

    def pairs(self, camera, shape, *, min_range, normals=None):
        height, width = shape
        d = np.asarray(self.depth, dtype=np.float64)
        if d.ndim != 2 or d.size == 0:
            return refused(f"sensor depth must be one channel (h, w), got shape {d.shape}")
        if d.shape[0] * width != d.shape[1] * height:  # registered: same view, any size
            return refused(f"sensor depth {d.shape[1]}x{d.shape[0]} has another aspect ratio "
                           f"than the image {width}x{height}: not registered to it")
        rows, cols = np.nonzero(np.isfinite(d) & (d > min_range))
        if rows.size == 0:
            return refused(f"no valid sensor depth pixel (finite, > {min_range} m)")
        v = np.clip(np.rint((rows + 0.5) * height / d.shape[0] - 0.5), 0, height - 1)
        u = np.clip(np.rint((cols + 0.5) * width / d.shape[1] - 0.5), 0, width - 1)
        index = v.astype(np.int64) * width + u.astype(np.int64)
        index, first = np.unique(index, return_index=True)  # one sample per image pixel
        return Pairs(index, d[rows[first], cols[first]])

    @staticmethod
    def reprojected(depth: np.ndarray, sensor: PinholeCamera, rotation: np.ndarray,
                    translation: np.ndarray) -> LidarPoints:
        """Depth from a camera in another optical frame (an RGB-D depth stream not aligned
        to colour): its points, moved into this camera's frame by ``p = R p_s + t``, are
        then projected like LiDAR (nearest per pixel, occluded ones dropped)."""
        points = unproject_depth(np.asarray(depth, dtype=np.float32), sensor).reshape(-1, 3)
        points = points[np.isfinite(points).all(axis=1)]
        moved = points @ np.asarray(rotation, dtype=np.float64).T + np.asarray(translation)
        return LidarPoints(moved, source="depth")


@dataclass(frozen=True)
class GroundPlane:
    """The floor from TF: the camera ``height`` (m) above it and the floor's upward unit
    ``normal`` in the optical frame.

    A floor pixel's ray r = ((u - cx) / fx, (v - cy) / fy, 1) meets the floor at depth
    z = -height / (n . r), so every pixel below the horizon (n . r < 0) is a candidate pair;
    boxes and walls standing on the floor are the fit's outliers. When the normals model
    ran, only candidates whose predicted normal points up (within ~25 deg) are kept.
    """

    height: float
    normal: np.ndarray
    source: str = "ground"

    @staticmethod
    def from_transform(rotation: np.ndarray, translation: np.ndarray) -> GroundPlane:
        """The plane from ``p_cam = R p_ground + t`` (ground frame z up, floor at z = 0)."""
        normal = np.asarray(rotation, dtype=np.float64) @ np.array([0.0, 0.0, 1.0])
        return GroundPlane(float(-normal @ np.asarray(translation, dtype=np.float64)), normal)

    def pairs(self, camera, shape, *, min_range, normals=None):
        if camera is None:
            return refused("no usable camera_info: the floor's rays need the intrinsics")
        n = np.asarray(self.normal, dtype=np.float64)
        if not (np.isfinite(self.height) and self.height > 0):
            return refused(f"camera height {self.height:.4g} m above the ground frame: the "
                           "camera must be above the floor")
        if n.shape != (3,) or not np.isfinite(n).all() or abs(np.linalg.norm(n) - 1) > 1e-3:
            return refused(f"floor normal {n.tolist()} is not a unit vector")
        height, width = shape
        v, u = np.mgrid[GROUND_STEP // 2:height:GROUND_STEP, GROUND_STEP // 2:width:GROUND_STEP]
        rays_dot = (n[0] * (u - camera.cx) / camera.fx + n[1] * (v - camera.cy) / camera.fy
                    + n[2])
        below = rays_dot < -1e-3
        if not below.any():
            return refused("no floor in view: every pixel is above the horizon "
                           "(camera looking up or level with a tiny field of view)")
        if normals is not None:  # the normals model must agree: these pixels face up
            below &= np.nan_to_num(normals[v, u] @ n) > UP_NORMAL_COS
            if not below.any():
                return refused("no floor in view: no pixel below the horizon faces up in the "
                               "normals model's output (a wall, not a floor?)")
        z = -self.height / rays_dot[below]
        keep = z > min_range
        index = (v[below] * width + u[below])[keep].astype(np.int64)
        return Pairs(index, z[keep])

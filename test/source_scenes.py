"""Ray-cast scenes for the scale sources (test_scale_sources, bench_scale_sources).

A floor with boxes standing on it and a wall behind them, seen by a moving camera of a given
height and pitch; the "model" is the exact depth under a random affine map with 1 % noise
and one patch of nonsense. Every camera has fx != fy, cx != cy and H != W, so a transposed
index cannot pass by symmetry.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from e2e_depth_ros.core.depth_model import ItemPrediction
from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.metrics import depth_metrics
from e2e_depth_ros.core.scale_sources import GroundPlane
from e2e_depth_ros.offline.scenes import Box, Plane, Pose, Scene, Sphere, camera_pose, \
    render_frame

CAMERA = PinholeCamera(320, 240, fx=300.0, fy=280.0, cx=165.5, cy=118.0)
VGA = CAMERA.scaled(640, 480)
WALL_X = 6.0  # the wall behind the boxes, facing the camera (world x = 6 m)
FLOOR_AND_BOXES = Scene(
    planes=(Plane((0, 0, 1), 0.0, (0.55, 0.5, 0.45), 0.5),  # floor, z = 0
            Plane((-1, 0, 0), -WALL_X, (0.6, 0.7, 0.6), 0.4),  # wall at x = 6
            Plane((0, -1, 0), -3.5, (0.6, 0.6, 0.75), 0.6)),  # side wall at y = 3.5
    boxes=(Box((2.0, 0.8, 0.0), (2.6, 1.5, 0.5)),
           Box((3.5, -1.6, 0.0), (4.3, -0.9, 1.0), (0.3, 0.6, 0.3)),
           Box((4.5, 0.2, 0.0), (5.2, 1.0, 0.7), (0.3, 0.3, 0.8))),
    spheres=(Sphere((3.0, -0.3, 0.35), 0.35),),
)
PREDICTION_NOISE = 0.01  # relative, per pixel
PATCH = (0.2, 0.25)  # the nonsense patch: this fraction of the height and of the width


class View(NamedTuple):
    """One rendered frame: exact z-depth (NaN: nothing hit), optical normals, and where."""

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    pose: Pose  # world-from-optical


class Prediction(NamedTuple):
    """A model's affine-invariant depth: ``relative = (depth - shift) / scale`` + noise,
    except inside ``wrong`` (a patch of nonsense)."""

    relative: np.ndarray  # float32 (H, W)
    wrong: np.ndarray  # bool (H, W)
    scale: float
    shift: float


def moving_poses(height: float, pitch_deg: float, frames: int, *, start_x: float = -1.0,
                 travel: float = 1.5) -> list[Pose]:
    """A camera at ``height`` m pitched ``pitch_deg`` down (negative: up), driving forward
    along x while it weaves sideways and turns by a few degrees."""
    poses = []
    for k in range(frames):
        phase = k / max(frames - 1, 1)
        position = (start_x + travel * phase, 0.3 * np.sin(2 * np.pi * phase), height)
        yaw = np.deg2rad(8.0 * np.cos(2 * np.pi * phase))
        poses.append(camera_pose(position, yaw=yaw, pitch=np.deg2rad(pitch_deg)))
    return poses


def render(pose: Pose, camera: PinholeCamera = CAMERA, scene: Scene = FLOOR_AND_BOXES
           ) -> View:
    frame = render_frame(scene, pose, camera)
    return View(frame.rgb, frame.depth, frame.normals, pose)


def ground_of(pose: Pose) -> GroundPlane:
    """The floor as TF gives it: ``p_cam = R p_ground + t`` with the world as ground frame."""
    return GroundPlane.from_transform(pose.rotation.T, -pose.rotation.T @ pose.translation)


def predict(depth: np.ndarray, rng: np.random.Generator) -> Prediction:
    """The exact depth under a random affine map (scale +-25 %, a shift), 1 % noise and a
    patch of uniform nonsense in the lower half, where the floor is."""
    height, width = depth.shape
    scale = float(rng.uniform(3.0, 5.0) * rng.uniform(0.75, 1.25))
    shift = float(rng.uniform(-0.5, 0.5))
    noisy = depth * (1.0 + PREDICTION_NOISE * rng.standard_normal(depth.shape))
    relative = ((noisy - shift) / scale).astype(np.float32)
    ph, pw = int(PATCH[0] * height), int(PATCH[1] * width)
    top = int(rng.integers(height // 2, height - ph + 1))
    left = int(rng.integers(0, width - pw + 1))
    wrong = np.zeros(depth.shape, dtype=bool)
    wrong[top:top + ph, left:left + pw] = True
    finite = relative[np.isfinite(relative)]
    relative[wrong] = rng.uniform(finite.min(), finite.max(), ph * pw)
    relative[~np.isfinite(relative)] = finite.max()  # the model's "far" where nothing is
    return Prediction(relative, wrong, scale, shift)


def abs_rel(metric: np.ndarray, view_depth: np.ndarray, wrong: np.ndarray) -> float:
    """AbsRel of a metric depth against the exact one, outside the nonsense patch (its error
    is the model's, whatever the scale)."""
    return depth_metrics(metric, view_depth, np.isfinite(view_depth) & ~wrong).abs_rel


def sparse_sensor_depth(depth: np.ndarray, rng: np.random.Generator, *, valid: float = 0.04,
                        noise: float = 0.01, outliers: float = 0.03) -> np.ndarray:
    """float32 metres, NaN where invalid: ``valid`` of the pixels keep the depth with
    ``noise`` relative noise, and ``outliers`` of those are gross (0.3..10 m, uniform)."""
    keep = (rng.random(depth.shape) < valid) & np.isfinite(depth)
    sensed = np.full(depth.shape, np.nan, dtype=np.float32)
    n = int(np.count_nonzero(keep))
    values = depth[keep] * (1.0 + noise * rng.standard_normal(n))
    gross = rng.random(n) < outliers
    values[gross] = rng.uniform(0.3, 10.0, int(np.count_nonzero(gross)))
    sensed[keep] = values
    return sensed


def as_16uc1(depth_m: np.ndarray) -> np.ndarray:
    """uint16 millimetres, 0 invalid (the OpenNI / RealSense habit)."""
    mm = np.where(np.isfinite(depth_m), np.rint(depth_m * 1000.0), 0.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def as_32fc1(depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float32 metres, invalid pixels NaN or 0 (both are seen in the wild), half each."""
    out = depth_m.astype(np.float32, copy=True)
    invalid = ~np.isfinite(out)
    out[invalid & (rng.random(out.shape) < 0.5)] = 0.0
    return out


class StaticModel:
    """A ``DepthModel`` that answers with given arrays (the scale sources need no network)."""

    model_names = {"depth": "static", "normals": "static"}
    device, dtype, processing_resolution = "cpu", "float32", 0

    def __init__(self) -> None:
        self.depth: np.ndarray | None = None
        self.normals: np.ndarray | None = None

    def processing_size(self, height, width):
        return height, width

    def predict(self, rgb, *, depth=True, normals=True):
        assert rgb.shape[:2] == self.depth.shape, (rgb.shape, self.depth.shape)
        return ItemPrediction(self.depth if depth else None, self.normals if normals else None)

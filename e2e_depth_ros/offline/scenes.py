"""Procedural scenes ray cast with numpy: exact depth, normals and LiDAR returns.

A room (floor, ceiling, four walls as planes with checker/noise textures, some boxes and
spheres) is ray cast for a pinhole camera, and a spinning multi-beam LiDAR samples the same
scene. ``synthetic`` moves a camera through such a room and writes sample bags of it.

Frames: the world is REP-103 (x forward, y left, z up, meters). A camera pose is
world-from-optical (optical: x right, y down, z forward). A LiDAR frame is REP-103 too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.errors import CameraError

# Optical axes (x right, y down, z forward) as columns in a REP-103 body frame.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_EPS = 1e-6


@dataclass(frozen=True)
class Plane:
    """Infinite plane ``dot(normal, p) = offset`` with a checker + noise texture."""

    normal: tuple[float, float, float]
    offset: float
    color: tuple[float, float, float] = (0.7, 0.7, 0.7)
    checker: float = 0.5  # checker cell size in meters; 0 disables


@dataclass(frozen=True)
class Box:
    """Axis-aligned box between corners ``low`` and ``high`` (world frame)."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    color: tuple[float, float, float] = (0.8, 0.3, 0.2)
    checker: float = 0.2


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float] = (0.2, 0.5, 0.8)
    checker: float = 0.15


@dataclass(frozen=True)
class Scene:
    """Primitives to ray cast; the nearest hit wins. Inside a convex room of planes."""

    planes: tuple[Plane, ...] = ()
    boxes: tuple[Box, ...] = ()
    spheres: tuple[Sphere, ...] = ()
    light: tuple[float, float, float] = (0.3, 0.2, 1.0)  # direction towards the light


@dataclass(frozen=True)
class Pose:
    """Rigid transform ``p_world = rotation @ p_local + translation``."""

    rotation: np.ndarray
    translation: np.ndarray

    def compose(self, other: Pose) -> Pose:
        """``self * other``: the pose of a frame given relative to this one."""
        return Pose(self.rotation @ other.rotation,
                    self.rotation @ other.translation + self.translation)

    def inverse(self) -> Pose:
        return Pose(self.rotation.T, -self.rotation.T @ self.translation)


@dataclass(frozen=True)
class Extrinsic:
    """LiDAR to camera: ``p_camera_optical = rotation @ p_lidar + translation``.

    As a tf transform: parent ``camera_optical``, child ``lidar``, with
    ``translation`` and ``quaternion_xyzw`` (the pose of the LiDAR in the camera frame).
    """

    rotation: np.ndarray
    translation: np.ndarray

    @property
    def quaternion_xyzw(self) -> tuple[float, float, float, float]:
        return matrix_to_quaternion(self.rotation)

    @property
    def pose(self) -> Pose:
        return Pose(self.rotation, self.translation)


@dataclass(frozen=True)
class Frame:
    """One rendered view: rgb uint8 (H, W, 3); depth float32 (H, W) z in meters, NaN where
    nothing was hit; normals float32 (H, W, 3) unit, optical frame, facing the camera."""

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class LidarConfig:
    """A spinning multi-beam LiDAR (defaults: 16 beams, +-15 deg, 0.4 deg azimuth step)."""

    beams: int = 16
    min_elevation_deg: float = -15.0
    max_elevation_deg: float = 15.0
    azimuth_step_deg: float = 0.4
    max_range: float = 30.0
    range_noise: float = 0.01  # relative standard deviation of the range
    dropout: float = 0.02  # fraction of returns lost


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) quaternion with w >= 0 of a rotation matrix (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i], q[j], q[k] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s
    q = np.array(q) * (1.0 if q[3] >= 0 else -1.0)
    return tuple(float(x) for x in q / np.linalg.norm(q))


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), radians (REP-103 fixed-axis roll, pitch, yaw)."""
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_pose(position: tuple[float, float, float], yaw: float = 0.0,
                pitch: float = 0.0) -> Pose:
    """World-from-optical pose of a camera at ``position`` looking along yaw/pitch."""
    body = rotation_rpy(0.0, pitch, yaw)
    return Pose(body @ BODY_FROM_OPTICAL, np.asarray(position, dtype=np.float64))


# ---------------------------------------------------------------- ray casting


@dataclass(frozen=True)
class _Hits:
    """Nearest hit per ray: parameter t (inf when none), world normal, colour, point."""

    t: np.ndarray
    normal: np.ndarray
    color: np.ndarray
    point: np.ndarray


_Intersections = Iterator[tuple[np.ndarray, np.ndarray, object]]  # t, world normals, primitive


def _hit_planes(planes: tuple[Plane, ...], origin: np.ndarray, dirs: np.ndarray
                ) -> _Intersections:
    for plane in planes:
        n = np.asarray(plane.normal, dtype=np.float64)
        n = n / np.linalg.norm(n)
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (plane.offset - origin @ n) / denom
        yield t, np.broadcast_to(n, dirs.shape), plane


def _hit_boxes(boxes: tuple[Box, ...], origin: np.ndarray, dirs: np.ndarray
               ) -> _Intersections:
    for box in boxes:
        low, high = np.asarray(box.low, float), np.asarray(box.high, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1, t2 = (low - origin) * inv, (high - origin) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        near = np.where(np.isnan(near), -np.inf, near)  # ray parallel to a slab, on it
        far = np.where(np.isnan(far), np.inf, far)
        t_near, t_far = near.max(axis=1), far.min(axis=1)
        t = np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
        axis = near.argmax(axis=1)
        normal = np.zeros_like(dirs)
        normal[np.arange(len(dirs)), axis] = -np.sign(dirs[np.arange(len(dirs)), axis])
        yield t, normal, box


def _hit_spheres(spheres: tuple[Sphere, ...], origin: np.ndarray, dirs: np.ndarray
                 ) -> _Intersections:
    a = np.einsum("ij,ij->i", dirs, dirs)
    for sphere in spheres:
        center = np.asarray(sphere.center, float)
        oc = origin - center
        b = dirs @ oc
        c = oc @ oc - sphere.radius ** 2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / a
        t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
        with np.errstate(invalid="ignore"):
            normal = (origin + t[:, None] * dirs - center) / sphere.radius
        yield t, normal, sphere


def _texture(points: np.ndarray, color: tuple[float, float, float], cell: float
             ) -> np.ndarray:
    """Checker times hashed value noise: gives the model (and people) texture to see."""
    base = np.asarray(color, dtype=np.float64)
    if cell <= 0:
        return np.broadcast_to(base, points.shape).copy()
    cells = np.floor(points / cell)
    checker = np.mod(cells.sum(axis=1), 2.0)
    fine = np.floor(points / (cell / 4.0)) @ np.array([12.9898, 78.233, 37.719])
    noise = np.mod(np.sin(fine) * 43758.5453, 1.0)
    return base * (0.7 + 0.3 * checker[:, None]) * (0.85 + 0.15 * noise[:, None])


def cast_rays(scene: Scene, origin: np.ndarray, dirs: np.ndarray) -> _Hits:
    """Nearest intersection of rays ``origin + t * dirs`` (t > 0) with the scene.

    ``dirs`` need not be unit length: t is in units of |dirs|. Normals are unit length in
    the world frame, oriented against the ray (towards the viewer).
    """
    origin = np.asarray(origin, dtype=np.float64)
    n = len(dirs)
    best = np.full(n, np.inf)
    normal = np.full((n, 3), np.nan)
    color = np.zeros((n, 3))
    sources = (_hit_planes(scene.planes, origin, dirs), _hit_boxes(scene.boxes, origin, dirs),
               _hit_spheres(scene.spheres, origin, dirs))
    owners = np.full(n, -1)
    prims = []
    for source in sources:
        for t, nrm, prim in source:
            t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
            closer = t < best
            best[closer] = t[closer]
            normal[closer] = nrm[closer]
            owners[closer] = len(prims)
            prims.append(prim)
    point = origin + np.where(np.isfinite(best), best, np.nan)[:, None] * dirs
    for i, prim in enumerate(prims):
        mine = owners == i
        if mine.any():
            color[mine] = _texture(point[mine], prim.color, prim.checker)
    flip = np.einsum("ij,ij->i", normal, dirs) > 0
    normal[flip] *= -1.0
    return _Hits(best, normal, color, point)


def _pixel_rays(camera: PinholeCamera) -> np.ndarray:
    """Optical-frame ray per pixel with z = 1, so the hit parameter t is the z-depth."""
    u = (np.arange(camera.width) - camera.cx) / camera.fx
    v = (np.arange(camera.height) - camera.cy) / camera.fy
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)], axis=-1).reshape(-1, 3)


def render_frame(scene: Scene, pose: Pose, camera: PinholeCamera) -> Frame:
    """Ray cast one image: RGB, exact z-depth and camera-facing optical-frame normals.

    Depth is z along the optical axis (REP 118), not the ray length: rays are
    (x/z, y/z, 1) in the optical frame, so the ray parameter is z itself.
    """
    if camera.width <= 0 or camera.height <= 0:
        raise CameraError(f"cannot render a {camera.width}x{camera.height} image")
    rays = _pixel_rays(camera)
    hits = cast_rays(scene, pose.translation, rays @ pose.rotation.T)
    valid = np.isfinite(hits.t)
    normals = hits.normal @ pose.rotation  # world -> optical: R^T n, row-wise
    light = np.asarray(scene.light, float) / np.linalg.norm(scene.light)
    lambert = np.clip(np.where(valid, hits.normal @ light, 0.0), 0.0, 1.0)
    falloff = 1.0 / (1.0 + 0.02 * np.where(valid, hits.t, 0.0))
    rgb = hits.color * ((0.35 + 0.65 * lambert) * falloff)[:, None]
    rgb = np.clip(np.rint(np.where(valid[:, None], rgb, 0.0) * 255.0), 0, 255).astype(np.uint8)
    shape = (camera.height, camera.width)
    depth = np.where(valid, hits.t, np.nan).astype(np.float32).reshape(shape)
    normals = np.where(valid[:, None], normals, np.nan).astype(np.float32).reshape(*shape, 3)
    return Frame(rgb.reshape(*shape, 3), depth, normals)


def lidar_directions(config: LidarConfig) -> np.ndarray:
    """Unit beam directions (N, 3) in the LiDAR frame, beam-major within each azimuth."""
    elevation = np.deg2rad(np.linspace(config.min_elevation_deg, config.max_elevation_deg,
                                       config.beams))
    azimuth = np.deg2rad(np.arange(0.0, 360.0, config.azimuth_step_deg))
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)],
                    axis=-1).reshape(-1, 3)


def scan_lidar(scene: Scene, lidar_pose: Pose, config: LidarConfig,
               rng: np.random.Generator) -> np.ndarray:
    """One revolution: (N, 3) float32 points in the LiDAR frame, with noise and dropouts.

    ``lidar_pose`` is world-from-lidar. Range noise is Gaussian with standard deviation
    ``range_noise * range``; returns beyond ``max_range`` and dropped ones are removed.
    """
    dirs = lidar_directions(config)
    hits = cast_rays(scene, lidar_pose.translation, dirs @ lidar_pose.rotation.T)
    ranges = hits.t * (1.0 + config.range_noise * rng.standard_normal(len(dirs)))
    keep = np.isfinite(ranges) & (ranges > 0) & (hits.t <= config.max_range)
    keep &= rng.random(len(dirs)) >= config.dropout
    return (dirs[keep] * ranges[keep, None]).astype(np.float32)


# ---------------------------------------------------------------- scenes and sequences


def make_room(seed: int = 0, *, size: tuple[float, float, float] = (10.0, 8.0, 3.0),
              n_boxes: int = 4, n_spheres: int = 3) -> Scene:
    """A closed room centred on x = y = 0, floor at z = 0, with boxes and spheres.

    Objects stay out of the corridor |y| < 0.9, x < 2.5 that the camera path uses.
    """
    rng = np.random.default_rng(seed)
    lx, ly, lz = size
    planes = (
        Plane((0, 0, 1), 0.0, (0.55, 0.5, 0.45), 0.5),  # floor
        Plane((0, 0, -1), -lz, (0.85, 0.85, 0.8), 1.0),  # ceiling
        Plane((-1, 0, 0), -lx / 2, (0.6, 0.7, 0.6), 0.4),  # far wall (x = +lx/2)
        Plane((1, 0, 0), -lx / 2, (0.7, 0.6, 0.7), 0.4),
        Plane((0, -1, 0), -ly / 2, (0.6, 0.6, 0.75), 0.6),  # left wall (y = +ly/2)
        Plane((0, 1, 0), -ly / 2, (0.75, 0.65, 0.5), 0.6),
    )
    boxes = tuple(_random_box(rng, lx, ly, lz) for _ in range(n_boxes))
    spheres = tuple(_random_sphere(rng, lx, ly, lz) for _ in range(n_spheres))
    return Scene(planes, boxes, spheres)


def _random_spot(rng: np.random.Generator, lx: float, ly: float, margin: float
                 ) -> tuple[float, float]:
    """An (x, y) spot inside the room away from the camera corridor."""
    if rng.random() < 0.4:  # in front of the far wall
        return rng.uniform(2.5 + margin, lx / 2 - margin), rng.uniform(-ly / 2 + margin,
                                                                       ly / 2 - margin)
    side = rng.choice([-1.0, 1.0])
    return rng.uniform(-lx / 2 + margin, lx / 2 - margin), side * rng.uniform(
        0.9 + margin, ly / 2 - margin)


def _random_box(rng: np.random.Generator, lx: float, ly: float, lz: float) -> Box:
    half = rng.uniform(0.2, 0.6, 3) * np.array([1.0, 1.0, 1.5])
    x, y = _random_spot(rng, lx, ly, float(max(half[:2])) + 0.05)
    low = (x - half[0], y - half[1], 0.0)
    high = (x + half[0], y + half[1], min(2 * half[2], lz - 0.2))
    return Box(low, high, tuple(rng.uniform(0.2, 0.9, 3)), float(rng.uniform(0.1, 0.3)))


def _random_sphere(rng: np.random.Generator, lx: float, ly: float, lz: float) -> Sphere:
    radius = float(rng.uniform(0.2, 0.5))
    x, y = _random_spot(rng, lx, ly, radius + 0.05)
    z = float(rng.uniform(radius, lz - radius - 0.3))
    return Sphere((x, y, z), radius, tuple(rng.uniform(0.2, 0.9, 3)),
                  float(rng.uniform(0.08, 0.2)))

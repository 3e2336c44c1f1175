"""Pinhole camera geometry in the ROS optical frame (x right, y down, z forward).

Pure numpy so the scale fit, the evaluation tool and the node share one definition of
projection, unprojection and normal frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from e2e_depth_ros.errors import CameraError

NormalConvention = Literal["e2e_ft", "marigold"]


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of the image as it is received (after binning / ROI, before resizing).

    ``tx``/``ty`` are P[0, 3] and P[1, 3] (``-fx * baseline`` for a right stereo camera);
    they shift projections and are scaled with fx / fy.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    tx: float = 0.0
    ty: float = 0.0

    @property
    def projection(self) -> np.ndarray:
        """The (3, 4) projection matrix P of this camera."""
        return np.array(
            [[self.fx, 0.0, self.cx, self.tx], [0.0, self.fy, self.cy, self.ty], [0, 0, 1, 0]],
            dtype=np.float64,
        )

    def scaled(self, width: int, height: int) -> PinholeCamera:
        """The camera of the same view resized to ``width`` x ``height``.

        image_proc's resize rule: fx, cx, Tx scale by sx; fy, cy, Ty by sy.
        """
        if width <= 0 or height <= 0:
            raise CameraError(f"cannot scale a camera to {width}x{height}")
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            width=int(width),
            height=int(height),
            fx=self.fx * sx,
            cx=self.cx * sx,
            tx=self.tx * sx,
            fy=self.fy * sy,
            cy=self.cy * sy,
            ty=self.ty * sy,
        )


def camera_from_projection(
    P: np.ndarray,
    width: int,
    height: int,
    *,
    binning_x: int = 0,
    binning_y: int = 0,
    roi_x_offset: int = 0,
    roi_y_offset: int = 0,
    roi_width: int = 0,
    roi_height: int = 0,
) -> PinholeCamera:
    """The camera of the received image from a CameraInfo's full-resolution P.

    ``width``/``height`` are the CameraInfo's (full sensor) size; binning 0 means 1 and a
    zero ROI means the full image, as in sensor_msgs/CameraInfo. The ROI is cut before
    binning, as image_geometry does.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.size == 9:
        P = np.concatenate([P.reshape(3, 3), np.zeros((3, 1))], axis=1)
    if P.size != 12:
        raise CameraError(f"P must have 12 (or K 9) elements, got {P.size}")
    P = P.reshape(3, 4)
    if not np.all(np.isfinite(P)):
        raise CameraError("P contains NaN or Inf")
    fx, fy, cx, cy = P[0, 0], P[1, 1], P[0, 2], P[1, 2]
    if fx <= 0 or fy <= 0:
        raise CameraError(f"P has no focal length (fx={fx}, fy={fy}): uncalibrated camera")
    bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
    full_roi = roi_width == 0 or roi_height == 0
    roi_w = int(width) if full_roi else int(roi_width)
    roi_h = int(height) if full_roi else int(roi_height)
    ox, oy = (0, 0) if full_roi else (int(roi_x_offset), int(roi_y_offset))
    if roi_w <= 0 or roi_h <= 0:
        raise CameraError(f"camera size {width}x{height} is empty")
    return PinholeCamera(
        width=roi_w // bx,
        height=roi_h // by,
        fx=fx / bx,
        fy=fy / by,
        cx=(cx - ox) / bx,
        cy=(cy - oy) / by,
        tx=P[0, 3] / bx,
        ty=P[1, 3] / by,
    )


def unproject_depth(depth: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Points (H, W, 3) float32 in the optical frame from z-depth (H, W) in meters.

    Follows depth_image_proc: x = (u - cx) * z / fx (Tx ignored, it is a stereo offset
    between cameras, not part of this camera's ray). Non-finite or non-positive depth
    gives NaN points.
    """
    if depth.shape != (camera.height, camera.width):
        raise CameraError(
            f"depth is {depth.shape[1]}x{depth.shape[0]} but the camera is "
            f"{camera.width}x{camera.height}"
        )
    z = depth.astype(np.float32, copy=True)
    z[~(np.isfinite(z) & (z > 0))] = np.nan
    u = (np.arange(camera.width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(
        camera.fx
    )
    v = (np.arange(camera.height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(
        camera.fy
    )
    points = np.empty((camera.height, camera.width, 3), dtype=np.float32)
    np.multiply(z, u[None, :], out=points[..., 0])
    np.multiply(z, v[:, None], out=points[..., 1])
    points[..., 2] = z
    return points


def project_points(points: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and depths z (N,) of optical-frame points (N, 3) under P.

    Rows with z <= 0 get NaN pixel coordinates; callers filter by z and image bounds.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    hom = pts @ P[:, :3].T + P[:, 3]
    z = pts[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(hom[:, 2] > 0, hom[:, 2], np.nan)
        uv = hom[:, :2] / w[:, None]
    return uv, z


def transform_points(
    points: np.ndarray, rotation: np.ndarray, translation: np.ndarray
) -> np.ndarray:
    """Apply ``p' = R p + t`` to (N, 3) points."""
    return np.asarray(points) @ np.asarray(rotation).T + np.asarray(translation)


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a (x, y, z, w) quaternion, as geometry_msgs orders it."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-9:
        raise CameraError(f"quaternion {q.tolist()} has no rotation (zero or non-finite)")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """Unit quaternion a fraction ``w`` of the way from ``q0`` to ``q1`` (shorter arc)."""
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and avoids 0 / 0
        q = (1 - w) * q0 + w * q1
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - w) * angle) * q0 + np.sin(w * angle) * q1) / np.sin(angle)


def normals_to_optical(
    prediction: np.ndarray, convention: NormalConvention = "e2e_ft"
) -> np.ndarray:
    """Optical-frame normals (..., 3) from a normal model's (..., 3) output.

    E2E-FT models were trained on the negated optical-frame normal, so n = -prediction
    (a wall facing the camera becomes (0, 0, -1)). Marigold-convention models use x right,
    y up, z toward the viewer, so n = (x, -y, -z).
    """
    if convention == "e2e_ft":
        return -prediction
    if convention == "marigold":
        return prediction * np.array([1.0, -1.0, -1.0], dtype=prediction.dtype)
    raise ValueError(f"normal convention must be 'e2e_ft' or 'marigold', got {convention!r}")

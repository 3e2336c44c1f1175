"""A LiDAR cloud in the camera optical frame: tf2 when it knows the transform, else the
static extrinsic the user gave for that LiDAR frame.

ROS-free: the tf2 lookup is passed in as a callable (``tf_lookup.TfLookup`` in the node), so
the choice between the two sources is testable without a TF tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from e2e_depth_ros.core.geometry import quaternion_to_matrix, transform_points
from e2e_depth_ros.errors import E2EDepthError
from e2e_depth_ros.ros import messages

# (target frame, source frame, header stamp) -> (R (3, 3), t (3,)); raises when unknown
Lookup = Callable[[str, str, Any], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class StaticExtrinsic:
    """p_cam = R p_lidar + t for clouds in ``frame`` (empty: none given)."""

    frame: str
    rotation_xyzw: tuple[float, float, float, float]
    translation: tuple[float, float, float]


@dataclass(frozen=True)
class InputProblem:
    """Why an input gives the scale nothing this frame; ``kind`` keys the per-kind log throttle."""

    kind: str
    text: str


def lidar_transform(lidar_frame: str, camera_frame: str, stamp: Any, *,
                    lookup: Lookup | None, extrinsic: StaticExtrinsic
                    ) -> tuple[np.ndarray, np.ndarray] | InputProblem:
    """(R, t) taking points in ``lidar_frame`` into ``camera_frame``, or why there is none."""
    if lidar_frame == camera_frame:
        return np.eye(3), np.zeros(3)
    if lookup is not None:
        try:
            return lookup(camera_frame, lidar_frame, stamp)
        except Exception as err:  # noqa: BLE001 - tf2 raises several lookup errors
            tf_error = f"{type(err).__name__}: {err}"
    else:
        tf_error = "tf2 is not installed"
    if extrinsic.frame and extrinsic.frame == lidar_frame:
        return (quaternion_to_matrix(*extrinsic.rotation_xyzw),
                np.asarray(extrinsic.translation, dtype=np.float64))
    return InputProblem("lidar_transform",
                        f"no transform from LiDAR frame '{lidar_frame}' to camera frame "
                        f"'{camera_frame}' ({tf_error}; static extrinsic is for "
                        f"'{extrinsic.frame}'): metric depth needs one")


def lidar_points(cloud: Any, camera_frame: str, *, lookup: Lookup | None,
                 extrinsic: StaticExtrinsic) -> np.ndarray | InputProblem:
    """float32 (N, 3) points of a PointCloud2 in the camera optical frame, or why not."""
    try:
        points = messages.pointcloud_to_xyz(cloud)
    except E2EDepthError as err:
        return InputProblem("lidar_cloud", f"unusable LiDAR cloud: {err}")
    transform = lidar_transform(cloud.header.frame_id, camera_frame, cloud.header.stamp,
                                lookup=lookup, extrinsic=extrinsic)
    if isinstance(transform, InputProblem):
        return transform
    rotation, translation = transform
    return transform_points(points, rotation, translation).astype(np.float32)

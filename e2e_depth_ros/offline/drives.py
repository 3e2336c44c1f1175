"""Camera drives with odometry and flickering predictions, to measure temporal alignment.

A model's depth is affine-invariant per frame, so its outputs flicker. A drive here renders
a room along a camera path (static, forward, back and forth) and stands in for the model
with the ground truth under a fresh affine jitter per frame (scale and shift +-25 %) and 1 %
multiplicative noise: what temporal alignment has to undo. Each frame carries its exact
camera pose (the odometry) and, where asked, a sparse metric sample (a sensor's depth).
``write_drive_bag`` records a drive as a rosbag2 with /tf, for the offline evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.core.temporal import CameraPose
from e2e_depth_ros.offline.scenes import Pose, camera_pose, make_room, render_frame
from e2e_depth_ros.offline.synthetic import CAMERA_FRAME, ODOM_FRAME, default_camera

PATHS = ("static", "forward", "loop")
JITTER = 0.25  # per-frame relative jitter of the prediction's scale, and its shift
NOISE = 0.01  # multiplicative noise of each predicted pixel
SPARSE_KEEP = 0.02  # fraction of pixels a sparse metric sample has


@dataclass(frozen=True)
class DriveFrame:
    index: int
    stamp: float  # s from the drive's start
    pose: Pose  # world (= odom) from camera optical
    depth: np.ndarray  # float32 (H, W) metres, the truth
    relative: np.ndarray  # float32 (H, W) the stand-in model's output
    rgb: np.ndarray  # uint8 (H, W, 3)

    @property
    def odometry(self) -> CameraPose:
        return CameraPose(self.pose.rotation, self.pose.translation)


def drive_pose(path: str, i: int, speed: float, fps: float) -> Pose:
    """The camera pose of frame ``i``; ``speed`` in m/s along the room's x axis."""
    step = speed / fps
    if path == "static":
        return camera_pose((-3.0, 0.0, 1.2), yaw=0.1, pitch=0.05)
    if path == "forward":
        return camera_pose((-4.0 + step * i, 0.2 * np.sin(i / 15), 1.2),
                           yaw=0.15 * np.sin(i / 20), pitch=0.05)
    if path == "loop":  # back and forth over 3 m, swaying: long drives stay in the room
        period = max(int(round(6.0 / step)), 2)
        s = (i % period) / period
        return camera_pose((-4.0 + 3.0 * (1 - abs(2 * s - 1)), 0.3 * np.sin(i / 25), 1.2),
                           yaw=0.3 * np.sin(i / 30), pitch=0.05)
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")


def flicker(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The stand-in model: relative depth of ``depth`` under a fresh affine jitter + noise."""
    relative = (depth - 0.5) / 10.0  # a room's 0.5..10.5 m to about [0, 1]
    scale = 1.0 + rng.uniform(-JITTER, JITTER)
    shift = rng.uniform(-JITTER, JITTER)
    noisy = (scale * relative + shift) * (1.0 + NOISE * rng.standard_normal(depth.shape))
    return noisy.astype(np.float32)


def sparse_metric(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sensor's depth: 2 % of the pixels with 1 % noise, NaN elsewhere."""
    keep = rng.random(depth.shape) < SPARSE_KEEP
    noisy = depth * (1.0 + NOISE * rng.standard_normal(depth.shape))
    return np.where(keep, noisy, np.nan).astype(np.float32)


def make_drive(path: str, n_frames: int, *, width: int = 320, height: int = 240,
               speed: float = 1.0, fps: float = 10.0, seed: int = 0
               ) -> tuple[PinholeCamera, list[DriveFrame]]:
    """``n_frames`` rendered frames along ``path`` with their flickering predictions."""
    scene = make_room(seed)
    camera = default_camera(width, height)
    rng = np.random.default_rng([seed, 7])
    frames = []
    for i in range(n_frames):
        pose = drive_pose(path, i, speed, fps)
        view = render_frame(scene, pose, camera)
        frames.append(DriveFrame(i, i / fps, pose, view.depth, flicker(view.depth, rng),
                                 view.rgb))
    return camera, frames


def write_drive_bag(path: str | Path, camera: PinholeCamera, frames: list[DriveFrame], *,
                    metric_every: int = 0, metric_gap: tuple[int, int] | None = None,
                    start_ns: int = 1_700_000_000_000_000_000, seed: int = 0,
                    tf: bool = True) -> Path:
    """A rosbag2 (MCAP) of a drive: image, camera_info, ``/camera/depth_gt``, the stand-in
    predictions on ``/camera/depth_pred`` (32FC1), /tf ``odom`` -> ``camera_optical``
    (``tf``), and every ``metric_every``-th frame (0: none) a sparse sensor depth on
    ``/depth_sensor/image`` (32FC1 m, NaN = no value), except frames in ``metric_gap``
    [first, last)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from e2e_depth_ros.offline.synthetic import _BagMessages

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    build = _BagMessages(typestore)
    types = {"/camera/image_raw": "sensor_msgs/msg/Image",
             "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
             "/camera/depth_gt": "sensor_msgs/msg/Image",
             "/camera/depth_pred": "sensor_msgs/msg/Image",
             "/depth_sensor/image": "sensor_msgs/msg/Image",
             "/tf": "tf2_msgs/msg/TFMessage"}
    rng = np.random.default_rng([seed, 8])
    path = Path(path)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore)
                       for topic, msgtype in types.items()}

        def write(topic: str, msg: object, stamp_ns: int) -> None:
            writer.write(connections[topic], stamp_ns,
                         typestore.serialize_cdr(msg, types[topic]))

        for frame in frames:
            stamp_ns = start_ns + int(round(frame.stamp * 1e9))
            header = build.header(stamp_ns, CAMERA_FRAME)
            if tf:
                write("/tf", build.tf_message(stamp_ns, [(ODOM_FRAME, CAMERA_FRAME,
                                                          frame.pose)]), stamp_ns)
            write("/camera/image_raw", build.image(header, frame.rgb, "rgb8"), stamp_ns)
            write("/camera/camera_info", build.camera_info(header, camera), stamp_ns)
            write("/camera/depth_gt", build.image(header, frame.depth, "32FC1"), stamp_ns)
            write("/camera/depth_pred", build.image(header, frame.relative, "32FC1"), stamp_ns)
            in_gap = metric_gap is not None and metric_gap[0] <= frame.index < metric_gap[1]
            if metric_every and frame.index % metric_every == 0 and not in_gap:
                write("/depth_sensor/image", build.image(
                    header, sparse_metric(frame.depth, rng), "32FC1"), stamp_ns)
    return path

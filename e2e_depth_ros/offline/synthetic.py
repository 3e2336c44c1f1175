"""Synthetic sequences with ground truth, and sample rosbags made of them.

Tests, benchmarks and the demo need data with ground truth and no downloads: a camera moves
along a gentle path through a procedural room (``scenes``), with a LiDAR mounted at an
offset scanning the same room, and ``write_sample_bag`` records it as a rosbag2.

Frames: the world is REP-103 (x forward, y left, z up, meters). A camera pose is
world-from-optical (optical: x right, y down, z forward). The LiDAR frame ``lidar`` is
REP-103 too (x forward, y left, z up). ``rosbags`` is imported only to write bags.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2e_depth_ros.core.geometry import PinholeCamera, transform_points
from e2e_depth_ros.offline.scenes import (BODY_FROM_OPTICAL, Extrinsic, LidarConfig, Pose, Scene,
                                          camera_pose, make_room, render_frame, rotation_rpy,
                                          scan_lidar)

CAMERA_FRAME = "camera_optical"
LIDAR_FRAME = "lidar"
DEFAULT_TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "points_lidar": "/lidar/points",
    "depth_gt": "/camera/depth_gt",
    "normals_gt": "/camera/normals_gt",
    "tf_static": "/tf_static",
}


@dataclass(frozen=True)
class SequenceFrame:
    """A frame of a sequence: the render, its stamp and pose, and the LiDAR scan.

    ``lidar_points`` (N, 3) float32 are in the ``lidar`` frame (REP-103), meters.
    """

    index: int
    stamp_ns: int
    pose: Pose
    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    lidar_points: np.ndarray

    @property
    def stamp(self) -> float:
        return self.stamp_ns * 1e-9


@dataclass(frozen=True)
class SyntheticSequence:
    """A camera path through one scene with the camera and the LiDAR extrinsic."""

    scene: Scene
    camera: PinholeCamera
    extrinsic: Extrinsic
    frames: tuple[SequenceFrame, ...] = field(default_factory=tuple)


def default_camera(width: int = 160, height: int = 120) -> PinholeCamera:
    """About 64 x 50 degrees field of view; fx != fy and an off-centre principal point."""
    return PinholeCamera(width, height, fx=0.8 * width, fy=0.78 * width,
                         cx=0.5 * width - 0.7, cy=0.5 * height + 0.4)


def default_extrinsic() -> Extrinsic:
    """A LiDAR 10 cm above and 5 cm behind the camera, yawed 3 deg and pitched 2 deg."""
    body_from_lidar = Pose(rotation_rpy(np.deg2rad(1.0), np.deg2rad(2.0), np.deg2rad(3.0)),
                           np.array([-0.05, 0.0, 0.10]))
    optical_from_body = Pose(BODY_FROM_OPTICAL.T, np.zeros(3))
    pose = optical_from_body.compose(body_from_lidar)
    return Extrinsic(pose.rotation, pose.translation)


def path_pose(i: int, n_frames: int, seed: int = 0) -> Pose:
    """Camera pose on a gentle forward path through the room (yaw swaying)."""
    s = i / max(n_frames - 1, 1)
    phase = 0.7 * seed
    x = -3.0 + 4.5 * s
    y = 0.3 * np.sin(2 * np.pi * s + phase)
    yaw = 0.25 * np.sin(2 * np.pi * s + phase + 1.0)
    return camera_pose((x, y, 1.2 + 0.05 * np.sin(3 * s)), yaw=yaw, pitch=0.05)


def make_sequence(n_frames: int, width: int = 160, height: int = 120, seed: int = 0, *,
                  fps: float = 10.0, start_ns: int = 1_700_000_000_000_000_000,
                  lidar: LidarConfig = LidarConfig(),
                  scene: Scene | None = None) -> SyntheticSequence:
    """``n_frames`` rendered frames with LiDAR scans, stamped ``start_ns + i / fps``.

    Deterministic for ``seed`` (scene layout, path phase, LiDAR noise and dropouts).
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    scene = make_room(seed) if scene is None else scene
    camera = default_camera(width, height)
    extrinsic = default_extrinsic()
    rng = np.random.default_rng([seed, 1])
    frames = []
    for i in range(n_frames):
        pose = path_pose(i, n_frames, seed)
        view = render_frame(scene, pose, camera)
        points = scan_lidar(scene, pose.compose(extrinsic.pose), lidar, rng)
        stamp_ns = int(start_ns + round(i * 1e9 / fps))
        frames.append(SequenceFrame(i, stamp_ns, pose, view.rgb, view.depth, view.normals,
                                    points))
    return SyntheticSequence(scene, camera, extrinsic, tuple(frames))


def lidar_in_camera(points: np.ndarray, extrinsic: Extrinsic) -> np.ndarray:
    """LiDAR-frame points (N, 3) expressed in the camera optical frame."""
    return transform_points(points, extrinsic.rotation, extrinsic.translation)


# ---------------------------------------------------------------- sample bags


def _tf_static_qos() -> list[Any]:
    """Transient-local, keep-last-1 QoS, so players re-latch /tf_static as tf2 expects."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


class _BagMessages:
    """Builds the sample bag's messages from rosbags' ROS 2 Humble types."""

    def __init__(self, typestore: Any) -> None:
        self.types = typestore.types

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def camera_info(self, header: Any, camera: PinholeCamera) -> Any:
        P = camera.projection
        roi = self.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types["sensor_msgs/msg/CameraInfo"](
            header=header, height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=P[:, :3].reshape(-1).copy(),
            r=np.eye(3).reshape(-1), p=P.reshape(-1).copy(), binning_x=0, binning_y=0,
            roi=roi)

    def image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        from e2e_depth_ros.ros.messages import build_image

        return build_image(self.types["sensor_msgs/msg/Image"], header, array, encoding)

    def cloud(self, header: Any, points: np.ndarray) -> Any:
        """Unorganized (1 x N) xyz cloud."""
        from e2e_depth_ros.ros.messages import build_pointcloud

        return build_pointcloud(self.types["sensor_msgs/msg/PointCloud2"],
                                self.types["sensor_msgs/msg/PointField"], header,
                                np.ascontiguousarray(points, dtype=np.float32)[None])

    def tf_static(self, header: Any, extrinsic: Extrinsic) -> Any:
        t = self.types
        qx, qy, qz, qw = extrinsic.quaternion_xyzw
        tx, ty, tz = (float(v) for v in extrinsic.translation)
        transform = t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        stamped = t["geometry_msgs/msg/TransformStamped"](
            header=header, child_frame_id=LIDAR_FRAME, transform=transform)
        return t["tf2_msgs/msg/TFMessage"](transforms=[stamped])


def _frame_messages(build: _BagMessages, frame: SequenceFrame, camera: PinholeCamera
                    ) -> dict[str, object]:
    """Every per-frame message keyed like DEFAULT_TOPICS, all with the frame's stamp."""
    cam = build.header(frame.stamp_ns, CAMERA_FRAME)
    return {
        "image": build.image(cam, frame.rgb, "rgb8"),
        "camera_info": build.camera_info(cam, camera),
        "points_lidar": build.cloud(build.header(frame.stamp_ns, LIDAR_FRAME),
                                    frame.lidar_points),
        "depth_gt": build.image(cam, frame.depth, "32FC1"),
        "normals_gt": build.image(cam, frame.normals, "32FC3"),
    }


_MSGTYPES = {
    "image": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "points_lidar": "sensor_msgs/msg/PointCloud2",
    "depth_gt": "sensor_msgs/msg/Image",
    "normals_gt": "sensor_msgs/msg/Image",
    "tf_static": "tf2_msgs/msg/TFMessage",
}


def write_sample_bag(path: str | Path, *, storage: str = "mcap", n_frames: int = 8,
                     width: int = 160, height: int = 120, seed: int = 0,
                     topics: dict[str, str] | None = None) -> Path:
    """Write a rosbag2 of a synthetic sequence with ground truth; returns its path.

    Topics (keys of ``topics``, defaults in DEFAULT_TOPICS): ``image`` rgb8 Image,
    ``camera_info`` (plumb_bob, zero distortion), ``points_lidar`` unorganized xyz
    PointCloud2 in frame ``lidar``, ``depth_gt`` 32FC1 z-depth in meters (NaN invalid),
    ``normals_gt`` 32FC3 unit optical-frame normals, and ``tf_static`` (one TFMessage,
    parent ``camera_optical``, child ``lidar``, transient-local QoS). Image-like topics use
    frame ``camera_optical``. Every message of a frame carries the same header stamp,
    which is also its bag timestamp. A key missing from ``topics`` is not written.
    ``storage`` is "mcap" or "sqlite3"; the path must not exist yet.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    topics = dict(DEFAULT_TOPICS if topics is None else topics)
    unknown = set(topics) - set(_MSGTYPES)
    if unknown:
        raise ValueError(f"unknown topic keys {sorted(unknown)}; known: {sorted(_MSGTYPES)}")
    sequence = make_sequence(n_frames, width, height, seed)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    build = _BagMessages(typestore)
    path = Path(path)
    with Writer(path, version=9, storage_plugin=plugins[storage]) as writer:
        connections = {
            key: writer.add_connection(
                topic, _MSGTYPES[key], typestore=typestore,
                offered_qos_profiles=_tf_static_qos() if key == "tf_static" else ())
            for key, topic in topics.items()
        }

        def write(key: str, msg: object, stamp_ns: int) -> None:
            if key in connections:
                data = typestore.serialize_cdr(msg, _MSGTYPES[key])
                writer.write(connections[key], stamp_ns, data)

        first = sequence.frames[0].stamp_ns
        write("tf_static", build.tf_static(build.header(first, CAMERA_FRAME),
                                           sequence.extrinsic), first)
        for frame in sequence.frames:
            for key, msg in _frame_messages(build, frame, sequence.camera).items():
                write(key, msg, frame.stamp_ns)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e_depth_ros.offline.synthetic OUT_DIR``: a sample bag with ground truth."""
    parser = argparse.ArgumentParser(
        prog="python -m e2e_depth_ros.offline.synthetic",
        description="Write a synthetic rosbag2 (camera, LiDAR, depth/normal ground truth).")
    parser.add_argument("out_dir", type=Path, help="bag directory to create (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out_dir.exists():
        print(f"error: {args.out_dir} exists already; choose a new directory", file=sys.stderr)
        return 2
    if args.frames < 1 or args.width < 2 or args.height < 2:
        print("error: need --frames >= 1 and an image of at least 2x2", file=sys.stderr)
        return 2
    path = write_sample_bag(args.out_dir, storage=args.storage, n_frames=args.frames,
                            width=args.width, height=args.height, seed=args.seed)
    print(f"wrote {path} ({args.storage}, {args.frames} frames, {args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic sequences with ground truth, and sample rosbags made of them.

Tests, benchmarks and the demo need data with ground truth and no downloads: a camera moves
along a gentle path through a procedural room (``scenes``), with a LiDAR mounted at an
offset scanning the same room, and ``write_sample_bag`` records it as a rosbag2.

Frames: the world is REP-103 (x forward, y left, z up, meters). A camera pose is
world-from-optical (optical: x right, y down, z forward). The LiDAR frame ``lidar`` is
REP-103 too (x forward, y left, z up). ``rosbags`` is imported only to write bags.

Optional extras of a sample bag, for the other metric scale sources: a sparse sensor depth
(registered to the image, or from a depth camera of its own in frame ``depth_optical``)
and /tf with the robot on the floor (``odom`` -> ``base_footprint`` -> the camera; the
floor is the world's z = 0, so ``base_footprint`` is z up with the floor at z = 0).
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
                                          camera_pose, make_room, matrix_to_quaternion,
                                          render_frame, rotation_rpy, scan_lidar)

CAMERA_FRAME = "camera_optical"
LIDAR_FRAME = "lidar"
DEPTH_FRAME = "depth_optical"  # the offset depth camera's optical frame
GROUND_FRAME = "base_footprint"
ODOM_FRAME = "odom"
DEFAULT_TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "points_lidar": "/lidar/points",
    "depth_gt": "/camera/depth_gt",
    "normals_gt": "/camera/normals_gt",
    "tf_static": "/tf_static",
}
EXTRA_TOPICS = {  # written only when asked for (write_sample_bag's sensor_depth, ground_tf)
    "sensor_depth": "/depth_sensor/image",
    "sensor_depth_info": "/depth_sensor/camera_info",
    "tf": "/tf",
}
SENSOR_DEPTH_KINDS = ("registered", "offset")
SENSOR_DEPTH_NOISE = 0.003  # relative standard deviation of the sensor depth
SENSOR_DEPTH_KEEP = 0.5  # fraction of the sensor's pixels with a value (the rest: holes)


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

    def tf_message(self, stamp_ns: int, edges: list[tuple[str, str, Pose]]) -> Any:
        """A TFMessage of (parent, child, pose of the child in the parent) edges."""
        t = self.types
        stamped = []
        for parent, child, pose in edges:
            qx, qy, qz, qw = matrix_to_quaternion(pose.rotation)
            tx, ty, tz = (float(v) for v in pose.translation)
            transform = t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
                rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
            stamped.append(t["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=transform))
        return t["tf2_msgs/msg/TFMessage"](transforms=stamped)


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
    "sensor_depth": "sensor_msgs/msg/Image",
    "sensor_depth_info": "sensor_msgs/msg/CameraInfo",
    "tf": "tf2_msgs/msg/TFMessage",
}


def depth_sensor(camera: PinholeCamera) -> tuple[PinholeCamera, Pose]:
    """The offset depth camera: half the image's size, its own intrinsics, 6 cm right of and
    2 cm below the camera, yawed 2 deg; its pose is camera-optical-from-depth-optical."""
    width, height = max(camera.width // 2, 2), max(camera.height // 2, 2)
    sensor = PinholeCamera(width, height, fx=0.75 * width, fy=0.76 * width,
                           cx=0.5 * width + 0.3, cy=0.5 * height - 0.2)
    yaw = np.deg2rad(2.0)  # about the optical y axis (down)
    rotation = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0],
                         [-np.sin(yaw), 0, np.cos(yaw)]])
    return sensor, Pose(rotation, np.array([0.06, 0.02, 0.0]))


def ground_pose(pose: Pose) -> Pose:
    """World-from-base_footprint under a camera pose: on the floor (z = 0), below the
    camera, yawed along the camera's heading; z up."""
    forward = pose.rotation[:, 2]  # the optical axis in the world
    return Pose(rotation_rpy(0.0, 0.0, float(np.arctan2(forward[1], forward[0]))),
                np.array([pose.translation[0], pose.translation[1], 0.0]))


def _sparse(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sensor's depth: noisy, with holes (NaN) where it has no value."""
    noisy = depth * (1.0 + SENSOR_DEPTH_NOISE * rng.standard_normal(depth.shape))
    return np.where(rng.random(depth.shape) < SENSOR_DEPTH_KEEP, noisy, np.nan
                    ).astype(np.float32)


def _extra_messages(build: _BagMessages, frame: SequenceFrame, sequence: SyntheticSequence,
                    sensor_depth: str | None, ground_tf: bool, rng: np.random.Generator
                    ) -> dict[str, object]:
    """The optional per-frame messages (EXTRA_TOPICS) of one frame."""
    out: dict[str, object] = {}
    if sensor_depth == "registered":  # 16UC1 mm at half the resolution, 0 = no value
        depth = _sparse(frame.depth[::2, ::2], rng)
        mm = np.where(np.isfinite(depth), np.rint(depth * 1000.0), 0).astype(np.uint16)
        out["sensor_depth"] = build.image(build.header(frame.stamp_ns, CAMERA_FRAME), mm,
                                          "16UC1")
    elif sensor_depth == "offset":  # 32FC1 m from its own camera, NaN = no value
        sensor, offset = depth_sensor(sequence.camera)
        view = render_frame(sequence.scene, frame.pose.compose(offset), sensor)
        header = build.header(frame.stamp_ns, DEPTH_FRAME)
        out["sensor_depth"] = build.image(header, _sparse(view.depth, rng), "32FC1")
        out["sensor_depth_info"] = build.camera_info(header, sensor)
    if ground_tf:
        base = ground_pose(frame.pose)
        out["tf"] = build.tf_message(frame.stamp_ns, [
            (ODOM_FRAME, GROUND_FRAME, base),
            (GROUND_FRAME, CAMERA_FRAME, base.inverse().compose(frame.pose))])
    return out


def write_sample_bag(path: str | Path, *, storage: str = "mcap", n_frames: int = 8,
                     width: int = 160, height: int = 120, seed: int = 0,
                     topics: dict[str, str] | None = None, sensor_depth: str | None = None,
                     ground_tf: bool = False) -> Path:
    """Write a rosbag2 of a synthetic sequence with ground truth; returns its path.

    Topics (keys of ``topics``, defaults in DEFAULT_TOPICS): ``image`` rgb8 Image,
    ``camera_info`` (plumb_bob, zero distortion), ``points_lidar`` unorganized xyz
    PointCloud2 in frame ``lidar``, ``depth_gt`` 32FC1 z-depth in meters (NaN invalid),
    ``normals_gt`` 32FC3 unit optical-frame normals, and ``tf_static`` (one TFMessage,
    parent ``camera_optical``, child ``lidar``, transient-local QoS). Image-like topics use
    frame ``camera_optical``. Every message of a frame carries the same header stamp,
    which is also its bag timestamp. A key missing from ``topics`` is not written.
    ``storage`` is "mcap" or "sqlite3"; the path must not exist yet.

    Extras (topics from EXTRA_TOPICS unless ``topics`` names them): ``sensor_depth``
    "registered" writes ``sensor_depth`` as 16UC1 mm at half the image's resolution in
    the camera's frame; "offset" writes it as 32FC1 m from a depth camera of its own
    (``depth_sensor``: frame ``depth_optical``, its ``sensor_depth_info`` and a
    /tf_static edge from the camera). Both are noisy (0.3 %) with holes (half the pixels).
    ``ground_tf`` writes ``tf`` per frame: ``odom`` -> ``base_footprint`` (on the floor,
    z up) -> ``camera_optical``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if sensor_depth not in (None, *SENSOR_DEPTH_KINDS):
        raise ValueError(f"sensor_depth must be one of {SENSOR_DEPTH_KINDS} or None, got "
                         f"{sensor_depth!r}")
    topics = dict(DEFAULT_TOPICS if topics is None else topics)
    extras = [*(("sensor_depth",) if sensor_depth else ()),
              *(("sensor_depth_info",) if sensor_depth == "offset" else ()),
              *(("tf",) if ground_tf else ())]
    topics = {**{key: EXTRA_TOPICS[key] for key in extras}, **topics}
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
        static = [(CAMERA_FRAME, LIDAR_FRAME, sequence.extrinsic.pose)]
        if sensor_depth == "offset":
            static.append((CAMERA_FRAME, DEPTH_FRAME, depth_sensor(sequence.camera)[1]))
        write("tf_static", build.tf_message(first, static), first)
        rng = np.random.default_rng([seed, 2])
        for frame in sequence.frames:
            messages = {**_frame_messages(build, frame, sequence.camera),
                        **_extra_messages(build, frame, sequence, sensor_depth, ground_tf, rng)}
            for key, msg in messages.items():
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

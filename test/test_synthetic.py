"""Procedural scenes, the simulated LiDAR and sample bags."""

import subprocess
import sys

import numpy as np
import pytest

from e2e_depth_ros.core.geometry import (PinholeCamera, project_points, quaternion_to_matrix,
                                         unproject_depth)
from e2e_depth_ros.ros.messages import image_to_array, pointcloud_to_xyz
from e2e_depth_ros.offline.scenes import (LidarConfig, Plane, Scene, Sphere, camera_pose,
                                          matrix_to_quaternion, render_frame, rotation_rpy)
from e2e_depth_ros.offline.synthetic import (CAMERA_FRAME, DEFAULT_TOPICS, LIDAR_FRAME,
                                             default_extrinsic, lidar_in_camera, main,
                                             make_sequence, write_sample_bag)

CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=31.2, cy=24.7)


def test_a_fronto_parallel_wall_has_constant_z_depth_and_faces_the_camera():
    wall = Scene(planes=(Plane((-1.0, 0.0, 0.0), -3.0),))  # the plane x = 3
    frame = render_frame(wall, camera_pose((0.0, 0.0, 1.0)), CAMERA)
    assert frame.depth.dtype == np.float32 and frame.depth.shape == (48, 64)
    np.testing.assert_allclose(frame.depth, 3.0, rtol=1e-6)  # z, not the ray length
    np.testing.assert_allclose(frame.normals, np.broadcast_to([0, 0, -1], (48, 64, 3)),
                               atol=1e-6)
    assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (48, 64, 3)


def test_the_floor_seen_by_a_level_camera_has_normal_minus_y():
    floor = Scene(planes=(Plane((0.0, 0.0, 1.0), 0.0),))
    frame = render_frame(floor, camera_pose((0.0, 0.0, 1.5)), CAMERA)
    below = frame.depth[30:]  # rows under the horizon (cy = 24.7)
    rows = np.arange(30, 48)[:, None]
    np.testing.assert_allclose(below, np.broadcast_to(1.5 * CAMERA.fy / (rows - CAMERA.cy),
                                                      below.shape), rtol=1e-5)
    np.testing.assert_allclose(frame.normals[30:], np.broadcast_to([0, -1, 0], (18, 64, 3)),
                               atol=1e-6)
    assert np.isnan(frame.depth[:20]).all() and np.isnan(frame.normals[:20]).all()


def test_a_sphere_straight_ahead_is_hit_at_distance_minus_radius():
    scene = Scene(spheres=(Sphere((4.0, 0.0, 1.0), 0.5),))
    pose = camera_pose((0.0, 0.0, 1.0))
    camera = PinholeCamera(65, 49, fx=50.0, fy=46.0, cx=32.0, cy=24.0)
    frame = render_frame(scene, pose, camera)
    assert frame.depth[24, 32] == pytest.approx(3.5, rel=1e-6)
    np.testing.assert_allclose(frame.normals[24, 32], [0, 0, -1], atol=1e-6)


def test_rendered_normals_are_unit_length_and_face_the_camera():
    sequence = make_sequence(2, width=64, height=48, seed=1)
    for frame in sequence.frames:
        valid = np.isfinite(frame.depth)
        assert valid.mean() > 0.99
        normals = frame.normals[valid]
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
        rays = unproject_depth(frame.depth, sequence.camera)[valid]
        assert (np.einsum("ij,ij->i", normals, rays) < 0).all()


def test_lidar_points_in_the_camera_agree_with_the_rendered_depth():
    exact = LidarConfig(range_noise=0.0, dropout=0.0)
    sequence = make_sequence(1, width=160, height=120, seed=2, lidar=exact)
    frame, camera = sequence.frames[0], sequence.camera
    points = lidar_in_camera(frame.lidar_points, sequence.extrinsic)
    uv, z = project_points(points, camera.projection)
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    seen = (z > 0.1) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    assert np.count_nonzero(seen) > 500
    rendered = frame.depth[v[seen].astype(int), u[seen].astype(int)]
    error = np.abs(z[seen] - rendered) / rendered
    assert np.median(error) < 0.01
    assert np.mean(error < 0.03) > 0.9  # the rest: edges and what only one sensor sees


def test_lidar_range_noise_and_dropouts_follow_the_config():
    exact = make_sequence(1, 32, 24, lidar=LidarConfig(range_noise=0.0, dropout=0.0))
    noisy = make_sequence(1, 32, 24, lidar=LidarConfig(range_noise=0.01, dropout=0.1))
    n_exact, n_noisy = len(exact.frames[0].lidar_points), len(noisy.frames[0].lidar_points)
    assert n_exact == 16 * 900
    assert 0.85 < n_noisy / n_exact < 0.95
    assert exact.frames[0].lidar_points.dtype == np.float32


def test_sequences_are_deterministic_for_a_seed_and_stamped_at_the_frame_rate():
    first = make_sequence(3, 32, 24, seed=4, fps=20.0)
    again = make_sequence(3, 32, 24, seed=4, fps=20.0)
    other = make_sequence(3, 32, 24, seed=5, fps=20.0)
    for a, b in zip(first.frames, again.frames):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.lidar_points, b.lidar_points)
    assert not np.array_equal(first.frames[0].rgb, other.frames[0].rgb)
    assert np.diff([f.stamp_ns for f in first.frames]).tolist() == [50_000_000] * 2


def test_extrinsic_quaternion_matches_its_rotation():
    extrinsic = default_extrinsic()
    np.testing.assert_allclose(quaternion_to_matrix(*extrinsic.quaternion_xyzw),
                               extrinsic.rotation, atol=1e-12)
    for rpy in [(0.1, -0.2, 3.0), (np.pi, 0.0, 0.0), (0.0, np.pi / 2, -np.pi)]:
        rotation = rotation_rpy(*rpy)
        np.testing.assert_allclose(quaternion_to_matrix(*matrix_to_quaternion(rotation)),
                                   rotation, atol=1e-12)


def test_synthetic_module_imports_without_rosbags_rclpy_or_torch():
    code = ("import sys, e2e_depth_ros.offline.synthetic, e2e_depth_ros.offline.scenes; "
            "bad = {'torch', 'rclpy', 'rosbags'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def read_bag(path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    messages = {}
    with Reader(path) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        for connection, timestamp, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            messages.setdefault(connection.topic, []).append((timestamp, msg))
    return messages, qos


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sample_bag_round_trips_through_rosbags(tmp_path, storage):
    path = write_sample_bag(tmp_path / "bag", storage=storage, n_frames=3, width=40,
                            height=30, seed=1)
    messages, qos = read_bag(path)
    sequence = make_sequence(3, 40, 30, seed=1)

    assert set(messages) == set(DEFAULT_TOPICS.values())
    assert len(messages["/tf_static"]) == 1
    assert qos["/tf_static"][0].durability.name == "TRANSIENT_LOCAL"
    for key in ("image", "camera_info", "points_lidar", "depth_gt", "normals_gt"):
        entries = messages[DEFAULT_TOPICS[key]]
        assert len(entries) == 3
        for (timestamp, msg), frame in zip(entries, sequence.frames):
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            assert stamp == timestamp == frame.stamp_ns

    _, depth = messages["/camera/depth_gt"][1]
    assert (depth.encoding, depth.header.frame_id) == ("32FC1", CAMERA_FRAME)
    np.testing.assert_array_equal(image_to_array(depth), sequence.frames[1].depth)
    _, image = messages["/camera/image_raw"][0]
    np.testing.assert_array_equal(image_to_array(image), sequence.frames[0].rgb)
    _, normals = messages["/camera/normals_gt"][2]
    np.testing.assert_array_equal(image_to_array(normals), sequence.frames[2].normals)
    _, cloud = messages["/lidar/points"][0]
    assert cloud.header.frame_id == LIDAR_FRAME
    np.testing.assert_array_equal(pointcloud_to_xyz(cloud), sequence.frames[0].lidar_points)
    _, info = messages["/camera/camera_info"][0]
    assert info.distortion_model == "plumb_bob" and (info.width, info.height) == (40, 30)
    np.testing.assert_allclose(info.p.reshape(3, 4), sequence.camera.projection)

    _, tf = messages["/tf_static"][0]
    transform = tf.transforms[0]
    assert (transform.header.frame_id, transform.child_frame_id) == (CAMERA_FRAME, LIDAR_FRAME)
    q = transform.transform.rotation
    np.testing.assert_allclose(quaternion_to_matrix(q.x, q.y, q.z, q.w),
                               sequence.extrinsic.rotation, atol=1e-9)


def test_write_sample_bag_rejects_an_unknown_storage(tmp_path):
    with pytest.raises(ValueError, match="storage"):
        write_sample_bag(tmp_path / "bag", storage="rosbag1")


def test_cli_writes_a_bag_and_refuses_an_existing_directory(tmp_path, capsys):
    out = tmp_path / "cli_bag"
    assert main([str(out), "--storage", "sqlite3", "--frames", "2", "--width", "32",
                 "--height", "24"]) == 0
    assert (out / "metadata.yaml").exists()
    assert main([str(out)]) == 2
    assert "exists already" in capsys.readouterr().err


def test_sample_bag_extras_carry_sensor_depth_and_the_robot_on_the_floor_in_tf(tmp_path):
    from e2e_depth_ros.offline.synthetic import EXTRA_TOPICS, depth_sensor
    from e2e_depth_ros.offline.tf_buffer import TransformBuffer

    registered = write_sample_bag(tmp_path / "registered", n_frames=2, width=40, height=30,
                                  sensor_depth="registered", ground_tf=True)
    messages, _ = read_bag(registered)
    _, depth = messages[EXTRA_TOPICS["sensor_depth"]][0]
    assert (depth.encoding, depth.header.frame_id, depth.width, depth.height) == \
        ("16UC1", CAMERA_FRAME, 20, 15)
    mm = image_to_array(depth)
    truth = make_sequence(2, 40, 30).frames[0].depth[::2, ::2]
    held = mm > 0
    assert 0.3 < held.mean() < 0.7  # sparse: about half the pixels hold a value
    np.testing.assert_allclose(mm[held] / 1000.0, truth[held], rtol=0.02)
    tree = TransformBuffer()
    for stamp, tf in messages[EXTRA_TOPICS["tf"]]:
        tree.add_message(tf, moving=True)
        floor = tree.lookup(CAMERA_FRAME, "base_footprint", stamp)
        up = floor.rotation @ [0.0, 0.0, 1.0]  # the floor's normal in the optical frame
        assert up[1] < -0.99  # a level camera: up is -y
        assert -up @ floor.translation == pytest.approx(1.2, abs=0.06)  # its height

    offset = write_sample_bag(tmp_path / "offset", n_frames=1, width=40, height=30,
                              sensor_depth="offset")
    messages, _ = read_bag(offset)
    (_, depth), (_, info) = (messages[EXTRA_TOPICS[k]][0]
                             for k in ("sensor_depth", "sensor_depth_info"))
    sensor, _ = depth_sensor(make_sequence(1, 40, 30).camera)
    assert (depth.encoding, depth.header.frame_id) == ("32FC1", "depth_optical")
    assert (info.width, info.height) == (sensor.width, sensor.height) == (20, 15)
    children = [t.child_frame_id for t in messages["/tf_static"][0][1].transforms]
    assert children == [LIDAR_FRAME, "depth_optical"]
    with pytest.raises(ValueError, match="sensor_depth must be one of .*got 'stereo'"):
        write_sample_bag(tmp_path / "bad", sensor_depth="stereo")

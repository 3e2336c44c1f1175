"""Several cameras in one node over real rclpy: own topics, headers, diagnostics and scale."""

import itertools
import os
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from e2e_depth_ros.ros import messages
from e2e_depth_ros.core.depth_model import ItemPrediction
from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.node import DepthNode
from e2e_depth_ros.offline.synthetic import make_sequence
from rig import Rig, SlowEstimator, header

CAMERAS = ("front", "left", "right")
CAMERA = PinholeCamera(64, 48, fx=50.0, fy=46.0, cx=30.5, cy=25.0)
T0 = 1_700_000_000_000_000_000
_namespaces = itertools.count()

pytestmark = pytest.mark.usefixtures("ros")


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def make_rig(model, cameras=CAMERAS, **params) -> Rig:
    namespace = f"/m{os.getpid()}_{next(_namespaces)}"
    params.setdefault("processing_resolution", 0)
    overrides = [Parameter("cameras", Parameter.Type.STRING_ARRAY, list(cameras))]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    node = DepthNode(estimator=model, namespace=namespace, parameter_overrides=overrides)
    return Rig(node, namespace, cameras=tuple(cameras))


@pytest.fixture
def rigs():
    made = []
    yield made
    for rig in made:
        rig.close()


def relative_of(msg) -> np.ndarray:
    return messages.image_to_array(msg)


def test_three_cameras_get_their_own_outputs_with_their_own_headers(estimator, rigs):
    model = SlowEstimator(estimator, delay=0.3)
    rig = make_rig(model, fixed_scale=2.0, max_batch=4)  # auto (0) is 1 on a CPU
    rigs.append(rig)
    # Keep the worker busy with one frame so that the three below wait for the same round.
    rig.send(image(99), T0 - 10**9, camera=CAMERA, cam="front", frame_id="front_optical")
    assert model.busy.wait(10.0)
    rgbs = {cam: image(i) for i, cam in enumerate(CAMERAS)}
    for i, cam in enumerate(CAMERAS):
        rig.send(rgbs[cam], T0 + i, camera=CAMERA, cam=cam, frame_id=f"{cam}_optical")
    topics = ("depth/relative", "depth/image", "depth/camera_info", "normals/image", "points",
              "depth/image_vis", "normals/image_vis")
    # Every output of each frame, not only depth/image: the others can arrive a moment later.
    assert rig.wait_for(lambda: all(T0 + i in rig.stamps(f"{cam}/{topic}")
                                    for i, cam in enumerate(CAMERAS) for topic in topics),
                        timeout=30)
    assert 3 in model.batches, f"the three frames were not one batch: {model.batches}"
    for i, cam in enumerate(CAMERAS):
        for topic in topics:
            msg = rig.last(f"{cam}/{topic}")
            assert msg.header.frame_id == f"{cam}_optical", (cam, topic)
            assert rig.stamps(f"{cam}/{topic}")[-1] == T0 + i, (cam, topic)
        # Each camera's depth is its own image's (a swap would be ~0.1 off), batched or not.
        want = estimator.predict(rgbs[cam]).depth
        np.testing.assert_allclose(relative_of(rig.last(f"{cam}/depth/relative")), want,
                                   atol=1e-5)
    assert not rig.received["front/depth/image_mm"]  # off by default, per camera too


def test_max_batch_caps_each_model_call_and_no_camera_is_left_out(estimator, rigs):
    model = SlowEstimator(estimator, delay=0.3)
    rig = make_rig(model, fixed_scale=2.0, max_batch=2)
    rigs.append(rig)
    rig.send(image(99), T0 - 10**9, cam="front")  # the worker is busy: the three wait
    assert model.busy.wait(10.0)
    for i, cam in enumerate(CAMERAS):
        rig.send(image(i), T0 + i, cam=cam)
    assert rig.wait_for(lambda: all(T0 + i in rig.stamps(f"{cam}/depth/relative")
                                    for i, cam in enumerate(CAMERAS)), timeout=30)
    assert model.batches[1:] == [2, 1], model.batches  # never 3 in one call; none left out
    # diagnostics (1 Hz) show each camera's last batch: two of them shared one
    assert rig.wait_for(lambda: sorted(rig.diagnostics_by_camera[cam][-1]["batch_size"]
                                       if rig.diagnostics_by_camera[cam] else "0"
                                       for cam in CAMERAS) == ["1", "2", "2"], timeout=5)


def test_max_batch_auto_is_one_frame_per_call_on_a_cpu_and_four_on_a_gpu(estimator, rigs):
    model = SlowEstimator(estimator, delay=0.3)
    rig = make_rig(model, fixed_scale=2.0)  # max_batch 0: auto
    rigs.append(rig)
    rig.send(image(99), T0 - 10**9, cam="front")
    assert model.busy.wait(10.0)
    for i, cam in enumerate(CAMERAS):
        rig.send(image(i), T0 + i, cam=cam)
    assert rig.wait_for(lambda: all(T0 + i in rig.stamps(f"{cam}/depth/relative")
                                    for i, cam in enumerate(CAMERAS)), timeout=30)
    assert model.batches == [1, 1, 1, 1]  # a CPU model: no batches
    assert rig.wait_for(lambda: rig.diagnostics_by_camera["front"]
                        and rig.diagnostics_by_camera["front"][-1]["max_batch"] == "1")
    front = rig.diagnostics_by_camera["front"]
    for device, cap in (("GPU", "4"), ("CPU", "1"), ("Tensorrt", "4")):  # OpenVINO, ORT names
        model.backend_device = device
        seen = len(front)  # judge only diagnostics published after the change
        assert rig.wait_for(lambda: len(front) > seen + 1 and front[-1]["max_batch"] == cap,
                            timeout=5), (device, front[-1]["max_batch"])


def test_a_camera_that_stops_does_not_stop_the_others(estimator, rigs):
    rig = make_rig(estimator, cameras=("front", "left"))
    rigs.append(rig)

    def live(cameras, start, count):
        """Both cameras at ~5 Hz, each frame waited for, like a live camera."""
        for k in range(start, start + count):
            stamp = T0 + k * 2 * 10**8
            for cam in cameras:
                rig.send(image(k), stamp, cam=cam)
            assert rig.wait_for(lambda: all(stamp in rig.stamps(f"{cam}/depth/relative")
                                            for cam in cameras), timeout=20), (cameras, k)
            time.sleep(0.2)

    def front_rate() -> float:
        return float(rig.diagnostics_by_camera["front"][-1]["input_rate_hz"])

    live(("front", "left"), 0, 5)
    front_count = len(rig.received["front/depth/relative"])
    live(("left",), 5, 15)  # front is silent for ~4 s: left goes on at its own rate
    assert len(rig.received["front/depth/relative"]) == front_count
    # Diagnostics say which camera went quiet: an outage for it, none for the other.
    assert rig.wait_for(lambda: "no input for" in
                        rig.diagnostics_by_camera["front"][-1]["_message"], timeout=5)
    assert "no input for" not in rig.diagnostics_by_camera["left"][-1]["_message"]
    sent = 20  # the input rate covers the last 10 s: left goes on until front's reads 0
    while front_rate() > 0.0 and sent < 80:
        live(("left",), sent, 1)
        sent += 1
    assert len(rig.received["front/depth/relative"]) == front_count
    assert len(set(rig.stamps("left/depth/relative"))) == sent
    front, left = (rig.diagnostics_by_camera[cam][-1] for cam in ("front", "left"))
    assert float(front["input_rate_hz"]) == 0.0 and front["frames_received"] == "5"
    assert float(left["input_rate_hz"]) > 0.5


def test_each_camera_has_its_own_diagnostics_entry(estimator, rigs):
    rig = make_rig(estimator)
    rigs.append(rig)
    for k in range(3):
        rig.send(image(k), T0 + k * 10**8, cam="left")
        assert rig.wait_for(lambda: T0 + k * 10**8 in rig.stamps("left/depth/relative"),
                            timeout=20)
    rig.send(image(7), T0, cam="right")
    assert rig.wait_for(lambda: T0 in rig.stamps("right/depth/relative"), timeout=20)

    def latest():
        return {cam: rig.diagnostics_by_camera[cam][-1] for cam in CAMERAS
                if rig.diagnostics_by_camera[cam]}

    assert rig.wait_for(lambda: len(latest()) == 3
                        and latest()["left"]["frames_received"] == "3"
                        and latest()["right"]["frames_received"] == "1", timeout=10)
    diags = latest()
    assert {cam: d["camera"] for cam, d in diags.items()} == {c: c for c in CAMERAS}
    assert diags["front"]["frames_received"] == diags["front"]["frames_processed"] == "0"
    assert diags["left"]["frames_processed"] == "3"
    assert "no image received yet" in diags["front"]["_message"]
    assert "no image received yet" not in diags["left"]["_message"]
    name = rig.node_under_test.get_fully_qualified_name()
    assert rig.node_under_test.diagnostic_name("left") == f"{name}: left depth"


def test_input_checks_and_stamp_rules_are_per_camera(estimator, rigs):
    rig = make_rig(estimator, cameras=("front", "left"))
    rigs.append(rig)
    tiny = messages.build_image(Image, header(T0, "camera_optical"),
                                np.zeros((2, 3, 3), np.uint8), "rgb8")
    rig.send(None, T0, cam="left", image=tiny)  # 3x2 px: refused before the model
    front_stats = rig.node_under_test.stream("front").stats
    for seed in range(4):  # front: every frame stamped 0, each taken before the next
        rig.send(image(seed), 0, cam="front")
        assert rig.wait_for(lambda: front_stats.processed + front_stats.bad_input == seed + 1)

    def latest():
        return {cam: rig.diagnostics_by_camera[cam][-1] for cam in ("front", "left")
                if rig.diagnostics_by_camera[cam]}

    assert rig.wait_for(lambda: len(latest()) == 2
                        and latest()["left"]["frames_bad_input"] == "1"
                        and latest()["front"]["input_stamps"] != "ok", timeout=20)
    front, left = latest()["front"], latest()["left"]
    assert "too small" in left["last_bad_input"] and left["input_stamps"] == "ok"
    assert "stamps are unusable" in front["input_stamps"]
    assert "camera stamps unusable" in front["_message"]
    assert "camera stamps unusable" not in left["_message"]
    assert "repeats the previous" in front["last_bad_input"]


def test_cameras_are_refused_when_a_name_repeats(estimator, ros):
    with pytest.raises(ValueError, match="cameras: camera 'front' is listed twice"):
        DepthNode(estimator=estimator, namespace=f"/m{os.getpid()}_bad",
                  parameter_overrides=[Parameter("cameras", Parameter.Type.STRING_ARRAY,
                                                 ["front", "front"])])


def test_per_camera_input_topics_come_from_parameters(estimator, rigs):
    namespace = f"/m{os.getpid()}_{next(_namespaces)}"
    node = DepthNode(estimator=estimator, namespace=namespace, parameter_overrides=[
        Parameter("cameras", Parameter.Type.STRING_ARRAY, ["front"]),
        Parameter("front.image_topic", value="/elsewhere/color/image_raw"),
        Parameter("processing_resolution", value=0)])
    try:
        topics = dict(node.get_subscriber_names_and_types_by_node(node.get_name(),
                                                                  namespace))
        assert "/elsewhere/color/image_raw" in topics
        assert f"{namespace}/front/camera_info" in topics
        assert f"{namespace}/front/points_lidar" in topics  # relative: follows the namespace
        published = dict(node.get_publisher_names_and_types_by_node(node.get_name(),
                                                                    namespace))
        assert f"{namespace}/front/depth/image" in published
        assert f"{namespace}/depth/image" not in published
    finally:
        node.destroy_node()


# -- LiDAR scale per camera -------------------------------------------------------------
class BatchOracle:
    """Relative depth = (true depth - shift) / scale, per camera's sequence; takes batches."""

    def __init__(self, maps):
        self.depth = {}
        for sequence, scale, shift in maps:
            for f in sequence.frames:
                self.depth[f.rgb.tobytes()] = ((f.depth - shift) / scale).astype(np.float32)
        self.processing_resolution = 0
        self.model_names = {"depth": "oracle", "normals": None}
        self.device, self.dtype = "cpu", "float32"

    def processing_size(self, height, width):
        return height, width

    def predict(self, rgb, *, depth=True, normals=True):
        if rgb.ndim == 3:
            return ItemPrediction(depth=self.depth[rgb.tobytes()], normals=None)
        return ItemPrediction(depth=np.stack([self.depth[x.tobytes()] for x in rgb]), normals=None)


def test_each_camera_fits_its_own_lidar_scale(rigs):
    front = make_sequence(4, width=64, height=48, seed=3)
    left = make_sequence(4, width=64, height=48, seed=5)
    maps = {"front": (front, 4.0, 0.5), "left": (left, 1.5, 0.2)}
    oracle = BatchOracle(maps.values())
    ext = front.extrinsic
    rig = make_rig(oracle, cameras=("front", "left"), lidar_extrinsic_frame="lidar",
                   lidar_extrinsic_translation=[float(v) for v in ext.translation],
                   lidar_extrinsic_rotation=[float(v) for v in ext.quaternion_xyzw])
    rigs.append(rig)
    stamp = T0
    deadline = time.monotonic() + 30

    def fitted():
        diags = {cam: rig.diagnostics_by_camera[cam][-1] for cam in maps
                 if rig.diagnostics_by_camera[cam]}
        # OK within 0.25 s of the last fit on the camera's clock; a loaded machine sends
        # slower than the stamps advance, so the 1 Hz diagnostics may see "holding": both
        # mean a fit was accepted (its scale is checked below)
        return len(diags) == 2 and all(d["scale_status"] in ("OK", "WARN holding last fit")
                                       for d in diags.values())

    while time.monotonic() < deadline and not fitted():
        for k in range(3):
            stamp += 10**8
            for cam, (sequence, _scale, _shift) in maps.items():
                frame = sequence.frames[k]
                rig.send(frame.rgb, stamp, camera=sequence.camera, lidar=frame.lidar_points,
                         cam=cam)
            rig.wait_for(lambda: stamp in rig.stamps("left/depth/relative")
                         and stamp in rig.stamps("front/depth/relative"), timeout=10)
    assert fitted(), {cam: {k: v for d in rig.diagnostics_by_camera[cam][-1:]
                            for k, v in d.items() if k.startswith(("scale", "lidar", "fit",
                                                                   "frames", "last"))}
                      for cam in maps}
    # Measured (front, left): scale -1.5 %, -1.1 %; median |error| 0.60 %, 0.62 %; signed
    # mean -0.50 %, -0.54 %. The LiDAR z-buffer keeps the nearest noisy point per pixel, so
    # each fit reads a little short (as in test_node_lidar); a fit borrowed from the other
    # camera would be off by far more (scales 4.0 and 1.5).
    for cam, (sequence, scale, shift) in maps.items():
        diag = rig.diagnostics_by_camera[cam][-1]
        assert -0.025 < (float(diag["scale"]) - scale) / scale < 0.0, (cam, diag["scale"])
        metric = messages.image_to_array(rig.last(f"{cam}/depth/image"))
        truth = sequence.frames[2].depth
        valid = np.isfinite(metric)
        assert valid.mean() > 0.9
        error = (metric[valid] - truth[valid]) / truth[valid]
        assert np.median(np.abs(error)) < 0.01, cam
        assert -0.01 < np.mean(error) < 0.0, cam

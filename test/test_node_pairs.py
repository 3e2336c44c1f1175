"""depth/image and depth/camera_info leave the node as a pair (depth_image_proc, RTAB-Map)."""

import itertools
import os
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter

from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.node import DepthNode
from rig import Rig, SlowEstimator, camera_info

pytestmark = [pytest.mark.usefixtures("ros"), pytest.mark.needs_torch]
T0 = 1_700_000_000_000_000_000
CAMERA = PinholeCamera(fx=50.0, fy=46.0, cx=30.0, cy=25.0, width=64, height=48)
_namespaces = itertools.count()


@pytest.fixture
def rig(tiny_depth, request):
    from e2e_depth_ros.model.estimator import Estimator

    estimator = Estimator(tiny_depth, None, device="cpu", processing_resolution=0)
    delay = getattr(request, "param", 0.0)
    if delay:
        estimator = SlowEstimator(estimator, delay)
    namespace = f"/pairs{os.getpid()}_{next(_namespaces)}"
    params = {"processing_resolution": 0, "fixed_scale": 2.0, "fixed_shift": 0.5}
    node = DepthNode(estimator=estimator, namespace=namespace,
                     parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    rig = Rig(node, namespace)
    yield rig
    rig.close()


def _no_reuse(rig):
    """Exact camera_info matches only, so a test sees which images had their own."""
    assert rig.node_under_test.set_parameters(
        [Parameter("camera_info_reuse", value=0.0)])[0].successful


def _image(seed):
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def test_depth_image_is_never_published_without_its_camera_info(rig):
    rig.send(_image(0), T0)  # metric (fixed scale) but no camera_info for this stamp
    assert rig.wait_for(lambda: T0 in rig.stamps("depth/relative"))
    with_info = T0 + 10**8
    rig.send(_image(1), with_info, camera=CAMERA)
    assert rig.wait_for(lambda: with_info in rig.stamps("depth/camera_info")
                        and with_info in rig.stamps("depth/image"))
    assert rig.stamps("depth/image") == rig.stamps("depth/camera_info") == [with_info]
    assert "depth/image is not published without its depth/camera_info" in \
        rig.node_under_test.stats.last_warning


def test_camera_info_sent_together_with_its_image_pairs_every_frame(rig):
    # No pause between camera_info and image: both are often ready in one executor wait.
    stamps = [T0 + i * 10**8 for i in range(6)]
    for i, stamp in enumerate(stamps):
        rig.info_pub.publish(camera_info(CAMERA, stamp))
        rig.send(_image(i), stamp)
        assert rig.wait_for(lambda: stamp in rig.stamps("depth/relative"))
    assert rig.wait_for(lambda: len(rig.stamps("depth/camera_info")) == len(stamps))
    assert sorted(rig.stamps("depth/image")) == sorted(rig.stamps("depth/camera_info")) \
        == stamps


def test_camera_info_arriving_just_after_its_image_still_pairs(rig, monkeypatch):
    import e2e_depth_ros.ros.pairing as pairing

    rig.send(_image(0), T0, camera=CAMERA)  # the camera is known to publish camera_info
    assert rig.wait_for(lambda: T0 in rig.stamps("depth/camera_info"))
    monkeypatch.setattr(pairing, "INFO_WAIT_S", 2.0)  # room for a loaded machine
    late = T0 + 10**8
    rig.send(_image(1), late)
    time.sleep(0.2)  # the image is in the node's hands, its camera_info not yet sent
    rig.info_pub.publish(camera_info(CAMERA, late))
    assert rig.wait_for(lambda: late in rig.stamps("depth/camera_info")
                        and late in rig.stamps("depth/image"))


@pytest.mark.parametrize("rig", [1.5], indirect=True)
def test_camera_info_delivered_during_inference_pairs_without_any_wait(rig, monkeypatch):
    # A reliable camera_info can reach the node hundreds of ms after its image (repaired
    # behind megabyte images); the model needs only the image, so the match waits until after.
    import e2e_depth_ros.ros.pairing as pairing

    monkeypatch.setattr(pairing, "INFO_WAIT_S", 0.0)
    rig.send(_image(0), T0)
    assert rig.node_under_test.processor.estimator.busy.wait(10.0)  # the model is running
    rig.info_pub.publish(camera_info(CAMERA, T0))
    assert rig.wait_for(lambda: T0 in rig.stamps("depth/camera_info")
                        and T0 in rig.stamps("depth/image"), timeout=15.0)


@pytest.mark.parametrize("with_info_before", [False, True], ids=["never-any", "newer-one"])
def test_no_wait_for_a_camera_info_that_is_not_coming(rig, monkeypatch, with_info_before):
    import e2e_depth_ros.ros.pairing as pairing

    monkeypatch.setattr(pairing, "INFO_WAIT_S", 60.0)  # a wait would fail the test
    _no_reuse(rig)
    if with_info_before:  # its newest camera_info is already newer than the next image
        rig.send(_image(0), T0 + 10**9, camera=CAMERA)
        assert rig.wait_for(lambda: T0 + 10**9 in rig.stamps("depth/camera_info"))
    rig.send(_image(1), T0)
    assert rig.wait_for(lambda: T0 in rig.stamps("depth/relative"), timeout=10.0)
    assert T0 not in rig.stamps("depth/camera_info")


def test_a_camera_info_slower_than_the_images_is_waited_for_once(rig, monkeypatch):
    import e2e_depth_ros.ros.pairing as pairing

    monkeypatch.setattr(pairing, "INFO_WAIT_S", 3.0)
    _no_reuse(rig)
    rig.send(_image(0), T0, camera=CAMERA)  # camera_info with this frame, not the next ones
    assert rig.wait_for(lambda: T0 in rig.stamps("depth/camera_info"))
    began = time.monotonic()
    for i in range(1, 4):
        stamp = T0 + i * 10**8
        rig.send(_image(i), stamp)
        assert rig.wait_for(lambda: stamp in rig.stamps("depth/relative"), timeout=15.0)
    elapsed = time.monotonic() - began
    # the first waited in vain (3 s); waiting for each would take 9 s
    assert 3.0 <= elapsed < 6.0, elapsed
    assert rig.stamps("depth/camera_info") == [T0]


def test_a_camera_info_at_a_lower_rate_than_the_images_is_reused_and_counted(rig):
    rig.send(_image(0), T0, camera=CAMERA)  # camera_info with this frame only
    later = [T0 + i * 10**8 for i in range(1, 4)]
    for i, stamp in enumerate(later):
        rig.send(_image(i + 1), stamp)
        assert rig.wait_for(lambda: stamp in rig.stamps("depth/camera_info")
                            and stamp in rig.stamps("depth/image"))
    republished = rig.at("depth/camera_info", later[-1])
    assert republished.k[0] == pytest.approx(CAMERA.fx)  # the camera's, with the image stamp
    assert rig.wait_for(lambda: any(d["camera_info_reused"] == "3" for d in rig.diagnostics))


def test_a_camera_info_whose_calibration_has_changed_since_is_not_reused(rig):
    refocused = PinholeCamera(fx=60.0, fy=56.0, cx=30.0, cy=25.0, width=64, height=48)
    rig.send(_image(0), T0, camera=CAMERA)
    rig.send(_image(1), T0 + 10**9, camera=refocused)  # the calibration changed here
    assert rig.wait_for(lambda: T0 + 10**9 in rig.stamps("depth/camera_info"))
    between = T0 + 2 * 10**8  # nearest to the old calibration, which no longer holds
    rig.send(_image(2), between)
    assert rig.wait_for(lambda: between in rig.stamps("depth/relative"))
    time.sleep(0.3)
    assert between not in rig.stamps("depth/camera_info")
    assert between not in rig.stamps("depth/image")

"""Temporal alignment (core.temporal, core.motion_scale) on rendered drives with known truth.

The "model" is the truth under a fresh affine jitter per frame (offline.drives): what a
frame-by-frame model does to a sequence. Every test judges the output against the truth.
"""

import math

import numpy as np
import pytest

from e2e_depth_ros.core.metrics import OneMapAccumulator
from e2e_depth_ros.core.processing import Frame, FrameProcessor, Needs, ProcessingConfig
from e2e_depth_ros.core.scale_sources import SensorDepth
from e2e_depth_ros.core.temporal import CameraPose, TemporalAligner, TemporalConfig
from e2e_depth_ros.offline.drives import make_drive, sparse_metric
from e2e_depth_ros.offline.scenes import Pose

NEEDS = Needs(normals=False, points=False)


class StandIn:
    def __init__(self):
        self.next = None

    def predict(self, rgb, *, depth=True, normals=True, **_):
        return type("P", (), {"depth": self.next if depth else None, "normals": None})()


def one_map(results, frames):
    """AbsRel of every frame's relative output after ONE affine map fitted to them all (the
    evaluation's score; at 160x120 every pixel is in its subsample)."""
    accumulator = OneMapAccumulator()
    for result, frame in zip(results, frames):
        accumulator.add(result.relative, frame.depth)
    return accumulator.result().metrics.abs_rel


def replay(camera, frames, *, config=None, metric=(), odometry=True, poses=None, seed=0):
    model = StandIn()
    processor = FrameProcessor(model, config or ProcessingConfig(temporal_alignment=True),
                               finisher=None)
    rng = np.random.default_rng(seed)
    results = []
    for i, f in enumerate(frames):
        model.next = f.relative
        reference = SensorDepth(sparse_metric(f.depth, rng)) if i in metric else None
        pose = poses[i] if poses is not None else (f.odometry if odometry else None)
        frame = Frame(f.rgb, f.stamp, camera, needs=NEEDS, reference=reference, odometry=pose)
        results.append(processor.finish(frame, processor.predict([frame])[0]))
    return processor, results


@pytest.fixture(scope="module")
def static_drive():
    return make_drive("static", 12, width=160, height=120)


@pytest.fixture(scope="module")
def forward_drive():
    return make_drive("forward", 24, width=160, height=120, speed=1.0)


def test_a_static_camera_without_odometry_gives_one_steady_relative_depth(static_drive):
    camera, frames = static_drive
    _, raw = replay(camera, frames, config=ProcessingConfig())
    _, aligned = replay(camera, frames, odometry=False)
    assert one_map(raw, frames) > 0.1  # the flicker is real
    assert one_map(aligned, frames) < 0.02
    assert aligned[0].temporal.status == "start"
    assert {r.temporal.status for r in aligned[1:]} == {"relative"}
    np.testing.assert_allclose(aligned[0].relative, frames[0].relative)  # the first's frame
    assert all(r.metric is None for r in aligned)


def test_relative_per_frame_keeps_each_frames_own_output(static_drive):
    camera, frames = static_drive
    config = ProcessingConfig(temporal_alignment=True, relative_per_frame=True)
    _, results = replay(camera, frames, config=config)
    for result, frame in zip(results, frames):
        np.testing.assert_array_equal(result.relative, frame.relative)


def test_odometry_carries_the_previous_frame_into_a_moving_view(forward_drive):
    camera, frames = forward_drive
    _, same_pixels = replay(camera, frames, odometry=False)
    processor, moved = replay(camera, frames)
    assert one_map(moved, frames) < 0.03
    assert one_map(moved, frames) < 0.8 * one_map(same_pixels, frames)
    # the units found from parallax read the chain's working depth as metres within 15 %
    aligner = processor.aligner_for("")
    kappa, beta = aligner._units_search.units
    previous = aligner._previous
    metres = (previous.depth - beta) / kappa
    truth = frames[-1].depth.reshape(-1)[previous.index]
    assert np.median(metres / truth) == pytest.approx(1.0, abs=0.15)


def test_a_metric_gap_is_bridged_and_marked_propagated(forward_drive):
    camera, frames = forward_drive
    metric = set(range(24)) - set(range(8, 18))  # 1 s without a metric fit
    _, results = replay(camera, frames, metric=metric)
    for i in range(8, 18):
        result, truth = results[i], frames[i].depth
        assert result.metric is not None, i
        assert result.temporal.status == "propagated"
        assert result.scale_state.status == "propagated"
        assert math.isclose(result.temporal.gap, (i - 7) * 0.1, abs_tol=1e-6)
        assert np.nanmean(np.abs(result.metric - truth) / truth) < 0.04
    assert results[18].temporal.status == "fused"


def test_metric_stops_after_the_longest_gap(forward_drive):
    camera, frames = forward_drive
    config = ProcessingConfig(temporal_alignment=True, temporal_max_gap=0.5)
    processor, results = replay(camera, frames, config=config, metric={0})
    assert [r.metric is not None for r in results[:8]] == [True] * 6 + [False] * 2
    assert "max gap" in results[6].temporal.message
    assert results[6].scale_state.status == "none"
    # the diagnostics' view of the stream ages out by itself as well
    processor, _ = replay(camera, frames[:6], config=config, metric={0})
    assert processor.scale_state(frames[5].stamp, "").status == "propagated"
    assert processor.scale_state(frames[0].stamp + 0.6, "").status == "none"


def test_with_a_metric_source_on_every_frame_the_scale_stays_steady(forward_drive):
    camera, frames = forward_drive
    _, results = replay(camera, frames, metric=set(range(24)))
    ratios = [np.log(np.nanmedian(r.metric / f.depth)) for r, f in zip(results, frames)]
    assert np.mean(np.abs(np.diff(ratios))) < 0.01
    assert max(abs(r) for r in ratios) < 0.03
    assert {r.temporal.status for r in results[1:]} == {"fused"}
    assert {r.scale_source for r in results} == {"depth"}


def _jumped(frames, at, offset):
    poses = [f.odometry for f in frames]
    p = poses[at]
    poses[at] = CameraPose(p.rotation, p.translation + np.asarray(offset))
    return poses


def test_a_jump_in_odometry_resets_and_never_gives_a_wrong_metric_frame(forward_drive):
    camera, frames = forward_drive
    poses = _jumped(frames, 10, (3.0, 0.0, 0.0))
    _, results = replay(camera, frames, metric={0, 1, 2}, poses=poses)
    assert results[9].metric is not None  # propagated up to the jump
    assert results[10].temporal.status == "start"
    assert "odometry jumped" in results[10].temporal.message
    assert results[10].temporal.resets == 1
    assert all(r.metric is None for r in results[10:])  # no metric fit since: not metric


def test_lost_or_broken_odometry_resets(forward_drive):
    camera, frames = forward_drive
    poses = [f.odometry for f in frames]
    poses[5] = None
    poses[8] = CameraPose(np.full((3, 3), np.nan), np.zeros(3))
    _, results = replay(camera, frames[:10], poses=poses[:10])
    assert "odometry lost" in results[5].temporal.message
    assert "not finite" in results[8].temporal.message
    assert results[9].temporal.resets == results[8].temporal.resets  # one reset, not two


def test_time_going_back_and_a_scene_cut_reset(static_drive):
    camera, frames = static_drive
    aligner = TemporalAligner(TemporalConfig(), ProcessingConfig().fit_options)

    def values(frame):
        return lambda index: frame.relative.reshape(-1)[index]

    shape = frames[0].depth.shape
    aligner.align(values(frames[0]), shape, camera, None, 1.0, None)
    state = aligner.align(values(frames[1]), shape, camera, None, 0.5, None).state
    assert "time went back" in state.message
    noise = np.random.default_rng(0).random(shape).astype(np.float32)
    cut = aligner.align(lambda index: noise.reshape(-1)[index], shape, camera, None, 0.6, None)
    assert cut.state.status == "start" and "scene cut" in cut.state.message
    assert aligner.resets == 2


def test_a_disagreeing_metric_fit_restarts_the_chain_on_it(forward_drive):
    camera, frames = forward_drive
    model = StandIn()
    processor = FrameProcessor(model, ProcessingConfig(temporal_alignment=True),
                               finisher=None)
    rng = np.random.default_rng(1)
    for i, f in enumerate(frames[:6]):
        model.next = f.relative
        depth = f.depth * (1.5 if i == 5 else 1.0)  # the source says 50 % farther
        frame = Frame(f.rgb, f.stamp, camera, needs=NEEDS,
                      reference=SensorDepth(sparse_metric(depth, rng)), odometry=f.odometry)
        result = processor.finish(frame, processor.predict([frame])[0])
    assert result.temporal.status == "start"
    assert "disagrees" in result.temporal.message
    ratio = np.nanmedian(result.metric / frames[5].depth)
    assert ratio == pytest.approx(1.5, rel=0.03)  # the metric source has the last word


def test_settings_changes_restart_the_chains(static_drive):
    camera, frames = static_drive
    processor, _ = replay(camera, frames[:3])
    assert processor.aligner_for("")._previous is not None
    config = ProcessingConfig(temporal_alignment=True, temporal_max_gap=3.0)
    processor.reconfigure(config)
    assert processor.aligner_for("")._previous is None


def test_camera_pose_motion_moves_points_between_frames():
    a = Pose(np.eye(3), np.zeros(3))
    yaw = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    b = Pose(yaw, np.array([1.0, 2.0, 3.0]))
    rotation, translation = CameraPose(a.rotation, a.translation).motion_to(
        CameraPose(b.rotation, b.translation))
    p_world = np.array([4.0, -1.0, 2.0])  # a point; frame a is the world
    expected = b.rotation.T @ (p_world - b.translation)
    np.testing.assert_allclose(rotation @ p_world + translation, expected)


def test_each_camera_has_its_own_chain(static_drive, forward_drive):
    """Two cameras' frames interleaved through one processor: neither resets the other."""
    model = StandIn()
    processor = FrameProcessor(model, ProcessingConfig(temporal_alignment=True),
                               finisher=None)
    (camera_a, frames_a), (camera_b, frames_b) = static_drive, forward_drive
    results = {"a": [], "b": []}
    for fa, fb in zip(frames_a, frames_b):
        for stream, camera, f in (("a", camera_a, fa), ("b", camera_b, fb)):
            model.next = f.relative
            frame = Frame(f.rgb, f.stamp, camera, needs=NEEDS, stream=stream,
                          odometry=f.odometry)
            results[stream].append(processor.finish(frame, processor.predict([frame])[0]))
    assert processor.aligner_for("a").resets == processor.aligner_for("b").resets == 0
    assert one_map(results["a"], frames_a) < 0.02
    assert one_map(results["b"], frames_b[:len(frames_a)]) < 0.03

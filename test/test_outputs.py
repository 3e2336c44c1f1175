"""The table of outputs: one entry per topic, builders that work with rclpy and rosbags types."""

import numpy as np
import pytest

from e2e_depth_ros.ros import messages
from e2e_depth_ros.core.geometry import PinholeCamera
from e2e_depth_ros.ros.outputs import (BY_KEY, NEEDS, OUTPUTS, RECORDED, build_outgoing,
                                       enable_parameters, needs_for, rclpy_types, topic)
from e2e_depth_ros.core.processing import FrameResult, Needs


def _result() -> FrameResult:
    rng = np.random.default_rng(0)
    relative = rng.random((6, 8), dtype=np.float32)
    normals = rng.normal(size=(6, 8, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    metric = 1.0 + 4.0 * relative
    metric[0, 0] = np.nan
    points = np.dstack([relative, relative, metric]).astype(np.float32)
    return FrameResult(relative=relative, normals=normals, metric=metric, points=points,
                       points_rgb=np.zeros((6, 8, 3), np.uint8))


def _rosbags_store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _as_rosbags(store, msg, msgtype: str):
    """The same message as rosbags would read it from a bag."""
    from rclpy.serialization import serialize_message

    return store.deserialize_cdr(serialize_message(msg), msgtype)


def test_topics_and_keys_are_unique_and_needs_are_known_fields():
    assert len({o.topic for o in OUTPUTS}) == len({o.key for o in OUTPUTS}) == len(OUTPUTS)
    assert all(o.needs in NEEDS for o in OUTPUTS)
    assert set(NEEDS) <= {f for f in Needs.__dataclass_fields__}
    assert BY_KEY["points"].topic == "points"
    assert [o.key for o in RECORDED] == [o.key for o in OUTPUTS if o.recorded]


def test_outputs_sharing_an_enabling_parameter_declare_it_once():
    names = enable_parameters()
    assert list(names).count("publish_depth") == 1
    assert {o.enable for o in OUTPUTS} == set(names)


def test_needs_follow_the_wanted_outputs_only():
    needs = needs_for([BY_KEY["depth_vis"]], points_rgb=False)
    assert needs == Needs(relative=True, normals=False, metric=False, points=False,
                          points_rgb=False, pictures=("depth_vis",))
    assert needs_for([BY_KEY["points"], BY_KEY["normals"]]).points


def test_topic_goes_under_a_camera_prefix():
    assert topic(BY_KEY["depth"], "front") == "front/depth/image"
    assert topic(BY_KEY["depth"]) == "depth/image"


@pytest.mark.parametrize("flavour", ["rclpy", "rosbags"])
@pytest.mark.parametrize("output", OUTPUTS, ids=lambda o: o.key)
def test_each_builder_makes_its_declared_type_with_the_input_header(flavour, output):
    import rig

    header = rig.header(1_500_000_000, "front_optical")
    info = rig.camera_info(PinholeCamera(8, 6, fx=7.0, fy=6.5, cx=3.5, cy=2.5),
                           1_500_000_000, "front_optical")
    types = rclpy_types()
    if flavour == "rosbags":
        store = _rosbags_store()
        types = store.types
        info = _as_rosbags(store, info, "sensor_msgs/msg/CameraInfo")
        header = info.header
    msg = output.build(types, header, info, _result())
    assert msg is not None and type(msg) is types[output.msgtype]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1, 500_000_000)
    assert msg.header.frame_id == "front_optical"


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda o: o.key)
def test_each_builder_returns_none_when_its_array_was_not_computed(output):
    import rig

    msg = output.build(rclpy_types(), rig.header(0), None, FrameResult())
    assert msg is None


def test_relative_output_carries_the_relative_array_exactly():
    import rig

    result = _result()
    msg = BY_KEY["relative"].build(rclpy_types(), rig.header(0), None, result)
    np.testing.assert_array_equal(messages.image_to_array(msg), result.relative)


def test_rclpy_types_names_the_missing_type():
    with pytest.raises(KeyError, match="no_such_msgs/msg/Nothing"):
        rclpy_types()["no_such_msgs/msg/Nothing"]


def test_millimetre_depth_rounds_metres_and_marks_invalid_or_out_of_range_pixels_zero():
    import rig

    result = FrameResult(metric=np.array([[1.2344, np.nan, 70.0, 0.0004]], np.float32))
    msg = BY_KEY["depth_mm"].build(rclpy_types(), rig.header(0), None, result)
    assert msg.encoding == "16UC1"
    np.testing.assert_array_equal(messages.image_to_array(msg), [[1234, 0, 0, 0]])


def test_paired_outputs_name_each_other():
    for output in OUTPUTS:
        if output.paired_with:
            assert BY_KEY[output.paired_with].paired_with == output.key, output.key
    assert BY_KEY["depth"].paired_with == "depth_info"


def test_build_outgoing_holds_back_a_paired_output_whose_partner_cannot_be_built():
    import plain_msgs

    header = plain_msgs.header(7, "front_optical")
    wanted = [BY_KEY["depth"], BY_KEY["relative"]]
    outgoing, held = build_outgoing(wanted, plain_msgs.TYPES, header, None, _result())
    assert [key for key, _ in outgoing] == ["relative"]
    assert held == ["no usable camera_info for this stamp: depth/image is not published "
                    "without its depth/camera_info"]
    info = plain_msgs.camera_info(PinholeCamera(8, 6, fx=7.0, fy=6.5, cx=3.5, cy=2.5), 7)
    outgoing, held = build_outgoing(wanted, plain_msgs.TYPES, header, info, _result())
    assert [key for key, _ in outgoing] == ["depth", "relative"] and held == []


def test_build_outgoing_skips_an_output_with_nothing_to_build():
    import plain_msgs

    outgoing, held = build_outgoing([BY_KEY["depth"], BY_KEY["points"]], plain_msgs.TYPES,
                                    plain_msgs.header(0), None, FrameResult())
    assert outgoing == [] and held == []

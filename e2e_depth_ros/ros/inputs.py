"""A camera's input subscriptions: image, camera_info and LiDAR, with the reliability their
publishers offer (``matched_subscription``), in the order the executor must serve them."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from e2e_depth_ros.ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.ros.multicam import camera_topic
from e2e_depth_ros.ros.outputs import OUTPUTS
from e2e_depth_ros.ros.stream import Stream
from e2e_depth_ros.ros.sync import stamp_to_ns

# keep last 1 image (newest frame only), 5 camera_info / LiDAR messages (paired by stamp)
IMAGE_DEPTH, SENSOR_DEPTH = 1, 5


def input_topics(topics: dict[str, str], *, compressed: bool) -> dict[str, str]:
    """Input name -> topic, from a camera's configured topics ({} keeps image, camera_info,
    points_lidar, sensor_depth/image); a compressed image is ``<image>/compressed``, the
    sensor depth's camera_info is the ``camera_info`` beside it (same namespace).
    """
    image = topics.get("image", "image")
    depth = topics.get("sensor_depth/image", "sensor_depth/image")
    parent = depth.rpartition("/")[0]
    return {"camera_info": topics.get("camera_info", "camera_info"),
            "lidar": topics.get("points_lidar", "points_lidar"),
            "sensor_depth_info": f"{parent}/camera_info" if parent else f"{depth}_camera_info",
            "sensor_depth": depth,
            "image": f"{image}/compressed" if compressed else image}


def _resolved(node: Any, what: str, topic: str) -> str:
    """The topic's full name after the namespace and remapping, or ValueError saying why."""
    try:
        return node.resolve_topic_name(topic)
    except Exception as err:  # noqa: BLE001 - rclpy raises RCLError or its own exception
        reason = str(err).split(", at ")[0].removeprefix("failed to resolve name: ")
        raise ValueError(f"{what} {topic!r} is not a usable ROS topic name: {reason}") from None


def check_topics(node: Any, inputs: dict[str, str], outputs: Iterable[str]) -> None:
    """Refuse, before anything subscribes, an input that is no valid topic or that is one of
    the node's own outputs: the node would read back its own depth (``cameras:=[a, a/depth]``,
    ``-r image:=depth/image``) or its diagnostics, and count every frame as bad input.

    ``inputs``: a label for the log ("front.image_topic") -> topic; ``outputs``: topics.
    Raises ValueError with the reason (main turns it into one FATAL line).
    """
    published = {_resolved(node, "output", topic): topic for topic in outputs}
    for what, topic in inputs.items():
        full = _resolved(node, what, topic)
        if full in published:
            raise ValueError(f"{what} {topic!r} resolves to {full}, which this node "
                             f"publishes ({published[full]}): it would read its own output; "
                             "point it at the camera's topic")


def check_camera_topics(node: Any, cameras: dict[str, dict[str, str]], *,
                        compressed: bool) -> None:
    """``check_topics`` for every camera's inputs against every output of the node.

    ``cameras``: camera -> its configured input topics ({} = the single-camera node).
    """
    inputs, outputs = {}, ["/diagnostics"]
    for camera in cameras or {"": {}}:
        topics = input_topics(cameras.get(camera, {}), compressed=compressed)
        inputs.update({(f"camera {camera}'s {name} input" if camera else f"{name} input"):
                       topic for name, topic in topics.items()})
        outputs += [camera_topic(camera, output.topic) for output in OUTPUTS]
    check_topics(node, inputs, outputs)


# inputs paired with the image by stamp: name -> (message type, the Stream buffer keeping them)
PAIRED = {"camera_info": (CameraInfo, "camera_infos"), "lidar": (PointCloud2, "clouds"),
          "sensor_depth_info": (CameraInfo, "sensor_infos"),
          "sensor_depth": (Image, "sensor_depths")}


def _keep_in(buffer: Any) -> Callable[[Any], None]:
    """A callback that stores each message in ``buffer`` under its header stamp."""
    return lambda msg: buffer.add(stamp_to_ns(msg.header.stamp), msg)


def subscribe_camera(node: Any, stream: Stream, topics: dict[str, str], *, mode: str,
                     compressed: bool, on_image: Callable[[Any], None]
                     ) -> dict[str, MatchedSubscription]:
    """One camera's subscriptions by input name: the paired inputs, then the image.

    The paired inputs first: the executor serves ready subscriptions in creation order, so
    a frame's camera_info arriving with its image is stored before the image wakes the
    worker (else that frame has no camera_info: no cloud, no depth/image).
    ``topics``: relative input name -> topic ({} keeps the default topics).
    """
    names = input_topics(topics, compressed=compressed)
    subscriptions = {  # creation order, kept by follow_publishers
        name: MatchedSubscription(node, msg_type, names[name],
                                  _keep_in(getattr(stream, buffer)), mode=mode,
                                  depth=SENSOR_DEPTH)
        for name, (msg_type, buffer) in PAIRED.items()}
    subscriptions["image"] = MatchedSubscription(
        node, CompressedImage if compressed else Image, names["image"], on_image, mode=mode,
        depth=IMAGE_DEPTH)
    return subscriptions


def follow_publishers(streams: Iterable[Stream], mode: str) -> None:
    """Publishers come and go: follow their reliability (or a changed ``input_qos``).

    When one of a camera's inputs must be re-subscribed, all of its inputs are, in
    their order, so camera_info and LiDAR stay ahead of the image in the executor.
    """
    for stream in streams:
        choices = {}
        for name, subscription in stream.inputs.items():
            subscription.mode = mode
            choices[name] = subscription.choose()
        recreate = any(stream.inputs[name].changes(choice) for name, choice in choices.items())
        for name, subscription in stream.inputs.items():
            subscription.apply(choices[name], recreate=recreate)

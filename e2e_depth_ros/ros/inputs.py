"""A camera's input subscriptions: image, camera_info and LiDAR, with the reliability their
publishers offer (``matched_subscription``), in the order the executor must serve them."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from e2e_depth_ros.ros.matched_subscription import MatchedSubscription
from e2e_depth_ros.ros.stream import Stream
from e2e_depth_ros.ros.sync import stamp_to_ns

# keep last 1 image (newest frame only), 5 camera_info / LiDAR messages (paired by stamp)
IMAGE_DEPTH, SENSOR_DEPTH = 1, 5


def subscribe_camera(node: Any, stream: Stream, topics: dict[str, str], *, mode: str,
                     compressed: bool, on_image: Callable[[Any], None]
                     ) -> dict[str, MatchedSubscription]:
    """One camera's image, camera_info and LiDAR subscriptions, by input name.

    camera_info and LiDAR first: the executor serves ready subscriptions in creation
    order, so a frame's camera_info arriving with its image is stored before the image
    wakes the worker (else that frame has no camera_info: no cloud, no depth/image).
    ``topics``: relative input name -> topic ({} keeps image, camera_info, points_lidar).
    """
    image = topics.get("image", "image")
    image_type, image_topic = ((CompressedImage, f"{image}/compressed") if compressed
                               else (Image, image))
    return {  # creation order, kept by follow_publishers
        "camera_info": MatchedSubscription(
            node, CameraInfo, topics.get("camera_info", "camera_info"),
            lambda msg: stream.camera_infos.add(stamp_to_ns(msg.header.stamp), msg),
            mode=mode, depth=SENSOR_DEPTH),
        "lidar": MatchedSubscription(
            node, PointCloud2, topics.get("points_lidar", "points_lidar"),
            lambda msg: stream.clouds.add(stamp_to_ns(msg.header.stamp), msg),
            mode=mode, depth=SENSOR_DEPTH),
        "image": MatchedSubscription(node, image_type, image_topic, on_image, mode=mode,
                                     depth=IMAGE_DEPTH),
    }


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

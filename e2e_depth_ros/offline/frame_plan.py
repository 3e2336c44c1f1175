"""Which bag messages belong to each image, and the checks made before a model loads.

Partners are found by header stamp within a tolerance per role (the node's own tolerances
for camera_info and LiDAR). A bag with no image/GT pair, no usable ground truth or a LiDAR
frame without a static transform fails here, before anything slow or any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_depth_ros.errors import BagError, E2EDepthError
from e2e_depth_ros.offline.bag_io import (IMAGE, MessageRef, TopicIndex, bag_read_errors,
                                          fetch_message)
from e2e_depth_ros.offline.eval_types import EvalOptions, EvalTopics


@dataclass(frozen=True)
class FramePlan:
    """The messages that belong to one image, found by header stamp (None: no match)."""

    image: MessageRef
    gt_depth: MessageRef | None
    camera_info: MessageRef | None
    lidar: MessageRef | None
    gt_normals: MessageRef | None
    pred: MessageRef | None
    pred_normals: MessageRef | None
    sensor_depth: MessageRef | None = None
    sensor_depth_info: MessageRef | None = None


def plan_frames(indexes: dict[str, TopicIndex], options: EvalOptions) -> list[FramePlan]:
    """Every image (first ``max_frames`` by stamp) with its partners."""
    tolerance = {
        "gt_depth": options.stamp_tolerance, "gt_normals": options.stamp_tolerance,
        "pred": options.stamp_tolerance, "pred_normals": options.stamp_tolerance,
        "camera_info": options.camera_info_tolerance, "lidar": options.lidar_tolerance,
        # sensor depth is paired like camera_info (the node's rule)
        "sensor_depth": options.camera_info_tolerance,
        "sensor_depth_info": options.camera_info_tolerance,
    }
    images = indexes["image"].refs
    if options.max_frames is not None:
        images = images[: options.max_frames]
    plans = []
    for ref in images:
        partners = {role: (indexes[role].match(ref.stamp_ns, tol) if role in indexes else None)
                    for role, tol in tolerance.items()}
        plans.append(FramePlan(image=ref, **partners))
    return plans


def check_pairs(plans: list[FramePlan], indexes: dict[str, TopicIndex], bag: Path,
                options: EvalOptions) -> None:
    """No image with ground truth at all is a mistake to report, not a score of nothing."""
    image, gt = indexes["image"], indexes["gt_depth"]
    if not image.refs:
        bad = f" ({image.undecodable} undecodable)" if image.undecodable else ""
        raise BagError(f"{bag}: no messages on image topic {image.topic}{bad}")
    if not any(p.gt_depth for p in plans):
        raise BagError(
            f"{bag}: no image/GT pairs: no {gt.topic} stamp within {options.stamp_tolerance} s "
            f"of any {image.topic} stamp (images {image.span()}, GT {gt.span()}); unmatched "
            "stamps, try --stamp-tolerance")


def lidar_transform(transforms: Any, indexes: dict[str, TopicIndex], topics: EvalTopics,
                    bag: Path) -> Any:
    """LiDAR frame -> camera frame from /tf_static, checked before any model loads."""
    lidar, image = indexes.get("lidar"), indexes["image"]
    if lidar is None or not lidar.refs:
        return None
    found = transforms.lookup(image.frame_id, lidar.frame_id)
    if found is None:
        known = ", ".join(transforms.frames) or "none"
        raise BagError(
            f"{bag}: no static transform from LiDAR frame '{lidar.frame_id}' to camera frame "
            f"'{image.frame_id}' on {topics.tf_static} (frames there: {known}); the "
            "evaluation takes the LiDAR extrinsic from the bag's /tf_static")
    return found


def check_image_encoding(reader: Any, bag: Path, index: TopicIndex,
                         plans: list[FramePlan]) -> None:
    """The image topic must carry pictures: a depth or data encoding (16UC1, 32FC1, ...)
    given as the camera is refused by name before a model loads, not skipped frame by frame.
    Judged on the first image of a known encoding (usually one extra message read); raw
    images only. An unknown encoding is a corrupt frame, skipped later like any other."""
    from e2e_depth_ros.ros.messages import COLOUR_ENCODINGS, ENCODINGS

    if index.msgtype != IMAGE:
        return
    for plan in plans:
        try:
            encoding = str(fetch_message(reader, index, plan.image)[0].encoding)
        except (E2EDepthError, *bag_read_errors()):
            continue
        if encoding in COLOUR_ENCODINGS:
            return
        if encoding in ENCODINGS:  # a known depth/data encoding (an unknown one: corrupt)
            raise BagError(f"{bag}: {index.topic} carries {encoding} images, not a camera's "
                           "picture: --image-topic needs a colour or grey image, one of "
                           f"{', '.join(COLOUR_ENCODINGS)}; nothing written")


def check_ground_truth(reader: Any, bag: Path, indexes: dict[str, TopicIndex],
                       plans: list[FramePlan], options: EvalOptions) -> None:
    """At least one paired ground-truth depth must be usable before a model loads or a file
    is written: decodable, the image's size, with 2 or more valid pixels. Stops at the first
    usable one, so a good bag costs one extra message read."""
    from e2e_depth_ros.core.metrics import valid_depth_mask
    from e2e_depth_ros.ros.messages import depth_image_meters

    problems: dict[str, int] = {}
    gt_index, image_index = indexes["gt_depth"], indexes["image"]
    for plan in plans:
        if plan.gt_depth is None:
            continue
        try:
            msg = fetch_message(reader, gt_index, plan.gt_depth)[0]
            gt = depth_image_meters(msg)
        except (E2EDepthError, *bag_read_errors()) as err:
            problem = f"not usable ({err})"
        else:
            size = None
            if image_index.msgtype == IMAGE and "pred" not in indexes:  # model outputs
                try:
                    image = fetch_message(reader, image_index, plan.image)[0]
                    size = (int(image.height), int(image.width))
                except (E2EDepthError, *bag_read_errors()):
                    size = None
            valid = int(valid_depth_mask(gt, min_depth=options.min_depth,
                                         max_depth=options.max_depth).sum())
            if size is not None and gt.shape != size:
                problem = (f"{gt.shape[1]}x{gt.shape[0]}, the image is "
                           f"{size[1]}x{size[0]}")
            elif valid < 2:
                problem = ("fewer than 2 valid pixels (finite, > 0"
                           + (", within --min-depth/--max-depth" if options.min_depth is not None
                              or options.max_depth is not None else "") + ")")
            else:
                return
        problems[problem] = problems.get(problem, 0) + 1
    found = "; ".join(f"{n} x {problem}" for problem, n in problems.items())
    raise BagError(f"{bag}: no usable ground-truth depth on {gt_index.topic}: {found}; "
                   "nothing written")

"""rosbag2 reading and writing for the evaluation: an index of header stamps per topic, one
message fetched by its bag time, and the node's outputs written as one MCAP file.

rosbags is imported inside the functions, so importing this module stays instant. Every way
a bag can fail to read becomes a ``BagError`` naming the bag.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2e_depth_ros.errors import BagError

if TYPE_CHECKING:
    from e2e_depth_ros.offline.eval_types import EvalTopics
    from e2e_depth_ros.core.processing import FrameResult

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


def bag_read_errors() -> tuple[type[BaseException], ...]:
    """What rosbags raises on a missing, foreign or corrupt bag (not a bug of ours)."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    return (AnyReaderError, ReaderError, SerdeError, OSError, EOFError, sqlite3.Error,
            struct.error, ValueError, KeyError, IndexError)


# ----------------------------------------------------------------------- bag index

@dataclass(frozen=True)
class MessageRef:
    """One message: where it is in the bag (topic, log time) and its header stamp."""

    topic: str
    bag_time: int
    stamp_ns: int


@dataclass
class TopicIndex:
    """Header stamps of one topic, sorted, with the bag time to fetch each message by."""

    topic: str
    msgtype: str
    connections: list[Any]
    refs: list[MessageRef] = field(default_factory=list)
    frame_id: str = ""  # of the first message
    undecodable: int = 0

    def finish(self) -> None:
        self.refs.sort(key=lambda r: (r.stamp_ns, r.bag_time))
        self._stamps = [r.stamp_ns for r in self.refs]

    def match(self, stamp_ns: int, tolerance_s: float) -> MessageRef | None:
        """The message with exactly this stamp, else the nearest within the tolerance."""
        stamps = self._stamps
        i = bisect_left(stamps, stamp_ns)
        near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        if not near:
            return None
        best = min(near, key=lambda j: abs(stamps[j] - stamp_ns))
        if abs(stamps[best] - stamp_ns) <= round(tolerance_s * 1e9):
            return self.refs[best]
        return None

    def span(self) -> str:
        if not self.refs:
            return "none"
        return f"{self.refs[0].stamp_ns * 1e-9:.3f}..{self.refs[-1].stamp_ns * 1e-9:.3f} s"


# Types each role accepts; the first is the one named in errors.
_ROLE_TYPES = {
    "image": (IMAGE, COMPRESSED),
    "camera_info": (CAMERA_INFO,),
    "gt_depth": (IMAGE,),
    "gt_normals": (IMAGE,),
    "lidar": (POINTCLOUD,),
    "pred": (IMAGE,),
    "pred_normals": (IMAGE,),
    "tf_static": (TF_MESSAGE,),
    "tf": (TF_MESSAGE,),
    "sensor_depth": (IMAGE,),
    "sensor_depth_info": (CAMERA_INFO,),
}
_FLAGS = {"sensor_depth_info": "--sensor-depth-info-topic"}  # else --<role>-topic


def definition_hash(conn: Any) -> str | None:
    """The connection's RIHS01 type hash, computed from its definition when the bag has none.

    A bare ``.mcap`` file (no metadata.yaml) carries no hash, and rosbags' writer needs one
    to copy the connection; the message definition travels in the file, so it is rebuilt
    from that. None when there is no MSG definition to hash (the caller falls back to its
    typestore).
    """
    if conn.digest:
        return conn.digest
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    if not conn.msgdef.data or conn.msgdef.format != MessageDefinitionFormat.MSG:
        return None
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
    return store.hash_rihs01(conn.msgtype)


def open_reader(bag: Path) -> Any:
    """An opened AnyReader; every way of failing becomes one BagError naming the path."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not bag.exists():
        raise BagError(f"{bag}: no such bag (file or directory)")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except bag_read_errors() as err:
        raise BagError(f"{bag}: not a readable rosbag2 (sqlite3 or MCAP) bag: {err}") from err
    return reader


def check_topics(reader: Any, bag: Path, topics: EvalTopics) -> dict[str, TopicIndex]:
    """One index per requested role; missing topics and wrong types are BagErrors."""
    by_topic: dict[str, list[Any]] = {}
    for conn in reader.connections:
        by_topic.setdefault(conn.topic, []).append(conn)
    available = ", ".join(f"{t} ({c[0].msgtype})" for t, c in sorted(by_topic.items()))
    indexes = {}
    for role, expected in _ROLE_TYPES.items():
        topic = getattr(topics, role)
        if topic is None:
            continue
        if topic not in by_topic:
            if role in ("tf_static", "tf"):
                continue  # only needed for frames that must be connected; checked there
            raise BagError(f"{bag}: topic {topic} ({_flag(role)}) is not in the bag; it has: "
                           f"{available or 'no topics'}")
        msgtype = by_topic[topic][0].msgtype
        if msgtype not in expected:
            raise BagError(f"{bag}: topic {topic} has type {msgtype}, expected "
                           f"{' or '.join(expected)} for {_flag(role)}")
        indexes[role] = TopicIndex(topic, msgtype, by_topic[topic])
    return indexes


def _flag(role: str) -> str:
    return _FLAGS.get(role, f"--{role.replace('_', '-')}-topic")


def index_bag(reader: Any, bag: Path, indexes: dict[str, TopicIndex]
              ) -> list[tuple[Any, int, bytes]]:
    """Fill the indexes with header stamps; returns the /tf_static and /tf messages in full."""
    from e2e_depth_ros.ros.sync import stamp_to_ns

    by_topic: dict[str, list[TopicIndex]] = {}  # one topic may serve two roles
    for index in indexes.values():
        by_topic.setdefault(index.topic, []).append(index)
    connections = [c for group in by_topic.values() for c in group[0].connections]
    tf_messages = []
    try:
        for conn, bag_time, raw in reader.messages(connections=connections):
            group = by_topic[conn.topic]
            if group[0].msgtype == TF_MESSAGE:
                tf_messages.append((conn, bag_time, bytes(raw)))
                continue
            try:
                header = reader.deserialize(raw, conn.msgtype).header
            except bag_read_errors():
                for index in group:
                    index.undecodable += 1  # counted as a skip where it matters (images)
                continue
            for index in group:
                index.refs.append(MessageRef(conn.topic, bag_time, stamp_to_ns(header.stamp)))
                if len(index.refs) == 1:
                    index.frame_id = header.frame_id
    except bag_read_errors() as err:
        raise BagError(f"{bag}: corrupt bag, reading failed ({type(err).__name__}: {err})") \
            from err
    for index in indexes.values():
        index.finish()
    return tf_messages


def fetch_message(reader: Any, index: TopicIndex, ref: MessageRef) -> tuple[Any, bytes]:
    """(message, raw CDR) of one indexed message, read by its bag time."""
    from e2e_depth_ros.ros.sync import stamp_to_ns

    for conn, bag_time, raw in reader.messages(connections=index.connections,
                                               start=ref.bag_time, stop=ref.bag_time + 1):
        msg = reader.deserialize(raw, conn.msgtype)
        if stamp_to_ns(msg.header.stamp) == ref.stamp_ns:
            return msg, bytes(raw)
    raise BagError(f"{index.topic}: message at bag time {ref.bag_time} vanished on re-read")


# ----------------------------------------------------------------------- output bag

class OutputBag:
    """The node's outputs with the original headers, plus copied inputs, as one MCAP file.

    rosbags writes a rosbag2 folder; its single .mcap is moved to ``path`` on ``close``
    (self-describing: schemas and QoS travel inside, so ``ros2 bag play``, Foxglove, rosbags
    and ``evaluate`` itself read it). Nothing appears at ``path`` before ``close``; ``abort``
    leaves no trace. An existing file at ``path`` is replaced (the caller decides whether
    that is allowed); anything else there is never touched.
    """

    def __init__(self, path: Path, prefix: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._tmp = Path(tempfile.mkdtemp(prefix=".out_bag_", dir=path.parent))
        self._writer = Writer(self._tmp / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._ours: dict[str, Any] = {}
        self._copies: dict[str, Any] = {}
        self._copied: set[tuple[str, int, int]] = set()

    def copy(self, conn: Any, bag_time: int, raw: bytes) -> None:
        """An input message as recorded (same bytes, definition and QoS), once: a LiDAR
        cloud or ground truth matched to several images is written a single time."""
        key = (conn.topic, bag_time, hash(raw))
        if key in self._copied:
            return
        self._copied.add(key)
        out = self._copies.get(conn.topic)
        if out is None:
            from rosbags.interfaces import MessageDefinitionFormat

            qos = getattr(conn.ext, "offered_qos_profiles", ())
            digest = definition_hash(conn)
            if digest and conn.msgdef.format == MessageDefinitionFormat.MSG:
                out = self._writer.add_connection(conn.topic, conn.msgtype,
                                                  msgdef=conn.msgdef.data, rihs01=digest,
                                                  offered_qos_profiles=qos)
            else:
                out = self._writer.add_connection(conn.topic, conn.msgtype,
                                                  typestore=self.typestore,
                                                  offered_qos_profiles=qos)
            self._copies[conn.topic] = out
        self._writer.write(out, bag_time, raw)

    def frame(self, bag_time: int, header: Any, info: Any, result: FrameResult) -> None:
        """What the node publishes for one frame (docs/ros_interface.md), with the input header.

        Every recorded output of ``outputs.OUTPUTS`` (not the visualisations) that the result
        has; the output's topic goes under this bag's prefix.
        """
        from e2e_depth_ros.ros.outputs import RECORDED

        for output in RECORDED:
            msg = output.build(self.typestore.types, header, info, result)
            if msg is None:
                continue
            if output.key not in self._ours:
                self._ours[output.key] = self._writer.add_connection(
                    f"{self.prefix}/{output.topic}", output.msgtype, typestore=self.typestore)
            self._writer.write(self._ours[output.key], bag_time,
                               self.typestore.serialize_cdr(msg, output.msgtype))

    def close(self) -> None:
        """Finish the file and move it into place (replacing an older file, nothing else)."""
        try:
            self._writer.close()
            if self.path.exists() and not self.path.is_file():
                raise FileExistsError(f"{self.path} exists and is not a file; not replaced")
            written = next((self._tmp / "bag").glob("*.mcap"))
            written.replace(self.path)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

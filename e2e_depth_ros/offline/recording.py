"""The demo's recording: one MCAP rosbag2 written from two threads.

The player copies the replayed bag's messages in (same bytes, definition, QoS and bag time)
while the rclpy executor writes the node's outputs as they arrive; a lock keeps the
writer's state whole. rosbags is imported inside ``Recording``, so importing this module
stays instant.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from e2e_depth_ros.offline.bag_io import definition_hash


class Recording:
    """An MCAP rosbag2 written from two threads: replayed inputs and received outputs.

    Bag time is the header stamp for outputs and the source bag time for copies, so the
    recording replays in sync. rosbags' MCAP reader merges chunks by time, so outputs that
    arrive after the next frame's inputs still read back in order.
    """

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.counts: dict[str, int] = {}
        self._typestore = get_typestore(Stores.ROS2_KILTED)  # the rclpy wheels' distro
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add_output(self, topic: str, msgtype: str) -> None:
        """Register an output topic up front, so the recording lists it even when empty."""
        with self._lock:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore)
            self.counts[topic] = 0

    def copy(self, conn: Any, bag_time: int, raw: bytes) -> None:
        """A source-bag message as it is: same bytes, definition, QoS and bag time."""
        with self._lock:
            if conn.topic not in self._connections:
                digest = definition_hash(conn)  # a bare .mcap carries none
                definition = dict(msgdef=conn.msgdef.data, rihs01=digest) if digest \
                    else dict(typestore=self._typestore)
                self._connections[conn.topic] = self._writer.add_connection(
                    conn.topic, conn.msgtype, **definition,
                    offered_qos_profiles=conn.ext.offered_qos_profiles)
                self.counts[conn.topic] = 0
            self._write(conn.topic, bag_time, raw)

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None:
        with self._lock:
            self._write(topic, stamp_ns, raw)

    def _write(self, topic: str, bag_time: int, raw: bytes) -> None:
        if self._writer is not None:  # outputs that straggle in after close are dropped
            self._writer.write(self._connections[topic], bag_time, raw)
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

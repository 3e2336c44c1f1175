"""The depth node as a child process: what it is started with, its command line, its end.

``python -m e2e_depth_ros.node`` runs in namespace NAMESPACE with the models, device,
processing resolution and LiDAR extrinsic as ROS parameters and the bag's topics remapped
onto its inputs. Its output goes to a log file that every error message points to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "/e2e_depth"
NODE_NAME = "e2e_depth_node"  # node.NODE_NAME; not imported, so --help stays instant


@dataclass(frozen=True)
class BagTopics:
    """Topic names of the replayed bag (the sample bag's by default); None = absent."""

    image: str
    camera_info: str
    lidar: str | None
    gt_depth: str | None
    gt_normals: str | None
    tf_static: str = "/tf_static"

    @property
    def inputs(self) -> tuple[str, ...]:
        """What the node subscribes to, in the order a frame is published (image last)."""
        return tuple(t for t in (self.camera_info, self.lidar, self.image) if t)

    @property
    def copied(self) -> tuple[str, ...]:
        """Everything copied into the recording, so it is self-contained."""
        return tuple(t for t in (self.image, self.camera_info, self.lidar, self.gt_depth,
                                 self.gt_normals, self.tf_static) if t)


@dataclass(frozen=True)
class NodeSettings:
    """What the node child process is started with."""

    depth_model: str
    normals_model: str | None
    device: str
    resolution: int
    compressed: bool = False  # the bag's image topic is sensor_msgs/CompressedImage
    lidar_frame: str | None = None
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quaternion_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    fixed_scale: float = 0.0  # > 0: metric depth from this map instead of the LiDAR fit
    fixed_shift: float = 0.0


def _float_list(values) -> str:
    """A YAML list of doubles; fixed notation, so rcl never reads an int or a string."""
    return "[" + ", ".join(f"{float(v):.12f}" for v in values) + "]"


def node_command(settings: NodeSettings, topics: BagTopics) -> list[str]:
    """``python -m e2e_depth_ros.node --ros-args ...`` in NAMESPACE, inputs remapped."""
    params = {
        "depth_model": settings.depth_model,
        "normals_model": settings.normals_model or '""',
        "device": settings.device,
        "processing_resolution": str(settings.resolution),
        "use_compressed": "true" if settings.compressed else "false",
    }
    if settings.fixed_scale > 0:
        params.update(fixed_scale=f"{settings.fixed_scale:.12f}",
                      fixed_shift=f"{settings.fixed_shift:.12f}")
    if settings.lidar_frame:
        params.update(lidar_extrinsic_frame=settings.lidar_frame,
                      lidar_extrinsic_translation=_float_list(settings.translation),
                      lidar_extrinsic_rotation=_float_list(settings.quaternion_xyzw))
    image = "image/compressed" if settings.compressed else "image"
    remaps = {"__ns": NAMESPACE, image: topics.image, "camera_info": topics.camera_info}
    if topics.lidar:
        remaps["points_lidar"] = topics.lidar
    argv = [sys.executable, "-m", "e2e_depth_ros.node", "--ros-args"]
    for name, value in params.items():
        argv += ["-p", f"{name}:={value}"]
    for name, value in remaps.items():
        argv += ["-r", f"{name}:={value}"]
    return argv


class NodeProcess:
    """The node as a child process; its output goes to a log file the errors point to."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ))

    def running(self) -> bool:
        return self.proc.poll() is None

    def cannot_start_reason(self) -> str:
        """The node's ``cannot start: ...`` line (it prints exactly one), else the log tail."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        for line in lines:
            if "cannot start:" in line:
                return line.split("cannot start:", 1)[1].strip()
        tail = [line for line in lines if line.strip()][-1:]
        return tail[0] if tail else f"exit code {self.proc.returncode}"

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (rclpy shuts down cleanly), then wait, then kill."""
        try:
            if self.running():
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=timeout)
            return self.proc.returncode
        finally:
            self._log.close()


def _is_hub_id(model: str | None) -> bool:
    """``owner/name`` that is not a folder here: the estimator downloads those."""
    return bool(model) and model.count("/") == 1 and not model.startswith((".", "/", "~")) \
        and not os.path.isdir(model)


def startup_failure(node: NodeProcess, settings: NodeSettings) -> str:
    """One sentence saying what failed and what to run instead (after the node exited)."""
    reason = node.cannot_start_reason()
    hub = [m for m in (settings.depth_model, settings.normals_model) if _is_hub_id(m)]
    if hub and ("Hub" in reason or "hub" in reason):
        return (
            f"the published models ({', '.join(hub)}) could not be loaded (no network or hub "
            "access?); run the demo with local checkpoint folders (`bash run.sh demo "
            "--depth-model DIR --normals-model DIR`) or with tiny random-weight ones "
            f"(`bash run.sh demo --tiny`: meaningless weights; node log: {node.log_path})")
    return f"the node could not start: {reason} (node log: {node.log_path})"

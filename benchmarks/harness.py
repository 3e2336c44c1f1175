"""What every benchmark in this folder shares: its child processes, its exit, ``--quick``.

A benchmark starts its children through ``start`` / ``run`` and its ``__main__`` is
``raise SystemExit(harness.main(main))``: then every child it started is stopped however
it ends (return, exception, Ctrl-C, SIGTERM, SIGHUP), so a failed run cannot leave a
subscriber or a node spinning behind it. Children stay in the benchmark's process group,
so killing that group reaches them too. Standard library only at import (``--help``
stays instant); ``ensure_checkpoint`` imports torch when it must make a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

# Children this process started and has not stopped yet (oldest first).
_children: list[subprocess.Popen] = []
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # exit through every ``finally``, as Ctrl-C


def ros_loopback(domain: int) -> None:
    """DDS on this machine only, in ``ROS_DOMAIN_ID`` when set, else in ``domain``.

    Call before the first ``rclpy.init`` (and before starting ROS children: they inherit
    the environment). ``ROS_AUTOMATIC_DISCOVERY_RANGE`` replaces ``ROS_LOCALHOST_ONLY``.
    """
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.setdefault("ROS_DOMAIN_ID", str(domain))


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
          quick: dict) -> argparse.Namespace:
    """Add ``--quick`` and parse; with it, ``quick`` replaces defaults (given options win)."""
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in seconds (tiny model, a few frames): checks "
                        "that the benchmark runs and stops; its figures mean little")
    args = parser.parse_args(argv)
    if args.quick:
        unknown = set(quick) - set(vars(args))
        assert not unknown, f"quick defaults for unknown options: {sorted(unknown)}"
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def machine() -> str:
    """The CPU the figures were measured on (model name and cores), for the printout."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"machine: {name}, {os.cpu_count()} cores"


def ensure_checkpoint(folder: str | Path, size: str, task: str) -> str:
    """``<folder>/<size>-<task>``, a random-weight checkpoint (seed 0), made unless there.

    Depth and normals of one seed share their VAE, as the published models do. Made under
    a temporary name and renamed, so an interrupted run leaves no half checkpoint.
    """
    path = Path(folder) / f"{size}-{task}"
    if not (path / "model_index.json").is_file():
        from e2e_depth_ros.model.tiny_checkpoint import make_tiny_checkpoint

        partial = path.with_name(f".{path.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        make_tiny_checkpoint(partial, task=task, size=size)
        try:
            partial.rename(path)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(partial, ignore_errors=True)
    return str(path)


def start(args: Sequence[str], **popen) -> subprocess.Popen:
    """``subprocess.Popen(args, **popen)``, stopped by ``stop_children`` at the latest."""
    child = subprocess.Popen(args, **popen)
    _children.append(child)
    return child


def run(args: Sequence[str], *, timeout: float, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True, timeout=...)`` whose child is
    stopped, not orphaned, when this process is told to exit while it waits."""
    child = start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(child)
        raise
    _children.remove(child)
    return subprocess.CompletedProcess(args, child.returncode, out, err)


def stop(*children: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds.

    SIGTERM, not SIGINT: a ROS node shuts down cleanly on either, but a shell starts
    background jobs with SIGINT ignored, and children inherit that.
    """
    for child in children:
        if child.stdin:  # EOF: the children that wait for a line on stdin return at once
            try:
                child.stdin.close()
            except OSError:
                pass
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream:
                stream.close()
        if child in _children:
            _children.remove(child)


def stop_children() -> None:
    """Stop every child still running; signals that would cut this short are ignored."""
    if not _children:
        return
    for signum in (*EXIT_SIGNALS, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    stop(*reversed(_children))


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main(function: Callable[[], int | None]) -> int:
    """Run a benchmark's ``main``: SIGTERM and SIGHUP exit as Ctrl-C does, through every
    ``finally``; on every way out the children still running are stopped."""
    for signum in EXIT_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    try:
        return function() or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        stop_children()

"""Every script in benchmarks/ runs in its ``--quick`` mode, prints figures and stops every
process it started; so does a benchmark that fails, is interrupted or is told to stop.

Each run gets its own session (``start_new_session``) and a token in its environment that
its children inherit, so a survivor is found whether it kept the session or not: a process
whose environment holds the token, or whose session is the run's, once the run has exited.
The figures themselves are not judged, only that the table or summary line is printed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
TOKEN = "E2E_BENCHMARK_RUN"
TIMEOUT = 300.0  # seconds for one quick run on a busy 2-core CI machine
_torch = pytest.mark.needs_torch
_slow = pytest.mark.slow  # tens of seconds each: `-m "not slow"` skips them locally

# (script and arguments, a line of its figures or several; {ckpt}: tiny checkpoints' folder)
QUICK_RUNS = [
    pytest.param(["bench_cloud.py"], r"rclpy +xyz\+rgb +median +\d+\.\d+ +best", id="cloud"),
    pytest.param(["bench_scale.py"], r"100000 points: median \d+\.\d ms", id="scale"),
    pytest.param(["bench_scale_sources.py"],
                 (r"ground, no normals +\d+\.\d+ ms", r"all thresholds met"),
                 id="scale_sources"),
    pytest.param(["bench_temporal.py"],
                 (r"moving: aligned with odometry +\d+\.\d+ +<= 0\.05",
                  r"alignment's own cost \(ms\) +-?\d+\.\d+ +<= 10"), id="temporal"),
    pytest.param(["bench_transport.py"],
                 r"image320x240 +[\d.]+ +reliable +reliable +none +\d/5", id="transport"),
    pytest.param(["bench_transport.py", "--node", "--ckpt-dir", "{ckpt}"],
                 r"reliable camera +\d+/5 ", id="transport-node", marks=[_torch, _slow]),
    pytest.param(["bench_node.py", "--ckpt-dir", "{ckpt}"],
                 r"in the node beyond predict .*: \d+\.\d ms", id="node", marks=_torch),
    pytest.param(["bench_publish.py"],
                 r"nav2 \(3 outputs, [\d.]+ MB\): no subscriber [\d.]+ ms \(cpu", id="publish"),
    pytest.param(["bench_estimator.py", "--ckpt-dir", "{ckpt}"],
                 r"\(b\) depth \+ normals: one estimator \d+\.\d+ s", id="estimator",
                 marks=_torch),
    pytest.param(["bench_flops.py", "--work", "{ckpt}"], r"\| 64 \| frame \| \d+ \|",
                 id="flops", marks=_torch),
    pytest.param(["bench_gpu_path.py", "--work", "{ckpt}"],
                 (r"whole frame, every output \(on the device.*\): +\d+\.\d ms",
                  # figures measured on a CPU say so
                  r"CPU only \(cpu\): these figures say nothing about the GPU path|on cuda"),
                 id="gpu_path", marks=[_torch, _slow]),
    pytest.param(["bench_backends.py", "--work", "{ckpt}"],
                 r"\| 64 \| torch fp32 \| \d+\.\d+ \| 1\.00 \|", id="backends",
                 marks=[_torch, _slow]),
    pytest.param(["bench_multicam.py", "--ckpt-dir", "{ckpt}"],
                 r"\| tiny \| 1 \| N nodes \| \d+\.\d+ \|", id="multicam",
                 marks=[_torch, _slow]),
]


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _has_token(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{TOKEN}={token}".encode() in f.read().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def survivors(run: subprocess.Popen, token: str) -> list[str]:
    """Command lines of the processes the run started that are still there."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if _session_of(pid) == run.pid or _has_token(pid, token):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cmdline:  # a zombie has none, and is gone once reaped
                found.append(f"{pid}: {cmdline}")
    return found


class BenchmarkRun:
    """One benchmark in its own session, its output collected, its survivors checked."""

    def __init__(self, args: list[str], cwd: Path = ROOT):
        self.token = uuid.uuid4().hex
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        env[TOKEN] = self.token
        self.proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.stdout),
                                          (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not stop within {timeout:.0f} s; stderr:\n{self.tail()}")
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def survivors(self) -> list[str]:
        return survivors(self.proc, self.token)

    def tail(self, n: int = 40) -> str:
        return "".join(self.stderr[-n:])

    def kill_everything(self) -> None:
        """After the checks: nothing of this run may outlive the test, failed or not."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for line in self.survivors():
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def checkpoints(request, tmp_path_factory) -> Path:
    """The tiny checkpoints under the names the benchmarks look for (made once per session
    by the suite's fixtures; the benchmarks would otherwise each make their own)."""
    folder = tmp_path_factory.mktemp("bench_checkpoints")
    for task in ("depth", "normals"):
        (folder / f"tiny-{task}").symlink_to(request.getfixturevalue(f"tiny_{task}"))
    return folder


@pytest.mark.parametrize("args, figures", QUICK_RUNS)
def test_quick_run_prints_figures_and_leaves_no_process(args, figures, request):
    if any("{ckpt}" in a for a in args):
        folder = str(request.getfixturevalue("checkpoints"))
        args = [a.replace("{ckpt}", folder) for a in args]
    run = BenchmarkRun([str(BENCHMARKS / args[0]), "--quick", *args[1:]])
    try:
        code = run.wait()
        left = run.survivors()
        out = "".join(run.stdout)
        assert code == 0, f"exit {code}; stdout:\n{out}\nstderr:\n{run.tail()}"
        for pattern in (figures,) if isinstance(figures, str) else figures:
            assert re.search(pattern, out), f"no line matching {pattern!r} in:\n{out}"
        assert not left, f"still running after the benchmark exited: {left}"
    finally:
        run.kill_everything()


def _wait_until(predicate, timeout: float, what: str, run: BenchmarkRun) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if run.proc.poll() is not None:
            pytest.fail(f"exited ({run.proc.returncode}) before {what}:\n{run.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{run.tail()}")
        time.sleep(0.1)


@pytest.mark.needs_torch
def test_bench_node_stopped_by_sigterm_mid_run_leaves_no_child(checkpoints):
    run = BenchmarkRun([str(BENCHMARKS / "bench_node.py"), "--quick", "--frames", "100000",
                        "--ckpt-dir", str(checkpoints)])
    try:
        _wait_until(lambda: any("--subscribe-only" in s for s in run.survivors()), TIMEOUT,
                    "subscriber process", run)
        _wait_until(lambda: any("subscribed reliable" in line for line in run.stderr),
                    TIMEOUT, "node matching the rig's publishers", run)
        time.sleep(1.0)  # frames are flowing
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(timeout=60) == 128 + signal.SIGTERM, run.tail()
        assert not run.survivors()
    finally:
        run.kill_everything()


# A benchmark-shaped script: one child through the harness, then the chosen way out.
_WAYS_OUT = '''
import os, signal, sys, time
sys.path.insert(0, {benchmarks!r})
import harness

def main():
    harness.start([sys.executable, "-c", "import time; time.sleep(600)"])
    print("started", flush=True)
    way = sys.argv[1]
    if way == "raise":
        raise RuntimeError("a benchmark failed")
    if way in ("SIGTERM", "SIGINT", "SIGHUP"):
        os.kill(os.getpid(), getattr(signal, way))
        time.sleep(600)
    return 0

raise SystemExit(harness.main(main))
'''


@pytest.mark.parametrize("way, code", [("return", 0), ("raise", 1),
                                       ("SIGTERM", 128 + signal.SIGTERM),
                                       ("SIGINT", 128 + signal.SIGINT),
                                       ("SIGHUP", 128 + signal.SIGHUP)])
def test_harness_stops_children_on_every_way_out(way, code, tmp_path):
    script = tmp_path / "bench_ways_out.py"
    script.write_text(_WAYS_OUT.format(benchmarks=str(BENCHMARKS)))
    run = BenchmarkRun([str(script), way])
    try:
        assert run.wait(timeout=60) == code, run.tail()
        assert run.stdout == ["started\n"]
        assert not run.survivors()
    finally:
        run.kill_everything()

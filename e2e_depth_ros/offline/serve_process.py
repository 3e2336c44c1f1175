"""``e2e-depth serve`` as a child process: started on free loopback ports, waited for until
its model is ready, stopped by PID (tests, benchmarks, CI).

The server usually lives in another environment than its caller (PyTriton pins numpy < 2):
``python`` is that environment's interpreter. The child runs in a session of its own, so a
server that ignores SIGTERM is killed with everything it started, and nothing is orphaned.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e_depth_ros.model import triton_names as names

SERVE_VENV = Path(".cache") / "serve"  # ci/serve.sh creates it, relative to the repository


def serve_python(repository: Path) -> Path | None:
    """The server environment's interpreter: $E2E_DEPTH_SERVE_PYTHON, else
    ``<repository>/.cache/serve/bin/python`` (ci/serve.sh), else None."""
    given = os.environ.get("E2E_DEPTH_SERVE_PYTHON")
    candidate = Path(given) if given else repository / SERVE_VENV / "bin" / "python"
    return candidate if candidate.is_file() else None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 just now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def triton_metrics(url: str) -> dict[str, float]:
    """Triton's counters of the model at a metrics ``url`` (Prometheus text), e.g.
    nv_inference_count (frames) and nv_inference_exec_count (model calls)."""
    with urllib.request.urlopen(url, timeout=5.0) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nv_") and f'model="{names.MODEL}"' in line:
            name, value = line.split("{", 1)[0], line.rsplit(" ", 1)[1]
            values[name] = values.get(name, 0.0) + float(value)
    return values


@dataclass
class ServeProcess:
    """One ``e2e-depth serve`` on 127.0.0.1; ``start()``, then ``stop()`` (or a ``with``)."""

    python: Path
    depth_model: str | None
    normals_model: str | None
    repository: Path
    ports: tuple[int, int, int] = field(default_factory=lambda: tuple(free_ports(3)))
    extra: tuple[str, ...] = ()
    log_path: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.ports[1]}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}/metrics"

    def start(self, timeout: float = 180.0) -> ServeProcess:
        """Start the server and wait until its model answers ready (or raise, stopped)."""
        http, grpc, metrics = self.ports
        command = [str(self.python), "-m", "e2e_depth_ros.offline.cli", "serve",
                   "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
                   "--metrics-port", str(metrics), "--device", "cpu",
                   "--depth-model", self.depth_model or "none",
                   "--normals-model", self.normals_model or "none", *self.extra]
        env = dict(os.environ, PYTHONPATH=str(self.repository), HF_HUB_OFFLINE="1")
        env.pop("LD_LIBRARY_PATH", None)  # serve finds its own libpython
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True, cwd=self.repository)
        finally:
            if self.log_path:
                log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.stop()
                raise RuntimeError(f"e2e-depth serve did not become ready in {timeout:g} s "
                                   f"(exit code {code}); its log: {self.log_path}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        """Whether the model answers ready over HTTP."""
        url = f"{self.http_url}/v2/models/{names.MODEL}/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                return answer.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        return triton_metrics(self.metrics_url)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the server stops tritonserver itself), then SIGKILL to its session."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the session we started, children too
                proc.wait()
        try:
            os.killpg(proc.pid, 0)  # anything of its session still running?
        except ProcessLookupError:
            pass
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

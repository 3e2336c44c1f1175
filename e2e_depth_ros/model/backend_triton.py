"""The triton backend: a ``DepthModel`` whose inference runs on a Triton server.

The server is ``e2e-depth serve`` (names and tensors in ``triton_names``); this side needs
only ``tritonclient[http,grpc]`` (numpy 1.21 and numpy 2 both work), never torch. A call to
``predict`` is one request: the frame (or the batch of a multi-camera node) is sent once,
with the processing resolution, asking only for the outputs wanted; the server returns them
at the input's resolution.

Faults are this class's business, so a node keeps running: an unreachable server makes
``predict`` raise ``ModelServerError`` at once (no waiting on a dead socket) until the next
retry, whose delay doubles from ``RETRY_FIRST_S`` up to ``RETRY_MAX_S``; the first request
that succeeds resumes normal service. ``health()`` says how the server stands, for
diagnostics. A slow server costs at most ``timeout`` seconds per request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from e2e_depth_ros.core.depth_model import ItemPrediction
from e2e_depth_ros.core.input_checks import processing_size
from e2e_depth_ros.errors import InputImageError, ModelServerError
from e2e_depth_ros.model import triton_names as names

DEFAULT_URL = "grpc://127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 2.0
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 4.0
OK, WARN, ERROR = 0, 1, 2  # diagnostic levels of ``health()``
_PORTS = {"grpc": 8001, "http": 8000}


@dataclass(frozen=True)
class ServerAddress:
    """Where the server listens: protocol (grpc or http), host and port."""

    protocol: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> ServerAddress:
    """``grpc://HOST:PORT`` or ``http://HOST:PORT`` (default ports 8001, 8000)."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    protocol = parts.scheme or "grpc"
    if protocol not in _PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"triton_url must be grpc://HOST:PORT or http://HOST:PORT, got "
                         f"{url!r}")
    try:
        port = parts.port or _PORTS[protocol]
    except ValueError:
        raise ValueError(f"triton_url {url!r} has an invalid port") from None
    return ServerAddress(protocol, parts.hostname, port)


def _import(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as err:
        raise ValueError("backend triton needs tritonclient: pip install "
                         "\"tritonclient[http,grpc]\" (or e2e_depth_ros[triton])") from err
    return client


class TritonModel:
    """Depth and/or normals from ``e2e-depth serve`` at ``url`` (a ``DepthModel``).

    depth / normals: which outputs this client may ask for (a model disabled here is never
    requested, even if the server has it). timeout: seconds one request may take.
    Constructing never fails because the server is down; ``connect()`` does, for tools that
    should stop at once.
    """

    backend = "triton"
    precision = ""  # the server's; shown in its own log
    dtype = "float32"

    def __init__(self, url: str = DEFAULT_URL, *, depth: bool = True, normals: bool = True,
                 timeout: float = DEFAULT_TIMEOUT_S, processing_resolution: int = 768,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not depth and not normals:
            raise ValueError("at least one of depth and normals must be wanted")
        if not timeout > 0:
            raise ValueError(f"triton timeout must be > 0 s, got {timeout!r}")
        self.address = parse_url(url)
        self._client_module = _import(self.address.protocol)
        self.timeout = float(timeout)
        self.processing_resolution = processing_resolution
        self.wanted = {"depth": bool(depth), "normals": bool(normals)}
        self.device = self.backend_device = f"triton {self.address.url}"
        self._log = log or (lambda text: None)
        self._clock = clock
        self._local = threading.local()  # one client per thread (the http client needs it)
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._served: tuple[str, ...] | None = None  # outputs the server has; None: unknown
        self._max_batch = 0
        self._down_since: float | None = None
        self._reason = ""
        self._retry_at = 0.0
        self._delay = RETRY_FIRST_S
        try:
            self._refresh()
        except ModelServerError as err:
            self._went_down(err)

    # -- DepthModel ------------------------------------------------------------------------
    @property
    def model_names(self) -> dict[str, str | None]:
        """Each wanted task as ``<url>/e2e_depth:<output>``; None when off (or not served)."""
        served = self._served
        return {task: f"{self.address.url}/{names.MODEL}:{task}"
                if on and (served is None or task in served) else None
                for task, on in self.wanted.items()}

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        return processing_size(height, width, self.processing_resolution)

    def describe(self) -> str:
        return f"triton at {self.address.url} (model {names.MODEL})"

    def predict(self, rgb: np.ndarray, *, depth: bool = True,
                normals: bool = True) -> ItemPrediction:
        """One request for a uint8 RGB (H, W, 3) or equal-size batch (N, H, W, 3).

        Raises ModelServerError when the server is down (at once while waiting to retry),
        too slow (``timeout``) or refuses the request; InputImageError for a bad image.
        """
        batch = _checked(rgb)
        tasks = [t for t, on in (("depth", depth), ("normals", normals))
                 if on and self.wanted[t]]
        if not tasks:
            return ItemPrediction(None, None)
        self._wait_turn()
        try:
            if self._served is None:
                self._refresh()
            missing = [t for t in tasks if t not in self._served]
            if missing:
                raise ModelServerError(
                    f"the server at {self.address.url} serves no {' or '.join(missing)} "
                    f"model; start e2e-depth serve with --{missing[0]}-model, or disable "
                    f"{missing[0]} here")
            arrays = self._infer(batch, tasks)
        except ModelServerError as err:
            if err.__cause__ is not None and _unreachable(err.__cause__):
                self._went_down(err)
            raise
        self._came_back()
        single = rgb.ndim == 3
        out = {t: (arrays[t][0] if single else arrays[t]) if t in arrays else None
               for t in ("depth", "normals")}
        return ItemPrediction(out["depth"], out["normals"])

    # -- health ----------------------------------------------------------------------------
    def health(self) -> tuple[int, str]:
        """(level, text) for diagnostics: OK when the last request reached the server,
        ERROR while it is unreachable (with how long, why, and the next retry)."""
        with self._lock:
            if self._down_since is None:
                return OK, f"connected to {self.address.url}"
            now = self._clock()
            return ERROR, (f"model server {self.address.url} unreachable for "
                           f"{now - self._down_since:.0f} s ({self._reason}); retrying in "
                           f"{max(0.0, self._retry_at - now):.1f} s")

    def connect(self) -> None:
        """Reach the server now and read what it serves, or raise ModelServerError."""
        self._refresh()
        self._came_back()

    def close(self) -> None:
        """Close every connection this model opened."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                pass

    # -- inside ----------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            module = self._client_module
            if self.address.protocol == "http":
                client = module.InferenceServerClient(
                    self.address.target, connection_timeout=self.timeout,
                    network_timeout=self.timeout)
            else:
                client = module.InferenceServerClient(self.address.target)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, what: str, function: Callable[[], Any]) -> Any:
        """Run one client call; its failures become ModelServerError naming the server."""
        try:
            return function()
        except Exception as err:  # noqa: BLE001 - tritonclient raises several kinds
            text = " ".join(str(err).split()) or type(err).__name__
            if _timed_out(err):
                text = f"no answer within triton_timeout {self.timeout:g} s"
            raise ModelServerError(f"{what} at {self.address.url} failed: {text}") from err

    def _refresh(self) -> None:
        """Read the model's outputs and largest batch from the server."""
        client = self._client()
        if self.address.protocol == "grpc":
            meta = self._call("model metadata", lambda: client.get_model_metadata(
                names.MODEL, as_json=True, client_timeout=self.timeout))
            config = self._call("model config", lambda: client.get_model_config(
                names.MODEL, as_json=True, client_timeout=self.timeout))["config"]
        else:
            meta = self._call("model metadata", lambda: client.get_model_metadata(names.MODEL))
            config = self._call("model config", lambda: client.get_model_config(names.MODEL))
        self._served = tuple(o["name"] for o in meta.get("outputs", ())
                             if o["name"] in names.OUTPUTS)
        self._max_batch = int(config.get("max_batch_size") or 0)

    def _infer(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        """One request per ``max_batch`` frames (one request for every batch that fits)."""
        step = self._max_batch or len(batch)
        parts = [self._infer_one(batch[i:i + step], tasks) for i in range(0, len(batch), step)]
        return {t: np.concatenate([p[t] for p in parts]) if len(parts) > 1 else parts[0][t]
                for t in tasks}

    def _infer_one(self, batch: np.ndarray, tasks: list[str]) -> dict[str, np.ndarray]:
        module, client = self._client_module, self._client()
        image = module.InferInput(names.IMAGE, list(batch.shape), "UINT8")
        resolution = module.InferInput(names.RESOLUTION, [len(batch), 1], "INT32")
        if self.address.protocol == "http":
            image.set_data_from_numpy(batch, binary_data=True)
            resolution.set_data_from_numpy(self._resolutions(len(batch)), binary_data=True)
            outputs = [module.InferRequestedOutput(t, binary_data=True) for t in tasks]
            extra: dict[str, Any] = {}
        else:
            image.set_data_from_numpy(batch)
            resolution.set_data_from_numpy(self._resolutions(len(batch)))
            outputs = [module.InferRequestedOutput(t) for t in tasks]
            extra = {"client_timeout": self.timeout}
        result = self._call("inference", lambda: client.infer(
            names.MODEL, [image, resolution], outputs=outputs, **extra))
        arrays = {t: result.as_numpy(t) for t in tasks}
        want = {"depth": batch.shape[:3], "normals": (*batch.shape[:3], 3)}
        for task, array in arrays.items():
            if array is None or array.shape != want[task] or array.dtype != np.float32:
                got = None if array is None else (array.dtype, array.shape)
                raise ModelServerError(f"the server at {self.address.url} returned {task} "
                                       f"{got}, expected float32 {want[task]}")
        return arrays

    def _resolutions(self, n: int) -> np.ndarray:
        return np.full((n, 1), int(self.processing_resolution), np.int32)

    def _wait_turn(self) -> None:
        """While the server is down, fail at once until the retry is due."""
        with self._lock:
            if self._down_since is None or self._clock() >= self._retry_at:
                return
            reason, wait = self._reason, self._retry_at - self._clock()
        raise ModelServerError(f"model server {self.address.url} unreachable ({reason}); "
                               f"next try in {wait:.1f} s")

    def _went_down(self, err: ModelServerError) -> None:
        with self._lock:
            now = self._clock()
            first = self._down_since is None
            if first:
                self._down_since, self._delay = now, RETRY_FIRST_S
            else:
                self._delay = min(self._delay * 2.0, RETRY_MAX_S)
            self._reason = _short(err)
            self._retry_at = now + self._delay
            self._served = None  # a restarted server may serve other models
        if first:
            self._log(f"model server {self.address.url} unreachable: {self._reason}; "
                      f"retrying with backoff up to {RETRY_MAX_S:g} s")

    def _came_back(self) -> None:
        with self._lock:
            was = self._down_since
            self._down_since, self._delay, self._reason = None, RETRY_FIRST_S, ""
        if was is not None:
            self._log(f"model server {self.address.url} reachable again after "
                      f"{self._clock() - was:.1f} s")


def _checked(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 of a frame or batch, or InputImageError naming what is wrong."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise InputImageError(f"image must be a uint8 numpy array, got "
                              f"{getattr(rgb, 'dtype', type(rgb).__name__)}")
    if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3 or 0 in rgb.shape:
        raise InputImageError(f"image must be (H, W, 3) or (N, H, W, 3) RGB, got shape "
                              f"{rgb.shape}")
    return np.ascontiguousarray(rgb if rgb.ndim == 4 else rgb[None])


def _timed_out(err: Exception) -> bool:
    text = str(err).lower()
    return "deadline" in text or "timed out" in text or "timeout" in type(err).__name__.lower()


def _unreachable(err: BaseException) -> bool:
    """Whether a client error means the server is not there (not: it refused or was slow)."""
    if _timed_out(err):  # type: ignore[arg-type]
        return False
    status = getattr(err, "status", lambda: None)
    code = str(status() if callable(status) else status or "")
    text = f"{code} {err}".lower()
    return ("unavailable" in text or "connect" in text or "refused" in text
            or "not found" in text or "not ready" in text or "unknown model" in text
            or isinstance(err, (ConnectionError, OSError)))


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 160 else text[:157] + "..."

"""``e2e-depth serve``: the depth and normals models behind a Triton Inference Server.

    e2e-depth serve [--host 127.0.0.1] [--http-port 8000] [--grpc-port 8001]
                    [--metrics-port 8002] [--max-batch 8] [--max-queue-delay-us 2000]
                    [--depth-model M] [--normals-model M] [--backend B] [--precision P]
                    [--device D] [--processing-resolution PX]

PyTriton starts a real ``tritonserver`` child and binds one model (``model.triton_names``)
to the local ``Estimator``; Triton's dynamic batcher hands several queued requests to one
call, and equal-size frames run through the model as one batch. Needs the ``serve`` extra
(``nvidia-pytriton``, which pins numpy < 2: give the server its own environment).

The process owns its child: SIGTERM and SIGINT stop ``tritonserver`` and the Python backend
before exiting (PyTriton stops only on KeyboardInterrupt, and a non-interactive shell's
background job ignores SIGINT, so both signals are turned into one). With a shared-library
Python (pyenv's, a venv made from it) the backend stub is pointed at this interpreter's
libpython, so no LD_LIBRARY_PATH is needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from e2e_depth_ros.model import triton_names as names
from e2e_depth_ros.offline.cli import (PROG, OneLineParser, _model_arg,
                                       processing_resolution_arg, tiny_notes)

DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000  # how long the batcher waits for company once a request waits
_LOG = logging.getLogger("e2e_depth_ros.serve")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} serve", description="Serve the depth and normals models "
                      "through Triton (PyTriton) with dynamic batching; stop with SIGTERM or "
                      "Ctrl-C. Model 'e2e_depth': input image (uint8 [N, H, W, 3]) and "
                      "optional processing_resolution (int32 [N, 1]); outputs depth "
                      "(float32 [N, H, W]) and normals (float32 [N, H, W, 3]).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address every port binds to (default: %(default)s; 0.0.0.0 for "
                   "robots on the network)")
    p.add_argument("--http-port", type=_port, default=8000, metavar="PORT")
    p.add_argument("--grpc-port", type=_port, default=8001, metavar="PORT")
    p.add_argument("--metrics-port", type=_port, default=8002, metavar="PORT",
                   help="Prometheus metrics (nv_inference_count, nv_inference_exec_count)")
    p.add_argument("--max-batch", type=_positive, default=DEFAULT_MAX_BATCH, metavar="N",
                   help="most frames in one model call, and in one request "
                   "(default: %(default)s)")
    p.add_argument("--max-queue-delay-us", type=_non_negative, default=DEFAULT_QUEUE_DELAY_US,
                   metavar="US", help="how long a request may wait for others to batch "
                   "with (default: %(default)s)")
    p.add_argument("--depth-model", default="GonzaloMG/marigold-e2e-ft-depth", metavar="M",
                   help="hub id or local folder; '' or 'none' disables (default: %(default)s)")
    p.add_argument("--normals-model", default="GonzaloMG/marigold-e2e-ft-normals",
                   metavar="M", help="hub id or local folder; '' or 'none' disables "
                   "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--backend", default="torch", choices=["torch", "openvino", "onnxruntime"])
    p.add_argument("--precision", default="auto", help="auto (fp16 on GPUs, fp32 on CPUs), "
                   "fp32, fp16 or bf16")
    p.add_argument("--processing-resolution", type=processing_resolution_arg, default=768,
                   metavar="PX", help="for requests that do not send processing_resolution "
                   "(default: %(default)s)")
    return p


def _port(text: str) -> int:
    value = _non_negative(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class BatchedModel:
    """The inference callable: Triton's requests in, one response dict per request out.

    Requests whose frames have the same size and processing resolution run through the
    estimator as one batch; each response holds only the outputs its request asked for.
    """

    def __init__(self, estimator: Any, default_resolution: int) -> None:
        self.estimator = estimator
        self.default_resolution = default_resolution
        self.tasks = [task for task in names.OUTPUTS if estimator.model_names.get(task)]

    def __call__(self, requests: list) -> list[dict[str, np.ndarray]]:
        groups: dict[tuple[int, int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self._key(request), []).append(index)
        responses: list[dict[str, np.ndarray]] = [{} for _ in requests]
        for (_h, _w, resolution), members in groups.items():
            wanted = set()
            for i in members:
                wanted.update(self._wanted(requests[i]))
            images = np.concatenate([requests[i][names.IMAGE] for i in members])  # [N,H,W,3]
            self.estimator.processing_resolution = resolution
            prediction = self.estimator.predict(images, depth="depth" in wanted,
                                                normals="normals" in wanted)
            start = 0
            for i in members:
                n = len(requests[i][names.IMAGE])
                for task in self._wanted(requests[i]):
                    array = getattr(prediction, task)[start:start + n]
                    responses[i][task] = np.ascontiguousarray(array, dtype=np.float32)
                start += n
        return responses

    def _key(self, request) -> tuple[int, int, int]:
        """(H, W, processing resolution) of a request, checked: frames of one key batch."""
        image = request[names.IMAGE]
        if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"input {names.IMAGE} must be uint8 [N, H, W, 3], got "
                             f"{image.dtype} {list(image.shape)}")
        resolution = self.default_resolution
        if names.RESOLUTION in request.data:
            values = np.unique(request[names.RESOLUTION])
            if len(values) != 1:
                raise ValueError(f"one {names.RESOLUTION} per request, got {values.tolist()}")
            resolution = int(values[0])
        from e2e_depth_ros.core.input_checks import processing_resolution_problem

        problem = processing_resolution_problem(resolution)
        if problem:
            raise ValueError(problem)
        return image.shape[1], image.shape[2], resolution

    def _wanted(self, request) -> list[str]:
        asked = request.requested_output_names
        return [task for task in self.tasks if not asked or task in asked]


def bind(triton: Any, estimator: Any, *, max_batch: int, queue_delay_us: int,
         default_resolution: int) -> BatchedModel:
    """Bind the estimator to ``triton`` as ``names.MODEL``; only its loaded models' outputs."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    model = BatchedModel(estimator, default_resolution)
    shapes = {"depth": (-1, -1), "normals": (-1, -1, 3)}
    triton.bind(
        model_name=names.MODEL,
        infer_func=model,
        inputs=[Tensor(name=names.IMAGE, dtype=np.uint8, shape=(-1, -1, 3)),
                Tensor(name=names.RESOLUTION, dtype=np.int32, shape=(1,), optional=True)],
        outputs=[Tensor(name=task, dtype=np.float32, shape=shapes[task])
                 for task in model.tasks],
        config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(
            max_queue_delay_microseconds=queue_delay_us)),
        strict=False,
    )
    return model


def find_shared_libpython() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH for the children.

    A shared-library Python (pyenv builds with --enable-shared) links its libpython from
    LIBDIR; Triton's Python backend stub would otherwise find the system's libpython of the
    same version, and fail at model load (``'_thread.RLock' object has no attribute
    '_recursion_count'``). PyTriton passes this process's environment to tritonserver.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir:
        return
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt (PyTriton's only way to stop cleanly)."""

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from e2e_depth_ros.errors import E2EDepthError

    logging.basicConfig(level=logging.INFO, format=f"{PROG} serve: %(message)s")
    try:
        with interrupt_on_signals():
            return _serve(args)
    except (E2EDepthError, ValueError, OSError) as err:
        print(f"{PROG} serve: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during start-up: what was started is stopped on the way out
        print(f"{PROG} serve: interrupted", file=sys.stderr)
        return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        from pytriton.triton import Triton, TritonConfig
    except ImportError as err:
        raise ValueError('serve needs PyTriton: pip install "e2e_depth_ros[serve]" in an '
                         "environment of its own (it pins numpy < 2)") from err
    depth, normals = _model_arg(args.depth_model), _model_arg(args.normals_model)
    if depth is None and normals is None:
        raise ValueError("both --depth-model and --normals-model are disabled; enable one")
    from e2e_depth_ros.model.estimator import Estimator, quiet_model_libraries

    quiet_model_libraries()
    estimator = Estimator(depth, normals, device=args.device, backend=args.backend,
                          precision=args.precision,
                          processing_resolution=args.processing_resolution, log=_LOG.info)
    for note in tiny_notes(depth, normals, prog=f"{PROG} serve"):
        print(note, file=sys.stderr)
    estimator.warm_up()  # GPUs: no stall in the first requests
    find_shared_libpython()
    config = TritonConfig(http_address=args.host, http_port=args.http_port,
                          grpc_address=args.host, grpc_port=args.grpc_port,
                          metrics_address=args.host, metrics_port=args.metrics_port,
                          allow_metrics=True)
    triton = Triton(config=config)
    try:
        model = bind(triton, estimator, max_batch=args.max_batch,
                     queue_delay_us=args.max_queue_delay_us,
                     default_resolution=args.processing_resolution)
        triton.run()  # starts tritonserver, loads the model, waits until it is ready
        _LOG.info(f"ready: model {names.MODEL} ({', '.join(model.tasks)}) on "
                  f"{estimator.describe()}; http {args.host}:{args.http_port}, grpc "
                  f"{args.host}:{args.grpc_port}, metrics {args.host}:{args.metrics_port}")
        triton.serve()  # returns on KeyboardInterrupt (our signals) or when Triton dies
    finally:
        triton.stop()  # idempotent: tritonserver and the backend stub are gone after this
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

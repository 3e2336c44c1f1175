"""The node's model from its parameters: a local ``Estimator`` (torch, OpenVINO, ONNX
Runtime) or a client of a Triton server, both behind the ``DepthModel`` protocol.

Imports are lazy: a robot that streams to a Triton server needs neither torch nor diffusers.
"""

from __future__ import annotations

from typing import Any, Callable

from e2e_depth_ros.core.depth_model import DepthModel
from e2e_depth_ros.model.model_args import model_or_none


def load_model(p: dict[str, Any], *, info: Callable[[str], Any],
               warning: Callable[[str], Any]) -> DepthModel:
    """The model the parameters ``p`` name, loaded and warmed up (local backends)."""
    depth, normals = model_or_none(p["depth_model"]), model_or_none(p["normals_model"])
    if p["backend"] == "triton":  # no weights here; the client retries an absent server
        from e2e_depth_ros.model.backend_triton import TritonModel

        return TritonModel(p["triton_url"], timeout=p["triton_timeout"],
                           depth=depth is not None, normals=normals is not None,
                           processing_resolution=p["processing_resolution"], log=warning)
    from e2e_depth_ros.model.estimator import Estimator
    from e2e_depth_ros.model.quiet import quiet_model_libraries

    quiet_model_libraries()  # no loading bars in a robot's log
    info(f"loading models: backend={p['backend']} device={p['device']} "
         f"precision={p['precision']} dtype={p['dtype']}")
    estimator = Estimator(depth, normals, device=p["device"], dtype=p["dtype"],
                          processing_resolution=p["processing_resolution"],
                          normals_convention=p["normals_convention"], compile=p["compile"],
                          backend=p["backend"], precision=p["precision"], log=info)
    estimator.warm_up()  # GPU/compiled/OpenVINO: no stall in the first frames after ready
    return estimator

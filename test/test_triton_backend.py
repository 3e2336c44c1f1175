"""The triton backend against a real ``e2e-depth serve`` (PyTriton's tritonserver) on
127.0.0.1: the same numbers as local inference, one request per frame or batch, only the
outputs asked for, batching across clients, and an absent server."""

import threading
import time

import numpy as np
import pytest

from e2e_depth_ros.errors import ModelServerError
from e2e_depth_ros.offline.serve_process import free_ports
from rig import random_image

pytestmark = [pytest.mark.triton, pytest.mark.needs_torch]
TOLERANCE = 1e-4


def model(url, **kwargs):
    from e2e_depth_ros.model.backend_triton import TritonModel

    kwargs.setdefault("processing_resolution", 0)
    kwargs.setdefault("timeout", 60.0)
    return TritonModel(url, **kwargs)


def test_parse_url_takes_grpc_and_http_and_names_a_bad_url():
    from e2e_depth_ros.model.backend_triton import parse_url

    assert parse_url("grpc://10.0.0.2:9001").target == "10.0.0.2:9001"
    assert parse_url("http://server").port == 8000
    assert parse_url("robot-gpu:8101").protocol == "grpc"
    with pytest.raises(ValueError, match="grpc://HOST:PORT or http://HOST:PORT, got 'ftp://x'"):
        parse_url("ftp://x")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_depth_and_normals_through_triton_equal_local_inference(triton_server, estimator,
                                                                protocol):
    rgb = random_image(3)
    local = estimator.predict(rgb)
    remote = model(getattr(triton_server, f"{protocol}_url")).predict(rgb)
    assert remote.depth.shape == (48, 64) and remote.normals.shape == (48, 64, 3)
    assert np.abs(remote.depth - local.depth).max() <= TOLERANCE
    assert np.abs(remote.normals - local.normals).max() <= TOLERANCE


def test_the_client_chooses_the_processing_resolution_per_request(triton_server, estimator):
    rgb = random_image(4, shape=(60, 80))
    client = model(triton_server.grpc_url, processing_resolution=32)
    estimator.processing_resolution = 32
    try:
        local = estimator.predict(rgb)
    finally:
        estimator.processing_resolution = 0
    remote = client.predict(rgb)
    assert remote.depth.shape == (60, 80)  # back at the input's size
    assert np.abs(remote.depth - local.depth).max() <= TOLERANCE


def test_one_request_carries_a_batch_and_returns_only_the_outputs_asked_for(triton_server):
    client = model(triton_server.grpc_url)
    batch = np.stack([random_image(seed) for seed in range(3)])
    before = triton_server.metrics()
    depth_only = client.predict(batch, normals=False)
    after = triton_server.metrics()
    assert depth_only.depth.shape == (3, 48, 64) and depth_only.normals is None
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 1
    assert after["nv_inference_count"] - before["nv_inference_count"] == 3


def test_four_clients_at_once_are_batched_into_fewer_model_calls(triton_server):
    clients = [model(triton_server.grpc_url) for _ in range(4)]
    rgb = random_image(5)
    before = triton_server.metrics()

    def run(client):
        for _ in range(6):
            client.predict(rgb, normals=False)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = triton_server.metrics()
    inferences = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert inferences == 24
    assert executions < inferences


def test_a_server_that_is_not_there_is_reported_and_retried_with_backoff(serve_python):
    from e2e_depth_ros.model.backend_triton import ERROR, RETRY_FIRST_S

    now = [100.0]
    said = []
    client = model(f"grpc://127.0.0.1:{free_ports(1)[0]}", timeout=2.0, log=said.append,
                   clock=lambda: now[0])  # constructing never fails: the node starts
    level, text = client.health()
    assert level == ERROR and "unreachable" in text and "retrying in" in text
    assert len(said) == 1 and "retrying with backoff" in said[0]
    started = time.monotonic()
    with pytest.raises(ModelServerError, match="unreachable .*next try in"):
        client.predict(random_image())  # waiting for the retry: fails at once
    assert time.monotonic() - started < 0.1
    delays = []
    for _ in range(6):  # each retry that fails doubles the wait, up to the cap
        now[0] = client._retry_at
        with pytest.raises(ModelServerError, match="failed"):
            client.predict(random_image())
        delays.append(client._retry_at - now[0])
    assert delays[0] == 2 * RETRY_FIRST_S and delays == sorted(delays) and delays[-1] == 4.0


def test_a_request_slower_than_the_timeout_fails_without_marking_the_server_down(
        triton_server):
    from e2e_depth_ros.model.backend_triton import OK

    client = model(triton_server.grpc_url, timeout=0.05, processing_resolution=512)
    with pytest.raises(ModelServerError, match="no answer within triton_timeout 0.05 s"):
        client.predict(random_image(6, shape=(384, 512)))
    assert client.health()[0] == OK  # slow is not gone: no backoff


def test_predict_through_triton_writes_the_same_npy_files_as_local_predict(
        triton_server, tiny_depth, tiny_normals, tmp_path):
    import cv2

    from e2e_depth_ros.offline.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        cv2.imwrite(str(photos / f"p{seed}.png"), random_image(seed)[..., ::-1])
    common = ["--processing-resolution", "0", "--quiet", "--depth-model", tiny_depth,
              "--normals-model", tiny_normals]
    assert main(["predict", str(photos), "--out", str(tmp_path / "local"), "--device", "cpu",
                 *common]) == 0
    assert main(["predict", str(photos), "--out", str(tmp_path / "remote"), "--backend",
                 "triton", "--triton-url", triton_server.grpc_url, *common]) == 0
    local = sorted((tmp_path / "local").glob("*.npy"))
    assert [p.name for p in local] == sorted(p.name for p in (tmp_path / "remote").glob("*.npy"))
    assert len(local) == 4
    worst = max(np.abs(np.load(p) - np.load(tmp_path / "remote" / p.name)).max() for p in local)
    print(f"predict via triton vs local: {len(local)} .npy files, max |diff| {worst:.2e}")
    assert worst <= TOLERANCE

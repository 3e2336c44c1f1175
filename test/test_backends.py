"""Export and the openvino / onnxruntime backends against the torch backend (tiny models).

Tolerances. Tiny random-weight networks are chaotic (float-level differences grow ~1e4x by
the output), so "the same result" means: fp32 backends within 1e-4 of torch fp32 in depth
(max abs, [0, 1] depth after the affine map) and 1e-3 per normal component (normalising
short decoded vectors amplifies noise), where a logic error (a missing constant, a wrong
stage, a skipped renormalisation) gives > 1e-2. bf16 keeps 8 mantissa bits (~4e-3 per op):
within 5e-2 in depth and a 10 degree mean normal angle on these chaotic nets, and at least
1e-4 away from fp32 (the precision really changed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.needs_torch

from e2e_depth_ros.errors import CheckpointError, InputImageError  # noqa: E402
from e2e_depth_ros.model.stages import MANIFEST, Manifest  # noqa: E402

F32_DEPTH, F32_NORMALS = 1e-4, 1e-3
BF16_DEPTH, BF16_ANGLE_DEG = 5e-2, 10.0


def _estimator(*args, **kwargs):
    from e2e_depth_ros.model.estimator import Estimator

    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("processing_resolution", 0)
    return Estimator(*args, **kwargs)


def _has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_depth, tiny_normals) -> Path:
    """A cache holding dynamic ONNX exports of both tiny models (what a backend converts)."""
    pytest.importorskip("onnx")
    from e2e_depth_ros.model.export import export_folder_for

    folder = tmp_path_factory.mktemp("cache")
    for model, task in ((tiny_depth, "depth"), (tiny_normals, "normals")):
        export_folder_for(model, "onnx", task, folder, log=lambda line: None)
    return folder


@pytest.fixture(scope="module")
def exports(cache, tiny_depth, tiny_normals) -> dict[str, str]:
    from e2e_depth_ros.model.export import export_folder_for

    return {task: str(export_folder_for(model, "onnx", task, cache))
            for model, task in ((tiny_depth, "depth"), (tiny_normals, "normals"))}


@pytest.fixture(scope="module")
def reference(tiny_depth, tiny_normals, image):
    est = _estimator(tiny_depth, tiny_normals)
    resized = _estimator(tiny_depth, tiny_normals, processing_resolution=32)
    return {0: est.predict(image), 32: resized.predict(image)}


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


# -- export ----------------------------------------------------------------------------------
def test_export_writes_three_stages_and_a_manifest(exports, tiny_depth):
    manifest = Manifest.load(exports["depth"])
    assert manifest.format == "onnx" and manifest.task == "depth" and manifest.size is None
    assert manifest.model == tiny_depth and manifest.timestep == 999
    assert manifest.scaling_factor == pytest.approx(0.18215)
    assert manifest.x0_coefficient == pytest.approx(-np.sqrt(1 - 0.0046600), abs=1e-4)
    assert sorted(manifest.files) == ["decoder", "encoder", "unet"]
    # one VAE for both models (same seed): the digest lets backends share the encode
    assert manifest.vae_digest == Manifest.load(exports["normals"]).vae_digest


def test_an_export_loads_and_runs_without_diffusers(exports, image, tmp_path):
    pytest.importorskip("onnxruntime")
    np.save(tmp_path / "image.npy", image)
    code = (
        "import sys, numpy as np\n"
        "from e2e_depth_ros.model.estimator import Estimator\n"
        f"est = Estimator({exports['depth']!r}, None, device='cpu', processing_resolution=0,"
        " backend='onnxruntime', cache_dir='')\n"
        f"pred = est.predict(np.load({str(tmp_path / 'image.npy')!r}))\n"
        "assert pred.depth.shape == (48, 64)\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules, 'loaded'\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_export_refuses_a_folder_that_is_not_empty(tiny_depth, tmp_path, capsys):
    from e2e_depth_ros.model.export import main

    (tmp_path / "keep.txt").write_text("mine")
    assert main([tiny_depth, str(tmp_path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite replaces only an earlier export" in err
    assert main([tiny_depth, str(tmp_path), "--format", "onnx", "--overwrite"]) == 2
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_re_exporting_as_openvino_with_overwrite_replaces_the_whole_folder(
        tiny_depth, tmp_path, capsys):
    pytest.importorskip("openvino")
    from e2e_depth_ros.model.export import main

    out = tmp_path / "export"
    assert main([tiny_depth, str(out), "--format", "onnx"]) == 0
    assert main([tiny_depth, str(out), "--format", "openvino"]) == 2
    assert "holds an earlier export; choose a new folder or pass --overwrite" in (
        capsys.readouterr().err)
    assert main([tiny_depth, str(out), "--format", "openvino", "--overwrite"]) == 0
    assert not list(out.glob("*.onnx*")), "stale ONNX files of the earlier export stayed"
    assert Manifest.load(out).format == "openvino"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def _full_disk(path, out, stage):
    """_place_onnx on a full disk: part of the file written, then ENOSPC."""
    import errno

    (out / f"{stage}.onnx").write_bytes(b"\0" * 1024)
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_nothing_partial_and_the_rerun_needs_no_overwrite(
        tiny_depth, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")  # the export writes ONNX
    import e2e_depth_ros.model.export as export

    out = tmp_path / "export"
    with monkeypatch.context() as patch:
        patch.setattr(export, "_place_onnx", _full_disk)
        assert export.main([tiny_depth, str(out), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert f"nothing was written, {out} is as it was" in err
    assert list(tmp_path.iterdir()) == []  # no partial encoder.onnx, no staging folder
    assert export.main([tiny_depth, str(out), "--format", "onnx"]) == 0


def test_a_failed_overwrite_keeps_the_earlier_export(tiny_depth, tmp_path, monkeypatch):
    pytest.importorskip("onnx")  # the export writes ONNX
    import e2e_depth_ros.model.export as export

    out = tmp_path / "export"
    export.export_model(tiny_depth, out, fmt="onnx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(export, "_place_onnx", _full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        export.export_model(tiny_depth, out, fmt="onnx", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert Manifest.load(out).format == "onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_ctrl_c_during_export_is_one_line_exit_130_and_leaves_nothing(
        tiny_depth, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")  # the export writes ONNX
    import e2e_depth_ros.model.export as export

    def interrupted(path, out, stage):
        (out / f"{stage}.onnx").write_bytes(b"\0")
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_place_onnx", interrupted)
    out = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt):  # the library cleans up and lets it through
        export.export_model(tiny_depth, out, fmt="onnx")
    assert list(tmp_path.iterdir()) == []
    assert export.main([tiny_depth, str(out), "--format", "onnx"]) == 130
    err = capsys.readouterr().err
    assert err == f"e2e-depth export: interrupted; nothing was written to {out}\n"
    assert list(tmp_path.iterdir()) == []


def test_export_judges_a_normals_checkpoint_in_a_neutral_folder_from_its_files(
        tiny_normals, tmp_path, capsys):
    pytest.importorskip("onnx")  # the export writes ONNX
    import shutil

    from e2e_depth_ros.model.export import main

    model = shutil.copytree(tiny_normals, tmp_path / "model")  # the name says nothing
    assert main([str(model), str(tmp_path / "out"), "--format", "onnx"]) == 0
    manifest = Manifest.load(tmp_path / "out")
    assert (manifest.task, manifest.task_evidence) == (
        "normals", "its README.md says task: normals")
    assert "wrote onnx normals stages" in capsys.readouterr().out


def test_export_refuses_a_task_its_files_contradict_and_a_task_nothing_says(
        tiny_normals, tmp_path):
    import shutil

    from e2e_depth_ros.model.export import judge_task

    model = str(shutil.copytree(tiny_normals, tmp_path / "model"))
    with pytest.raises(ValueError, match=r"--task depth, but .* is a normals checkpoint \(its "
                       r"README.md says task: normals\); drop --task"):
        judge_task(model, "depth")
    silent = tmp_path / "run-7"
    silent.mkdir()
    with pytest.raises(ValueError, match="neither its files nor its name say .* pass --task"):
        judge_task(str(silent))
    assert judge_task(str(silent), "normals") == ("normals", "given as --task normals")


@pytest.mark.parametrize("size, match", [("384", "HxW"), ("4x640", "at least 8")])
def test_export_refuses_a_bad_size(tiny_depth, tmp_path, capsys, size, match):
    from e2e_depth_ros.model.export import main

    assert main([tiny_depth, str(tmp_path / "out"), "--size", size]) == 2
    assert match in capsys.readouterr().err


def test_manifest_missing_a_stage_file_is_a_checkpoint_error(exports, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exports["depth"], broken)
    (broken / "unet.onnx").unlink()
    with pytest.raises(CheckpointError, match="unet stage file"):
        Manifest.load(broken)


# -- onnxruntime -------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [0, 32])
def test_onnxruntime_fp32_matches_torch_fp32(cache, tiny_depth, tiny_normals, image,
                                             reference, resolution):
    pytest.importorskip("onnxruntime")
    # the checkpoints themselves: converted once into the cache, reused here
    est = _estimator(tiny_depth, tiny_normals, backend="onnxruntime", cache_dir=str(cache),
                     processing_resolution=resolution)
    assert est.describe() == "onnxruntime on CPU (fp32)" and est.shared_vae
    pred, ref = est.predict(image), reference[resolution]
    np.testing.assert_allclose(pred.depth, ref.depth, atol=F32_DEPTH)
    np.testing.assert_allclose(pred.normals, ref.normals, atol=F32_NORMALS)


def test_providers_are_tried_in_the_order_tensorrt_cuda_cpu():
    from e2e_depth_ros.model.backend_onnxruntime import choose_providers

    installed = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers("auto", installed)[0] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cuda:1", installed) == (
        ["TensorrtExecutionProvider", "CUDAExecutionProvider"], 1)
    assert choose_providers("cpu", installed)[0] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(precision="fp16"), "fp16 with backend onnxruntime needs a GPU provider"),
    (dict(precision="bf16"), "bf16 is not offered by backend onnxruntime"),
    (dict(device="cuda"), "needs the TensorRT or CUDA provider"),
    (dict(device="tpu"), "device must be auto, cpu, cuda"),
    (dict(compile=True), "compile and cuda_graphs are torch options"),
])
def test_onnxruntime_refusals(exports, kwargs, match):
    ort = pytest.importorskip("onnxruntime")
    if kwargs.get("device") == "cuda" and "CUDAExecutionProvider" in \
            ort.get_available_providers():
        pytest.skip("a CUDA provider is installed here")
    kwargs.setdefault("device", "cpu")
    with pytest.raises(ValueError, match=match):
        _estimator(exports["depth"], None, backend="onnxruntime", **kwargs)


def test_an_openvino_export_is_refused_by_onnxruntime(tmp_path, exports):
    pytest.importorskip("onnxruntime")
    import shutil

    folder = tmp_path / "ir"
    shutil.copytree(exports["depth"], folder)
    manifest = Manifest.load(folder)
    Manifest(**{**manifest.__dict__, "format": "openvino"}).save(folder)
    with pytest.raises(CheckpointError, match="a openvino export"):
        _estimator(str(folder), None, backend="onnxruntime")


# -- openvino --------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [0, 32])
def test_openvino_fp32_matches_torch_fp32(exports, image, reference, tmp_path, resolution):
    pytest.importorskip("openvino")
    est = _estimator(exports["depth"], exports["normals"], backend="openvino",
                     precision="fp32", cache_dir=str(tmp_path), processing_resolution=resolution)
    assert est.describe() == "openvino on CPU (fp32)" and est.shared_vae
    pred, ref = est.predict(image), reference[resolution]
    np.testing.assert_allclose(pred.depth, ref.depth, atol=F32_DEPTH)
    np.testing.assert_allclose(pred.normals, ref.normals, atol=F32_NORMALS)


def test_openvino_bf16_is_close_to_torch_fp32_but_not_equal(exports, image, reference,
                                                            tmp_path):
    pytest.importorskip("openvino")
    if not _has_bf16():
        pytest.skip("this CPU has no bf16")
    est = _estimator(exports["depth"], exports["normals"], backend="openvino",
                     precision="bf16", cache_dir=str(tmp_path))
    pred, ref = est.predict(image), reference[0]
    diff = np.abs(pred.depth - ref.depth).max()
    assert 1e-4 < diff < BF16_DEPTH
    assert _angle_deg(pred.normals, ref.normals).mean() < BF16_ANGLE_DEG


def test_openvino_compiled_models_are_cached_and_reused_on_restart(exports, image, tmp_path):
    pytest.importorskip("openvino")
    cache_dir = tmp_path / "cache"

    def construct_and_run():
        start = time.perf_counter()
        est = _estimator(exports["depth"], None, backend="openvino", cache_dir=str(cache_dir))
        est.predict(image)  # compiles this shape, or imports it from the cache
        return time.perf_counter() - start

    first = construct_and_run()
    blobs = {p: p.stat().st_mtime_ns for p in (cache_dir / "openvino").rglob("*.blob")}
    assert len(blobs) == 3  # encoder, UNet, decoder at this shape
    second = construct_and_run()
    after = {p: p.stat().st_mtime_ns for p in (cache_dir / "openvino").rglob("*.blob")}
    assert after == blobs  # read back, not compiled and written again
    print(f"first construction + frame {first:.2f} s, from cache {second:.2f} s")


def test_one_cache_serves_fp32_and_bf16_runs_without_mixing_them(
        exports, image, reference, tmp_path):
    # OpenVINO's own cache key ignores the precision hint: a bf16 run after an fp32 one in
    # a shared folder loaded the fp32 blob (NaN depth; a crash at real size), and the
    # other way round ran bf16 silently. Each precision gets its own folder.
    pytest.importorskip("openvino")
    if not _has_bf16():
        pytest.skip("this CPU has no bf16")
    shared = str(tmp_path / "cache")
    for precision in ("fp32", "bf16", "fp32"):
        est = _estimator(exports["depth"], None, backend="openvino", precision=precision,
                         cache_dir=shared)
        diff = np.abs(est.predict(image, normals=False).depth - reference[0].depth).max()
        if precision == "fp32":
            assert diff <= F32_DEPTH, diff
        else:
            assert 1e-4 < diff < BF16_DEPTH, diff
    folders = sorted(p.name for p in (tmp_path / "cache" / "openvino").iterdir())
    assert folders == ["CPU-bf16-t0", "CPU-fp32-t0"]


def test_a_checkpoint_is_converted_once_then_loaded_from_the_cache(
        cache, tiny_depth, monkeypatch):
    pytest.importorskip("onnxruntime")
    import e2e_depth_ros.model.export as export

    def refuse(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the export")

    monkeypatch.setattr(export, "export_model", refuse)
    est = _estimator(tiny_depth, None, backend="onnxruntime", cache_dir=str(cache))
    assert est.depth.folder.parent == cache / "exports"


def test_static_openvino_export_runs_its_size_and_refuses_others(tiny_depth, tmp_path,
                                                                 image, reference):
    pytest.importorskip("openvino")
    from e2e_depth_ros.model.export import main

    out = tmp_path / "static"
    assert main([tiny_depth, str(out), "--format", "openvino", "--size", "48x64"]) == 0
    assert (out / "unet.xml").is_file() and (out / MANIFEST).is_file()
    assert Manifest.load(out).size == (48, 64)
    est = _estimator(str(out), None, backend="openvino", cache_dir="")
    np.testing.assert_allclose(est.predict(image).depth, reference[0].depth, atol=F32_DEPTH)
    batch = est.predict(np.stack([image, image]))  # a static export has batch 1: one by one
    np.testing.assert_allclose(batch.depth[1], reference[0].depth, atol=F32_DEPTH)
    est.processing_resolution = 32
    with pytest.raises(InputImageError, match="exported for processing size 64x48"):
        est.predict(image)


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="cuda"), "not an OpenVINO device"),
    (dict(device="gpu.7"), "OpenVINO sees no such device"),
    (dict(threads=2, device="gpu"), "OpenVINO sees no such device|threads applies"),
])
def test_openvino_device_refusals(exports, kwargs, match):
    pytest.importorskip("openvino")
    with pytest.raises(ValueError, match=match):
        _estimator(exports["depth"], None, backend="openvino", **kwargs)


def test_openvino_bf16_is_refused_with_the_reason_where_the_cpu_lacks_it():
    from e2e_depth_ros.model.backend_openvino import choose_precision

    with pytest.raises(ValueError, match="no bf16 support"):
        choose_precision("bf16", "CPU", ["FP32", "INT8"])
    with pytest.raises(ValueError, match="precision fp16 with backend openvino on CPU"):
        choose_precision("fp16", "CPU", ["FP32", "BF16"])
    assert choose_precision("auto", "CPU", ["FP32", "BF16"]) == "fp32"


def test_a_missing_backend_package_is_named_at_construction(exports, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(ValueError, match="needs the openvino package: pip install openvino"):
        _estimator(exports["depth"], None, backend="openvino")


def test_torch_backend_refuses_an_export_folder(exports):
    with pytest.raises(ValueError, match="export folder; the torch backend loads diffusers"):
        _estimator(exports["depth"], None)


def test_openvino_warm_up_compiles_before_the_first_frame(exports, image, tmp_path):
    pytest.importorskip("openvino")
    lines = []
    est = _estimator(exports["depth"], None, backend="openvino", cache_dir=str(tmp_path),
                     processing_resolution=64, log=lines.append)
    assert est.warm_up_pays and est.warm_up() is not None
    assert {key[1] for key in est.depth.compiled} == {(1, 3, 48, 64), (1, 4, 6, 8)}
    assert any("warm-up at processing size 64x48" in line for line in lines)


# -- wiring: the image CLI and evaluate --------------------------------------------------------
def test_cli_predict_runs_the_onnxruntime_backend_on_an_export(exports, tmp_path, image,
                                                               monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import cv2

    from e2e_depth_ros.offline import cli

    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert cli.main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                     "--depth-model", exports["depth"], "--normals-model", "none",
                     "--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32",
                     "--processing-resolution", "0", "--quiet"]) == 0
    assert np.load(tmp_path / "out" / "a_depth.npy").shape == (48, 64)


def test_cli_predict_warns_in_one_line_when_an_export_of_normals_is_given_as_depth(
        exports, tmp_path, image, capsys):
    pytest.importorskip("onnxruntime")
    import cv2

    from e2e_depth_ros.offline import cli

    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert cli.main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                     "--depth-model", exports["normals"], "--normals-model", "none",
                     "--device", "cpu", "--backend", "onnxruntime", "--precision", "fp32",
                     "--processing-resolution", "0", "--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warnings == [f"e2e-depth: warning: depth_model {exports['normals']!r} looks like a "
                        "normals checkpoint (its export manifest says task: normals, its "
                        "README.md says task: normals): its output would be published as depth"]


def test_cli_predict_refuses_an_unavailable_precision_in_one_line(exports, tmp_path, capsys,
                                                                  image):
    pytest.importorskip("onnxruntime")
    import cv2

    from e2e_depth_ros.offline import cli

    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert cli.main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                     "--depth-model", exports["depth"], "--normals-model", "none",
                     "--device", "cpu", "--backend", "onnxruntime", "--precision",
                     "bf16"]) == 2
    assert "bf16 is not offered by backend onnxruntime" in capsys.readouterr().err


def test_evaluate_builds_its_estimator_with_the_backend_and_precision(
        exports, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the compiled-model cache
    from e2e_depth_ros.offline.evaluate import _estimator_factory, build_parser

    args = build_parser().parse_args([
        "bag", "--image-topic", "/i", "--camera-info-topic", "/c", "--gt-depth-topic", "/g",
        "--depth-model", exports["depth"], "--device", "cpu", "--backend", "openvino",
        "--precision", "fp32"])
    est = _estimator_factory(args)()
    assert est.describe() == "openvino on CPU (fp32)"

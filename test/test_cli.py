"""The ``e2e-depth`` command line: outputs on disk, one-line errors, exit codes."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from e2e_depth_ros import cli


@pytest.fixture()
def image_dir(tmp_path):
    """Two small images of different sizes (H != W) and one corrupt .png."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.png"), rng.integers(0, 256, (48, 32, 3), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def _run_module(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "e2e_depth_ros.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_predict_on_folder_writes_every_output_and_skips_the_corrupt_file(
        tiny_depth, tiny_normals, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["predict", str(image_dir), "--out", str(out), "--depth-model", tiny_depth,
                     "--normals-model", tiny_normals, "--device", "cpu",
                     "--processing-resolution", "0", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "broken.png" in captured.err
    assert "wrote 2 of 3" in captured.out and "skipped 1" in captured.out
    for stem, shape in (("a", (40, 56)), ("b", (48, 32))):
        depth = np.load(out / f"{stem}_depth.npy")
        assert depth.shape == shape and depth.dtype == np.float32
        depth16 = cv2.imread(str(out / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert depth16.dtype == np.uint16 and depth16.shape == shape
        np.testing.assert_array_equal(depth16, np.rint(depth * 65535).astype(np.uint16))
        vis = cv2.imread(str(out / f"{stem}_depth_vis.png"), cv2.IMREAD_UNCHANGED)
        assert vis.shape == shape + (3,) and vis.dtype == np.uint8
        normals = np.load(out / f"{stem}_normals.npy")
        assert normals.shape == shape + (3,) and normals.dtype == np.float32
        # unit up to the 1e-5 of docs/inference.md step 8, large next to random tiny-model outputs
        np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-2)
        picture = cv2.imread(str(out / f"{stem}_normals.png"), cv2.IMREAD_UNCHANGED)
        expected_rgb = np.rint((normals + 1) / 2 * 255).astype(np.uint8)
        np.testing.assert_allclose(picture[..., ::-1], expected_rgb, atol=1)  # BGR on disk
    assert not list(out.glob("broken*")) and not list(out.glob("notes*"))


def test_predict_with_normals_disabled_writes_depth_only(tiny_depth, image_dir, tmp_path):
    out = tmp_path / "out"
    code = cli.main(["predict", str(image_dir / "a.png"), "--out", str(out), "--depth-model",
                     tiny_depth, "--normals-model", "none", "--device", "cpu", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_depth.npy", "a_depth.png", "a_depth_vis.png"]


def test_missing_input_path_exits_2_with_one_line_message(tmp_path, capsys):
    code = cli.main(["predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("e2e-depth: error: ") and "nowhere" in err
    assert err.count("\n") == 1


def test_bad_device_exits_2_with_one_line_message(tiny_depth, image_dir, tmp_path, capsys):
    code = cli.main(["predict", str(image_dir), "--out", str(tmp_path / "out"),
                     "--depth-model", tiny_depth, "--normals-model", "", "--device", "tpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "device" in err


def test_unavailable_hub_models_exit_2_pointing_at_tiny_checkpoint(image_dir, tmp_path):
    result = _run_module("predict", str(image_dir), "--out", str(tmp_path / "out"),
                         env_extra={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2e-depth: error: ")
    assert "tiny_checkpoint" in lines[0]
    assert not (tmp_path / "out").exists()


def test_help_works_without_importing_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from e2e_depth_ros import cli\n"
         "try:\n    cli.main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
         "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch imported'"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout and "tiny-checkpoint" in result.stdout
    assert _run_module("predict", "--help").returncode == 0


def test_default_models_are_the_estimators_published_ones():
    from e2e_depth_ros.estimator import DEFAULT_DEPTH_MODEL, DEFAULT_NORMALS_MODEL

    args = cli.build_parser().parse_args(["predict", "x", "--out", "y"])
    assert (args.depth_model, args.normals_model) == (DEFAULT_DEPTH_MODEL,
                                                      DEFAULT_NORMALS_MODEL)


def test_tiny_checkpoint_command_writes_a_checkpoint_folder(tmp_path):
    assert cli.main(["tiny-checkpoint", str(tmp_path / "ck"), "--task", "normals"]) == 0
    assert (tmp_path / "ck" / "model_index.json").is_file()
    assert (tmp_path / "ck" / "unet" / "config.json").is_file()

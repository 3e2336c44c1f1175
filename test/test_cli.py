"""The ``e2e-depth`` command line: outputs on disk, one-line errors, exit codes."""

import glob
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from e2e_depth_ros.offline import cli, image_files


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
    return subprocess.run([sys.executable, "-m", "e2e_depth_ros.offline.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.needs_torch
def test_predict_on_folder_writes_every_output_and_skips_the_corrupt_file(
        tiny_depth, tiny_normals, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["predict", str(image_dir), "--out", str(out), "--depth-model", tiny_depth,
                     "--normals-model", tiny_normals, "--device", "cpu",
                     "--processing-resolution", "0", "--quiet"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_SOME_FAILED  # an input failed: not a success, but the rest ran
    assert "skipped " + str(image_dir / "broken.png") + ": not a readable image" in captured.err
    assert "wrote 2 of 3" in captured.out and "failed 1: broken.png" in captured.out
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


@pytest.mark.needs_torch
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


@pytest.mark.parametrize("value", ["4", "15", "2049", "-1", "abc"])
def test_predict_refuses_a_processing_resolution_the_node_refuses(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", str(tmp_path), "--out", str(tmp_path / "out"),
                  "--processing-resolution", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("e2e-depth predict: error: ")
    assert "--processing-resolution" in err and ("16..2048" in err or "integer" in err)


@pytest.mark.parametrize("value", [0, 16, 768, 2048])
def test_predict_accepts_the_node_s_processing_resolutions(value):
    args = cli.build_parser().parse_args(["predict", "x", "--out", "y",
                                          "--processing-resolution", str(value)])
    assert args.processing_resolution == value


@pytest.mark.needs_torch
def test_bad_device_exits_2_with_one_line_message(tiny_depth, image_dir, tmp_path, capsys):
    code = cli.main(["predict", str(image_dir), "--out", str(tmp_path / "out"),
                     "--depth-model", tiny_depth, "--normals-model", "", "--device", "tpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "device" in err


@pytest.mark.needs_torch
def test_unavailable_hub_models_exit_2_pointing_at_tiny_checkpoint(image_dir, tmp_path):
    result = _run_module("predict", str(image_dir), "--out", str(tmp_path / "out"),
                         env_extra={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2e-depth: error: ")
    assert "`e2e-depth tiny-checkpoint DIR`" in lines[0]
    assert not (tmp_path / "out").exists()


def test_help_works_without_importing_torch():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from e2e_depth_ros.offline import cli\n"
         "try:\n    cli.main(['--help'])\nexcept SystemExit as e:\n    code = e.code\n"
         "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch imported'"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout and "tiny-checkpoint" in result.stdout
    assert _run_module("predict", "--help").returncode == 0


@pytest.mark.needs_torch
def test_default_models_are_the_estimators_published_ones():
    from e2e_depth_ros.model.estimator import DEFAULT_DEPTH_MODEL, DEFAULT_NORMALS_MODEL

    args = cli.build_parser().parse_args(["predict", "x", "--out", "y"])
    assert (args.depth_model, args.normals_model) == (DEFAULT_DEPTH_MODEL,
                                                      DEFAULT_NORMALS_MODEL)


@pytest.mark.needs_torch
def test_tiny_checkpoint_command_writes_a_checkpoint_folder(tmp_path):
    assert cli.main(["tiny-checkpoint", str(tmp_path / "ck"), "--task", "normals"]) == 0
    assert (tmp_path / "ck" / "model_index.json").is_file()
    assert (tmp_path / "ck" / "unet" / "config.json").is_file()


# --------------------------------------------------------------------------- hostile inputs

def _predict(folder_or_file, out, tiny_depth, *extra):
    return cli.main(["predict", str(folder_or_file), "--out", str(out), "--depth-model",
                     tiny_depth, "--normals-model", "none", "--device", "cpu", "--quiet",
                     "--processing-resolution", "64", *extra])


def _png(height, width, seed=0):
    """The bytes of a random (height, width) colour PNG."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def _predict_in_a_process(folder, out, tiny_depth, *extra):
    """predict in a child process, so a crash of the interpreter fails the test instead of
    ending the test run."""
    return _run_module("predict", str(folder), "--out", str(out), "--depth-model", tiny_depth,
                       "--normals-model", "none", "--device", "cpu", "--quiet",
                       "--processing-resolution", "64", *extra)


def test_a_file_name_that_is_not_utf8_is_read_written_and_named_without_crashing(
        tiny_depth, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / os.fsdecode(b"a\xff.png")).write_bytes(_png(40, 56))
    (folder / os.fsdecode(b"c\xfe.png")).write_bytes(b"not a png at all")
    (folder / "d.png").write_bytes(_png(24, 32))
    out = tmp_path / "out"
    result = _predict_in_a_process(folder, out, tiny_depth)
    assert result.returncode == cli.EXIT_SOME_FAILED, result.stderr  # not -11 (SIGSEGV)
    assert "Traceback" not in result.stderr
    assert f"skipped {folder}/c\\xfe.png: not a readable image" in result.stderr
    assert "wrote 2 of 3" in result.stdout and "failed 1: c\\xfe.png" in result.stdout
    assert np.load(out / os.fsdecode(b"a\xff_depth.npy")).shape == (40, 56)
    picture = (out / os.fsdecode(b"a\xff_depth.png")).read_bytes()
    assert cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_UNCHANGED).shape == (40, 56)
    assert (out / os.fsdecode(b"a\xff_depth_vis.png")).is_file()
    assert np.load(out / "d_depth.npy").shape == (24, 32)


def test_an_empty_file_is_skipped_by_name_and_the_folder_goes_on(tiny_depth, tmp_path,
                                                                 capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.png").write_bytes(_png(40, 56))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == cli.EXIT_SOME_FAILED
    captured = capsys.readouterr()
    assert f"skipped {folder / 'a.png'}: empty file (0 bytes)" in captured.err
    assert "wrote 1 of 2" in captured.out and "failed 1: a.png" in captured.out
    assert np.load(out / "b_depth.npy").shape == (40, 56) and not list(out.glob("a_*"))


def test_a_second_run_over_the_same_folder_never_reads_the_first_run_s_outputs(
        tiny_depth, tiny_normals, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "s.png").write_bytes(_png(40, 56))
    args = ["--depth-model", tiny_depth, "--normals-model", tiny_normals, "--device", "cpu",
            "--quiet", "--processing-resolution", "64"]
    assert cli.main(["predict", str(folder), "--out", str(folder), *args]) == 0
    assert (folder / "s_depth.png").is_file() and (folder / "s_normals.png").is_file()
    capsys.readouterr()
    assert cli.main(["predict", str(folder), "--out", str(tmp_path / "again"), *args]) == 0
    captured = capsys.readouterr()
    assert "wrote 1 of 1" in captured.out
    assert f"not reading 3 earlier outputs of predict in {folder}" in captured.err
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [
        "s_depth.npy", "s_depth.png", "s_depth_vis.png", "s_normals.npy", "s_normals.png"]


def test_a_picture_named_like_an_output_without_its_npy_is_an_input_and_never_replaced(
        tiny_depth, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "s.png").write_bytes(_png(40, 56))
    (folder / "s_depth.png").write_bytes(_png(24, 32, seed=1))  # the user's own picture
    assert _predict(folder, folder, tiny_depth, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("e2e-depth: error: ")
    assert f"{folder / 's_depth.png'} is an input, and the outputs of s.png would replace " \
        "it; choose another --out" in err
    assert (folder / "s_depth.png").read_bytes() == _png(24, 32, seed=1)
    assert sorted(p.name for p in folder.iterdir()) == ["s.png", "s_depth.png"]


def test_outputs_of_an_earlier_run_are_refused_before_any_model_loads_unless_overwrite(
        tiny_depth, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "s.png").write_bytes(_png(40, 56))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == 0
    first = (out / "s_depth.npy").read_bytes()
    (out / "s_depth.npy").write_bytes(b"an earlier result")
    capsys.readouterr()
    # a model that cannot load: the refusal has to come first
    assert _predict(folder, out, str(tmp_path / "no_such_model")) == 2
    err = capsys.readouterr().err
    assert err == f"e2e-depth: error: {out / 's_depth.npy'} (and 2 more) exists (an earlier " \
        "run?); pass --overwrite to replace, or choose another --out\n"
    assert (out / "s_depth.npy").read_bytes() == b"an earlier result"
    assert _predict(folder, out, tiny_depth, "--overwrite") == 0
    assert (out / "s_depth.npy").read_bytes() == first


def test_a_folder_of_hostile_files_writes_every_good_image_and_names_each_bad_one_once(
        tiny_depth, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    good = {os.fsdecode(b"a\xff.png"): (40, 56), "b.jpg": (48, 64), "c.png": (24, 32)}
    for name, (height, width) in good.items():
        encode = _jpeg if name.endswith(".jpg") else _png
        (folder / name).write_bytes(encode(height, width, seed=len(name)))
    cut = _jpeg(48, 64, seed=5)
    bad = {"empty.png": b"", "cut.jpg": cut[:len(cut) // 3] + b"\xff\xd9",
           os.fsdecode(b"d\xfe.png"): b"not a png at all"}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out"
    result = _predict_in_a_process(folder, out, tiny_depth)
    assert result.returncode == cli.EXIT_SOME_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith("e2e-depth: ") for line in result.stderr.splitlines())
    for name in bad:
        shown = image_files.shown(name)
        assert len([line for line in result.stderr.splitlines() if shown in line]) == 1, shown
        assert not list(out.glob(glob.escape(name.rpartition(".")[0]) + "_*"))
    for name, shape in good.items():
        assert np.load(out / (name.rpartition(".")[0] + "_depth.npy")).shape == shape
    assert "wrote 3 of 6" in result.stdout


def test_inputs_with_the_same_stem_keep_their_suffix_and_both_are_written(
        tiny_depth, tmp_path, capsys):
    folder = tmp_path / "same_stem"
    folder.mkdir()
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "x.jpg"), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "x.png"), rng.integers(0, 256, (48, 32, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "y.png"), rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == 0
    assert "wrote 3 of 3" in capsys.readouterr().out
    assert np.load(out / "x_jpg_depth.npy").shape == (40, 56)
    assert np.load(out / "x_png_depth.npy").shape == (48, 32)
    assert np.load(out / "y_depth.npy").shape == (24, 24)  # a unique stem keeps its name
    assert not (out / "x_depth.npy").exists()


def test_output_names_that_would_still_clash_are_refused_before_any_work(tmp_path):
    images = [tmp_path / "x.jpg", tmp_path / "x.png", tmp_path / "x_png.bmp"]
    with pytest.raises(cli.UsageError, match="x.png, x_png.bmp would write the same outputs "
                       "x_png_"):
        cli.output_stems(images)


def _jpeg(height, width, seed=0, *, progressive=False):
    """The bytes of a random (height, width) colour JPEG, baseline or progressive."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])[1] \
        .tobytes()


@pytest.mark.parametrize("ending", [b"", b"\xff\xd9"], ids=["cut", "cut_then_end_marker"])
@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_truncated_jpeg_is_refused_by_decoding_it_and_libjpeg_s_complaint_is_not_leaked(
        progressive, ending, tiny_depth, tmp_path, capfd):
    folder = tmp_path / "truncated"
    folder.mkdir()
    data = _jpeg(48, 64, progressive=progressive)
    (folder / "cut.jpg").write_bytes(data[:len(data) // 3] + ending)  # a third, maybe + FF D9
    (folder / "whole.jpg").write_bytes(_jpeg(48, 64, seed=1, progressive=progressive))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == cli.EXIT_SOME_FAILED
    captured = capfd.readouterr()  # file-descriptor level: libjpeg writes to fd 2 itself
    assert f"skipped {folder / 'cut.jpg'}: truncated or corrupt JPEG" in captured.err
    assert [line for line in captured.err.splitlines()
            if "JPEG" in line and not line.startswith("e2e-depth: skipped ")] == []
    assert "wrote 1 of 2" in captured.out
    assert (out / "whole_depth.npy").is_file() and not (out / "cut_depth.npy").exists()


@pytest.mark.parametrize("ending", [b"", b"\x00\x00\x00\x00IEND\xaeB`\x82"],
                         ids=["cut", "cut_then_end_chunk"])
def test_a_truncated_png_is_refused_by_decoding_it(ending, tiny_depth, tmp_path, capfd):
    folder = tmp_path / "truncated"
    folder.mkdir()
    data = _png(48, 64)
    (folder / "cut.png").write_bytes(data[:len(data) // 3] + ending)
    (folder / "whole.png").write_bytes(_png(48, 64, seed=1))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == cli.EXIT_SOME_FAILED
    err = capfd.readouterr().err
    assert f"skipped {folder / 'cut.png'}: not a readable image" in err
    assert [line for line in err.splitlines() if "PNG" in line and "skipped" not in line] == []
    assert (out / "whole_depth.npy").is_file() and not (out / "cut_depth.npy").exists()


def test_a_single_unreadable_file_exits_non_zero(tiny_depth, image_dir, tmp_path, capsys):
    code = _predict(image_dir / "broken.png", tmp_path / "out", tiny_depth)
    captured = capsys.readouterr()
    assert code == cli.EXIT_SOME_FAILED
    assert "wrote 0 of 1" in captured.out and "broken.png" in captured.err


def test_images_too_small_for_the_model_are_skipped_by_name_and_the_folder_goes_on(
        tiny_depth, tmp_path, capsys):
    folder = tmp_path / "small"
    folder.mkdir()
    rng = np.random.default_rng(3)
    cv2.imwrite(str(folder / "a_tiny.png"), rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    # 8 px tall but 600 wide: 0 px tall at processing resolution 64 (the estimator refuses)
    cv2.imwrite(str(folder / "b_sliver.png"), rng.integers(0, 256, (8, 600, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "c_fine.png"), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == cli.EXIT_SOME_FAILED
    captured = capsys.readouterr()
    assert f"skipped {folder / 'a_tiny.png'}: 4x4 is too small" in captured.err
    assert f"skipped {folder / 'b_sliver.png'}: " in captured.err
    assert "wrote 1 of 3" in captured.out
    assert "failed 2: a_tiny.png, b_sliver.png" in captured.out
    assert (out / "c_fine_depth.npy").is_file()


def test_huge_image_is_refused_from_its_header_before_decoding(tiny_depth, tmp_path, capsys):
    folder = tmp_path / "huge"
    folder.mkdir()
    ok, data = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    header = bytearray(data.tobytes())
    header[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR says 20000 x 20000
    (folder / "huge.png").write_bytes(bytes(header))
    cv2.imwrite(str(folder / "small.png"), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "out"
    assert _predict(folder, out, tiny_depth) == cli.EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert f"skipped {folder / 'huge.png'}: 20000x20000 is 400000000 pixels, over " \
        f"--max-pixels {cli.DEFAULT_MAX_PIXELS}: refused before decoding" in err
    assert (out / "small_depth.npy").is_file()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_image_size_is_read_from_the_file_header(suffix):
    ok, data = cv2.imencode(suffix, np.zeros((40, 56, 3), np.uint8))
    assert image_files.image_file_size(data.tobytes()) == (56, 40)


def test_predict_says_when_a_checkpoint_is_a_tiny_random_one(tiny_depth, image_dir, tmp_path,
                                                             capsys):
    assert _predict(image_dir / "a.png", tmp_path / "out", tiny_depth) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and tiny_depth in notes[0] and "MEANINGLESS" in notes[0]


def test_a_real_checkpoint_folder_is_not_taken_for_a_tiny_one(tiny_depth, tmp_path):
    import shutil

    from e2e_depth_ros.model.tiny_checkpoint import is_tiny_checkpoint

    real = shutil.copytree(tiny_depth, tmp_path / "real")
    (real / "README.md").write_text("# My fine-tuned depth model\n")
    assert is_tiny_checkpoint(tiny_depth) and not is_tiny_checkpoint(real)
    assert not is_tiny_checkpoint("GonzaloMG/marigold-e2e-ft-depth")


@pytest.mark.needs_torch
def test_tiny_checkpoint_command_says_its_output_is_meaningless(tmp_path, capsys):
    assert cli.main(["tiny-checkpoint", str(tmp_path / "ck")]) == 0
    assert "MEANINGLESS" in capsys.readouterr().out


def test_predict_warns_in_one_line_when_a_normals_checkpoint_is_given_as_depth(
        tiny_normals, tmp_path, capsys):
    import shutil

    model = str(shutil.copytree(tiny_normals, tmp_path / "model"))  # the name says nothing
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 56, 3), np.uint8))
    assert _predict(tmp_path / "a.png", tmp_path / "out", model) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warnings == [f"e2e-depth: warning: depth_model {model!r} looks like a normals "
                        "checkpoint (its README.md says task: normals): its output would be "
                        "published as depth"]

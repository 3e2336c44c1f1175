"""One spelling for "off", and what a checkpoint's files or name say it is."""

import json
import shutil

import pytest

from e2e_depth_ros.model.model_args import (model_or_none, task_from_files, task_from_name,
                                            task_mismatch, task_warnings)


@pytest.mark.parametrize("value", ["", "none", "None", " NONE ", None])
def test_model_or_none_reads_empty_and_none_in_any_case_as_off(value):
    assert model_or_none(value) is None


def test_model_or_none_keeps_a_real_model():
    assert model_or_none("GonzaloMG/marigold-e2e-ft-depth") == "GonzaloMG/marigold-e2e-ft-depth"


@pytest.mark.parametrize("model, task", [
    ("GonzaloMG/marigold-e2e-ft-depth", "depth"),
    ("GonzaloMG/stable-diffusion-e2e-ft-normals", "normals"),
    ("/tmp/ckpt0/normals/", "normals"),
    ("/data/e2e_depth/ckpt/normals", "normals"),  # only the folder's own name counts
    ("./my-model", None),
    ("/x/depth-and-normals", None),
])
def test_task_from_name_reads_the_folder_or_hub_repo_name(model, task):
    assert task_from_name(model) == task


def test_task_mismatch_warns_about_a_normals_checkpoint_given_as_depth():
    assert "looks like a normals checkpoint" in task_mismatch("/ckpt/normals", "depth")
    assert "looks like a depth checkpoint" in task_mismatch("org/x-e2e-ft-depth", "normals")
    assert task_mismatch("/ckpt/depth", "depth") is None


def test_task_mismatch_warns_when_the_name_cannot_tell():
    assert "cannot tell" in task_mismatch("/ckpt/model", "depth")


def test_a_tiny_normals_checkpoint_in_a_neutral_folder_is_recognised_from_its_files(
        tiny_normals, tmp_path):
    model = str(shutil.copytree(tiny_normals, tmp_path / "model"))
    assert task_from_name(model) is None  # its name says nothing
    assert task_from_files(model) == ("normals", "its README.md says task: normals")
    warning = task_mismatch(model, "depth")
    assert "looks like a normals checkpoint (its README.md says task: normals)" in warning
    assert task_mismatch(model, "normals") is None


def test_files_beat_a_misleading_folder_name(tiny_depth, tmp_path):
    model = str(shutil.copytree(tiny_depth, tmp_path / "normals"))  # renamed by hand
    assert task_mismatch(model, "depth") is None
    assert "looks like a depth checkpoint" in task_mismatch(model, "normals")


def _folder_with_index(path, index):
    path.mkdir()
    (path / "model_index.json").write_text(json.dumps(index))
    return str(path)


@pytest.mark.parametrize("index, task", [
    ({"_class_name": "MarigoldNormalsPipeline", "prediction_type": "normals"}, "normals"),
    ({"_class_name": "MarigoldDepthPipeline", "prediction_type": "depth"}, "depth"),
    ({"_class_name": "MarigoldDepthPipeline", "prediction_type": "disparity"}, "depth"),
    ({"_class_name": "SomePipeline", "prediction_type": "normals"}, "normals"),
    ({"_class_name": "StableDiffusionPipeline"}, None),  # the E2E-FT training script's save
    ({"_class_name": "MarigoldDepthPipeline", "prediction_type": "normals"}, None),  # conflict
])
def test_a_marigold_model_index_names_the_task(index, task, tmp_path):
    found = task_from_files(_folder_with_index(tmp_path / "model", index))
    assert (found and found[0]) == task


def test_the_name_decides_when_the_files_name_no_task(tmp_path):
    sd = {"_class_name": "StableDiffusionPipeline"}
    assert "its name says normals" in task_mismatch(
        _folder_with_index(tmp_path / "x-normals", sd), "depth")
    assert "cannot tell from its files or name" in task_mismatch(
        _folder_with_index(tmp_path / "model", sd), "depth")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert task_from_files(str(broken)) is None


def _export_folder(path, task, evidence=None):
    """A folder with an export manifest (stage files are not needed to read its task)."""
    from e2e_depth_ros.model.stages import MANIFEST

    path.mkdir()
    data = {"task": task} if evidence is None else {"task": task, "task_evidence": evidence}
    (path / MANIFEST).write_text(json.dumps(data))
    return str(path)


def test_an_export_folder_s_manifest_says_its_task_whatever_its_name(tmp_path):
    model = _export_folder(tmp_path / "depth", "normals", "its README.md says task: normals")
    assert task_from_files(model) == (
        "normals", "its export manifest says task: normals, its README.md says task: normals")
    assert "looks like a normals checkpoint (its export manifest says task: normals" in (
        task_mismatch(model, "depth"))
    assert task_mismatch(model, "normals") is None
    older = _export_folder(tmp_path / "older", "depth")  # made before evidence was recorded
    assert task_from_files(older) == ("depth", "its export manifest says task: depth")


def test_task_warnings_cover_both_models_and_skip_the_disabled_one(tmp_path):
    normals = _export_folder(tmp_path / "model", "normals")
    warnings = task_warnings(normals, "none")
    assert len(warnings) == 1 and warnings[0].startswith(f"depth_model {normals!r} looks like")
    assert task_warnings("org/x-depth", "org/x-normals") == []

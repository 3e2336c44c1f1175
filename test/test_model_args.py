"""One spelling for "off", and what a checkpoint's name says it is."""

import pytest

from e2e_depth_ros.model_args import model_or_none, task_from_name, task_mismatch


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

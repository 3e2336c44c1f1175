"""How users name models: one spelling for "off", and what a checkpoint says it is (its
files when it is a local folder that names its task, an export's manifest included, else its
name).

Shared by the node, the CLI and the demo so ``none`` means the same everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath

DISABLED = ("", "none")  # compared after strip().lower(): "", "none", "None", " NONE "
TASKS = ("depth", "normals")


def model_or_none(value: str | None) -> str | None:
    """The model argument, or None when it spells "off" (empty or ``none``, any case)."""
    if value is None or value.strip().lower() in DISABLED:
        return None
    return value


def task_from_name(model: str) -> str | None:
    """"depth" or "normals" when the checkpoint's name says so (folder or hub repo name).

    The published ids end in ``-depth`` / ``-normals``. None when the name says neither or
    both, so the caller can warn that it cannot tell.
    """
    name = PurePath(model.strip().rstrip("/")).name.lower()
    says = {task for task, word in (("depth", "depth"), ("normals", "normal"))
            if re.search(word, name)}
    return says.pop() if len(says) == 1 else None


# What diffusers' Marigold pipelines write into model_index.json: the pipeline class and the
# ``prediction_type`` they register ("depth"/"disparity" for depth, "normals").
_PIPELINE_TASKS = {"MarigoldDepthPipeline": "depth", "MarigoldNormalsPipeline": "normals"}
_PREDICTION_TASKS = {"depth": "depth", "disparity": "depth", "normals": "normals"}


def _task_from_model_index(path: Path) -> tuple[str, str] | None:
    """(task, evidence) from a Marigold pipeline's model_index.json, or None.

    The E2E-FT training script saves a plain StableDiffusionPipeline, whose index names no
    task: those checkpoints say nothing here and are judged by name.
    """
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(index, dict):
        return None
    said = {}
    name, kind = index.get("_class_name"), index.get("prediction_type")
    if isinstance(name, str) and name in _PIPELINE_TASKS:
        said[_PIPELINE_TASKS[name]] = f"model_index.json names {name}"
    if isinstance(kind, str) and kind in _PREDICTION_TASKS:
        said.setdefault(_PREDICTION_TASKS[kind], f"model_index.json has prediction_type {kind}")
    return next(iter(said.items())) if len(said) == 1 else None


def _task_from_manifest(folder: Path) -> tuple[str, str] | None:
    """(task, evidence) from an ``e2e-depth export`` folder's manifest, or None."""
    from e2e_depth_ros.model.stages import MANIFEST

    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    if task not in TASKS:
        return None
    judged = data.get("task_evidence")
    return task, f"its export manifest says task: {task}" + (f", {judged}" if judged else "")


def task_from_files(model: str) -> tuple[str, str] | None:
    """(task, evidence) from a local folder's own files, or None (a hub id, or files that
    name no task): an export folder's manifest, a Marigold pipeline's model_index.json, or
    the task line of a tiny test checkpoint's README.md. Files beat the name: a folder can
    be renamed."""
    from e2e_depth_ros.model.stages import is_export_folder
    from e2e_depth_ros.model.tiny_checkpoint import tiny_checkpoint_task

    folder = Path(model.strip()).expanduser()
    if not folder.is_dir():
        return None
    if is_export_folder(folder):
        return _task_from_manifest(folder)
    found = _task_from_model_index(folder / "model_index.json")
    if found is not None:
        return found
    task = tiny_checkpoint_task(folder)
    return (task, f"its README.md says task: {task}") if task else None


def task_of(model: str) -> tuple[str, str] | None:
    """(task, evidence) for a checkpoint or export: its own files when they name a task,
    else its name; None when neither says."""
    found = task_from_files(model)
    if found is None:
        said = task_from_name(model)
        found = (said, f"its name says {said}") if said else None
    return found


def task_mismatch(model: str, expected: str) -> str | None:
    """A warning when ``model`` (given as the ``expected`` task's model) is not one, or None.

    The checkpoint's own files (an export folder's manifest included) decide when they name
    a task; otherwise its name does.
    """
    found = task_of(model)
    if found is None:
        return (f"cannot tell from its files or name whether {expected}_model {model!r} is "
                f"a depth or a normals checkpoint; make sure it is a {expected} one")
    said, evidence = found
    if said != expected:
        return (f"{expected}_model {model!r} looks like a {said} checkpoint ({evidence}): "
                f"its output would be published as {expected}")
    return None


def task_warnings(depth_model: str | None, normals_model: str | None) -> list[str]:
    """``task_mismatch`` for both model arguments (None or "off" skipped): what the node,
    ``e2e-depth predict`` and the demo warn before loading."""
    given = {"depth": model_or_none(depth_model), "normals": model_or_none(normals_model)}
    found = (task_mismatch(model, task) for task, model in given.items() if model)
    return [text for text in found if text]

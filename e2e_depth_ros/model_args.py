"""How users name models: one spelling for "off", and what a checkpoint's name says it is.

Shared by the node, the CLI and the demo so ``none`` means the same everywhere.
"""

from __future__ import annotations

import re
from pathlib import PurePath

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


def task_mismatch(model: str, expected: str) -> str | None:
    """A warning when ``model`` (given as the ``expected`` task's model) is not one, or None."""
    said = task_from_name(model)
    if said is None:
        return (f"cannot tell from its name whether {expected}_model {model!r} is a depth "
                f"or a normals checkpoint; make sure it is a {expected} one")
    if said != expected:
        return (f"{expected}_model {model!r} looks like a {said} checkpoint (its name says "
                f"{said}): its output would be published as {expected}")
    return None

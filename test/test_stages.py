"""The export manifest, the precision names and the model layer's imports (no torch needed)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_depth_ros.errors import CheckpointError
from e2e_depth_ros.model.stages import MANIFEST, Manifest, normalise_precision


def _manifest(**changes) -> Manifest:
    fields = dict(model="ckpt", task="depth", format="onnx", scaling_factor=0.18215,
                  x0_coefficient=-0.9977, timestep=999, prediction_type="v_prediction",
                  vae_digest="abc", size=(288, 384),
                  files={"encoder": "e.onnx", "unet": "u.onnx", "decoder": "d.onnx"})
    fields.update(changes)
    return Manifest(**fields)


def test_manifest_round_trips_through_its_json_file(tmp_path):
    manifest = _manifest()
    for name in manifest.files.values():
        (tmp_path / name).write_bytes(b"")
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest


def test_manifest_of_another_version_is_refused_with_the_remedy(tmp_path):
    manifest = _manifest(version=99)
    manifest.save(tmp_path)
    with pytest.raises(CheckpointError, match="manifest version 99.*export the checkpoint again"):
        Manifest.load(tmp_path)


def test_unreadable_manifest_names_its_path(tmp_path):
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(CheckpointError, match=MANIFEST):
        Manifest.load(tmp_path)


@pytest.mark.parametrize("given, expected", [
    ("auto", "auto"), ("float32", "fp32"), ("FP16", "fp16"), ("half", "fp16"),
    ("bfloat16", "bf16")])
def test_dtype_spellings_map_to_precision_names(given, expected):
    assert normalise_precision(given) == expected


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="precision must be one of .*fp32"):
        normalise_precision("int4")


def test_stages_module_imports_neither_torch_nor_diffusers():
    code = ("import sys, e2e_depth_ros.model.stages\n"
            "assert not {'torch', 'diffusers', 'rclpy'} & set(sys.modules), 'imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_e2e_depth_export_subcommand_reaches_the_export_tool(capsys):
    from e2e_depth_ros.offline import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["export", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: e2e-depth export" in out and "--format" in out and "--dynamic" in out


def _model_layer_imports() -> dict[str, set[str]]:
    """Each model/ module -> the model/ modules it imports, at module or function level."""
    folder = Path(__file__).resolve().parents[1] / "e2e_depth_ros" / "model"
    names = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t.rsplit(".", 1)[1] for t in targets
                      if t.startswith("e2e_depth_ros.model.")} & names
        graph[name] = found
    return graph


def test_the_model_layer_has_no_import_circle_even_through_function_level_imports():
    graph = _model_layer_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph[start])

    circles = sorted(name for name in graph if reaches(name, name, {name}))
    assert circles == [], f"model/ modules on an import circle: {circles}"

"""The package's layers: dependencies point down, no import circles, rclpy only in ros/.

core (numpy) < model (torch) < ros (rclpy) < offline (rosbags). Read from the source with
ast, so imports inside functions and under TYPE_CHECKING count too: a type hint that points
back up is still a circle. Then each layer is imported in a fresh interpreter to see which
heavy packages really come along.
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "e2e_depth_ros"
RANK = {"errors": 0, "core": 1, "model": 2, "ros": 3, "offline": 4}  # the rest: entry points
# heavy packages a layer must not bring along when all its modules are imported
FORBIDDEN = {
    "core": ("torch", "diffusers", "rclpy", "rosbags"),
    "model": ("rclpy", "rosbags"),
    "ros": ("torch", "diffusers", "rosbags"),
    "offline": ("rclpy",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str) -> set[str]:
    """Every module name an import statement anywhere in ``path`` refers to."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {dep for dep in imported(path, name) if dep in known and dep != name
                   and dep != "e2e_depth_ros" and not name.startswith(dep + ".")}
            for name, path in known.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in edges[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_circles_are_found_through_function_and_type_checking_imports():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    assert circles(graph()) == []


def test_every_import_between_layers_points_down():
    upward = [f"{name} -> {dep}" for name, deps in graph().items() for dep in deps
              if layer(name) in RANK and layer(dep) in RANK
              and RANK[layer(dep)] > RANK[layer(name)]]
    assert upward == []


def test_rclpy_is_imported_only_inside_ros():
    users = sorted(name for name, path in modules().items()
                   if any(dep.split(".")[0] == "rclpy" for dep in imported(path, name)))
    assert users and all(layer(name) == "ros" for name in users), users


def test_the_package_root_holds_only_entry_points_and_shared_errors():
    root = sorted(name for name in modules() if name.count(".") == 1)
    assert len(root) <= 10, root
    assert set(RANK) - {"errors"} <= {layer(name) for name in modules()}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_importing_a_layer_brings_none_of_the_packages_it_must_not_use(name):
    members = sorted(m for m in modules() if layer(m) == name)
    if name == "model" and importlib.util.find_spec("torch") is None:
        pytest.skip("the model layer needs torch (not installed in this environment)")
    above = [layer_name for layer_name, rank in RANK.items() if rank > RANK[name]]
    watched = FORBIDDEN[name] + tuple(f"e2e_depth_ros.{upper}" for upper in above)
    code = ("import sys\n" + "".join(f"import {m}\n" for m in members)
            + f"print(sorted(m for m in {watched!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert ast.literal_eval(proc.stdout.strip().splitlines()[-1]) == []


def test_public_names_load_from_the_package_root_without_importing_at_package_import():
    code = ("import sys, e2e_depth_ros as e\n"
            "light = not any(m in sys.modules for m in ('torch', 'rclpy', 'rosbags'))\n"
            "from e2e_depth_ros import FrameProcessor, PinholeCamera\n"
            "from e2e_depth_ros.core.processing import FrameProcessor as defined\n"
            "assert FrameProcessor is defined and PinholeCamera.__name__ == 'PinholeCamera'\n"
            "missing = [n for n in e.__all__ if n != '__version__' and n not in e._PUBLIC]\n"
            "print(light, missing)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "[]"]
    with pytest.raises(AttributeError, match="no attribute 'Nonexistent'"):
        import e2e_depth_ros

        e2e_depth_ros.Nonexistent


@pytest.mark.needs_torch
def test_every_public_name_resolves_to_its_definition():
    import e2e_depth_ros

    for name, module in e2e_depth_ros._PUBLIC.items():
        assert getattr(e2e_depth_ros, name) is getattr(importlib.import_module(module), name)

"""Packaging: what a robot's pip and rosdep install, and which commands land where."""

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from e2e_depth_ros.offline import cli

ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ("setup.py", "setup.cfg", "package.xml", "resource", "e2e_depth_ros", "launch",
               "config", "rviz")
ROS_EXECUTABLES = {"depth_node", "evaluate"}


def _copy_sources(dst: Path) -> Path:
    """The files a build reads, so builds never write into the checkout."""
    dst.mkdir()
    for name in BUILD_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def _requirements(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    return {re.split(r"[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-"): r
            for r in reqs if r}


def test_robot_requirements_are_ranges_without_numpy_opencv_or_torch():
    reqs = _requirements("requirements.txt")
    assert set(reqs) == {"diffusers", "transformers", "safetensors", "huggingface-hub",
                         "rosbags"}
    for name, spec in reqs.items():
        assert ">=" in spec and "<" in spec.replace("<=", ""), spec  # tested floor, a ceiling


def test_lock_pins_every_robot_requirement_inside_its_range():
    lock = _requirements("requirements-lock.txt")
    for name, spec in _requirements("requirements.txt").items():
        pinned = lock[name].split("==")[1]
        low, high = re.match(r"[^>]*>=([^,]+),<(.+)", spec).groups()
        key = [tuple(int(p) for p in v.split(".")[:3]) for v in (low, pinned, high)]
        assert key[0] <= key[1] < key[2], (spec, pinned)


def test_package_xml_names_rosdep_keys_for_what_the_distro_provides():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    exec_depends = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs",
            "rcl_interfaces", "python3-numpy", "python3-opencv",
            "python3-matplotlib", "python3-tqdm"} <= exec_depends
    assert not exec_depends & {"torch", "python3-torch", "diffusers", "transformers"}
    test_depends = {e.text for e in root.iter("test_depend")}
    assert {"python3-pytest", "python3-yaml"} <= test_depends  # the tests import yaml
    assert root.find("export/build_type").text == "ament_python"


def test_pip_wheel_puts_only_e2e_depth_on_path(tmp_path):
    src = _copy_sources(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("e2e_depth_ros-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        entry = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        text = zf.read(entry).decode()
    assert text.split() == ["[console_scripts]", "e2e-depth",
                            "=", "e2e_depth_ros.offline.cli:main"]


def test_ament_install_puts_ros_executables_under_lib_of_the_package(tmp_path):
    src = _copy_sources(tmp_path / "src")
    (src / "build").mkdir()
    # The setup.py commands colcon's ament_python build runs (non-symlink install).
    subprocess.run([sys.executable, "setup.py", "egg_info", "--egg-base", "build", "build",
                    "--build-base", "build/build", "install", "--prefix",
                    str(tmp_path / "install"), "--record", "install.log",
                    "--single-version-externally-managed"],
                   check=True, capture_output=True, timeout=300, cwd=src)
    lib = tmp_path / "install" / "lib" / "e2e_depth_ros"
    assert {p.name for p in lib.iterdir()} == ROS_EXECUTABLES | {"e2e-depth"}
    assert not (tmp_path / "install" / "bin").exists()


@pytest.mark.parametrize("command, usage", [("evaluate", "usage: evaluate"),
                                            ("demo", "usage: demo")])
def test_e2e_depth_subcommand_hands_the_line_to_its_module(command, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_e2e_depth_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("predict", "evaluate", "demo", "tiny-checkpoint"):
        assert re.search(rf"^\s+{command}\b", out, re.M), command

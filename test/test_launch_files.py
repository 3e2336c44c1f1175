"""launch/depth.launch.py, config/depth.yaml and rviz/depth.rviz agree with the node.

``launch`` and ``rviz2`` are not pip-installable, so the launch file is checked by reading its
syntax tree (and run for real only where a ROS install provides ``launch``); the params file
goes through rclpy's own parser in a subprocess.
"""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import ParameterType

from e2e_depth_ros.ros.parameters import NODE_NAME, PARAMETERS, validate_parameter
from e2e_depth_ros.ros.outputs import OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "depth.launch.py"
PARAMS_FILE = ROOT / "config" / "depth.yaml"
FASTDDS_PROFILE = ROOT / "config" / "fastdds_large_data.xml"
LARGEST_OUTPUT_BYTES = 640 * 480 * 32  # the default cloud: 640x480, point_step 32
RVIZ_FILE = ROOT / "rviz" / "depth.rviz"

# Other tools pass these by name: renaming one is a breaking change.
LAUNCH_ARGUMENTS = {"namespace", "image_topic", "camera_info_topic", "lidar_topic",
                    "sensor_depth_topic", "sensor_depth_info_topic", "scale_source",
                    "ground_frame", "depth_model", "normals_model", "device", "backend",
                    "precision", "params_file", "rviz", "fastdds_profile", "cameras",
                    "temporal_alignment", "odom_frame", "odom_topic"}
REMAPPED_INPUTS = {"image", "image/compressed", "camera_info", "points_lidar",
                   "sensor_depth/image", "sensor_depth/camera_info", "odom"}
PYTHON_TYPES = {  # declared parameter type -> the YAML value's Python type
    ParameterType.PARAMETER_DOUBLE: float,
    ParameterType.PARAMETER_INTEGER: int,
    ParameterType.PARAMETER_STRING: str,
    ParameterType.PARAMETER_BOOL: bool,
    ParameterType.PARAMETER_DOUBLE_ARRAY: list,
}


# -- launch/depth.launch.py -----------------------------------------------------------------
def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def _keyword(call: ast.Call, name: str):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _literal(node):
    return node.value if isinstance(node, ast.Constant) else None


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


@pytest.fixture(scope="module")
def declared_arguments(launch_tree) -> dict:
    """Launch argument name -> its default_value node, from DeclareLaunchArgument calls."""
    declared = {}
    for call in _calls(launch_tree, "DeclareLaunchArgument"):
        name = _literal(call.args[0]) if call.args else _literal(_keyword(call, "name"))
        assert isinstance(name, str), f"line {call.lineno}: argument name is not a literal"
        assert name not in declared, f"launch argument {name!r} declared twice"
        declared[name] = _keyword(call, "default_value")
    return declared


def _depth_node_call(launch_tree) -> ast.Call:
    calls = [call for call in _calls(launch_tree, "Node")
             if _literal(_keyword(call, "executable")) == "depth_node"]
    assert len(calls) == 1, "expected exactly one Node(executable='depth_node')"
    return calls[0]


def test_launch_file_declares_every_argument_other_tools_use(declared_arguments):
    missing = LAUNCH_ARGUMENTS - declared_arguments.keys()
    assert not missing, f"launch arguments not declared: {sorted(missing)}"
    for name in LAUNCH_ARGUMENTS:
        assert declared_arguments[name] is not None, f"{name!r} has no default_value"


def test_launch_argument_defaults_match_the_node_parameter_defaults(declared_arguments):
    for name in ("depth_model", "normals_model", "device", "backend", "precision",
                 "scale_source", "ground_frame", "odom_frame"):
        assert _literal(declared_arguments[name]) == PARAMETERS[name][0], name
    assert _literal(declared_arguments["temporal_alignment"]) == \
        str(PARAMETERS["temporal_alignment"][0]).lower()
    assert _literal(declared_arguments["namespace"]) == ""
    assert _literal(declared_arguments["image_topic"]) == "/camera/image_raw"
    assert _literal(declared_arguments["camera_info_topic"]) == "/camera/camera_info"
    assert _literal(declared_arguments["lidar_topic"]) == "/lidar/points"
    assert _literal(declared_arguments["rviz"]) == "false"
    assert _literal(declared_arguments["cameras"]) == "[]"  # single camera: topics as before


def test_launch_file_starts_the_node_under_its_name_with_every_input_remapped(launch_tree):
    call = _depth_node_call(launch_tree)
    assert _literal(_keyword(call, "package")) == "e2e_depth_ros"
    assert _literal(_keyword(call, "name")) == NODE_NAME
    assert _keyword(call, "namespace") is not None
    remappings = _keyword(call, "remappings")
    assert isinstance(remappings, ast.List), "remappings should be a literal list of pairs"
    sources = {_literal(pair.elts[0]) for pair in remappings.elts if isinstance(pair, ast.Tuple)}
    assert REMAPPED_INPUTS <= sources, f"not remapped: {sorted(REMAPPED_INPUTS - sources)}"
    assert _keyword(call, "parameters") is not None


def _profile_variable(launch_tree, ros_distro: str) -> str:
    """PROFILE_VARIABLE as the launch file computes it under the given ROS_DISTRO."""
    assigns = [node for node in launch_tree.body if isinstance(node, ast.Assign)
               and {t.id for t in node.targets} & {"FASTDDS_2_DISTROS", "PROFILE_VARIABLE"}]
    assert len(assigns) == 2, "expected FASTDDS_2_DISTROS and PROFILE_VARIABLE at top level"
    code = compile(ast.Module(body=assigns, type_ignores=[]), str(LAUNCH_FILE), "exec")
    fake_os = type("os", (), {"environ": {"ROS_DISTRO": ros_distro}})
    namespace = {"os": fake_os}
    exec(code, namespace)  # noqa: S102 - two literal assignments from our own launch file
    return namespace["PROFILE_VARIABLE"]


@pytest.mark.parametrize("distro, variable", [
    ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE"),  # Fast DDS 2.6
    ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE"),  # Fast DDS 2.14
    ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE"),  # Fast DDS 3
    ("rolling", "FASTDDS_DEFAULT_PROFILES_FILE"),
])
def test_launch_file_names_the_profile_variable_the_distros_fast_dds_reads(
        launch_tree, distro, variable):
    assert _profile_variable(launch_tree, distro) == variable


def test_launch_file_gives_the_node_the_shipped_fastdds_profile_by_default(
        launch_tree, declared_arguments):
    env = _keyword(_depth_node_call(launch_tree), "additional_env")
    assert isinstance(env, ast.Dict) and len(env.keys) == 1
    assert getattr(env.keys[0], "id", None) == "PROFILE_VARIABLE"
    (value,) = env.values
    assert value.func.id == "LaunchConfiguration" and _literal(value.args[0]) == \
        "fastdds_profile"
    default = declared_arguments["fastdds_profile"]  # an exported profile wins, else ours
    assert default.func.id == "EnvironmentVariable"
    assert getattr(default.args[0], "id", None) == "PROFILE_VARIABLE"
    fallback = _keyword(default, "default_value")
    assert [_literal(node) for node in fallback.args[0].elts[1:]] == \
        ["config", "fastdds_large_data.xml"]
    assert FASTDDS_PROFILE.is_file()


def test_fastdds_profile_gives_every_participant_a_shared_memory_segment_for_large_data():
    import xml.etree.ElementTree as ElementTree

    ns = {"dds": "http://www.eprosima.com"}
    root = ElementTree.parse(FASTDDS_PROFILE).getroot()
    descriptors = {d.findtext("dds:transport_id", namespaces=ns): d for d in
                   root.iterfind("dds:profiles/dds:transport_descriptors/"
                                 "dds:transport_descriptor", ns)}
    kinds = {name: d.findtext("dds:type", namespaces=ns) for name, d in descriptors.items()}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"]
    (shm,) = [d for d in descriptors.values() if d.findtext("dds:type", namespaces=ns) == "SHM"]
    segment = int(shm.findtext("dds:segment_size", namespaces=ns))
    assert segment >= 100_000_000 and segment >= 10 * LARGEST_OUTPUT_BYTES
    (udp,) = [d for d in descriptors.values() if d.findtext("dds:type", namespaces=ns) == "UDPv4"]
    assert int(udp.findtext("dds:receiveBufferSize", namespaces=ns)) >= 4 * 1024 * 1024
    (participant,) = root.iterfind("dds:profiles/dds:participant", ns)
    assert participant.get("is_default_profile") == "true"  # applies without code changes
    rtps = participant.find("dds:rtps", ns)
    used = [t.text for t in rtps.iterfind("dds:userTransports/dds:transport_id", ns)]
    assert sorted(used) == sorted(descriptors)
    assert rtps.findtext("dds:useBuiltinTransports", namespaces=ns) == "false"


def test_setup_installs_the_fastdds_profile_with_the_params_file():
    tree = ast.parse((ROOT / "setup.py").read_text())
    strings = {_literal(node) for node in ast.walk(tree)}
    assert {"config/*.yaml", "config/*.xml"} <= strings


def test_launch_file_passes_cameras_to_the_node_as_a_string_list(launch_tree):
    call = _depth_node_call(launch_tree)
    entries = [d for d in ast.walk(_keyword(call, "parameters")) if isinstance(d, ast.Dict)]
    cameras = [v for d in entries for k, v in zip(d.keys, d.values)
               if _literal(k) == "cameras"]
    assert len(cameras) == 1, "the node gets the cameras launch argument as a parameter"
    assert ast.unparse(_keyword(cameras[0], "value_type")) == "List[str]"


def test_launch_file_starts_rviz_only_when_asked_with_the_package_config(launch_tree):
    calls = [call for call in _calls(launch_tree, "Node")
             if _literal(_keyword(call, "package")) == "rviz2"]
    assert len(calls) == 1
    assert _keyword(calls[0], "condition") is not None
    assert _calls(calls[0], "IfCondition")
    strings = {_literal(node) for node in ast.walk(calls[0])}
    assert {"-d", "rviz", "depth.rviz"} <= strings
    assert RVIZ_FILE.is_file() and PARAMS_FILE.is_file()


def test_launch_file_generates_a_launch_description_where_launch_is_installed():
    pytest.importorskip("launch_ros", reason="launch/launch_ros come from a ROS 2 install, "
                                             "not pip; the syntax-tree tests above still run")
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("depth_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {entity.name for entity in description.entities
             if isinstance(entity, DeclareLaunchArgument)}
    assert LAUNCH_ARGUMENTS <= names
    assert sum(isinstance(entity, Node) for entity in description.entities) == 2


# -- config/depth.yaml ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def yaml_parameters() -> dict:
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**"]
    assert list(document["/**"]) == ["ros__parameters"]
    return document["/**"]["ros__parameters"]


def test_params_file_sets_exactly_the_node_parameters(yaml_parameters):
    assert set(yaml_parameters) == set(PARAMETERS), (
        f"missing: {sorted(set(PARAMETERS) - set(yaml_parameters))}, "
        f"unknown: {sorted(set(yaml_parameters) - set(PARAMETERS))}")


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_params_file_value_has_the_declared_type_and_is_in_range(yaml_parameters, name):
    default, kind, _description, bounds, _read_only = PARAMETERS[name]
    value = yaml_parameters[name]
    assert type(value) is PYTHON_TYPES[kind], f"{name}: {value!r} is not {PYTHON_TYPES[kind]}"
    if kind == ParameterType.PARAMETER_DOUBLE_ARRAY:
        assert value and all(type(item) is float for item in value), f"{name}: {value!r}"
        assert len(value) == len(default), name
    if bounds:
        assert bounds[0] <= value <= bounds[1], f"{name}: {value!r} outside {bounds}"
    assert validate_parameter(name, value) is None


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda output: output.key)
def test_every_output_is_switched_by_a_bool_parameter_in_the_params_file(
        yaml_parameters, output):
    default, kind, _description, _bounds, read_only = PARAMETERS[output.enable]
    assert kind == ParameterType.PARAMETER_BOOL and not read_only
    assert default is output.default
    assert yaml_parameters[output.enable] is output.default
    assert output.topic in PARAMS_FILE.read_text(), f"the params file never names {output.topic}"


def test_params_file_comments_every_parameter_and_says_whether_it_is_read_only():
    lines = PARAMS_FILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^ {4}(\w+):", line)
        if not match:
            continue
        name = match.group(1)
        comment = []  # the comment lines right above the key
        for above in reversed(lines[:number]):
            if not above.strip().startswith("#") or above.strip().startswith("# ---"):
                break
            comment.insert(0, above.strip())
        text = " ".join(comment)
        assert text, f"{name} has no comment line"
        expected = "read-only" if PARAMETERS[name][4] else "run time"
        assert expected in text, f"{name}: comment should say {expected!r}: {text}"


_PARSE_WITH_RCLPY = """
import json, sys
import rclpy
from rclpy.node import Node

rclpy.init(args=["--ros-args", "--params-file", sys.argv[1]])
try:
    node = Node(sys.argv[2], automatically_declare_parameters_from_overrides=True)
    values = {}
    for name in node.list_parameters([], 0).names:
        parameter = node.get_parameter(name)
        value = parameter.value
        values[name] = [int(parameter.type_.value),
                        list(value) if not isinstance(value, (str, bool, int, float)) else value]
    node.destroy_node()
finally:
    rclpy.shutdown()
print(json.dumps(values))
"""


def test_rclpy_parameter_parser_accepts_the_params_file_with_the_declared_types(
        yaml_parameters):
    result = subprocess.run([sys.executable, "-c", _PARSE_WITH_RCLPY, str(PARAMS_FILE),
                             NODE_NAME], env=dict(os.environ), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (_default, kind, *_rest) in PARAMETERS.items():
        assert name in parsed, f"rclpy did not load {name}"
        parsed_kind, parsed_value = parsed[name]
        assert parsed_kind == kind, f"{name}: rclpy type {parsed_kind}, declared {kind}"
        assert parsed_value == yaml_parameters[name], name


_CAMERAS_AFTER_FILES = """
import json, sys
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

args = ["--ros-args"]
for path in sys.argv[2:]:
    args += ["--params-file", path]
rclpy.init(args=args)
try:
    node = Node(sys.argv[1])
    value = node.declare_parameter(  # as the node declares it
        "cameras", Parameter.Type.STRING_ARRAY,
        ParameterDescriptor(type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True)).value
    node.destroy_node()
finally:
    rclpy.shutdown()
print(json.dumps(None if value is None else list(value)))
"""


@pytest.mark.parametrize("files, expected", [
    ([["front", "left"], []], ["front", "left"]),  # the launch default after a params file
    ([[]], None),  # the launch default alone: the node takes None as no cameras
    ([[], ["front"]], ["front"]),  # cameras:=[front] on the command line
], ids=["file-list-kept", "default-alone", "argument-wins"])
def test_the_launch_files_empty_cameras_leaves_a_params_file_list_in_force(tmp_path, files,
                                                                           expected):
    # launch_ros writes the node's dict parameters to a params file after params_file's;
    # rcl reads an empty list as no value, which must not override the file's cameras.
    paths = []
    for i, cameras in enumerate(files):
        path = tmp_path / f"{i}.yaml"
        listed = ", ".join(cameras)
        path.write_text(f"/**:\n  ros__parameters:\n    cameras: [{listed}]\n")
        paths.append(str(path))
    result = subprocess.run([sys.executable, "-c", _CAMERAS_AFTER_FILES, NODE_NAME, *paths],
                            env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


# -- rviz/depth.rviz -----------------------------------------------------------------------
def test_rviz_config_shows_depth_normals_and_cloud_on_relative_topics():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    manager = config["Visualization Manager"]
    displays = {display["Class"]: [] for display in manager["Displays"]}
    for display in manager["Displays"]:
        displays[display["Class"]].append(display)
    images = {d["Topic"]["Value"] for d in displays["rviz_default_plugins/Image"]}
    assert images == {output.topic for output in OUTPUTS if output.key.endswith("_vis")}
    (cloud,) = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "points"
    assert cloud["Color Transformer"] == "RGB8"
    assert "rviz_default_plugins/TF" in displays
    for display in manager["Displays"]:
        topic = display.get("Topic")
        if topic:
            assert topic["Reliability Policy"] == "Reliable"  # the node publishes reliably
            assert topic["Durability Policy"] == "Volatile"
            assert not topic["Value"].startswith("/"), "relative, so a namespace works"
    assert manager["Global Options"]["Fixed Frame"] == "camera_optical"
    assert manager["Views"]["Current"]["Class"] == "rviz_default_plugins/Orbit"
    assert [panel["Class"].split("/")[0] for panel in config["Panels"]] == \
        ["rviz_common"] * len(config["Panels"])

"""Launch the E2E-FT depth/normals node (docs/ros_interface.md), optionally with RViz.

    ros2 launch e2e_depth_ros depth.launch.py image_topic:=/cam/image_raw \
        camera_info_topic:=/cam/camera_info lidar_topic:=/velodyne_points rviz:=true

Parameters come from ``params_file`` (``config/depth.yaml`` by default); the ``depth_model``,
``normals_model``, ``device``, ``backend``, ``precision``, ``scale_source`` and
``ground_frame``, ``temporal_alignment`` and ``odom_frame`` arguments are applied after it,
so they win over the file.

Metric depth without LiDAR: ``scale_source:=depth sensor_depth_topic:=/cam/depth/image_rect_raw``
(an RGB-D or stereo camera) or ``scale_source:=ground`` (a camera at a known height: TF from
``ground_frame``, base_footprint by default, to the camera). Steady depth over time:
``temporal_alignment:=true`` (the camera's motion from TF, ``odom_frame`` to the camera).
Set ``use_compressed: true`` in the params file to subscribe to ``<image_topic>/compressed``.

Large messages: the node's process gets the Fast DDS profile ``config/fastdds_large_data.xml``
(a shared-memory segment big enough for a full-resolution cloud), so best-effort consumers
such as Nav2 receive the clouds and depth images (without it most are lost over loopback).
``fastdds_profile:=/your/profile.xml`` uses another one; ``fastdds_profile:=''`` none. An
exported FASTDDS_DEFAULT_PROFILES_FILE is honoured as the default. Other RMWs ignore it.

RViz cannot remap the topics of its displays, so it runs in the node's namespace and
``rviz/depth.rviz`` names the outputs relatively (``depth/image_vis``, ``points``, ...).

Several cameras, one model (one node, frames batched across cameras):

    ros2 launch e2e_depth_ros depth.launch.py cameras:="[front, left, right]"

Each camera's topics are then ``<camera>/image``, ``<camera>/camera_info``,
``<camera>/points_lidar`` in and ``<camera>/depth/image``, ... out, relative to
``namespace``; the ``image_topic`` / ``camera_info_topic`` / ``lidar_topic`` arguments only
apply to the single-camera node. Point a camera at other topics in the params file
(``front.image_topic: /front/color/image_raw``, ``front.camera_info_topic``,
``front.lidar_topic``), or set ``cameras`` there instead of here: an empty ``cameras``
argument (the default) leaves the file's list in place.
Uses only launch APIs present since Humble.
"""

import os
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# Fast DDS 2 (Humble, Iron, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted
# and later) FASTDDS_DEFAULT_PROFILES_FILE and warns about the old name.
FASTDDS_2_DISTROS = ("humble", "iron", "jazzy")
PROFILE_VARIABLE = ("FASTRTPS_DEFAULT_PROFILES_FILE"
                    if os.environ.get("ROS_DISTRO", "") in FASTDDS_2_DISTROS
                    else "FASTDDS_DEFAULT_PROFILES_FILE")


def generate_launch_description() -> LaunchDescription:
    """The node, its arguments, and RViz when ``rviz:=true``."""
    share = FindPackageShare("e2e_depth_ros")
    declared = [
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and of RViz; empty = root"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image input; with use_compressed the "
                                          "node reads <image_topic>/compressed"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="sensor_msgs/CameraInfo of the image"),
        DeclareLaunchArgument("lidar_topic", default_value="/lidar/points",
                              description="sensor_msgs/PointCloud2 LiDAR input (optional)"),
        DeclareLaunchArgument("sensor_depth_topic", default_value="/camera/depth/image_rect_raw",
                              description="Depth image of an RGB-D or stereo camera "
                                          "(16UC1 mm or 32FC1 m) for scale_source depth"),
        DeclareLaunchArgument("sensor_depth_info_topic", default_value="/camera/depth/camera_info",
                              description="CameraInfo of that depth image (needed when it is "
                                          "not registered to the colour image)"),
        DeclareLaunchArgument("scale_source", default_value="auto",
                              description="auto, lidar, depth, ground, fixed or none: what "
                                          "gives depth its metric scale"),
        DeclareLaunchArgument("ground_frame", default_value="base_footprint",
                              description="Frame whose z = 0 plane is the floor (scale_source "
                                          "ground)"),
        DeclareLaunchArgument("temporal_alignment", default_value="false",
                              description="Align each frame to the previous one moved by "
                                          "odometry: steady depth, metric over source gaps"),
        DeclareLaunchArgument("odom_frame", default_value="odom",
                              description="Odometry frame for temporal_alignment (TF from it "
                                          "to the camera)"),
        DeclareLaunchArgument("odom_topic", default_value="/odom",
                              description="nav_msgs/Odometry the node reads instead of TF "
                                          "where tf2 is not installed"),
        # Defaults are the published hub ids, as in node.PARAMETERS.
        DeclareLaunchArgument("depth_model", default_value="GonzaloMG/marigold-e2e-ft-depth",
                              description="Depth checkpoint: hub id or local folder; "
                                          "empty disables depth"),
        DeclareLaunchArgument("normals_model",
                              default_value="GonzaloMG/marigold-e2e-ft-normals",
                              description="Normals checkpoint: hub id or local folder; "
                                          "empty disables normals"),
        DeclareLaunchArgument("device", default_value="auto",
                              description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("backend", default_value="torch",
                              description="torch, openvino or onnxruntime"),
        DeclareLaunchArgument("precision", default_value="auto",
                              description="auto (fp16 on GPUs, fp32 on CPUs), fp32, fp16 "
                                          "or bf16"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config",
                                                                  "depth.yaml"]),
                              description="ROS 2 parameters file for the node"),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                PROFILE_VARIABLE,
                default_value=PathJoinSubstitution([share, "config",
                                                    "fastdds_large_data.xml"])),
            description="Fast DDS XML profile for the node's process (large messages to "
                        "best-effort subscribers); empty = Fast DDS defaults"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Start RViz with rviz/depth.rviz"),
        DeclareLaunchArgument("cameras", default_value="[]",
                              description="Camera names, e.g. \"[front, left, right]\": one "
                                          "node serves them all, topics <camera>/...; "
                                          "[] = one camera on image_topic"),
    ]
    namespace = LaunchConfiguration("namespace")
    image_topic = LaunchConfiguration("image_topic")

    depth_node = Node(
        package="e2e_depth_ros",
        executable="depth_node",
        name="e2e_depth_node",
        namespace=namespace,
        parameters=[
            LaunchConfiguration("params_file"),
            # value_type=str keeps '' (disable) and path-like values strings, not YAML.
            {name: ParameterValue(LaunchConfiguration(name), value_type=str)
             for name in ("depth_model", "normals_model", "device", "backend",
                          "precision", "scale_source", "ground_frame", "odom_frame")},
            {"temporal_alignment": ParameterValue(LaunchConfiguration("temporal_alignment"),
                                                  value_type=bool)},
            # An empty list sets nothing, so a list in the params file stays in force.
            {"cameras": ParameterValue(LaunchConfiguration("cameras"), value_type=List[str])},
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
            ("points_lidar", LaunchConfiguration("lidar_topic")),
            ("sensor_depth/image", LaunchConfiguration("sensor_depth_topic")),
            ("sensor_depth/camera_info", LaunchConfiguration("sensor_depth_info_topic")),
            ("odom", LaunchConfiguration("odom_topic")),
        ],
        additional_env={PROFILE_VARIABLE: LaunchConfiguration("fastdds_profile")},
        output="screen",
        emulate_tty=True,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=namespace,  # the .rviz topics are relative: they follow the node's namespace
        arguments=["-d", PathJoinSubstitution([share, "rviz", "depth.rviz"])],
        output="screen",
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*declared, depth_node, rviz])

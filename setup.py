"""ament_python build of e2e_depth_ros; also installs with plain pip into a virtual environment."""

import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "e2e_depth_ros"
# One command on a user's PATH: ``e2e-depth predict|evaluate|demo|tiny-checkpoint``.
CONSOLE = ["e2e-depth = e2e_depth_ros.offline.cli:main"]
# ``ros2 run e2e_depth_ros <name>`` executables. colcon's ament_python build runs setup.py
# directly and setup.cfg puts scripts in lib/e2e_depth_ros (off PATH); a pip wheel would put
# them in the environment's bin/, so pip builds (PEP 517 wheels) get only CONSOLE.
ROS_EXECUTABLES = [
    "depth_node = e2e_depth_ros.ros.node:main",
    "evaluate = e2e_depth_ros.offline.evaluate:main",
]
PIP_BUILD = bool({"bdist_wheel", "editable_wheel", "dist_info"} & set(sys.argv[1:]))

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "benchmarks"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    # On robots numpy and OpenCV come from rosdep (package.xml), torch and diffusers from
    # requirements.txt (pip); see README.
    install_requires=["setuptools", "numpy"],
    # Optional backends (docs/backends.md); pins in requirements-backends.txt.
    extras_require={
        "openvino": ["openvino>=2024.0", "onnx>=1.15"],
        "onnxruntime": ["onnxruntime>=1.17", "onnx>=1.15"],
        "export": ["onnx>=1.15", "openvino>=2024.0"],
        "backends": ["openvino>=2024.0", "onnxruntime>=1.17", "onnx>=1.15"],
        # The Triton server (e2e-depth serve): PyTriton pins numpy < 2, so give it an
        # environment of its own (docs/serving.md). Robots need only the client: triton.
        "serve": ["nvidia-pytriton>=0.5", "numpy<2"],
        "triton": ["tritonclient[http,grpc]>=2.40"],
        "test": ["pytest"],
    },
    zip_safe=True,
    maintainer="e2e_depth_ros maintainers",
    maintainer_email="maintainers@e2e-depth-ros.invalid",
    description="ROS 2 node and tools for E2E-FT single-step diffusion depth and normals.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": CONSOLE + ([] if PIP_BUILD else ROS_EXECUTABLES)},
)

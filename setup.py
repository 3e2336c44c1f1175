"""ament_python build of e2e_depth_ros; also installs with plain pip into a virtual environment."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "e2e_depth_ros"

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
    # torch and friends come from requirements.txt (pip), never from rosdep.
    install_requires=["setuptools", "numpy"],
    # Optional backends (docs/backends.md); pins in requirements-backends.txt.
    extras_require={
        "openvino": ["openvino>=2024.0", "onnx>=1.15"],
        "onnxruntime": ["onnxruntime>=1.17", "onnx>=1.15"],
        "export": ["onnx>=1.15", "openvino>=2024.0"],
        "backends": ["openvino>=2024.0", "onnxruntime>=1.17", "onnx>=1.15"],
    },
    zip_safe=True,
    maintainer="e2e_depth_ros maintainers",
    maintainer_email="maintainers@e2e-depth-ros.invalid",
    description="ROS 2 node and tools for E2E-FT single-step diffusion depth and normals.",
    license="Apache-2.0",
    tests_require=["pytest"],
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "e2e-depth = e2e_depth_ros.cli:main",
            "depth_node = e2e_depth_ros.node:main",
            "evaluate = e2e_depth_ros.evaluate:main",
            "demo = e2e_depth_ros.demo:main",
        ],
    },
)

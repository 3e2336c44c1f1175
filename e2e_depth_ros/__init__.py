"""ROS 2 node and tools for single-step fine-tuned diffusion depth and normals (E2E-FT).

Kept import-light on purpose: ``--help`` and the pure-math modules must not pull in torch
or rclpy.
"""

__version__ = "0.1.0"

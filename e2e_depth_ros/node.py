"""``python -m e2e_depth_ros.node``: the node's entry point, kept at its documented name."""

from e2e_depth_ros.ros.node import main

if __name__ == "__main__":
    raise SystemExit(main())

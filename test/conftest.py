"""Test harness: DDS stays on loopback (SPEC §6), each run in its own ROS domain."""

import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.pop("ROS_LOCALHOST_ONLY", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

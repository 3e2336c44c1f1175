"""Tools off the robot: the ``e2e-depth`` command, bag evaluation and reports, bag reading and
writing, the demo, synthetic scenes. rosbags, never rclpy (the demo's live part is lazy)."""

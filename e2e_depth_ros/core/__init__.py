"""The numeric core: camera geometry, scale fitting and filtering, the frame pipeline,
metrics. numpy and OpenCV only: no torch, rclpy or rosbags, so robots and tools share it."""

"""The ROS 2 layer: the node (wiring), message conversions, the outputs table, QoS, input
streams, pairing and diagnostics. Only modules that talk to rclpy import it."""

"""ROS 2 side of ORCNN: message conversions, the rclpy node (node.py only) and offline bag replay."""

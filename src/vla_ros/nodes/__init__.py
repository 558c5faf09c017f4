"""Thin rclpy nodes: parameters, topics, timers and threads around the ROS-free core."""

"""ROS-free safety validator: limits, ramps, watchdog, e-stop, workspace and obstacle zones."""

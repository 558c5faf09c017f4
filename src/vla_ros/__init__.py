"""vla_ros: event-triggered vision-language-action control for ROS 2."""

__version__ = "0.1.0"

"""Camera -> event-triggered VLA inference -> safety validator, for a mobile base or an arm.

    ros2 launch vla_ros vla.launch.py mode:=mobile model_dir:=/models/paligemma-vla

The parameter file defaults to share/vla_ros/config/<mode>.yaml; every node reads its own section.
The three nodes are lifecycle nodes started with `autostart: false`; this file configures each and
activates it once it is inactive (a failed configure leaves that node unconfigured, never running).
`vla-ros bringup` starts the same three nodes from the same files where ROS launch is absent.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from vla_ros.nodes.lifecycle import launch_actions

ACTION_SPACE = {"mobile": "mobile3", "arm": "arm7"}


def _nodes(context, *args, **kwargs):  # noqa: ANN001
    mode = LaunchConfiguration("mode").perform(context)
    if mode not in ACTION_SPACE:
        raise RuntimeError(f"mode must be one of {sorted(ACTION_SPACE)}, got {mode!r}")
    params_file = LaunchConfiguration("params_file").perform(context)
    if not params_file:
        share = FindPackageShare("vla_ros").perform(context)
        params_file = os.path.join(share, "config", f"{mode}.yaml")
    namespace = LaunchConfiguration("namespace").perform(context)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    compressed = LaunchConfiguration("compressed").perform(context).lower() == "true"
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    model_dir = LaunchConfiguration("model_dir").perform(context)
    common = {"use_sim_time": use_sim_time, "autostart": False}
    model = {"action_space": ACTION_SPACE[mode], "model_dir": model_dir}
    for name in ("device", "dtype"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            model[name] = value
    nodes = [
        LifecycleNode(
            package="vla_ros",
            executable="camera_node",
            name="vla_camera",
            namespace=namespace,
            parameters=[
                params_file,
                {
                    **common,
                    "compressed": compressed,
                    "image_topic": camera_topic,
                    "compressed_topic": f"{camera_topic}/compressed",
                },
            ],
            output="screen",
        ),
        LifecycleNode(
            package="vla_ros",
            executable="inference_node",
            name="vla_inference",
            namespace=namespace,
            parameters=[params_file, {**common, **model}],
            output="screen",
        ),
        LifecycleNode(
            package="vla_ros",
            executable="safety_node",
            name="vla_safety",
            namespace=namespace,
            parameters=[params_file, {**common, "mode": ACTION_SPACE[mode]}],
            output="screen",
            respawn=True,
            respawn_delay=1.0,
        ),
    ]
    return [action for node in nodes for action in launch_actions(node)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "mode", default_value="mobile", choices=list(ACTION_SPACE), description="robot type"
            ),
            DeclareLaunchArgument(
                "model_dir",
                default_value="/models/tiny",
                description="vla_ros model directory (PaliGemma files + policy.yaml + head)",
            ),
            DeclareLaunchArgument(
                "camera_topic",
                default_value="/camera/image_raw",
                description="raw image topic; '<topic>/compressed' when compressed:=true",
            ),
            DeclareLaunchArgument(
                "compressed",
                default_value="false",
                choices=["true", "false"],
                description="subscribe to sensor_msgs/CompressedImage instead of Image",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                choices=["true", "false"],
                description="follow /clock (bag replay with --clock)",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="torch device for the model (cpu, cuda:0); empty = the parameter file",
            ),
            DeclareLaunchArgument(
                "dtype",
                default_value="",
                choices=["", "float32", "float16", "bfloat16"],
                description="model weight dtype; empty = the parameter file",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value="",
                description="parameter file; empty = share/vla_ros/config/<mode>.yaml",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )

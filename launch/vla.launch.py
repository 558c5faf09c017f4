"""Camera -> event-triggered VLA inference -> safety validator, for a mobile base or an arm.

    ros2 launch vla_ros vla.launch.py mode:=mobile3 model_dir:=/models/paligemma-vla

`mode` is an action space of `vla_ros.action_space` (mobile3 or arm7; mobile and arm are aliases).
The parameter file defaults to the mode's share/vla_ros/config/mobile.yaml or arm.yaml; every node
reads its own section.
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

from vla_ros import action_space as action_spaces
from vla_ros.nodes.lifecycle import launch_actions
from vla_ros.security import DEFAULT_ENCLAVE_ROOT, enclave_path

DTYPES = ("float32", "float16", "bfloat16")


def _nodes(context, *args, **kwargs):  # noqa: ANN001
    try:
        space = action_spaces.get(LaunchConfiguration("mode").perform(context))
    except ValueError as exc:
        raise RuntimeError(f"mode: {exc}") from exc
    params_file = LaunchConfiguration("params_file").perform(context)
    if not params_file:
        share = FindPackageShare("vla_ros").perform(context)
        params_file = os.path.join(share, "config", space.params_file)
    namespace = LaunchConfiguration("namespace").perform(context)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    compressed = LaunchConfiguration("compressed").perform(context).lower() == "true"
    camera_topic = LaunchConfiguration("camera_topic").perform(context)
    model_dir = LaunchConfiguration("model_dir").perform(context)
    enclave_root = LaunchConfiguration("enclave_root").perform(context)

    def enclave(name: str) -> list[str]:
        # Used only where ROS_SECURITY_ENABLE=true (docs/security.md); ignored otherwise.
        return ["--enclave", enclave_path(enclave_root, namespace, name)]

    common = {"use_sim_time": use_sim_time, "autostart": False}
    model = {"action_space": space.name, "model_dir": model_dir}
    for name in ("device", "dtype", "backend"):
        value = LaunchConfiguration(name).perform(context)
        if name == "dtype" and value and value not in DTYPES:
            raise RuntimeError(f"dtype must be one of {list(DTYPES)}, got {value!r}")
        if value:
            model[name] = value
    nodes = [
        LifecycleNode(
            package="vla_ros",
            executable="camera_node",
            name="vla_camera",
            namespace=namespace,
            ros_arguments=enclave("vla_camera"),
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
            ros_arguments=enclave("vla_inference"),
            parameters=[params_file, {**common, **model}],
            output="screen",
        ),
        LifecycleNode(
            package="vla_ros",
            executable="safety_node",
            name="vla_safety",
            namespace=namespace,
            ros_arguments=enclave("vla_safety"),
            parameters=[params_file, {**common, "mode": space.name}],
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
                "mode",
                default_value=action_spaces.DEFAULT_MODE,
                choices=list(action_spaces.choices()),
                description="action space: "
                + "; ".join(s.describe() for s in map(action_spaces.get, action_spaces.names())),
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
                description=f"model weight dtype, one of {', '.join(DTYPES)}; "
                "empty = the parameter file",
            ),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                choices=["", "torch", "onnxruntime", "tensorrt"],
                description="trunk backend (onnxruntime/tensorrt need `vla-ros export`); "
                "empty = the parameter file",
            ),
            DeclareLaunchArgument(
                "enclave_root",
                default_value=DEFAULT_ENCLAVE_ROOT,
                description="SROS2 enclave prefix: each node runs in <root>/<namespace>/<name> "
                "(used only with ROS_SECURITY_ENABLE=true, docs/security.md)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value="",
                description="parameter file; empty = the mode's share/vla_ros/config/*.yaml",
            ),
            OpaqueFunction(function=_nodes),
        ]
    )

"""Standalone safety validator, e.g. in front of a joystick or another policy (ROS 2 Humble+).

    ros2 launch vla_ros safety.launch.py mode:=mobile3 input_topic:=/joy_vel
    ros2 launch vla_ros safety.launch.py mode:=arm7 params_file:=/path/arm.yaml namespace:=robot1

Arguments: `mode` (an action space of `vla_ros.action_space`: mobile3 | arm7, aliases mobile |
arm; empty = the file's value, else mobile3), `params_file` (YAML with a `vla_safety:` or
`/**:` section; empty = the package's config/mobile.yaml or arm.yaml), `namespace`,
`use_sim_time`, `input_topic` (remaps the always-enabled `teleop` input, teleop/cmd_vel or
teleop/delta_twist_cmds; the `vla` input drives only while /vla/active is true, i.e. while the
inference node has an instruction).

The file's `vla_safety` section is read here and handed over as a dict, so it applies whatever
`namespace` is. launch and launch_ros are imported inside the functions that need them: the
planning helpers stay importable (and testable) where ROS 2 launch is not installed.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from vla_ros import action_space as action_spaces

NODE_NAME = "vla_safety"
ARGUMENTS = {
    "mode": (
        "",
        "action space (mobile3 or arm7; aliases mobile, arm); empty takes the parameter file's "
        "mode (else mobile3)",
    ),
    "params_file": ("", "parameter YAML; empty uses the package's config for the mode"),
    "namespace": ("", "namespace for the node and all its relative topics"),
    "use_sim_time": ("false", "use /clock"),
    "input_topic": ("", "command topic for the teleop input (teleop/cmd_vel or delta_twist_cmds)"),
}


def safety_parameters(params_file: str) -> dict[str, Any]:
    """The `ros__parameters` that apply to vla_safety: `/**` first, then the node's own section."""
    if not params_file:
        return {}
    with open(params_file, encoding="utf-8") as stream:
        document = yaml.safe_load(stream) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{params_file}: expected a mapping of node names at the top level")
    merged: dict[str, Any] = {}
    for key in ("/**", NODE_NAME, f"/{NODE_NAME}", f"/**/{NODE_NAME}"):
        section = document.get(key)
        if isinstance(section, dict):
            merged.update(section.get("ros__parameters") or {})
    return merged


def plan(
    mode: str,
    params_file: str,
    namespace: str,
    use_sim_time: str,
    input_topic: str,
    share_dir: str | None,
) -> dict[str, Any]:
    """Keyword arguments for launch_ros's Node, from the launch arguments as strings."""
    if mode:
        mode = action_spaces.canonical(mode)
    if not params_file and share_dir is not None:
        name = action_spaces.get(mode or action_spaces.DEFAULT_MODE).params_file
        guess = os.path.join(share_dir, "config", name)
        params_file = guess if os.path.isfile(guess) else ""
    parameters = safety_parameters(params_file)
    space = action_spaces.get(mode or str(parameters.get("mode", action_spaces.DEFAULT_MODE)))
    parameters["mode"] = space.name
    parameters["use_sim_time"] = use_sim_time.strip().lower() in ("true", "1", "yes")
    remappings = [(space.teleop_topic, input_topic)] if input_topic else []
    return {
        "package": "vla_ros",
        "executable": "safety_node",
        "name": NODE_NAME,
        "namespace": namespace,
        "parameters": [parameters],
        "remappings": remappings,
        "output": "screen",
    }


def _share_dir() -> str | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return get_package_share_directory("vla_ros")
    except LookupError:
        return None


def _setup(context: Any) -> list[Any]:
    """A lifecycle node that this launch configures and activates (vla_ros.nodes.lifecycle)."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    from vla_ros.nodes.lifecycle import launch_actions

    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    kwargs = plan(share_dir=_share_dir(), **values)
    kwargs["parameters"] = [*kwargs["parameters"], {"autostart": False}]
    return launch_actions(LifecycleNode(**kwargs))


def generate_launch_description() -> Any:
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_setup)])

"""launch/safety.launch.py without ROS 2 launch installed: structure by `ast`, planning by import;
plus the vla_safety sections of config/mobile.yaml and config/arm.yaml."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from vla_ros.safety.config import SafetyConfig, param_names

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "safety.launch.py"

CONFIG = {"mobile3": ROOT / "config" / "mobile.yaml", "arm7": ROOT / "config" / "arm.yaml"}

# The optional sensor sections the shipped files carry as comments, checked here enabled.
MOBILE_ZONES = """
    stop_zone: [0.35, 0.25, 0.35, -0.25, -0.25, -0.25, -0.25, 0.25]
    slowdown_zone: [0.8, 0.4, 0.8, -0.4, -0.4, -0.4, -0.4, 0.4]
    footprint: [0.2, 0.18, 0.2, -0.18, -0.2, -0.18, -0.2, 0.18]
    time_to_collision_s: 1.5
"""

ARM_WORKSPACE = """
    workspace_min: [-0.6, -0.6, 0.0]
    workspace_max: [0.6, 0.6, 1.0]
    workspace_sphere_center: [0.0, 0.0, 0.3]
    workspace_sphere_radius: 0.85
"""


def load_launch():
    spec = importlib.util.spec_from_file_location("safety_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_structure():
    tree = ast.parse(LAUNCH.read_text())
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    top_level_imports = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert not top_level_imports & {"launch", "launch_ros", "ament_index_python"}
    module = load_launch()
    assert set(module.ARGUMENTS) == {
        "mode",
        "params_file",
        "namespace",
        "use_sim_time",
        "input_topic",
    }


def test_plan_defaults_remap_and_sim_time():
    module = load_launch()
    plan = module.plan("", "", "", "false", "", share_dir=None)
    assert plan["executable"] == "safety_node"
    assert plan["name"] == "vla_safety"
    assert plan["parameters"] == [{"mode": "mobile3", "use_sim_time": False}]
    assert plan["remappings"] == []
    arm = module.plan("arm7", "", "robot1", "True", "/teleop/twist", share_dir=None)
    assert arm["namespace"] == "robot1"
    assert arm["parameters"][0]["use_sim_time"] is True
    assert arm["remappings"] == [("teleop/delta_twist_cmds", "/teleop/twist")]
    mobile = module.plan("mobile3", "", "", "false", "/joy_vel", share_dir=None)
    assert mobile["remappings"] == [("teleop/cmd_vel", "/joy_vel")]
    with pytest.raises(ValueError, match="mode"):
        module.plan("tank", "", "", "false", "", share_dir=None)


def test_plan_reads_the_parameter_file_whatever_the_namespace(tmp_path):
    module = load_launch()
    params = tmp_path / "robot.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"command_timeout": 0.4}},
                "vla_safety": {"ros__parameters": {"mode": "arm7", "output_rate_hz": 100.0}},
                "vla_camera": {"ros__parameters": {"image_size": 224}},
            }
        )
    )
    plan = module.plan("", str(params), "ns", "false", "", share_dir=None)
    (parameters,) = plan["parameters"]
    assert parameters["mode"] == "arm7"
    assert parameters["command_timeout"] == 0.4
    assert parameters["output_rate_hz"] == 100.0
    assert "image_size" not in parameters
    share = tmp_path / "share"
    (share / "config").mkdir(parents=True)
    (share / "config" / "arm.yaml").write_text(CONFIG["arm7"].read_text())
    from_share = module.plan("arm7", "", "", "false", "", share_dir=str(share))
    assert from_share["parameters"][0]["max_linear_speed"] == 0.25


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("mobile3", ""), ("mobile3", MOBILE_ZONES), ("arm7", ""), ("arm7", ARM_WORKSPACE)],
)
def test_shipped_safety_sections_are_valid_with_and_without_sensors(mode, extra):
    """The shipped section as the launch file reads it, also with the commented sensors enabled."""
    section = load_launch().safety_parameters(str(CONFIG[mode]))
    if extra:
        section.update(yaml.safe_load(extra))
    config = SafetyConfig.from_params(section)
    config.validate()
    assert config.mode == mode
    known = set(param_names(config.mode)) | {"input_stamped", "allow_runtime_loosening"}
    assert set(section) <= known

"""SafetyConfig: defaults, coercion from flat ROS parameters, refusals naming the parameter."""

from __future__ import annotations

import pytest

from vla_ros.safety.config import MODES, PARAMS, SafetyConfig, param_names


@pytest.mark.parametrize("mode", MODES)
def test_defaults_are_valid_and_sized_for_the_mode(mode):
    config = SafetyConfig.for_mode(mode)
    config.validate()
    assert len(config.max_velocity) == config.dof == len(config.axis_names)
    assert set(param_names(mode)) <= set(PARAMS)


def test_from_params_coerces_ros_values_and_ignores_foreign_names():
    config = SafetyConfig.from_params(
        {
            "mode": "mobile3",
            "max_velocity": [1, 0.0, 2],
            "command_timeout": 1,
            "stop_zone": [0.3, 0.3, 0.3, -0.3, -0.3, -0.3, -0.3, 0.3],
            "use_sim_time": True,
            "input_stamped": True,
        }
    )
    config.validate()
    assert config.max_velocity == (1.0, 0.0, 2.0)
    assert config.command_timeout == 1.0
    assert isinstance(config.command_timeout, float)
    assert config.scan_configured


def test_from_params_uses_mode_defaults():
    config = SafetyConfig.from_params({"mode": "arm7"})
    assert config.dof == 6
    assert config == SafetyConfig.for_mode("arm7")


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"mode": "hexapod"}, "mode"),
        ({"max_velocity": [0.5, 0.5]}, "max_velocity"),
        ({"min_velocity": [0.6, -0.5, -1.0]}, "min_velocity[0]"),
        ({"min_velocity": [0.1, -0.5, -1.0], "max_velocity": [0.5, 0.5, 1.0]}, "must contain 0"),
        ({"max_accel": [1.0, -1.0, 1.0]}, "max_accel[1]"),
        ({"max_decel": [-2.5, 1.0, 1.0]}, "max_decel[0]"),
        ({"deadband": [0.0, -0.1, 0.0]}, "deadband[1]"),
        ({"command_timeout": 0.0}, "command_timeout"),
        ({"max_command_age": -1.0}, "max_command_age"),
        ({"scan_timeout": 0.0}, "scan_timeout"),
        ({"output_rate_hz": 5000.0}, "output_rate_hz"),
        ({"max_input_magnitude": 0.1}, "max_input_magnitude"),
        ({"future_tolerance": -0.1}, "future_tolerance"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"slowdown_ratio": -0.5}, "slowdown_ratio"),
        ({"stop_zone": [0.0, 0.0, 1.0]}, "stop_zone"),
        ({"stop_zone": [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]}, "zero area"),
        ({"time_to_collision_s": 1.0}, "footprint"),
        ({"scan_pose": [0.0, 0.0]}, "scan_pose"),
        ({"command_timeout": float("nan")}, "command_timeout"),
        ({"command_timeout": "fast"}, "command_timeout"),
        ({"scale_velocities": 1}, "scale_velocities"),
        ({"max_velocity": [0.5, True, 1.0]}, "max_velocity"),
        ({"workspace_min": [0.0, 0.0, 0.0], "workspace_max": [1.0, 1.0, 1.0]}, "workspace_min"),
    ],
)
def test_refusals_name_the_parameter(params, names):
    with pytest.raises(ValueError, match=names.replace("[", r"\[").replace("]", r"\]")):
        SafetyConfig.from_params(params).validate()


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"workspace_min": [0.0, 0.0, 0.0]}, "workspace_max"),
        ({"workspace_min": [0.0, 0.0, 1.0], "workspace_max": [1.0, 1.0, 1.0]}, "workspace_min"),
        ({"workspace_sphere_radius": 0.5}, "workspace_sphere_center"),
        ({"command_frame": ""}, "command_frame"),
        ({"gripper_on_estop": "drop"}, "gripper_on_estop"),
        ({"geofence": [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]}, "geofence"),
        ({"max_velocity": [0.5, 0.5, 1.0]}, "6 values"),
    ],
)
def test_arm_refusals_name_the_parameter(params, names):
    with pytest.raises(ValueError, match=names):
        SafetyConfig.from_params({"mode": "arm7", **params}).validate()

"""The launch files, parameter files and code agree: no executable, argument or parameter drifts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from package_source import console_scripts, declared_launch_arguments, launch_keyword_values
from vla_ros import action_space as action_spaces
from vla_ros.bringup import StackOptions, build_stack, ros_args_for

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
NODE_NAMES = {"vla_camera", "vla_inference", "vla_safety"}


def test_launch_files_exist():
    assert (ROOT / "launch" / "vla.launch.py") in LAUNCH_FILES
    assert (ROOT / "launch" / "safety.launch.py") in LAUNCH_FILES


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launched_executable_is_a_console_script(launch_file: Path):
    executables = launch_keyword_values(launch_file, "executable")
    assert executables, f"{launch_file.name} launches nothing"
    assert executables <= console_scripts()
    assert launch_keyword_values(launch_file, "package") == {"vla_ros"}
    names = launch_keyword_values(launch_file, "name") | {
        node.value.value
        for node in ast.walk(ast.parse(launch_file.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "NODE_NAME" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    }
    assert names
    assert names <= NODE_NAMES


def test_vla_launch_declares_the_documented_arguments():
    assert declared_launch_arguments(ROOT / "launch" / "vla.launch.py") == {
        "mode",
        "model_dir",
        "camera_topic",
        "compressed",
        "namespace",
        "use_sim_time",
        "device",
        "dtype",
        "backend",
        "params_file",
        "enclave_root",
    }


def test_parameter_files_are_installed_and_cover_both_modes():
    for mode in action_spaces.names():
        name = action_spaces.get(mode).params_file
        sections = yaml.safe_load((ROOT / "config" / name).read_text(encoding="utf-8"))
        assert set(sections) == NODE_NAMES, f"config/{name} sections"
        for node_name, section in sections.items():
            assert set(section) == {"ros__parameters"}, node_name


@pytest.mark.ros
@pytest.mark.parametrize("mode", ["mobile3", "arm"])
def test_every_yaml_parameter_is_declared_with_a_valid_value(mode: str):
    """Start the real nodes from the file: each accepts every value and declares every key."""
    import rclpy
    from rclpy.context import Context

    from vla_ros.policy.stub import StubPolicy
    from vla_ros.policy.types import PolicySpec

    options = StackOptions(mode=mode, model_dir="unused-with-stub-policy")
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    spec = PolicySpec(
        action_space=action_spaces.canonical(mode),
        chunk=10,
        window=8,
        action_period_s=0.1,
        image_size=224,
    )
    nodes = build_stack(context, options, policy=StubPolicy(spec))
    try:
        sections = yaml.safe_load(options.resolved_params_file().read_text(encoding="utf-8"))
        for node in nodes:
            expected = sections[node.get_name()]["ros__parameters"]
            for name, value in expected.items():
                assert node.has_parameter(name), f"{node.get_name()} does not declare {name}"
                actual = node.get_parameter(name).value
                if isinstance(value, list):
                    assert list(actual) == pytest.approx([float(v) for v in value]), name
                elif name not in {"mode", "action_space", "model_dir"}:
                    assert actual == value, name
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launched_nodes_are_lifecycle_nodes_that_the_launch_file_starts(launch_file: Path):
    """Each node is a launch_ros LifecycleNode with autostart off, handed to `launch_actions`
    (configure, then activate once inactive); a plain Node would skip the transitions."""
    tree = ast.parse(launch_file.read_text(encoding="utf-8"))
    called = {
        getattr(node.func, "id", getattr(node.func, "attr", None))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert "LifecycleNode" in called
    assert "Node" not in called
    assert "launch_actions" in called
    autostart = [
        value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == "autostart"
    ]
    assert autostart == [False]


def test_launch_actions_configure_then_activate():
    """The helper's transitions, read from its source (launch_ros is not installable here)."""
    import inspect

    from vla_ros.nodes import lifecycle

    source = inspect.getsource(lifecycle.launch_actions)
    assert "TRANSITION_CONFIGURE" in source
    assert 'goal_state="inactive"' in source
    assert "TRANSITION_ACTIVATE" in source


@pytest.mark.ros
@pytest.mark.parametrize(
    ("node", "good", "typo"),
    [
        ("vla_inference", "control_rate_hz: 20.0", "control_rat_hz: 20.0"),
        ("vla_camera", "image_size: 224", "image_sise: 224"),
    ],
)
def test_a_misspelled_key_refuses_the_start_naming_the_nearest_one(node, good, typo, tmp_path):
    """As in vla_safety: a typo would otherwise leave the default silently in force."""
    import rclpy
    from rclpy.context import Context

    from vla_ros.params import ParameterError
    from vla_ros.policy.stub import StubPolicy
    from vla_ros.policy.types import PolicySpec

    text = (ROOT / "config" / "mobile.yaml").read_text(encoding="utf-8")
    assert good in text
    params = tmp_path / "mobile.yaml"
    params.write_text(text.replace(good, typo), encoding="utf-8")
    options = StackOptions(mode="mobile3", model_dir="unused", params_file=str(params))
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    spec = PolicySpec(
        action_space="mobile3", chunk=10, window=8, action_period_s=0.1, image_size=224
    )
    try:
        with pytest.raises(ParameterError) as refused:
            build_stack(context, options, policy=StubPolicy(spec))
        wrong, right = typo.split(":")[0], good.split(":")[0]
        assert f"{node}: unknown parameter(s) for {node}: {wrong} (did you mean {right}?)" in str(
            refused.value
        )
    finally:
        rclpy.shutdown(context=context)

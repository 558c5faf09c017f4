"""Parameter files read as rcl reads them: nested, wildcard and namespaced sections, in one
module (`vla_ros.params`) that every tool reading them uses."""

from __future__ import annotations

import pytest
import yaml

from vla_ros.bag.check import check_bag
from vla_ros.bag.io import BagError
from vla_ros.nodes.common import misspelled_sections
from vla_ros.params import ParamsFileError, load_node_params


def test_param_file_sections(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "/**": {"ros__parameters": {"output_rate_hz": 20.0, "use_sim_time": True}},
                "robot1": {"vla_safety": {"ros__parameters": {"output_rate_hz": 30.0}}},
                "vla_inference": {"ros__parameters": {"control_rate_hz": 10.0}},
            }
        ),
        encoding="utf-8",
    )
    assert load_node_params(path) == {"output_rate_hz": 30.0, "use_sim_time": True}
    assert load_node_params(path, "vla_inference") == {
        "output_rate_hz": 20.0,
        "use_sim_time": True,
        "control_rate_hz": 10.0,
    }
    path.write_text(yaml.safe_dump({"other": {"ros__parameters": {}}}), encoding="utf-8")
    with pytest.raises(ParamsFileError, match="vla_safety"):
        load_node_params(path)
    path.write_text("a: [", encoding="utf-8")
    with pytest.raises(ParamsFileError, match="YAML"):
        load_node_params(path)
    with pytest.raises(FileNotFoundError):
        load_node_params(tmp_path / "missing.yaml")


def test_a_misspelled_nested_section_is_named_too(tmp_path):
    """`robot1: {vla_safty: ...}` used to pass: only top-level names were looked at."""
    path = tmp_path / "robot.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "robot1": {"vla_safty": {"ros__parameters": {}}},
                "/robot2/vla_camera": {"ros__parameters": {}},
                "/**": {"ros__parameters": {}},
            }
        ),
        encoding="utf-8",
    )
    (problem,) = misspelled_sections(["--ros-args", "--params-file", str(path)])
    assert "robot1/vla_safty" in problem
    assert "'vla_safety'" in problem


def test_bag_check_names_a_params_file_without_a_section_for_the_node(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"other": {"ros__parameters": {}}}), encoding="utf-8")
    with pytest.raises(BagError, match="no ros__parameters for node 'vla_safety'"):
        check_bag(tmp_path / "missing_bag", path)

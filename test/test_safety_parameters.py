"""The safety parameters are declared once (`safety.config.PARAMS`): the node (at start-up and at
run time), `SafetyConfig.validate()` and `bag check --params` accept and refuse the same values
at and around every declared bound and choice."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from rclpy.parameter import Parameter

from vla_ros import action_space as action_spaces
from vla_ros.bag.check import check_bag
from vla_ros.bag.io import BagError, BagWriter
from vla_ros.nodes.safety_node import SafetyNode
from vla_ros.params import RCL_OWN_PARAMETERS, ParameterError, load_node_params
from vla_ros.safety.config import (
    DEFAULT_INPUTS,
    DEFAULT_LOCKS,
    PARAMS,
    SafetyConfig,
    param_names,
    section_keys,
)

MODES = action_spaces.names()
ROOT = Path(__file__).resolve().parents[1]


def _bounded(mode: str) -> list[str]:
    return [
        name
        for name in param_names(mode)
        if name != "mode"
        and (
            PARAMS[name].choices is not None
            or any(b is not None for b in (PARAMS[name].low, PARAMS[name].high, PARAMS[name].above))
        )
    ]


CASES = [(mode, name) for mode in MODES for name in _bounded(mode)]


def _around(bound: float, integer: bool) -> list[float]:
    step = 1 if integer else 0.01 * max(1.0, abs(bound))
    return [bound - step, bound, bound + step]


def candidates(mode: str, name: str) -> list[Any]:
    """Values at and on both sides of each bound (each choice and one that is none), placed in
    the first and the last element of a per-axis tuple."""
    param = PARAMS[name]
    default = getattr(SafetyConfig.for_mode(mode), name)
    if param.choices is not None:
        return [*param.choices, "not_a_choice"]
    integer = isinstance(default, int) and not isinstance(default, bool)
    numbers: list[float] = []
    for bound in (param.low, param.high, param.above):
        if bound is not None:
            numbers += _around(bound, integer)
    if integer:
        return [int(n) for n in numbers]
    if not isinstance(default, tuple):
        return [float(n) for n in numbers]
    values = []
    for index in (0, len(default) - 1):
        for number in numbers:
            changed = list(default)
            changed[index] = float(number)
            values.append(changed)
    return values


def _validate_accepts(mode: str, name: str, value: Any) -> bool:
    try:
        SafetyConfig.from_params({"mode": mode, name: value}).validate()
    except ValueError:
        return False
    return True


def _bag_check_accepts(bag, mode: str, name: str, value: Any) -> bool:
    try:
        check_bag(bag, {name: value}, mode=mode)
    except BagError as exc:
        return not str(exc).startswith("safety parameters")
    return True


def _start_accepts(context, mode: str, name: str, value: Any) -> bool:
    try:
        node = SafetyNode(
            context=context,
            parameter_overrides=[Parameter("mode", value=mode), Parameter(name, value=value)],
        )
    except ParameterError:
        return False
    node.destroy_node()
    return True


@pytest.fixture(scope="module")
def empty_bag(tmp_path_factory):
    """A recording with no safety output: `bag check` still validates its parameters first."""
    path = tmp_path_factory.mktemp("bag") / "run"
    with BagWriter(path) as bag:
        bag.add_topic("/unrelated", "std_msgs/msg/Bool")
    return path


def test_every_safety_config_field_is_declared_once():
    assert list(PARAMS) == [spec.name for spec in fields(SafetyConfig)]
    for mode in MODES:
        assert "mode" in param_names(mode)
        for name in param_names(mode):
            assert PARAMS[name].description


@pytest.mark.parametrize(("mode", "name"), CASES, ids=[f"{m}-{n}" for m, n in CASES])
def test_node_validate_and_bag_check_agree_at_every_bound(ros_context, empty_bag, mode, name):
    running = SafetyNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("mode", value=mode),
            Parameter("allow_runtime_loosening", value=True),
        ],
    )
    default = running.get_parameter(name).value
    verdicts = []
    try:
        for value in candidates(mode, name):
            offline = _validate_accepts(mode, name, value)
            (result,) = running.set_parameters([Parameter(name, value=value)])
            if result.successful:
                (reset,) = running.set_parameters([Parameter(name, value=default)])
                assert reset.successful, reset.reason
            at_start = _start_accepts(ros_context, mode, name, value)
            in_bag = _bag_check_accepts(empty_bag, mode, name, value)
            assert (result.successful, at_start, in_bag) == (offline,) * 3, (
                f"{name} = {value!r} in {mode}: validate {offline}, node at run time "
                f"{result.successful} ({result.reason}), at start-up {at_start}, "
                f"bag check {in_bag}"
            )
            verdicts.append(offline)
    finally:
        running.destroy_node()
    assert False in verdicts, f"no candidate of {name} is refused: its bounds are not enforced"


def test_an_output_rate_below_one_hertz_is_refused_everywhere():
    """It used to be refused by the node only: validate() and bag check took 0.5 Hz."""
    with pytest.raises(ValueError, match=r"output_rate_hz must be in \[1, 1000\]"):
        SafetyConfig(output_rate_hz=0.5).validate()


def test_a_zero_speed_limit_is_refused_by_the_declaration_too():
    """The node's descriptor once allowed max_linear_speed 0, which validate() refused."""
    assert PARAMS["max_linear_speed"].problem("max_linear_speed", 0.0) == (
        "max_linear_speed must be > 0, got 0.0"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("inputs", "locks"), [(DEFAULT_INPUTS, DEFAULT_LOCKS), (("vla", "joy"), ("pause", "dock"))]
)
def test_the_offline_key_list_is_what_the_node_declares(ros_context, mode, inputs, locks):
    node = SafetyNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("mode", value=mode),
            Parameter("input_names", value=list(inputs)),
            Parameter("lock_names", value=list(locks)),
        ],
    )
    try:
        declared = set(node.get_parameters_by_prefix("")) - set(RCL_OWN_PARAMETERS)
    finally:
        node.destroy_node()
    assert declared == section_keys(mode, inputs, locks)


def _misspelled(key: str) -> str:
    middle = len(key) // 2
    return key[:middle] + key[middle + 1 :]


@pytest.mark.parametrize("file", ["mobile.yaml", "arm.yaml"])
def test_a_misspelled_key_is_refused_by_the_node_and_by_bag_check(ros_context, empty_bag, file):
    section = load_node_params(ROOT / "config" / file, "vla_safety")
    check_bag(empty_bag, section)
    for key in sorted(section):
        typo = {**{k: v for k, v in section.items() if k != key}, _misspelled(key): section[key]}
        with pytest.raises(ParameterError) as refused:
            SafetyNode(
                context=ros_context,
                parameter_overrides=[Parameter(k, value=v) for k, v in typo.items()],
            )
        if key != "mode":  # without it the node is mobile3, whose limits an arm file breaks
            assert _misspelled(key) in str(refused.value)
        # A recording's topics name the mode; this one has none, so it is passed.
        near = f"{_misspelled(key)} (did you mean {key}?)"
        with pytest.raises(BagError, match=re.escape(near)):
            check_bag(empty_bag, typo, mode=section["mode"])

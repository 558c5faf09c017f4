"""ROS 2 parameter files, read as rcl reads them: the one place that knows their layout.

A file maps node names to `ros__parameters`, either flat (`/robot1/vla_safety:`) or nested
(`robot1: {vla_safety: {...}}`); `/**` (or `**`, `*`) sections apply to every node first, then
every section whose last name is the node's, in file order. The nodes (through rcl), `bag check
--params`, `train --trigger-params`, `bringup` and `sim eval` all see the same values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vla_ros import action_space as action_spaces
from vla_ros.files import config_file, read_mapping

RCL_OWN_PARAMETERS = ("use_sim_time", "autostart", "start_type_description_service")
"""Overrides that rclpy or ManagedNode read themselves, declared by the node or not."""


class ParamsFileError(ValueError):
    """A parameter file that cannot be read or has no section for the node; names the file."""


class ParameterError(ValueError):
    """A parameter file or override that a node refuses to start with."""


def default_params_file(mode: str) -> Path:
    """The action space's parameter file (config/mobile.yaml, config/arm.yaml, ...)."""
    return config_file(action_spaces.get(mode).params_file)


def unknown_keys(keys: Iterable[str], known: Iterable[str]) -> list[str]:
    """The keys of a node's section that it does not declare (rcl's own and `qos_overrides.*`
    aside), each with the nearest declared one: a misspelling would leave the default in force."""
    declared = sorted(known)
    unknown = []
    for key in sorted(keys):
        if key in declared or key in RCL_OWN_PARAMETERS or key.startswith("qos_overrides."):
            continue
        near = difflib.get_close_matches(key, declared, n=1)
        unknown.append(f"{key} (did you mean {near[0]}?)" if near else key)
    return unknown


def read_params_file(path: str | Path) -> dict[Any, Any]:
    return read_mapping(
        path, "no such parameter file", "node names to ros__parameters", ParamsFileError
    )


def sections(path: str | Path, document: Mapping[Any, Any]) -> Iterator[tuple[str, dict]]:
    """(qualified node name, its ros__parameters) for every section, nested ones joined by '/'."""

    def walk(section: Mapping[Any, Any], names: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
        for key, value in section.items():
            if key == "ros__parameters":
                if not isinstance(value, dict):
                    raise ParamsFileError(
                        f"{path}: ros__parameters of {'/'.join(names)} is not a map"
                    )
                yield "/".join(names), value
            elif isinstance(value, dict):
                yield from walk(value, (*names, str(key).strip("/")))

    yield from walk(document, ())


def node_name(qualified: str) -> str:
    """The last name of a section (`robot1/vla_safety` -> `vla_safety`)."""
    return qualified.strip("/").rsplit("/", 1)[-1]


def load_node_params(path: str | Path, node: str = "vla_safety") -> dict[str, Any]:
    """The flat `ros__parameters` `node` gets from the file (wildcards first, then its own
    sections at any namespace); ParamsFileError when none applies."""
    wildcard: dict[str, Any] = {}
    exact: dict[str, Any] = {}
    for qualified, values in sections(path, read_params_file(path)):
        name = node_name(qualified)
        if name in ("**", "*"):
            wildcard.update(values)
        elif name == node:
            exact.update(values)
    if not wildcard and not exact:
        raise ParamsFileError(f"{path}: no ros__parameters for node {node!r} (or /**)")
    return {**wildcard, **exact}


def misspelled_sections(path: str | Path, known: Sequence[str]) -> list[str]:
    """Sections whose node name is close to one of `known` but not equal (`vla_safty`): such a
    node would silently run on defaults. Other nodes' sections and wildcards pass; a file that
    cannot be read gives none (rcl reports it itself)."""
    try:
        found = list(sections(path, read_params_file(path)))
    except (OSError, ValueError):
        return []
    problems = []
    for qualified, _ in found:
        name = node_name(qualified)
        if name in known or "*" in name:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if close:
            problems.append(f"{path}: section {qualified!r} (did you mean {close[0]!r}?)")
    return problems

"""`vla-ros` speaks one dialect: --version, one spelling of modes and flags, help and defaults."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros import __version__
from vla_ros.action_space import mode_type
from vla_ros.cli import _commands, build_parser, main


def options() -> list[tuple[str, argparse.Action]]:
    found = []
    for command in _commands(build_parser()):
        for action in command._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                found.append((command.prog, action))
    return found


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"vla-ros {__version__}"
    script = Path(sys.executable).with_name("vla-ros")
    shown = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == f"vla-ros {__version__}"


def test_every_option_has_help_and_no_empty_choice():
    for prog, action in options():
        assert action.help, f"{prog} {action.option_strings[0]} has no help text"
        if action.choices is not None:
            assert "" not in action.choices, f"{prog} {action.option_strings[0]} offers ''"


def test_every_action_space_option_is_one_mode_flag():
    """`--mode` everywhere, names and aliases resolved by the registry, never `--action-space`."""
    seen = []
    for prog, action in options():
        names = set(action.option_strings) | {action.dest}
        if names & {"mode", "action_space", "--action-space", "--mode"}:
            assert action.option_strings == ["--mode"], f"{prog}: {action.option_strings}"
            assert action.type is mode_type, f"{prog} --mode does not use the registry"
            seen.append(prog)
    assert {"vla-ros bringup", "vla-ros make-tiny-model", "vla-ros bag check"} <= set(seen)


@pytest.mark.parametrize(
    "argv",
    [
        ["bringup", "--model-dir", "m"],
        ["demo"],
        ["make-tiny-model", "o"],
        ["fetch-model"],
        ["bag", "check", "b"],
    ],
)
def test_aliases_become_the_canonical_name(argv):
    parser = build_parser()
    assert parser.parse_args([*argv, "--mode", "arm"]).mode == "arm7"
    assert parser.parse_args([*argv, "--mode", "mobile3"]).mode == "mobile3"
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--mode", "hexapod"])


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["bringup", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: mobile3)" in text
    assert "(default: /camera/image_raw)" in text
    assert "{float32,float16,bfloat16}" in text


def test_every_help_states_its_default_at_most_once():
    for command in _commands(build_parser()):
        text = " ".join(command.format_help().split())
        for option in text.split("--")[1:]:
            assert option.count("(default") <= 1, f"{command.prog}: --{option}"


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    """`sim eval --mode arm` is not `--model-dir arm`, in any command."""
    parser = build_parser()
    assert all(not command.allow_abbrev for command in [parser, *_commands(parser)])
    with pytest.raises(SystemExit) as exited:
        main(["sim", "eval", "--model-d", "models/tiny"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --model-d" in capsys.readouterr().err

"""`vla-ros` command line: each feature package contributes its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes `add_commands(subparsers)`; handlers import heavy libraries lazily so
# `vla-ros --help` stays fast on a Jetson.
COMMAND_MODULES = (
    "vla_ros.policy.cli",
    "vla_ros.bag.cli",
    "vla_ros.learn.cli",
    "vla_ros.learn.pipeline",
    "vla_ros.learn.reference",
    "vla_ros.bringup",
    "vla_ros.demo",
    "vla_ros.sim.cli",
    "vla_ros.commands",
    "vla_ros.security",
    "vla_ros.bench",
    "vla_ros.faults",
)


def build_parser() -> argparse.ArgumentParser:
    from vla_ros import __version__

    parser = argparse.ArgumentParser(prog="vla-ros", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vla-ros {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    parser.allow_abbrev = False
    for command in _commands(parser):
        # Every option's help ends with its default, the same way in every command.
        command.formatter_class = _DefaultsFormatter
        # An abbreviation is a typo waiting to happen: `sim eval --mode arm` meant --model-dir.
        command.allow_abbrev = False
    return parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults only: not None, False or '' (their help says what happens instead),
    and once: a help text that states its default already keeps its own wording."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "") or isinstance(action.default, list):
            return action.help
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub-)command parser below `parser`, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                found += [command, *_commands(command)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"vla-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

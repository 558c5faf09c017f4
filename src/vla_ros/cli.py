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
    "vla_ros.bringup",
    "vla_ros.demo",
    "vla_ros.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-ros", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(subparsers)
    return parser


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

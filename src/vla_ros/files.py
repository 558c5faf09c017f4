"""Reading the small structured files users hand us (parameter, QoS, policy, processor files),
and finding the ones we ship in config/."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def read_mapping(
    path: str | Path,
    missing: str,
    layout: str,
    error: type[ValueError] = ValueError,
) -> dict[Any, Any]:
    """A YAML or JSON file (by suffix) whose top level must be a mapping.

    Every failure names the file: `missing` completes "<path> is missing: ..." and `layout` says
    what the mapping should hold. Parse and shape errors raise `error` (a ValueError subclass).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {missing}")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_bytes().decode("utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not valid {kind}: not UTF-8 text at byte {exc.start}") from exc
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        # One line: YAML errors span several (context, marks), logs and exit messages must not.
        raise error(f"{path}: not valid {kind}: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of {layout} at the top level")
    return raw


def config_file(name: str) -> Path:
    """A file of config/ from the source tree, else from share/vla_ros (pip or colcon install)."""
    for candidate in (CONFIG_DIR / name, Path(sys.prefix) / "share" / "vla_ros" / "config" / name):
        if candidate.is_file():
            return candidate
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("vla_ros")) / "config" / name
    except (ImportError, LookupError, OSError):  # OSError: no ROS workspace sourced
        return CONFIG_DIR / name

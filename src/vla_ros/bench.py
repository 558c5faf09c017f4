"""Benchmark reports that say under which conditions their numbers were taken.

A median measured while other jobs share the cores says more about the neighbours than about
the code (the backend table once showed eager torch 40x slower than it is). Every `make bench`
script therefore samples the machine before it starts, stores that beside its figures, warns
when the machine was busy, and reports medians with their spread. `vla-ros bench tables`
regenerates the README's benchmark table from the JSON, conditions included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUSY_LOAD_PER_CPU = 0.5
"""1-minute load average per usable CPU above which a machine counts as busy before a run."""


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def conditions(load: Sequence[float] | None = None, cpus: int | None = None) -> dict[str, Any]:
    """The machine as a benchmark starts: CPU count, load average, and a warning when busy."""
    load = list(os.getloadavg() if load is None else load)
    cpus = usable_cpus() if cpus is None else cpus
    busy = load[0] > BUSY_LOAD_PER_CPU * cpus
    warning = (
        f"machine busy: load average {load[0]:.2f} on {cpus} CPUs before the run "
        f"(> {BUSY_LOAD_PER_CPU} per CPU); absolute times are inflated, read the ratios"
        if busy
        else None
    )
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": cpus,
        "load_average": [round(x, 2) for x in load],
        "busy": busy,
        "warning": warning,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median with the 10th-90th percentile range, over repeats (n >= 1)."""
    if not values:
        raise ValueError("no measurements")
    ordered = sorted(float(v) for v in values)

    def percentile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "median": statistics.median(ordered),
        "p10": percentile(0.1),
        "p90": percentile(0.9),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def write_report(path: Path, report: dict[str, Any], started: dict[str, Any]) -> Path:
    """Write `report` with the start conditions and the load at the end; print the warning."""
    payload = {**report, "conditions": {**started, "load_average_after": _load_after()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if started.get("warning"):
        print(f"WARNING: {started['warning']}", file=sys.stderr)
    print(f"wrote {path}")
    return path


def _load_after() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe(conditions_: dict[str, Any]) -> str:
    load = conditions_.get("load_average") or []
    text = (
        f"{conditions_.get('usable_cpus')} CPUs, load average "
        f"{' / '.join(f'{x:.2f}' for x in load)} (1/5/15 min) before the run"
    )
    if conditions_.get("busy"):
        text += ": **busy machine, absolute times inflated; read the ratios**"
    return text


BACKENDS_TABLE = "bench-backends"
"""No colon: `<!-- name: ... -->` is how the docs mark bash blocks (test_readme)."""
ARCHIVE_DIR = Path("docs/bench")


def backends_table(results: dict[str, Any]) -> str:
    """The README's backend table from bench_backends.json."""
    lines = [
        "| model | trunk backend | ms / frame (p10-p90) | × torch | ACT cosine (min) "
        "| action NRMSE | action max \\|Δ\\| | gripper | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        if model == "conditions" or not isinstance(rows, dict):
            continue
        for label, row in rows.items():
            if not isinstance(row, dict) or "trunk_ms" not in row:
                continue
            band = ""
            if "trunk_p10_ms" in row:
                band = f" ({row['trunk_p10_ms']:.4g}-{row['trunk_p90_ms']:.4g})"
            cosine = f"{row['cosine_min']:.6f}" if "cosine_min" in row else "reference"
            nrmse = f"{row['action_nrmse']:.1e}" if "action_nrmse" in row else ""
            max_abs = f"{row['action_max_abs']:.1e}" if "action_max_abs" in row else ""
            gripper = {True: "identical", False: "DIFFER", None: ""}[row.get("gripper_agree")]
            lines.append(
                f"| {model} | {label} | {row['trunk_ms']:.4g}{band} "
                f"| {row['speedup_vs_torch']:.2f} | {cosine} | {nrmse} | {max_abs} | {gripper} "
                f"| {row.get('rss_mb', 0):.0f} |"
            )
    cond = results.get("conditions")
    if cond:
        lines += ["", f"Conditions: {describe(cond)}."]
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- name -->` and `<!-- /name -->` in `text`."""
    pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(\n<!-- /{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name} --> ... <!-- /{name} --> block to regenerate")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text, count=1)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark reports (make bench writes them)")
    commands = parser.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    tables = commands.add_parser(
        "tables", help="regenerate the README's benchmark tables from out/bench/*.json"
    )
    tables.add_argument("--json", type=Path, default=Path("out/bench"), help="make bench --out")
    tables.add_argument("--readme", type=Path, default=Path("README.md"), help="file to update")
    tables.add_argument(
        "--archive",
        type=Path,
        default=ARCHIVE_DIR,
        help="where the JSON behind the README's tables is kept (committed, checked by a test)",
    )
    tables.set_defaults(handler=_handle_tables)


def _handle_tables(args: argparse.Namespace) -> int:
    source = args.json / "bench_backends.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: run `make bench` first")
    raw = source.read_text(encoding="utf-8")
    results = json.loads(raw)
    text = args.readme.read_text(encoding="utf-8")
    args.readme.write_text(
        replace_block(text, BACKENDS_TABLE, backends_table(results)), encoding="utf-8"
    )
    args.archive.mkdir(parents=True, exist_ok=True)
    if (args.archive / source.name).resolve() != source.resolve():
        (args.archive / source.name).write_text(raw, encoding="utf-8")
    print(f"updated {args.readme} from {source} (kept in {args.archive})")
    return 0

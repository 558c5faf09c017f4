"""`vla-ros bag report`: what a recorded run did, as a table and a PNG.

Topics are found by name suffix and type, so namespaced runs (`/robot1/cmd_vel`) report the same.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros import action_space as action_spaces
from vla_ros.bag.io import BagInfo, BagReader, deserialize
from vla_ros.safety.config import twist_vector

AXES = action_spaces.view("axes")


@dataclass
class Series:
    """Samples over time; `t` in seconds from the start of the bag."""

    t: list[float] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, t: float, values: tuple[float, ...]) -> None:
        self.t.append(t)
        self.values.append(values)


@dataclass
class RunReport:
    info: BagInfo
    action_space: str | None = None
    commands: Series = field(default_factory=Series)
    raw_commands: Series = field(default_factory=Series)
    gripper: Series = field(default_factory=Series)
    events: list[dict[str, Any]] = field(default_factory=list)
    malformed_events: int = 0
    estop: Series = field(default_factory=Series)
    topics: dict[str, str] = field(default_factory=dict)

    def causes(self) -> Counter[str]:
        return Counter(str(e.get("cause", "?")) for e in self.events)

    def latency(self, key: str) -> dict[str, float | None]:
        """Percentiles of one numeric event field; None (valid JSON) when no event has it."""
        values = [
            float(e[key])
            for e in self.events
            if isinstance(e.get(key), int | float) and math.isfinite(e[key])
        ]
        if not values:
            return {"count": 0, "p50": None, "p99": None, "max": None}
        array = np.asarray(values)
        return {
            "count": int(array.size),
            "p50": float(np.percentile(array, 50)),
            "p99": float(np.percentile(array, 99)),
            "max": float(array.max()),
        }

    def to_dict(self) -> dict[str, Any]:
        values = np.abs(np.asarray(self.commands.values, dtype=float))
        peaks = values.max(axis=0).tolist() if values.size else []
        return {
            "bag": str(self.info.path),
            "duration_s": self.info.duration_s,
            "zero_stamped": self.info.zero_stamped,
            "action_space": self.action_space,
            "topics": {t.name: {"type": t.msgtype, "count": t.count} for t in self.info.topics},
            "commands": len(self.commands.t),
            "raw_commands": len(self.raw_commands.t),
            "peak_abs_command": peaks,
            "events": len(self.events),
            "malformed_events": self.malformed_events,
            "causes": dict(self.causes()),
            "latency_ms": self.latency("latency_ms"),
            "model_ms": self.latency("model_ms"),
            "estop_changes": len(self.estop.t),
        }


def _classify(name: str, msgtype: str) -> str | None:
    """`events`, `gripper`, `estop`, `out:<space>` or `raw:<space>` (from the registry)."""
    rules = [
        ("vla/inference_event", "std_msgs/msg/String", "events"),
        (action_spaces.GRIPPER_TOPIC, action_spaces.GRIPPER_TYPE, "gripper"),
        ("vla/estop", "std_msgs/msg/Bool", "estop"),
    ]
    for space in map(action_spaces.get, action_spaces.names()):
        rules.append((space.raw_topic, space.command_type, f"raw:{space.name}"))
        rules.append((space.output_topic, space.command_type, f"out:{space.name}"))
    for suffix, kind_type, kind in rules:
        if name.rstrip("/").endswith(suffix) and msgtype == kind_type:
            return kind
    return None


def _action_space(kinds: Any) -> str | None:
    """The recorded space: outputs decide over raw inputs; a gripper topic means a gripper."""
    for prefix in ("out:", "raw:"):
        found = [k.split(":", 1)[1] for k in kinds if k.startswith(prefix)]
        if "gripper" in kinds:
            found = [n for n in found if action_spaces.get(n).gripper] or found
        if found:
            return found[0]
    return None


def build_report(bag: str | Path) -> RunReport:
    with BagReader(bag) as reader:
        info = reader.info()
        report = RunReport(info=info)
        kinds = {t.name: kind for t in info.topics if (kind := _classify(t.name, t.msgtype))}
        report.topics = kinds
        report.action_space = _action_space(set(kinds.values()))
        space = action_spaces.get(report.action_space or action_spaces.DEFAULT_MODE)
        for message in reader.messages(kinds):
            kind = kinds[message.topic]
            t = (message.timestamp_ns - info.start_ns) / 1e9
            msg = deserialize(message.data, message.msgtype, message.topic)
            if kind == "events":
                try:
                    event = json.loads(msg.data)
                    if not isinstance(event, dict):
                        raise ValueError("not an object")
                except ValueError:
                    report.malformed_events += 1
                    continue
                event["t"] = t
                report.events.append(event)
            elif kind.startswith("out:"):
                report.commands.add(t, space.from_twist(twist_vector(msg)))
            elif kind.startswith("raw:"):
                report.raw_commands.add(t, space.from_twist(twist_vector(msg)))
            elif kind == "gripper":
                report.gripper.add(t, (float(msg.data),))
            else:
                report.estop.add(t, (float(msg.data),))
    return report


def render_table(report: RunReport) -> Any:
    """A rich renderable: per-topic counts, then the run summary."""
    from rich.console import Group
    from rich.table import Table

    duration = max(report.info.duration_s, 1e-9)
    topics = Table(
        title=f"{report.info.path} ({report.info.duration_s:.2f} s{report.info.time_note})"
    )
    for column in ("topic", "type", "count", "rate Hz"):
        topics.add_column(column, justify="right" if column in ("count", "rate Hz") else "left")
    for topic in report.info.topics:
        rate = max(0, topic.count - 1) / duration
        topics.add_row(topic.name, topic.msgtype, str(topic.count), f"{rate:.1f}")
    summary = Table(title="run summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    data = report.to_dict()
    summary.add_row("action space", str(report.action_space or "unknown"))
    summary.add_row("commands out / raw in", f"{data['commands']} / {data['raw_commands']}")
    axes = AXES.get(report.action_space or "", ())
    if data["peak_abs_command"]:
        peaks = ", ".join(
            f"{a}={v:.3f}" for a, v in zip(axes, data["peak_abs_command"], strict=False)
        )
        summary.add_row("peak |command|", peaks)
    causes = ", ".join(f"{cause}={n}" for cause, n in sorted(data["causes"].items())) or "-"
    summary.add_row("inference events", f"{data['events']} ({causes})")
    if data["malformed_events"]:
        summary.add_row("malformed events", str(data["malformed_events"]))
    for key in ("latency_ms", "model_ms"):
        stats = data[key]
        summary.add_row(
            f"{key} p50 / p99 / max",
            f"{stats['p50']:.1f} / {stats['p99']:.1f} / {stats['max']:.1f}"
            if stats["count"]
            else "-",
        )
    summary.add_row("e-stop changes", str(data["estop_changes"]))
    return Group(topics, summary)


def plot_report(report: RunReport, png: str | Path) -> Path:
    """Commands, events and latency over time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    axes_names = AXES.get(report.action_space or "", AXES[action_spaces.DEFAULT_MODE])
    fig, (ax_cmd, ax_evt, ax_lat) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    try:
        for series, style, label in (
            (report.commands, "-", "out"),
            (report.raw_commands, ":", "raw"),
        ):
            if series.t:
                values = np.asarray(series.values)
                for axis, name in enumerate(axes_names[: values.shape[1]]):
                    ax_cmd.plot(series.t, values[:, axis], style, label=f"{name} {label}")
        for t, (engaged,) in zip(report.estop.t, report.estop.values, strict=True):
            ax_cmd.axvline(t, color="red" if engaged else "green", linewidth=1.5)
        ax_cmd.set_ylabel("command (m/s, rad/s)")
        ax_cmd.set_title("commands (red/green lines: e-stop on/off)")
        if ax_cmd.get_legend_handles_labels()[0]:
            ax_cmd.legend(loc="upper right", fontsize="small", ncol=3)
        causes = sorted(report.causes())
        for row, cause in enumerate(causes):
            times = [e["t"] for e in report.events if str(e.get("cause", "?")) == cause]
            ax_evt.scatter(times, [row] * len(times), marker="|", s=200)
        ax_evt.set_yticks(range(len(causes)), causes)
        ax_evt.set_ylim(-0.5, max(len(causes), 1) - 0.5)
        ax_evt.set_title("inference events by cause")
        for key, marker in (("latency_ms", "o"), ("model_ms", "x")):
            points = [
                (e["t"], float(e[key]))
                for e in report.events
                if isinstance(e.get(key), int | float)
            ]
            if points:
                ts, values = zip(*points, strict=True)
                ax_lat.plot(ts, values, marker, label=key, markersize=4)
        ax_lat.set_ylabel("ms")
        ax_lat.set_xlabel("time since bag start (s)")
        ax_lat.set_title("inference latency")
        if ax_lat.get_legend_handles_labels()[0]:
            ax_lat.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        fig.savefig(png, dpi=80)
    finally:
        plt.close(fig)
    return png

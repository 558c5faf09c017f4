"""Scenario files: the task, the instruction and the randomised placements of one episode family.

A scenario is a YAML (or JSON) file; `config/scenarios/` ships the eight box-avoidance scenarios
of the mobile project and the arm tasks, and a user file with the same schema works anywhere a
name does. Validation is strict: an unknown key, a wrong type, an empty range or a placement that
can overlap (a box on the start or on the cup) is refused with the file and the field named.

Every placement is a range `[low, high]` (or one number), sampled uniformly per seed by
`sample_layout`, which is a pure function of (scenario, seed): the world, the expert and the
evaluation all derive the same layout from it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.files import read_mapping


def _scenario_dir() -> Path:
    """config/scenarios in the source tree, else share/vla_ros/config/scenarios (pip, colcon)."""
    import sys

    source = Path(__file__).resolve().parents[3] / "config" / "scenarios"
    installed = Path(sys.prefix) / "share" / "vla_ros" / "config" / "scenarios"
    return source if source.is_dir() or not installed.is_dir() else installed


SCENARIO_DIR = _scenario_dir()
ROBOTS = ("mobile3", "arm7")
SIDES = ("left", "right")
LANGUAGES = ("en", "ko")
ARM_TASKS = ("reach", "pick")
BLOCK_COLOURS = {
    "red": (0.85, 0.15, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.9, 0.8, 0.1),
}
ROBOT_RADIUS_M = 0.18
"""Footprint radius of the mobile base (matches the footprint example in config/mobile.yaml)."""
CUP_RADIUS_M = 0.04
PLACEMENT_MARGIN_M = 0.05
BLOCK_SIZE_M = 0.04
"""Edge of the cubic arm blocks."""


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


Range = tuple[float, float]


@dataclass(frozen=True)
class BoxSpec:
    """A box obstacle: centre ranges (m, rad) and full size (along the route, across, height)."""

    x: Range
    y: Range
    yaw: Range
    size: tuple[float, float, float]

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.size[0] / 2, self.size[1] / 2)


@dataclass(frozen=True)
class Scenario:
    """One episode family. Mobile fields: side, start, cup, boxes. Arm fields: task, target,
    blocks, block_x, block_y."""

    name: str
    robot: str
    instruction: Mapping[str, str]
    time_limit_s: float
    goal_tolerance_m: float
    source: str = "<built-in>"
    side: str = "left"
    start: Mapping[str, Range] = field(default_factory=dict)
    cup: Mapping[str, Range] = field(default_factory=dict)
    boxes: tuple[BoxSpec, ...] = ()
    task: str = "reach"
    target: str = "red"
    blocks: tuple[str, ...] = ()
    block_x: Range = (0.35, 0.6)
    block_y: Range = (-0.25, 0.25)

    def text(self, language: str) -> str:
        if language not in self.instruction:
            raise ScenarioError(
                f"{self.source}: instruction has no {language!r} text "
                f"(has {sorted(self.instruction)})"
            )
        return self.instruction[language]


@dataclass(frozen=True)
class Box:
    """A sampled box: centre, yaw and full size."""

    x: float
    y: float
    yaw: float
    size: tuple[float, float, float]

    def corners(self, inflate: float = 0.0) -> np.ndarray:
        """Footprint corners (4, 2) in the world, the rectangle grown by `inflate` on each side."""
        half = np.array([self.size[0] / 2 + inflate, self.size[1] / 2 + inflate])
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * half
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        rotation = np.array([[c, -s], [s, c]])
        return local @ rotation.T + np.array([self.x, self.y])

    def distance(self, x: float, y: float) -> float:
        """Distance from a point to the footprint (0 inside)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = x - self.x, y - self.y
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        ex = max(abs(lx) - self.size[0] / 2, 0.0)
        ey = max(abs(ly) - self.size[1] / 2, 0.0)
        return math.hypot(ex, ey)


@dataclass(frozen=True)
class Layout:
    """Everything random about one episode, from `sample_layout(scenario, seed)`."""

    scenario: str
    seed: int
    start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cup: tuple[float, float] = (0.0, 0.0)
    boxes: tuple[Box, ...] = ()
    blocks: tuple[tuple[str, float, float], ...] = ()


_COMMON_KEYS = {"name", "robot", "instruction", "time_limit_s", "goal_tolerance_m"}
_MOBILE_KEYS = _COMMON_KEYS | {"side", "start", "cup", "boxes"}
_ARM_KEYS = _COMMON_KEYS | {"task", "target", "blocks", "block_x", "block_y"}
_BOX_KEYS = {"x", "y", "yaw", "size"}


class _Reader:
    """Field access that names the file and the field in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {problem}")

    def keys(self, raw: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
        unknown = sorted(set(map(str, raw)) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            raise self.fail(
                f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )

    def number(self, value: Any, where: str, low: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"expected a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(where, f"must be finite, got {value!r}")
        if low is not None and number <= low:
            raise self.fail(where, f"must be > {low:g}, got {value!r}")
        return number

    def range(self, value: Any, where: str) -> Range:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = self.number(value, where)
            return (number, number)
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.fail(where, f"expected a number or [low, high], got {value!r}")
        low = self.number(value[0], f"{where}[0]")
        high = self.number(value[1], f"{where}[1]")
        if low > high:
            raise self.fail(where, f"empty range: low {low:g} > high {high:g}")
        return (low, high)

    def choice(self, value: Any, where: str, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.fail(where, f"must be one of {list(choices)}, got {value!r}")
        return str(value)

    def required(self, raw: Mapping[str, Any], key: str) -> Any:
        if key not in raw:
            raise self.fail(key, "required")
        return raw[key]


def parse_scenario(raw: Mapping[str, Any], source: str = "<mapping>") -> Scenario:
    """Validate a scenario mapping; `source` (usually the file path) prefixes every error."""
    r = _Reader(source)
    robot = r.choice(r.required(raw, "robot"), "robot", ROBOTS)
    r.keys(raw, _MOBILE_KEYS if robot == "mobile3" else _ARM_KEYS)
    name = r.required(raw, "name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise r.fail("name", f"expected a non-empty name without '/', got {name!r}")
    texts = r.required(raw, "instruction")
    if not isinstance(texts, dict) or not texts:
        raise r.fail("instruction", "expected a mapping of language (en, ko) to text")
    r.keys(texts, set(LANGUAGES), "instruction")
    for language, text in texts.items():
        if not isinstance(text, str) or not text.strip():
            raise r.fail(f"instruction.{language}", f"expected non-empty text, got {text!r}")
    common = {
        "name": name,
        "robot": robot,
        "instruction": {str(k): v.strip() for k, v in texts.items()},
        "time_limit_s": r.number(r.required(raw, "time_limit_s"), "time_limit_s", low=0.0),
        "goal_tolerance_m": r.number(
            r.required(raw, "goal_tolerance_m"), "goal_tolerance_m", low=0.0
        ),
        "source": source,
    }
    scenario = _parse_mobile(raw, r, common) if robot == "mobile3" else _parse_arm(raw, r, common)
    _check_placements(scenario, r)
    return scenario


def _pose_ranges(raw: Any, r: _Reader, where: str, keys: Sequence[str]) -> dict[str, Range]:
    if not isinstance(raw, dict):
        raise r.fail(where, f"expected a mapping with {', '.join(keys)}")
    r.keys(raw, set(keys), where)
    return {key: r.range(raw.get(key, 0.0), f"{where}.{key}") for key in keys}


def _parse_mobile(raw: Mapping[str, Any], r: _Reader, common: dict[str, Any]) -> Scenario:
    boxes_raw = r.required(raw, "boxes")
    if not isinstance(boxes_raw, list) or not boxes_raw:
        raise r.fail("boxes", "expected a non-empty list of boxes")
    boxes = []
    for index, box in enumerate(boxes_raw):
        where = f"boxes[{index}]"
        if not isinstance(box, dict):
            raise r.fail(where, "expected a mapping with x, y, yaw, size")
        r.keys(box, _BOX_KEYS, where)
        size = box.get("size")
        if not isinstance(size, list) or len(size) != 3:
            raise r.fail(f"{where}.size", f"expected [length, width, height], got {size!r}")
        boxes.append(
            BoxSpec(
                x=r.range(r.required(box, "x"), f"{where}.x"),
                y=r.range(box.get("y", 0.0), f"{where}.y"),
                yaw=r.range(box.get("yaw", 0.0), f"{where}.yaw"),
                size=tuple(  # type: ignore[arg-type]
                    r.number(v, f"{where}.size[{i}]", low=0.0) for i, v in enumerate(size)
                ),
            )
        )
    return Scenario(
        **common,
        side=r.choice(r.required(raw, "side"), "side", SIDES),
        start=_pose_ranges(r.required(raw, "start"), r, "start", ("x", "y", "yaw")),
        cup=_pose_ranges(r.required(raw, "cup"), r, "cup", ("x", "y")),
        boxes=tuple(boxes),
    )


def _parse_arm(raw: Mapping[str, Any], r: _Reader, common: dict[str, Any]) -> Scenario:
    blocks = r.required(raw, "blocks")
    if not isinstance(blocks, list) or not 2 <= len(blocks) <= 3:
        raise r.fail("blocks", f"expected a list of 2 or 3 colours, got {blocks!r}")
    for index, colour in enumerate(blocks):
        r.choice(colour, f"blocks[{index}]", tuple(BLOCK_COLOURS))
    if len(set(blocks)) != len(blocks):
        raise r.fail("blocks", f"colours must differ, got {blocks!r}")
    target = r.choice(r.required(raw, "target"), "target", tuple(blocks))
    return Scenario(
        **common,
        task=r.choice(r.required(raw, "task"), "task", ARM_TASKS),
        target=target,
        blocks=tuple(blocks),
        block_x=r.range(r.required(raw, "block_x"), "block_x"),
        block_y=r.range(r.required(raw, "block_y"), "block_y"),
    )


def _rect_gap(a: tuple[Range, Range], b: tuple[Range, Range]) -> float:
    """Smallest distance between two axis-aligned rectangles of possible centres."""
    dx = max(a[0][0] - b[0][1], b[0][0] - a[0][1], 0.0)
    dy = max(a[1][0] - b[1][1], b[1][0] - a[1][1], 0.0)
    return math.hypot(dx, dy)


def _check_placements(scenario: Scenario, r: _Reader) -> None:
    """Refuse ranges under which a sampled episode could start in a collision or be trivial."""
    if scenario.robot == "arm7":
        spacing = scenario.block_y[1] - scenario.block_y[0]
        needed = (len(scenario.blocks) - 1) * 2.5 * BLOCK_SIZE_M
        if spacing < needed:
            raise r.fail(
                "block_y",
                f"range {spacing:.3f} m is too narrow for {len(scenario.blocks)} blocks "
                f"(needs {needed:.3f} m)",
            )
        return
    start = (scenario.start["x"], scenario.start["y"])
    cup = (scenario.cup["x"], scenario.cup["y"])
    if _rect_gap(start, cup) <= scenario.goal_tolerance_m + ROBOT_RADIUS_M:
        raise r.fail("cup", "can be placed within the goal tolerance of the start")
    for index, box in enumerate(scenario.boxes):
        centres = (box.x, box.y)
        reach = box.footprint_radius + PLACEMENT_MARGIN_M
        if _rect_gap(start, centres) <= reach + ROBOT_RADIUS_M:
            raise r.fail(f"boxes[{index}]", "can overlap the robot's start pose")
        if _rect_gap(cup, centres) <= reach + scenario.goal_tolerance_m + CUP_RADIUS_M:
            raise r.fail(f"boxes[{index}]", "can overlap the cup or its goal area")
        for other in range(index):
            previous = scenario.boxes[other]
            gap = _rect_gap((previous.x, previous.y), centres)
            if gap <= reach + previous.footprint_radius:
                raise r.fail(f"boxes[{index}]", f"can overlap boxes[{other}]")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file."""
    raw = read_mapping(
        path, "no scenario file there", "scenario fields (name, robot, ...)", ScenarioError
    )
    return parse_scenario(raw, str(path))


def builtin_names() -> list[str]:
    """Names of the scenarios shipped in config/scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


SUITES = {"mobile": "mobile3", "arm": "arm7"}
"""Suite names accepted by `resolve_scenarios`: every built-in scenario of that robot."""


def resolve_scenarios(spec: str) -> list[Scenario]:
    """`--scenarios FILE|NAME`: a scenario file, a built-in name, a comma-separated list of
    names/files, a suite (`mobile`, `arm`, `all`) or a suite file (`scenarios: [name|path...]`)."""
    if "," in spec:
        return [s for part in spec.split(",") if part.strip() for s in resolve_scenarios(part)]
    spec = spec.strip()
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        raw = read_mapping(path, "no scenario file there", "scenario fields", ScenarioError)
        if "scenarios" in raw and "robot" not in raw:
            _Reader(str(path)).keys(raw, {"scenarios"})
            entries = raw["scenarios"]
            if not isinstance(entries, list) or not entries:
                raise ScenarioError(f"{path}: scenarios: expected a non-empty list")
            resolved = []
            for entry in entries:
                candidate = path.parent / str(entry)
                resolved += resolve_scenarios(str(candidate) if candidate.is_file() else entry)
            return resolved
        return [parse_scenario(raw, str(path))]
    if spec == "all" or spec in SUITES:
        chosen = [load_scenario(SCENARIO_DIR / f"{n}.yaml") for n in builtin_names()]
        return [s for s in chosen if spec == "all" or s.robot == SUITES[spec]]
    if spec in builtin_names():
        return [load_scenario(SCENARIO_DIR / f"{spec}.yaml")]
    raise ScenarioError(
        f"unknown scenario {spec!r}: not a file, a suite ({', '.join([*SUITES, 'all'])}) or a "
        f"built-in name ({', '.join(builtin_names())})"
    )


def _rng(scenario: Scenario, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(scenario.name.encode())])


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1])) if bounds[1] > bounds[0] else bounds[0]


def sample_layout(scenario: Scenario, seed: int) -> Layout:
    """The placements of episode `seed`: a pure function of the scenario name, ranges and seed."""
    rng = _rng(scenario, seed)
    if scenario.robot == "arm7":
        return _sample_blocks(scenario, seed, rng)
    start = tuple(_uniform(rng, scenario.start[k]) for k in ("x", "y", "yaw"))
    cup = tuple(_uniform(rng, scenario.cup[k]) for k in ("x", "y"))
    boxes = tuple(
        Box(_uniform(rng, b.x), _uniform(rng, b.y), _uniform(rng, b.yaw), b.size)
        for b in scenario.boxes
    )
    return Layout(scenario.name, seed, start=start, cup=cup, boxes=boxes)  # type: ignore[arg-type]


def _sample_blocks(scenario: Scenario, seed: int, rng: np.random.Generator) -> Layout:
    """Blocks in random order across the table, at least 2.5 block edges apart."""
    count = len(scenario.blocks)
    low, high = scenario.block_y
    slot = (high - low) / count
    order = rng.permutation(count)
    blocks = []
    for slot_index, block_index in enumerate(order):
        centre = low + slot * (slot_index + 0.5)
        jitter = max(0.0, slot / 2 - 1.25 * BLOCK_SIZE_M)
        y = centre + float(rng.uniform(-jitter, jitter))
        x = _uniform(rng, scenario.block_x)
        blocks.append((scenario.blocks[block_index], x, y))
    return Layout(scenario.name, seed, blocks=tuple(blocks))

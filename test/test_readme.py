"""Every bash block of README.md, models/README.md and docs/ runs as written, or says why not.

A block runs with `bash -e` in a fresh scratch directory that holds `.venv` (this environment) and
`config/` (the repository's), as a user who copied it would run it. Markers on the line before the
block change that:

- `<!-- not-run: REASON -->`: not run here (ros2 launch, Docker, Jetson hardware, hub downloads);
  the reason is required and its `vla-ros` lines must still parse.
- `<!-- run-until: TEXT -->`: the last command runs until stopped; once TEXT is printed the test
  sends Ctrl-C (SIGINT) and the block must end promptly.

Sections with more to prove than a zero exit status (the replay workflow: commands really
recorded and a real PASS; with a violation planted in the bag, a real FAIL) have outcome checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from vla_ros.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "models" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"(?:^[ \t]*<!--\s*(?P<marker>[\w-]+):\s*(?P<note>.*?)\s*-->[ \t]*\n)?"
    r"^(?P<indent>[ \t]*)```(?:bash|sh|shell)[ \t]*\n(?P<body>.*?)^(?P=indent)```",
    re.S | re.M,
)
MARKERS = ("not-run", "run-until")
BLOCK_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    section: str
    marker: str | None
    note: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def vla_ros_lines(self) -> list[list[str]]:
        lines = []
        for line in self.text.replace("\\\n", " ").splitlines():
            if "vla-ros " in line:
                words = shlex.split(line.split("vla-ros ", 1)[1], comments=True)
                lines.append(words[:-1] if words[-1:] == ["&"] else words)
        return lines


def doc_blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start("indent")]
        headings = re.findall(r"^#{2,} (.+)$", before, re.M)
        blocks.append(
            Block(
                doc=doc,
                line=before.count("\n") + 1,
                section=headings[-1].strip() if headings else "",
                marker=match["marker"],
                note=match["note"] or "",
                text=textwrap.dedent(match["body"]),
            )
        )
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in doc_blocks(doc)]
RUN_BLOCKS = [block for block in ALL_BLOCKS if block.marker != "not-run"]


def test_blocks_are_found_and_every_marker_is_known_with_a_reason():
    assert {block.doc for block in ALL_BLOCKS} >= {ROOT / "README.md", ROOT / "docs" / "jetson.md"}
    assert any(block.section == "Replay a bag" for block in RUN_BLOCKS)
    for block in ALL_BLOCKS:
        assert block.marker in (None, *MARKERS), f"{block.id}: unknown marker {block.marker!r}"
        if block.marker:
            assert block.note, f"{block.id}: {block.marker} needs a reason or a text to wait for"
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        markers = r"^[ \t]*<!--\s*(not[-_ ]?run|run[-_ ]?until)\b.*?-->"
        for match in re.finditer(markers, text, re.M):
            line = text[: match.start()].count("\n") + 2
            assert any(b.doc == doc and b.line == line for b in ALL_BLOCKS), (
                f"{doc.name}:{line - 1}: marker {match.group(0)!r} is not right above a bash block"
            )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_vla_ros_command_in_the_docs_parses(doc: Path):
    """Each `vla-ros …` line of every block, run or not (also inside docker-compose run)."""
    parser = build_parser()
    lines = [words for block in doc_blocks(doc) for words in block.vla_ros_lines()]
    if doc.name == "README.md":
        assert lines, f"{doc.name} shows no vla-ros command"
    for words in lines:
        parser.parse_args(words)


# ------------------------------------------------------------------------------------ running


@dataclass
class Run:
    returncode: int
    output: str
    scratch: Path


def scratch_dir(tmp_path: Path) -> Path:
    """What a user has after `make setup` in a checkout: the venv and the parameter files."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "config").symlink_to(ROOT / "config")
    return tmp_path


def run_script(script: str, scratch: Path, until: str | None = None) -> Run:
    """bash -e over `script` in its own process group, which is always cleaned up afterwards."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if until is not None and until in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if until is not None:
            deadline = time.monotonic() + BLOCK_TIMEOUT_S
            while not seen.wait(0.2) and process.poll() is None:
                assert time.monotonic() < deadline, f"never printed {until!r}:\n{''.join(lines)}"
            assert seen.is_set(), f"ended before printing {until!r}:\n{''.join(lines)}"
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"Ctrl-C did not stop the block within {STOP_TIMEOUT_S} s")
        else:
            try:
                process.wait(timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"block still running after {BLOCK_TIMEOUT_S} s:\n{''.join(lines)}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        reader.join(timeout=10)
    return Run(process.returncode, "".join(lines), scratch)


def check_replay(run: Run) -> None:
    """The replay really drove the stack: commands recorded, some moving, inferences logged."""
    from vla_ros.bag.check import check_bag
    from vla_ros.bag.report import build_report

    assert "PASS" in run.output
    result = check_bag(
        run.scratch / "out/bags/run",
        ROOT / "config" / "mobile.yaml",
        time_tolerance_s=0.1,
        max_gap_s=0.5,
    )
    assert result.ok, result.summary()
    assert result.samples >= 50, result.summary()
    report = build_report(run.scratch / "out/bags/run")
    assert result.moving > 0, (
        "no command ever moved the robot; model_ms "
        f"{report.latency('model_ms')} (a step slower than the chunk plays nothing)"
    )
    assert report.events, "no inference event was recorded"
    assert report.raw_commands.t, "no raw command was recorded"
    assert (run.scratch / "out/bags/run.png").stat().st_size > 0


def check_models(run: Run) -> None:
    assert "total per frame" in run.output


OUTCOMES: dict[str, Callable[[Run], None]] = {
    "Replay a bag": check_replay,
    "Models": check_models,
}
"""Section heading -> what its block must have achieved besides exit status 0."""


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: f"{b.id} {b.section}")
def test_block_runs_as_written(block: Block, tmp_path: Path):
    until = block.note if block.marker == "run-until" else None
    run = run_script(block.text, scratch_dir(tmp_path), until=until)
    if until is None:
        assert run.returncode == 0, f"{block.id} failed:\n{run.output}"
    OUTCOMES.get(block.section, lambda run: None)(run)


def plant_violation(scene: Path, out: Path, speed: float = 3.0) -> None:
    """A copy of `scene` with a rogue /cmd_vel publisher at `speed` m/s between 2 s and 6 s."""
    from geometry_msgs.msg import Twist

    from vla_ros.bag.io import BagReader, BagWriter, serialize

    with BagReader(scene) as reader, BagWriter(out) as writer:
        info = reader.info()
        for topic in info.topics:
            writer.add_topic(topic.name, topic.msgtype, topic.offered_qos, topic.digest or None)
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        rogue = Twist()
        rogue.linear.x = speed
        planted = [
            (info.start_ns + int((2.0 + k / 10) * 1e9), "/cmd_vel", serialize(rogue))
            for k in range(40)
        ]
        stored = [(m.timestamp_ns, m.topic, m.data) for m in reader.messages()]
        for stamp, topic, data in sorted(stored + planted, key=lambda item: item[0]):
            writer.write(topic, stamp, data)


@pytest.mark.ros
@pytest.mark.slow
def test_replay_with_a_planted_violation_fails_bag_check(tmp_path: Path):
    """The same workflow on a bag that also carries an over-limit /cmd_vel: `bag check` FAILs."""
    block = next(b for b in RUN_BLOCKS if b.section == "Replay a bag")
    lines = block.text.splitlines()
    at_stack = next(i for i, line in enumerate(lines) if " bringup " in line)
    at_check = next(i for i, line in enumerate(lines) if " bag check " in line)
    scratch = scratch_dir(tmp_path)
    prepared = run_script("\n".join(lines[:at_stack]), scratch)
    assert prepared.returncode == 0, prepared.output
    plant_violation(scratch / "out/bags/scene", scratch / "out/bags/planted")
    middle = "\n".join(lines[at_stack:at_check]).replace("out/bags/scene", "out/bags/planted")
    assert "out/bags/planted" in middle
    played = run_script(middle, scratch)
    assert played.returncode == 0, played.output
    checked = run_script(lines[at_check], scratch)
    assert checked.returncode == 1, checked.output
    assert "FAIL" in checked.output
    assert "velocity_limit" in checked.output


TWINS = {
    # name: (what the user got wrong, as an edit of the block; the reason the verdict names)
    "stack absent": (
        lambda line: "true &" if " bringup " in line else line,
        "nothing was recorded within 10 s",
    ),
    "wrong camera topic": (
        lambda line: line.replace(" --compressed", "") if " bringup " in line else line,
        "nothing_moved: no output on /cmd_vel moved although /vla/active was true",
    ),
    "clock missing": (
        lambda line: line.replace(" --clock 200", ""),
        "nothing was recorded within 10 s: no publisher or no /clock",
    ),
}
"""Negative twins of the replay workflow: the same block with one usual mistake. Each must end
in a FAIL (non-zero exit) that names the reason, within the block timeout (it hung in `wait`).
The player's wait for subscribers and the recorder's for a first message are shortened to keep
the twins quick; the block is otherwise as written."""


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("twin", sorted(TWINS))
def test_replay_negative_twins_fail_with_the_reason(twin: str, tmp_path: Path):
    edit, reason = TWINS[twin]
    block = next(b for b in RUN_BLOCKS if b.section == "Replay a bag")
    written = block.text.splitlines()
    assert [edit(line) for line in written] != written, f"{twin}: the block changed"
    lines = [
        edit(line)
        .replace("--wait-for-subscribers 60", "--wait-for-subscribers 5")
        .replace(" --duration 10 --overwrite &", " --duration 10 --wait 10 --overwrite &")
        for line in written
    ]
    run = run_script("\n".join(lines), scratch_dir(tmp_path))
    assert run.returncode != 0, run.output
    assert "PASS" not in run.output
    assert reason in " ".join(run.output.split()), run.output

"""The README's "Replay a bag" commands, run as written: every line must work for a new user."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BACKGROUND = ("bringup", "record")
"""Long-running commands a user starts in their own terminal."""


def section_commands(title: str) -> list[list[str]]:
    """`vla-ros` command lines of the first bash block under the `## title` heading."""
    section = README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block under {title}"
    text = block.group(1).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("vla-ros"):
            commands.append(words)
    return commands


DOCS = [ROOT / "README.md", ROOT / "docs" / "jetson.md", ROOT / "models" / "README.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_vla_ros_command_in_the_docs_parses(doc: Path):
    """Each `vla-ros …` line of every bash block (also inside docker-compose run) parses."""
    parser = build_parser()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "vla-ros " in line:
                lines.append(shlex.split(line.split("vla-ros ", 1)[1], comments=True))
    assert lines, f"{doc.name} shows no vla-ros command"
    for words in lines:
        parser.parse_args(words)


@pytest.mark.ros
@pytest.mark.slow
def test_replay_a_bag_section_runs_as_written(tmp_path: Path):
    commands = section_commands("Replay a bag")
    assert [c[1] for c in commands] == [
        "make-tiny-model",
        "bag",
        "bringup",
        "record",
        "replay",
        "bag",
        "bag",
        "bag",
    ]
    (tmp_path / "config").symlink_to(ROOT / "config")
    executable = str(Path(sys.executable).with_name("vla-ros"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(words: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [executable, *words[1:]],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    background: list[subprocess.Popen] = []
    try:
        for words in commands:
            if words[1] in BACKGROUND:
                background.append(start(words))
                continue
            done = start(words)
            output, _ = done.communicate(timeout=180)
            assert done.returncode == 0, f"{shlex.join(words)}\n{output}"
            if words[1:3] == ["bag", "check"]:
                assert "PASS" in output
            if words[1] == "replay":
                recorder = background[-1]
                record_output, _ = recorder.communicate(timeout=60)
                assert recorder.returncode == 0, record_output
    finally:
        for process in background:
            if process.poll() is None:
                process.terminate()
                process.communicate(timeout=30)
    assert (tmp_path / "out" / "bags" / "run.png").stat().st_size > 0

"""`vla-ros publish-reference`: a `train-demo` run's model as a committed reference policy.

Copies the model directory's own files (not its checkpoints or training logs), records their
sha256 in SHA256SUMS, which every loader then checks (an altered file is refused by name), and
writes the model card from the run's report.json: the command, the data, the seed, the
evaluation table with its intervals, the stage times, the checksums, the licence and what the
policy was not trained for.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from vla_ros.learn.pipeline import results_tables

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "policy.yaml",
    "policy_head.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
)
MAX_BYTES = 10 * 1024 * 1024
"""What one committed reference policy may weigh."""
LICENCE = "Apache-2.0"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish-reference",
        help="a train-demo run's model -> a reference policy directory with checksums and card",
    )
    parser.add_argument("run", type=Path, help="the train-demo --out directory")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--command", required=True, help="the exact command that produced the run (for the card)"
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    card = publish(args.run, args.out, args.command)
    print(f"reference policy: {args.out} (card {card})")
    return 0


def publish(run: Path, out: Path, command: str) -> Path:
    """Write the reference directory; refuses a run without a report or over MAX_BYTES."""
    from vla_ros.policy.integrity import check_model_files, file_sha256, write_checksums

    model, report_path = run / "model", run / "report.json"
    for needed in (model / "policy.yaml", report_path, run / "demos" / "demos.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: is {run} a finished train-demo run?")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if report.get("cut_by_max_minutes"):
        raise ValueError(
            f"{run}: --max-minutes cut {report['cut_by_max_minutes']}: not reproducible"
        )
    check_model_files(model)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in MODEL_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, out / name)
    size = sum(path.stat().st_size for path in out.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(out)
        raise ValueError(
            f"{model}: {size} bytes, more than a reference policy may hold ({MAX_BYTES})"
        )
    demos = json.loads((run / "demos" / "demos.json").read_text(encoding="utf-8"))["episodes"]
    card = out / "README.md"
    weights = {
        name: file_sha256(out / name) for name in sorted(MODEL_FILES) if (out / name).is_file()
    }
    card.write_text(model_card(out.name, report, demos, command, weights), encoding="utf-8")
    write_checksums(out)
    check_model_files(out)
    return card


def model_card(
    name: str,
    report: dict[str, Any],
    demos: list[dict[str, Any]],
    command: str,
    checksums: dict[str, str],
) -> str:
    kept = sum(bool(e["success"]) for e in demos)
    seeds = sorted(int(e["seed"]) for e in demos)
    scenarios = sorted({e["scenario"] for e in demos})
    lines = [
        f"# Reference policy `{name}`",
        "",
        "The mobile-base policy that `make demo` drives the simulated robot with, and that the CI",
        "guard (`test/test_reference_policy.py`) checks closed loop on every change. It is the",
        "learnable tiny model (the real PaliGemma classes at a few million parameters, not",
        "PaliGemma-3B), trained here from simulated rosbags by the recipe of `make train-demo`.",
        "",
        "## How it was made",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Seed {report.get('seed')}; every stage stopped on its epoch budget (none was cut by the",
        "clock), so the same command gives the same weights on a CPU with the same thread count",
        '(docs/training.md, "Work budgets and what is deterministic").',
        "",
        f"**Data**: {len(demos)} scripted-expert demonstrations, `sim collect` on training seeds "
        f"{seeds[0]}-{seeds[-1]} of the {len(scenarios)} mobile scenarios "
        f"({', '.join(scenarios)}), instructions alternating English and Korean; the {kept} "
        "successful ones were kept, labelled with the expert's clean command "
        "(`/vla/cmd_expert`). Evaluation seeds start at 0 and never overlap them.",
        "",
        "## Closed-loop evaluation (held-out seeds, through the real camera, inference and "
        "safety nodes)",
        "",
        *results_tables(report, compliance="side compliance"),
    ]
    lines += [
        "",
        "## Files (sha256)",
        "",
        "`SHA256SUMS` lists every file; the stack checks it on load and refuses an altered or",
        "missing one by name (`sha256sum -c SHA256SUMS` checks it too).",
        "",
        "| file | sha256 |",
        "|---|---|",
        *[f"| `{file}` | `{digest}` |" for file, digest in checksums.items()],
        "",
        "## Licence",
        "",
        f"{LICENCE}, like the rest of vla_ros. It was trained only on data generated here.",
        "",
        "## What it was not trained for",
        "",
        "- Real camera images: it has seen only the MuJoCo world's rendering (flat lighting, a",
        "  checker floor, orange boxes, a red cup). On a real robot it means nothing.",
        "- Other robots, other speeds, the arm (`arm7`), other cameras or image sizes than 224 px.",
        "- Instructions other than the scenario templates: it tells left from right and English",
        "  from Korean phrasings of the same task, nothing more.",
        "- Safety: it is not a safety component. The safety node's limits, watchdog and lidar",
        "  guard stay in force whatever it commands.",
        "",
    ]
    return "\n".join(lines)

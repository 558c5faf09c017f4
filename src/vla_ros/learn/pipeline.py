"""`vla-ros train-demo` (`make train-demo`): demonstrations -> dataset -> training -> closed loop.

Every stage is the user-facing command run as its own process, exactly as a user would type it,
so the demo proves the commands, not an in-process shortcut. Stages: make the learnable tiny
model, `sim collect` expert demos on training seeds, `dataset build`, `train` (event-spaced
history) and the per-step-history ablation, then `sim eval` on held-out seeds event-triggered,
every-frame, with the ablation model, and in Korean. Wall time per stage, the results table and
the paths go to `OUT/report.md` and `OUT/report.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRAIN_SEED_START = 1000
"""Demonstrations use seeds from here on; evaluation seeds start at 0, so they never overlap."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-demo", help="sim demos -> dataset -> train -> closed-loop eval (make train-demo)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/train-demo"),
        help="work directory: models, demos, dataset, evals, report.md",
    )
    parser.add_argument(
        "--scenarios",
        default="mobile",
        help="scenarios for collect and eval: file, built-in name, comma list or suite",
    )
    parser.add_argument("--demo-episodes", type=int, default=6, help="demos per scenario")
    parser.add_argument("--eval-episodes", type=int, default=20, help="held-out seeds per scenario")
    parser.add_argument(
        "--recipe", choices=("head", "lora", "full"), default="head", help="`train --recipe`"
    )
    parser.add_argument("--epochs", type=int, default=200, help="`train --epochs`")
    parser.add_argument(
        "--train-minutes", type=float, default=15.0, help="`train --max-minutes`, per model"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="`train --lr`")
    parser.add_argument("--batch-size", type=int, default=32, help="`train --batch-size`")
    parser.add_argument("--rtf", type=float, default=4.0, help="sim real-time factor")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="stages to skip when their output exists"
    )
    parser.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the per-step-history model and its eval",
    )
    parser.add_argument("--no-korean", action="store_true", help="skip the Korean eval")
    parser.set_defaults(handler=_handle)


def _run(name: str, argv: list[str], timings: dict[str, float], log: Path) -> None:
    command = [sys.executable, "-m", "vla_ros.cli", *argv]
    print(f"== {name}: vla-ros {' '.join(argv)}", flush=True)
    start = time.monotonic()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n== {name}: {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    timings[name] = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed (exit {done.returncode}); see {log}")
    print(f"   {name}: {timings[name]:.1f} s", flush=True)


def _row(name: str, summary_path: Path) -> dict[str, Any]:
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return {
        "run": name,
        "episodes": summary["episodes"],
        "success_rate": summary["success_rate"],
        "collision_rate": summary["collision_rate"],
        "compliance_rate": summary["compliance_rate"],
        "vlm_calls_per_frame": summary["vlm_calls_per_frame"],
        "per_scenario": {k: v["success_rate"] for k, v in summary["scenarios"].items()},
    }


def _handle(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stages.log"
    timings: dict[str, float] = {}
    init, model, step_model = out / "model-init", out / "model", out / "model-step-history"
    demos, dataset = out / "demos", out / "dataset"
    skip = set(args.skip)

    def stage(name: str, argv: list[str], output: Path) -> None:
        if name in skip and output.exists():
            print(f"== {name}: skipped ({output} exists)")
            return
        _run(name, argv, timings, log)

    stage(
        "init",
        ["make-tiny-model", str(init), "--preset", "learnable"],
        init / "policy.yaml",
    )
    stage(
        "collect",
        [
            "sim", "collect", "--scenarios", args.scenarios, "--episodes",
            str(args.demo_episodes), "--seeds", str(TRAIN_SEED_START), "--out", str(demos),
            "--rtf", str(args.rtf), "--language", "both",
        ],
        demos / "demos.json",
    )  # fmt: skip
    bags = sorted(str(p) for p in (demos / "bags").iterdir()) if (demos / "bags").is_dir() else []
    # The expert's raw command is what the policy replaces; /cmd_vel is it after the safety
    # node's ramps, which the safety node would then apply a second time.
    stage(
        "dataset",
        [
            "dataset", "build", *bags, "--out", str(dataset), "--model-dir", str(init),
            "--action-topic", "/vla/cmd_raw", "--overwrite",
        ],
        dataset / "meta.json",
    )  # fmt: skip
    train_common = [
        "train", "--dataset", str(dataset), "--init", str(init), "--recipe", args.recipe,
        "--epochs", str(args.epochs), "--max-minutes", str(args.train_minutes), "--lr",
        str(args.lr), "--batch-size", str(args.batch_size), "--no-progress", "--overwrite",
        "--keep-best",
    ]  # fmt: skip
    stage(
        "train", [*train_common, "--out", str(model), "--history", "event"], model / "policy.yaml"
    )
    if not args.no_ablation:
        stage(
            "train-step-history",
            [*train_common, "--out", str(step_model), "--history", "step"],
            step_model / "policy.yaml",
        )
    evals = [("eval-event", model, "event", "en"), ("eval-every-frame", model, "every-frame", "en")]
    if not args.no_ablation:
        evals.append(("eval-step-history-event", step_model, "event", "en"))
    if not args.no_korean:
        evals.append(("eval-event-ko", model, "event", "ko"))
    for name, model_dir, trigger, language in evals:
        stage(
            name,
            [
                "sim", "eval", "--scenarios", args.scenarios, "--episodes",
                str(args.eval_episodes), "--seeds", "0", "--driver", "policy", "--model-dir",
                str(model_dir), "--trigger", trigger, "--language", language, "--out",
                str(out / name), "--rtf", str(args.rtf),
            ],
            out / name / "summary.json",
        )  # fmt: skip
    rows = [_row(name, out / name / "summary.json") for name, *_ in evals]
    report = {"timings_s": timings, "results": rows, "training": _training(model, step_model)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    print(_markdown(report))
    return 0


def _training(*models: Path) -> dict[str, Any]:
    result = {}
    for model in models:
        path = model / "training" / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text(encoding="utf-8"))
            keys = ("steps", "seconds", "samples_per_s", "initial_val_loss", "val_loss")
            result[model.name] = {key: summary.get(key) for key in (*keys, "val_nrmse")}
    return result


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# train-demo report",
        "",
        "| run | episodes | success | collision | compliance | VLM calls/frame |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['run']} | {row['episodes']} | {row['success_rate']:.1%} | "
            f"{row['collision_rate']:.1%} | {row['compliance_rate']:.1%} | "
            f"{row['vlm_calls_per_frame']:.3f} |"
        )
    lines += ["", "| stage | wall s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in report["timings_s"].items()]
    lines += ["", "| model | steps | train s | samples/s | val loss (start -> end) | NRMSE |"]
    lines.append("|---|---|---|---|---|---|")
    for name, t in report["training"].items():
        lines.append(
            f"| {name} | {t['steps']} | {t['seconds']} | {t['samples_per_s']} | "
            f"{t['initial_val_loss']:.4f} -> {t['val_loss']:.4f} | {t['val_nrmse']:.4f} |"
        )
    return "\n".join(lines) + "\n"

"""`vla-ros train-demo` (`make train-demo`): demonstrations -> dataset -> training -> closed loop.

Every stage is the user-facing command run as its own process, exactly as a user would type it,
so the demo proves the commands, not an in-process shortcut. Stages: make the learnable tiny
model, `sim collect` expert demos on training seeds, `dataset build` from the successful ones
(labelled with the expert's clean command), then training in three steps, all but the last on
single frames (window 1: per-frame samples cost one trunk pass instead of a window's).
`train-probe` fits the head alone on the frozen random trunk first: fine-tuning everything
from a random head makes the trunk collapse to one constant feature (the quickest way to the
mean action), after which neither the image nor the instruction reaches the head; with the
mean already in the head, `train-trunk` (`--trunk-recipe full` or `lora`) learns the features.
`train` then trains the head's LSTM on the trained trunk's cached features with event-spaced
history (`--recipe head`), and `train-step-history` does the same with per-step history (the
ablation, `--ablation`). Last, `sim eval` on held-out seeds event-triggered and every-frame, with
`--ablation` the ablation model and with `--lidar-guard` (mobile) event-triggered behind the
safety node's lidar guard too, the instruction
alternating English and Korean per episode. The training stages are `TrainConfig`s, built and
validated before the first demonstration is made, and run as `vla-ros train` with their
`to_argv()`. Wall time per stage, the results table, each stage's command line and the paths go
to `OUT/report.md` and `OUT/report.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vla_ros.learn.config import TrainConfig

CUT_EXIT = 3
"""Exit status of a train-demo whose --max-minutes guard cut a training stage."""
TRAIN_SEED_START = 1000
"""Demonstrations use seeds from here on; evaluation seeds start at 0, so they never overlap."""
DATASET_TOPICS = {
    # The expert's clean command for each pose: its raw command carries the injected noise, and
    # the safety output is that after the ramps, which would then be applied twice. The gripper
    # command has no noise.
    "mobile3": ["--mode", "mobile3", "--action-topic", "/vla/cmd_expert"],
    "arm7": [
        "--mode", "arm7", "--action-topic", "/vla/arm_cmd_expert",
        "--gripper-topic", "/vla/gripper_raw",
    ],
}  # fmt: skip
LIDAR_GUARD = "mobile_lidar_guard.yaml"
"""The mobile policy is also evaluated behind the safety node's lidar guard (the sim robot has
a lidar): the policy's own collisions are the plain eval's, the stack's are this one's."""


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
    parser.add_argument("--demo-episodes", type=int, default=25, help="demos per scenario")
    parser.add_argument("--eval-episodes", type=int, default=20, help="held-out seeds per scenario")
    parser.add_argument(
        "--trunk-recipe",
        choices=("full", "lora", "none"),
        default="full",
        help="train-trunk stage: `train --recipe` on single frames; none: the head learns on "
        "the untrained init trunk",
    )
    parser.add_argument("--probe-epochs", type=int, default=2, help="train-probe `--epochs`")
    parser.add_argument("--trunk-epochs", type=int, default=4, help="train-trunk `--epochs`")
    parser.add_argument("--trunk-lr", type=float, default=5e-4, help="train-trunk `--lr`")
    parser.add_argument("--epochs", type=int, default=15, help="head stages: `train --epochs`")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="upper guard per training stage (`train --max-minutes`); the budgets are the epochs, "
        "so the same seed gives the same weights on any machine. A stage the guard cuts is "
        "named in report.md and report.json, and train-demo exits 3",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the init model and every training stage"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="head stages: `train --lr`")
    parser.add_argument("--batch-size", type=int, default=32, help="`train --batch-size`")
    parser.add_argument("--rtf", type=float, default=4.0, help="sim real-time factor of the evals")
    parser.add_argument(
        "--collect-rtf", type=float, default=8.0, help="sim real-time factor of the demos"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="`sim collect` / `sim eval --workers`: simulator + stack processes side by side, "
        "each on a ROS domain of its own (default: 2, or 1 on a one-core machine)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], help="stages to skip when their output exists"
    )
    parser.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train the per-step-history model and evaluate it (default: off)",
    )
    parser.add_argument(
        "--lidar-guard",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="mobile: also evaluate event-triggered behind the safety node's lidar guard "
        "(default: off)",
    )
    parser.add_argument(
        "--no-korean",
        action="store_true",
        help="English instructions only (default: the evals alternate English and Korean)",
    )
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
        "intervals_95": summary.get("intervals_95", {}),
        "collision_rate": summary["collision_rate"],
        "compliance_rate": summary["compliance_rate"],
        "vlm_calls_per_frame": summary["vlm_calls_per_frame"],
        "per_scenario": {k: v["success_rate"] for k, v in summary["scenarios"].items()},
        "per_language": {k: v["success_rate"] for k, v in summary["languages"].items()},
    }


def _successful_bags(demos: Path) -> list[str]:
    """The bags of the demonstrations that succeeded: a collision is not a behaviour to copy."""
    index = json.loads((demos / "demos.json").read_text(encoding="utf-8"))
    episodes = index["episodes"]
    kept = [e["bag"] for e in episodes if e["success"]]
    if len(kept) < len(episodes):
        print(f"   dataset: {len(episodes) - len(kept)} failed demonstration(s) left out")
    return sorted(kept)


def _handle(args: argparse.Namespace) -> int:
    from vla_ros.sim.scenario import resolve_scenarios

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "stages.log"
    timings: dict[str, float] = {}
    init, probe, trunk = out / "model-init", out / "model-probe", out / "model-trunk"
    model, step_model = out / "model", out / "model-step-history"
    demos, dataset = out / "demos", out / "dataset"
    skip = set(args.skip)
    robot = resolve_scenarios(args.scenarios)[0].robot

    commands: dict[str, str] = {}

    def stage(name: str, argv: list[str], output: Path) -> None:
        commands[name] = shlex.join(["vla-ros", *argv])
        if name in skip and output.exists():
            print(f"== {name}: skipped ({output} exists)")
            return
        _run(name, argv, timings, log)

    stage(
        "init",
        [
            "make-tiny-model",
            str(init),
            "--preset",
            "learnable",
            "--mode",
            robot,
            "--seed",
            str(args.seed),
        ],
        init / "policy.yaml",
    )
    # Every training run is configured (and so validated) before the demonstrations are made.
    trainings = _training_configs(args, out, _window(init))
    stage(
        "collect",
        [
            "sim", "collect", "--scenarios", args.scenarios, "--episodes",
            str(args.demo_episodes), "--seeds", str(TRAIN_SEED_START), "--out", str(demos),
            "--rtf", str(args.collect_rtf), "--language", "both", "--workers", str(args.workers),
        ],
        demos / "demos.json",
    )  # fmt: skip
    bags = _successful_bags(demos) if (demos / "demos.json").is_file() else []
    stage(
        "dataset",
        [
            "dataset", "build", *bags, "--out", str(dataset), "--model-dir", str(init),
            *DATASET_TOPICS[robot], "--overwrite",
        ],
        dataset / "meta.json",
    )  # fmt: skip
    for name, config in trainings:
        stage(name, ["train", *config.to_argv()], Path(config.out) / "policy.yaml")
    evals: list[tuple[str, Path, str, list[str]]] = [
        ("eval-event", model, "event", []),
        ("eval-every-frame", model, "every-frame", []),
    ]
    if args.ablation:
        evals.append(("eval-step-history-event", step_model, "event", []))
    if args.lidar_guard and robot == "mobile3":
        from vla_ros.files import config_file

        guard = ["--params-overlay", str(config_file(LIDAR_GUARD))]
        evals.append(("eval-event-lidar-guard", model, "event", guard))
    language = "en" if args.no_korean else "both"
    for name, model_dir, trigger, extra in evals:
        stage(
            name,
            [
                "sim", "eval", "--scenarios", args.scenarios, "--episodes",
                str(args.eval_episodes), "--seeds", "0", "--driver", "policy", "--model-dir",
                str(model_dir), "--trigger", trigger, "--language", language, "--out",
                str(out / name), "--rtf", str(args.rtf), "--workers", str(args.workers), *extra,
            ],
            out / name / "summary.json",
        )  # fmt: skip
    rows = [_row(name, out / name / "summary.json") for name, *_ in evals]
    trained = _training(probe, trunk, model, step_model)
    cut = [name for name, t in trained.items() if t.get("stopped_by") == "max_minutes"]
    report = {
        "timings_s": timings,
        "results": rows,
        "training": trained,
        "seed": args.seed,
        "cut_by_max_minutes": cut,
        "commands": commands,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    print(_markdown(report))
    if cut:
        print(
            f"train-demo: --max-minutes cut {', '.join(cut)} before its epochs: these weights "
            "depend on this machine's speed",
            file=sys.stderr,
        )
        return CUT_EXIT
    return 0


def _training_configs(
    args: argparse.Namespace, out: Path, window: int
) -> list[tuple[str, TrainConfig]]:
    """The training stages in order. `train-probe` fits the head on the frozen random trunk,
    `train-trunk` then trains the trunk from it on single frames, and the head stages train the
    LSTM at the init model's `window` on the (trained) trunk's cached features."""
    common = TrainConfig(
        dataset=str(out / "dataset"),
        init=str(out / "model-init"),
        out=str(out / "model"),
        batch_size=args.batch_size,
        progress=False,
        overwrite=True,
        keep_best=True,
        seed=args.seed,
        max_minutes=args.max_minutes or None,
    )
    stages = []
    head_init = common.init
    if args.trunk_recipe != "none":
        single_frames = replace(common, window=1, history="step")
        probe = replace(
            single_frames, out=str(out / "model-probe"), epochs=args.probe_epochs, lr=args.lr
        )
        trunk = replace(
            single_frames,
            init=probe.out,
            out=str(out / "model-trunk"),
            recipe=args.trunk_recipe,
            epochs=args.trunk_epochs,
            lr=args.trunk_lr,
            warmup_steps=100,
            lr_schedule="cosine",
        )
        stages += [("train-probe", probe), ("train-trunk", trunk)]
        head_init = trunk.out
    head = replace(
        common,
        init=head_init,
        window=window,
        epochs=args.epochs,
        lr=args.lr,
        lr_schedule="cosine",
        history="event",
    )
    stages.append(("train", head))
    if args.ablation:
        stages.append(
            (
                "train-step-history",
                replace(head, out=str(out / "model-step-history"), history="step"),
            )
        )
    return stages


def _window(model_dir: Path) -> int:
    """The history window the init model was made with (the head stages train for it)."""
    from vla_ros.policy.config import PolicyConfig

    return PolicyConfig.load(model_dir).window


def _training(*models: Path) -> dict[str, Any]:
    result = {}
    for model in models:
        path = model / "training" / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text(encoding="utf-8"))
            keys = ("steps", "planned_steps", "stopped_by", "seconds", "samples_per_s")
            keys += ("initial_val_loss", "val_loss", "val_nrmse")
            result[model.name] = {key: summary.get(key) for key in keys}
    return result


def _rate(row: dict[str, Any], name: str) -> str:
    """`97.5% [86.8, 99.6]`: a rate with its Wilson 95 % interval, where the eval gave one."""
    bounds = row.get("intervals_95", {}).get(name)
    if not bounds:
        return f"{row[name]:.1%}"
    return f"{row[name]:.1%} [{bounds[0]:.1%}, {bounds[1]:.1%}]"


def results_tables(report: dict[str, Any], compliance: str = "compliance") -> list[str]:
    """Eval table (rates with intervals) and stage times, shared by report.md and model cards."""
    lines = [
        f"| run | episodes | success [95% CI] | collision [95% CI] | {compliance} [95% CI] "
        "| VLM calls/frame | by language |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        languages = ", ".join(f"{k} {v:.1%}" for k, v in row["per_language"].items())
        lines.append(
            f"| {row['run']} | {row['episodes']} | {_rate(row, 'success_rate')} | "
            f"{_rate(row, 'collision_rate')} | {_rate(row, 'compliance_rate')} | "
            f"{row['vlm_calls_per_frame']:.3f} | {languages} |"
        )
    lines += ["", "| stage | wall s |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in report["timings_s"].items()]
    return lines


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# train-demo report", "", *results_tables(report)]
    lines += [
        "",
        "| model | steps (planned) | stopped by | train s | samples/s "
        "| val loss (start -> end) | NRMSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in report["training"].items():
        lines.append(
            f"| {name} | {t['steps']} ({t.get('planned_steps')}) | {t.get('stopped_by')} "
            f"| {t['seconds']} | {t['samples_per_s']} | "
            f"{t['initial_val_loss']:.4f} -> {t['val_loss']:.4f} | {t['val_nrmse']:.4f} |"
        )
    if report.get("commands"):
        lines += ["", "Each stage as a command line:", ""]
        lines += [f"- {name}: `{command}`" for name, command in report["commands"].items()]
    if report.get("cut_by_max_minutes"):
        lines += [
            "",
            f"**Cut by --max-minutes: {', '.join(report['cut_by_max_minutes'])}.** These stages "
            "stopped on the clock before their epochs, so the weights depend on this machine's "
            "speed; rerun without the guard (or with a larger one) for a reproducible result.",
        ]
    return "\n".join(lines) + "\n"

"""`vla-ros sim eval|collect`: the closed-loop benchmark and demonstration recording."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla_ros.policy.backends import BACKENDS
from vla_ros.sim.scenario import LANGUAGES


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sim", help="MuJoCo closed loop: evaluate or collect demos")
    commands = parser.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")

    evaluate = commands.add_parser(
        "eval", help="seeded episodes through sim + camera + safety (+ inference) nodes"
    )
    _common(evaluate, default_out="out/eval")
    evaluate.add_argument(
        "--driver",
        choices=["expert", "policy"],
        default="expert",
        help="who drives: the scripted expert or the inference node with --model-dir",
    )
    evaluate.add_argument("--model-dir", default="models/tiny", help="for --driver policy")
    evaluate.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="--driver policy: trunk backend, e.g. onnxruntime after `vla-ros export` "
        "(default: the parameter file's)",
    )
    evaluate.add_argument(
        "--trigger",
        choices=["event", "every-frame"],
        default="event",
        help="--driver policy: run the VLM on events or on every camera frame",
    )
    evaluate.add_argument(
        "--latency",
        type=float,
        default=0.1,
        help="--driver policy: sim seconds every inference takes (the clock holds for a slower "
        "one, so the result does not depend on this machine's load); negative: free running",
    )
    evaluate.add_argument(
        "--language", choices=[*LANGUAGES, "both"], default="en", help="instruction language"
    )
    evaluate.set_defaults(handler=_eval)

    collect = commands.add_parser(
        "collect", help="record expert demonstrations (with noise and recoveries) as rosbags"
    )
    _common(collect, default_out="out/demos")
    collect.add_argument(
        "--no-noise", dest="noise", action="store_false", help="clean expert commands"
    )
    collect.add_argument(
        "--language",
        choices=[*LANGUAGES, "both"],
        default="both",
        help="instruction language; both alternates per episode",
    )
    collect.set_defaults(handler=_collect)


def _common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--scenarios",
        default="mobile",
        help="scenario file, built-in name, comma list, or suite (mobile, all)",
    )
    parser.add_argument("--episodes", type=int, default=20, help="episodes (seeds) per scenario")
    parser.add_argument("--seeds", type=int, default=0, help="first seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(default_out),
        help="output directory: summary.json, bags/, trajectory plots",
    )
    parser.add_argument("--rtf", type=float, default=1.0, help="real-time factor of the sim")
    parser.add_argument(
        "--params", default=None, help="parameter file (default config/mobile.yaml)"
    )
    parser.add_argument(
        "--params-overlay",
        action="append",
        default=[],
        metavar="FILE",
        help="parameter file loaded after --params, its values win; repeatable "
        "(config/mobile_lidar_guard.yaml: the safety node's lidar collision guard)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=None, help="override every scenario's time_limit_s"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="simulator + stack processes side by side, each on a ROS domain of its own "
        "(201-232, localhost); the same episodes and results for any number (default: 1)",
    )


def _languages(choice: str) -> tuple[str, ...]:
    return tuple(LANGUAGES) if choice == "both" else (choice,)


def _options(args: argparse.Namespace, **extra: object) -> object:
    from vla_ros.evaluate import EvalOptions
    from vla_ros.sim.scenario import resolve_scenarios

    return EvalOptions(
        scenarios=resolve_scenarios(args.scenarios),
        time_limit_s=args.time_limit,
        out=args.out,
        episodes=args.episodes,
        seed_start=args.seeds,
        languages=_languages(args.language),
        real_time_factor=args.rtf,
        params_file=args.params,
        overlay_params_files=tuple(args.params_overlay),
        workers=args.workers,
        **extra,  # type: ignore[arg-type]
    )


def _progress(record: object) -> None:
    result = record.result  # type: ignore[attr-defined]
    print(
        f"{record.scenario} seed {record.seed} [{record.language}]: {result['outcome']} "  # type: ignore[attr-defined]
        f"in {result['time_s']:.1f} s, violations {len(record.violations)}",  # type: ignore[attr-defined]
        flush=True,
    )


def _eval(args: argparse.Namespace) -> int:
    from vla_ros.evaluate import print_summary, run_eval

    options = _options(
        args,
        driver=args.driver,
        model_dir=args.model_dir,
        backend=args.backend or "",
        trigger=args.trigger,
        inference_latency_s=args.latency,
    )
    summary = run_eval(options, progress=_progress)  # type: ignore[arg-type]
    print_summary(summary)
    print(f"summary: {args.out / 'summary.json'}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from vla_ros.evaluate import print_summary, record_topics, run_eval

    options = _options(args, driver="expert", noise=args.noise, demonstrations=True)
    summary = run_eval(options, progress=_progress)  # type: ignore[arg-type]
    print_summary(summary, title="vla_ros sim collect")
    index = {
        "topics": list(record_topics(options.robot, demonstrations=True)),  # type: ignore[attr-defined]
        "episodes": [
            {k: e[k] for k in ("scenario", "seed", "language", "outcome", "success", "bag")}
            for e in summary["episode_results"]
        ],
    }
    (args.out / "demos.json").write_text(json.dumps(index, indent=2, ensure_ascii=False))
    print(f"{len(index['episodes'])} demonstrations under {args.out / 'bags'}")
    return 0

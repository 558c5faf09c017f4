"""`vla-ros sim eval` and `vla-ros sim collect`: seeded episodes through the real ROS stack.

One process, one rclpy Context, the deployment parameter file (`config/mobile.yaml`): the sim
node (the clock source), the camera and safety nodes and either the inference node (driver
`policy`) or the scripted expert node (driver `expert`, publishing where the policy would, on
`vla/cmd_raw`) spin on one executor; every node but the sim runs on `use_sim_time`. A recorder
on its own executor writes one bag per episode; each bag is checked against the safety
invariants with `vla_ros.bag.check.check_bag`, the same code as `vla-ros bag check`.

`collect` is the expert with noise injection, recording what a real robot would log.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_ros.sim.scenario import Scenario

EVAL_TOPICS = (
    "/cmd_vel",
    "/vla/cmd_raw",
    "/vla/estop",
    "/vla_safety/status",
    "/odom",
    "/vla/instruction",
    "/vla_sim/episode",
    "/vla/inference_event",
)
COLLECT_TOPICS = (
    "/camera/image_raw",
    "/vla/instruction",
    "/cmd_vel",
    "/vla/cmd_raw",
    "/odom",
    "/scan",
    "/vla_sim/episode",
    "/vla_safety/status",
)
"""What a demonstration bag holds: camera 10 Hz (rgb8 224x224), the instruction (latched, once
per episode), the safety node's /cmd_vel at 50 Hz, the expert's raw command at 20 Hz, odometry
50 Hz, scan 10 Hz, the episode status (settling/running/done with the result)."""


SYNC_LAG_S = 0.04
"""The sim holds its clock while the safety node's newest /cmd_vel is older than this (two
50 Hz periods), so a busy machine slows the run down instead of faking silent outputs."""


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation run; `languages` cycles per seed (e.g. ("en", "ko"))."""

    scenarios: Sequence[Scenario]
    out: Path
    episodes: int = 20
    seed_start: int = 0
    driver: str = "expert"
    model_dir: str = "models/tiny"
    trigger: str = "event"
    languages: Sequence[str] = ("en",)
    real_time_factor: float = 1.0
    noise: bool = False
    topics: Sequence[str] = EVAL_TOPICS
    params_file: str | None = None
    wall_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.driver not in ("expert", "policy"):
            raise ValueError(f"--driver must be expert or policy, got {self.driver!r}")
        if self.trigger not in ("event", "every-frame"):
            raise ValueError(f"--trigger must be event or every-frame, got {self.trigger!r}")
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {self.episodes}")
        if self.seed_start < 0:
            raise ValueError(f"--seeds must be >= 0, got {self.seed_start}")
        if not self.scenarios:
            raise ValueError("no scenarios to run")
        robots = {s.robot for s in self.scenarios}
        if robots != {"mobile3"}:
            raise ValueError(f"only mobile3 scenarios run through the stack, got {sorted(robots)}")
        if self.driver == "policy" and not (Path(self.model_dir) / "policy.yaml").is_file():
            raise FileNotFoundError(
                f"model directory {self.model_dir} has no policy.yaml: "
                f"run `vla-ros make-tiny-model {self.model_dir}` or pass --model-dir"
            )


@dataclass
class EpisodeRecord:
    """One episode as the summary reports it."""

    scenario: str
    seed: int
    language: str
    result: dict[str, Any]
    frames: int
    inferences: int
    violations: list[str]
    interventions: float
    bag: str
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "language": self.language,
            **self.result,
            "frames": self.frames,
            "inferences": self.inferences,
            "safety_violations": len(self.violations),
            "violations": self.violations[:20],
            "safety_interventions": self.interventions,
            "bag": self.bag,
        }


def aggregate(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """The summary numbers of a set of episodes (NaN-free: empty sets give 0)."""
    n = len(records)
    results = [r.result for r in records]

    def rate(key: str) -> float:
        return sum(bool(r[key]) for r in results) / n if n else 0.0

    successes = [r for r in results if r["success"]]
    frames = sum(r.frames for r in records)
    return {
        "episodes": n,
        "success_rate": rate("success"),
        "collision_rate": rate("collision"),
        "compliance_rate": rate("compliant"),
        "timeout_rate": rate("timeout"),
        "spl": sum(r["spl"] for r in results) / n if n else 0.0,
        "time_to_goal_s": (
            sum(r["time_s"] for r in successes) / len(successes) if successes else None
        ),
        "path_length_m": sum(r["path_length_m"] for r in results) / n if n else 0.0,
        "vlm_calls_per_frame": sum(r.inferences for r in records) / frames if frames else 0.0,
        "safety_violations": sum(len(r.violations) for r in records),
        "safety_interventions": (sum(r.interventions for r in records) / n if n else 0.0),
    }


def summarise(records: Sequence[EpisodeRecord], options: EvalOptions) -> dict[str, Any]:
    by_scenario: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_scenario[record.scenario].append(record)
    return {
        **aggregate(records),
        "driver": options.driver,
        "trigger": options.trigger,
        "seeds": [options.seed_start, options.seed_start + options.episodes - 1],
        "real_time_factor": options.real_time_factor,
        "scenarios": {name: aggregate(group) for name, group in by_scenario.items()},
        "episode_results": [r.as_dict() for r in records],
    }


def _interventions(items: Sequence[Any]) -> float:
    """Fraction of safety outputs that differ from the newest raw command (limited or stopped)."""
    from vla_ros.bag.io import deserialize
    from vla_ros.safety.config import twist_vector

    latest: tuple[float, ...] | None = None
    changed = total = 0
    for item in sorted(items, key=lambda i: i.receive_ns):
        if item.topic not in ("/vla/cmd_raw", "/cmd_vel"):
            continue
        vector = twist_vector(deserialize(item.data, item.msgtype, item.topic))
        if item.topic == "/vla/cmd_raw":
            latest = vector
        elif latest is not None:
            total += 1
            changed += any(abs(a - b) > 1e-3 for a, b in zip(vector, latest, strict=False))
    return changed / total if total else 0.0


class _Spin:
    """Spins an executor on a thread until stopped; re-raises its error on exit."""

    def __init__(self, executor: Any, name: str) -> None:
        self.executor = executor
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as exc:  # surfaced by close()
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10.0)
        if self.error is not None:
            raise self.error


def _call(client: Any, request: Any, timeout_s: float) -> Any:
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise RuntimeError(f"service {client.srv_name} not available")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout_s
    while not future.done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {client.srv_name} did not answer in {timeout_s} s")
        time.sleep(0.005)
    return future.result()


Progress = Callable[[EpisodeRecord], None]


def run_eval(options: EvalOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run every (scenario, seed) episode through the stack; write bags, summary.json, PNGs."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from vla_ros.bringup import StackOptions, build_stack, ros_args_for
    from vla_ros.nodes.common import make_executor
    from vla_ros.nodes.expert_node import ExpertNode
    from vla_ros.nodes.sim_node import SimNode

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    stack = StackOptions(
        mode="mobile",
        model_dir=options.model_dir,
        params_file=options.params_file,
        use_sim_time=True,
    )
    params_file = stack.resolved_params_file()
    context = Context()
    rclpy.init(args=ros_args_for(stack), context=context)
    nodes: list[Any] = []
    records: list[EpisodeRecord] = []
    spinners: list[_Spin] = []
    stop = threading.Event()
    wall_start = time.monotonic()
    sim_s = 0.0
    sync = (0, 0)
    try:
        sim = SimNode(
            context=context,
            parameter_overrides=[
                Parameter("autostart", value=False),
                Parameter("real_time_factor", value=float(options.real_time_factor)),
                Parameter("sync_lag_s", value=SYNC_LAG_S),
            ],
        )
        nodes.append(sim)
        sim_time = Parameter("use_sim_time", value=True)
        if options.driver == "expert":
            nodes += build_stack(context, stack, inference=False)
            nodes.append(
                ExpertNode(
                    context=context,
                    parameter_overrides=[sim_time, Parameter("noise", value=options.noise)],
                )
            )
        else:
            every = options.trigger == "every-frame"
            extra = [Parameter("trigger_mode", value="every_frame" if every else "event")]
            if every:
                extra.append(Parameter("min_interval_s", value=0.0))
            nodes += build_stack(context, stack, inference_params=extra)
        client_node = rclpy.create_node("vla_sim_eval", context=context)
        nodes.append(client_node)
        reset_sim = client_node.create_client(Trigger, "/vla_sim/reset")
        reset_policy = client_node.create_client(Trigger, "/vla/reset")
        executor = make_executor(context)
        for node in nodes:
            executor.add_node(node)
        spinners.append(_Spin(executor, "sim_eval_spin"))
        record_executor = make_executor(context)
        spinners.append(_Spin(record_executor, "sim_eval_record"))
        bags = out / "bags"
        bags.mkdir(exist_ok=True)
        index = 0
        for scenario in options.scenarios:
            for seed in range(options.seed_start, options.seed_start + options.episodes):
                language = options.languages[index % len(options.languages)]
                index += 1
                record = _episode(
                    scenario,
                    seed,
                    language,
                    options,
                    sim=sim,
                    nodes=nodes,
                    context=context,
                    record_executor=record_executor,
                    bag=bags / f"{scenario.name}_seed{seed}_{language}",
                    reset_sim=reset_sim,
                    reset_policy=reset_policy if options.driver == "policy" else None,
                    stop=stop,
                    params_file=params_file,
                )
                records.append(record)
                if progress is not None:
                    progress(record)
    except KeyboardInterrupt:
        stop.set()
    finally:
        sim_s = nodes[0].time_s if nodes else 0.0
        sync = (nodes[0].sync_holds, nodes[0].sync_timeouts) if nodes else (0, 0)
        for spinner in reversed(spinners):
            spinner.close()
        for node in reversed(nodes):
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    summary = summarise(records, options)
    wall_s = time.monotonic() - wall_start
    summary["sync"] = {"holds": sync[0], "timeouts": sync[1]}
    summary["throughput"] = {
        "wall_s": round(wall_s, 1),
        "sim_s": round(sim_s, 1),
        "achieved_real_time_factor": round(sim_s / wall_s, 3) if wall_s > 0 else 0.0,
        "episodes_per_min": round(60.0 * len(records) / wall_s, 2) if wall_s > 0 else 0.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    plot_trajectories(records, out)
    return summary


def _episode(
    scenario: Scenario,
    seed: int,
    language: str,
    options: EvalOptions,
    *,
    sim: Any,
    nodes: Sequence[Any],
    context: Any,
    record_executor: Any,
    bag: Path,
    reset_sim: Any,
    reset_policy: Any,
    stop: threading.Event,
    params_file: Path,
) -> EpisodeRecord:
    """Record, reset, wait for the end, check the bag."""
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from vla_ros.bag.check import check_bag, load_node_params
    from vla_ros.bag.harness import wait_until_wired
    from vla_ros.bag.record import BagRecorder

    shutil.rmtree(bag, ignore_errors=True)
    recorder = BagRecorder(
        options.topics, bag, context=context, keep=True, use_sim_time=True, overwrite=True
    )
    record_executor.add_node(recorder.node)
    try:
        deadline = time.monotonic() + 10.0
        while recorder.pending and time.monotonic() < deadline and not stop.wait(0.02):
            optional = {"/vla/estop", "/vla/inference_event"}
            if set(recorder.pending) <= optional:
                break
        wait_until_wired([*nodes, recorder.node], 10.0, stop)
        sim.set_parameters(
            [
                Parameter("scenario", value=scenario.source),
                Parameter("seed", value=seed),
                Parameter("language", value=language),
            ]
        )
        done_before = len(sim.episodes)
        if reset_policy is not None:
            _call(reset_policy, Trigger.Request(), 10.0)
        answer = _call(reset_sim, Trigger.Request(), 10.0)
        if not answer.success:
            raise RuntimeError(f"sim reset refused: {answer.message}")
        sim_budget = scenario.time_limit_s + 5.0
        timeout = options.wall_timeout_s or (60.0 + 4.0 * sim_budget / options.real_time_factor)
        deadline = time.monotonic() + timeout
        while len(sim.episodes) == done_before and not stop.wait(0.02):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{scenario.name} seed {seed}: no episode end after {timeout:.0f} s wall"
                )
        status = sim.episodes[-1]
        # The safety node keeps ramping down after the end: record a little of it.
        end = sim.time_s + 0.3
        while sim.time_s < end and not stop.wait(0.01):
            pass
    finally:
        record_executor.remove_node(recorder.node)
        recorder.stop()
    items = recorder.snapshot()
    inferences = sum(1 for item in items if item.topic == "/vla/inference_event")
    # Receive times follow the sim clock, which moves in `step_dt` quanta and reaches the
    # recorder on its own thread: a measured interval can be one quantum longer or shorter
    # than the real one, so widen each dt by a quantum plus the output period and the silence
    # bound (five output periods, check_trace's default) by a quantum.
    step_dt = float(sim.get_parameter("step_dt").value)
    period = 1.0 / float(load_node_params(params_file).get("output_rate_hz", 50.0))
    findings = check_bag(
        bag, params_file, time_tolerance_s=step_dt + period, max_gap_s=5 * period + step_dt
    )
    return EpisodeRecord(
        scenario=scenario.name,
        seed=seed,
        language=language,
        result=status["result"],
        frames=int(status["frames"]),
        inferences=inferences,
        violations=[str(f) for f in findings],
        interventions=_interventions(items),
        bag=str(bag),
        trajectory=status["trajectory"],
        layout=status["layout"],
    )


def plot_trajectories(records: Sequence[EpisodeRecord], out: Path) -> list[Path]:
    """One top-down PNG per scenario: boxes, cups and every episode's path (green = success)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    from vla_ros.sim.scenario import Box

    by_scenario: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_scenario[record.scenario].append(record)
    paths = []
    for name, group in by_scenario.items():
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        for record in group:
            for b in record.layout.get("boxes", []):
                box = Box(b[0], b[1], b[2], tuple(b[3:6]))
                ax.add_patch(
                    Polygon(box.corners(), closed=True, fc="#b8864d", ec="none", alpha=0.15)
                )
            cup = record.layout.get("cup")
            if cup:
                ax.plot(*cup, "o", color="#d62728", ms=4)
            if record.trajectory:
                xs, ys = zip(*record.trajectory, strict=True)
                ok = record.result.get("success")
                ax.plot(xs, ys, "-", lw=1, color="#2ca02c" if ok else "#1f77b4", alpha=0.7)
        successes = sum(bool(r.result.get("success")) for r in group)
        ax.set_title(f"{name}: {successes}/{len(group)} success")
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m), left +")
        ax.grid(alpha=0.3)
        path = out / f"trajectories_{name}.png"
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def print_summary(summary: dict[str, Any], title: str = "vla_ros sim eval") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} (driver {summary['driver']}, trigger {summary['trigger']})")
    for column in (
        "scenario",
        "n",
        "success",
        "collision",
        "comply",
        "SPL",
        "t goal s",
        "VLM/frame",
        "limited",
        "violations",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")

    def row(name: str, s: dict[str, Any]) -> None:
        ttg = s["time_to_goal_s"]
        table.add_row(
            name,
            str(s["episodes"]),
            f"{s['success_rate']:.0%}",
            f"{s['collision_rate']:.0%}",
            f"{s['compliance_rate']:.0%}",
            f"{s['spl']:.2f}",
            "-" if ttg is None or not math.isfinite(ttg) else f"{ttg:.1f}",
            f"{s['vlm_calls_per_frame']:.3f}",
            f"{s['safety_interventions']:.0%}",
            str(s["safety_violations"]),
        )

    for name, scenario in summary["scenarios"].items():
        row(name, scenario)
    row("all", summary)
    Console(width=max(120, Console().width)).print(table)

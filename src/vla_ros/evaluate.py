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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_ros.core.stats import wilson_interval
from vla_ros.sim import robots
from vla_ros.sim.scenario import Scenario

COMMON_TOPICS = (
    "/vla/estop",
    "/vla_safety/status",
    "/vla/instruction",
    "/vla_sim/episode",
    "/vla/inference_event",
)
OPTIONAL_TOPICS = frozenset({"/vla/estop", "/vla/inference_event"})
"""Recorded when someone publishes them; an episode does not wait for them."""


def record_topics(robot: str, demonstrations: bool = False) -> tuple[str, ...]:
    """What an episode bag holds. Demonstrations (`sim collect`) add the camera (rgb8 at the
    model size, 10 Hz), the lidar scan and the mobile expert's clean label: with the
    instruction (latched, once per episode), the safety node's command output (50 Hz), the
    expert's raw command (20 Hz), odometry or the end-effector pose (50 Hz) and the episode
    status, what a real robot would log."""
    sim_robot = robots.get(robot)
    extra = ("/camera/image_raw", *sim_robot.demo_topics) if demonstrations else ()
    return (*sim_robot.command_topics(), sim_robot.state_topic, *COMMON_TOPICS, *extra)


WORKER_DOMAINS = range(201, 233)
"""ROS domains the parallel workers draw from: outside the test suite's 1-200, so a worker never
meets another run's nodes (the fault drill draws from the same range)."""
SYNC_COUNTS = ("holds", "timeouts", "inference_holds", "inference_timeouts")
"""The clock holds a run counts; parallel workers' add up."""
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
    backend: str = ""
    """Trunk backend of the policy (empty: the parameter file's, i.e. torch)."""
    trigger: str = "event"
    inference_latency_s: float = 0.1
    """Sim seconds an inference may take before the sim holds its clock for it (< 0: never)."""
    languages: Sequence[str] = ("en",)
    real_time_factor: float = 1.0
    noise: bool = False
    demonstrations: bool = False
    params_file: str | None = None
    overlay_params_files: tuple[str, ...] = ()
    wall_timeout_s: float | None = None
    time_limit_s: float | None = None
    """Overrides every scenario's time limit (the sim node's `time_limit_s`)."""
    extra_topics: tuple[str, ...] = ()
    """Also recorded in every episode bag (e.g. the camera and the predicted path, to animate)."""
    workers: int = 1
    """Simulator + stack processes running episodes side by side, each on a ROS domain of its
    own; the episodes, their results and the summary are the same for any number."""

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
        if not 1 <= self.workers <= len(WORKER_DOMAINS):
            raise ValueError(f"--workers must be in [1, {len(WORKER_DOMAINS)}], got {self.workers}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"--time-limit must be > 0, got {self.time_limit_s}")
        robots = {s.robot for s in self.scenarios}
        if len(robots) != 1:
            raise ValueError(
                f"one run drives one robot: the scenarios mix {sorted(robots)} "
                "(run --scenarios mobile and --scenarios arm separately)"
            )
        if self.driver == "policy" and not (Path(self.model_dir) / "policy.yaml").is_file():
            raise FileNotFoundError(
                f"model directory {self.model_dir} has no policy.yaml: "
                f"run `vla-ros make-tiny-model {self.model_dir}` or pass --model-dir"
            )

    @property
    def robot(self) -> str:
        return self.scenarios[0].robot


@dataclass(frozen=True)
class Job:
    """One episode to run: the language follows the episode's place in the whole run."""

    scenario: Scenario
    seed: int
    language: str


def episode_jobs(options: EvalOptions) -> list[Job]:
    """Every episode of the run in order: scenarios, then seeds; languages cycle per episode."""
    seeds = range(options.seed_start, options.seed_start + options.episodes)
    pairs = [(scenario, seed) for scenario in options.scenarios for seed in seeds]
    languages = options.languages
    return [Job(sc, seed, languages[i % len(languages)]) for i, (sc, seed) in enumerate(pairs)]


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
    foreign_publishers: list[str] = field(default_factory=list)

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
            "foreign_publishers": self.foreign_publishers,
        }


def aggregate(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """The summary numbers of a set of episodes (NaN-free: empty sets give 0)."""
    n = len(records)
    results = [r.result for r in records]

    def rate(key: str) -> float:
        return sum(bool(r[key]) for r in results) / n if n else 0.0

    successes = [r for r in results if r["success"]]
    frames = sum(r.frames for r in records)
    rates = ("success", "collision", "compliant", "timeout")
    names = {"compliant": "compliance_rate"}
    intervals = {
        names.get(key, f"{key}_rate"): [
            round(bound, 4) for bound in wilson_interval(sum(bool(r[key]) for r in results), n)
        ]
        for key in rates
    }
    return {
        "episodes": n,
        "intervals_95": intervals,
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
        "episodes_with_foreign_publishers": sum(bool(r.foreign_publishers) for r in records),
    }


def summarise(records: Sequence[EpisodeRecord], options: EvalOptions) -> dict[str, Any]:
    by_scenario: dict[str, list[EpisodeRecord]] = defaultdict(list)
    by_language: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_scenario[record.scenario].append(record)
        by_language[record.language].append(record)
    return {
        **aggregate(records),
        "driver": options.driver,
        "trigger": options.trigger,
        "seeds": [options.seed_start, options.seed_start + options.episodes - 1],
        "real_time_factor": options.real_time_factor,
        "params_overlays": [str(path) for path in options.overlay_params_files],
        "scenarios": {name: aggregate(group) for name, group in by_scenario.items()},
        "languages": {name: aggregate(group) for name, group in by_language.items()},
        "episode_results": [r.as_dict() for r in records],
    }


def _foreign_publishers(node: Any, robot: str) -> list[str]:
    """Topics with more publishers than this run has (its results would not be its own):
    another process shares the ROS_DOMAIN_ID."""
    found = []
    space = robots.get(robot).space
    expected_counts = {
        "/clock": 1,
        "/" + space.output_topic: 1,
        "/" + space.raw_topic: 1,
        "/vla/estop": 0,
    }
    for topic, expected in expected_counts.items():
        count = node.count_publishers(topic)
        if count > expected:
            found.append(f"{topic}: {count} publishers, expected {expected}")
    if found:
        node.get_logger().error(
            f"another process publishes into this run (same ROS_DOMAIN_ID?): {'; '.join(found)}"
        )
    return found


def _interventions(items: Sequence[Any], robot: str) -> float:
    """Fraction of safety outputs that differ from the newest raw command (limited or stopped)."""
    from vla_ros.bag.io import deserialize
    from vla_ros.safety.config import twist_vector

    space = robots.get(robot).space
    raw, output = "/" + space.raw_topic, "/" + space.output_topic
    latest: tuple[float, ...] | None = None
    changed = total = 0
    for item in sorted(items, key=lambda i: i.receive_ns):
        if item.topic not in (raw, output):
            continue
        vector = twist_vector(deserialize(item.data, item.msgtype, item.topic))
        if item.topic == raw:
            latest = vector
        elif latest is not None:
            total += 1
            changed += any(abs(a - b) > 1e-3 for a, b in zip(vector, latest, strict=False))
    return changed / total if total else 0.0


class _Spin:
    """Spins an executor on a thread until stopped; `paused()` holds it between two spins, so
    nodes can be added and destroyed safely; `close()` re-raises the spin thread's error."""

    def __init__(self, executor: Any, name: str) -> None:
        self.executor = executor
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if not self._running.is_set():
                    self._idle.set()
                    self._running.wait(0.05)
                    continue
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as exc:  # surfaced by close()
            self.error = exc

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._idle.clear()
        self._running.clear()
        try:
            if not self._idle.wait(10.0):
                raise RuntimeError("the executor did not pause within 10 s")
            yield
        finally:
            self._running.set()

    def close(self) -> None:
        self.stop.set()
        self._running.set()
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


@dataclass
class _Shard:
    """What one process ran: its records, its clock holds and the sim time it covered."""

    records: list[EpisodeRecord]
    sync: dict[str, Any]
    sim_s: float


def run_eval(options: EvalOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run every (scenario, seed) episode through the stack; write bags, summary.json, PNGs.
    With `workers` > 1 the episodes are dealt round-robin to that many processes."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    wall_start = time.monotonic()
    jobs = episode_jobs(options)
    workers = min(options.workers, len(jobs))
    if workers == 1:
        shards = [_run_jobs(options, jobs, progress)]
    else:
        shards = _run_parallel(options, jobs, workers, progress)
    done = {(r.scenario, r.seed, r.language): r for shard in shards for r in shard.records}
    keys = [(job.scenario.name, job.seed, job.language) for job in jobs]
    records = [done[key] for key in keys if key in done]
    sim_s = sum(shard.sim_s for shard in shards)
    summary = summarise(records, options)
    wall_s = time.monotonic() - wall_start
    summary["sync"] = {
        **shards[0].sync,
        **{key: sum(shard.sync[key] for shard in shards) for key in SYNC_COUNTS},
    }
    summary["throughput"] = {
        "wall_s": round(wall_s, 1),
        "sim_s": round(sim_s, 1),
        "achieved_real_time_factor": round(sim_s / wall_s, 3) if wall_s > 0 else 0.0,
        "episodes_per_min": round(60.0 * len(records) / wall_s, 2) if wall_s > 0 else 0.0,
        "workers": workers,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    plot_trajectories(records, out)
    return summary


def _run_parallel(
    options: EvalOptions, jobs: Sequence[Job], workers: int, progress: Progress | None
) -> list[_Shard]:
    """`workers` spawned processes, each with its own ROS domain (localhost only) and its share
    of the torch threads; records come back as they finish, a failing worker fails the run."""
    import multiprocessing
    import os
    import queue as queues
    import random

    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    domains = random.SystemRandom().sample(list(WORKER_DOMAINS), workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker,
            args=(options, list(jobs[k::workers]), domains[k], threads, results),
            name=f"sim_eval_worker_{k}",
            daemon=True,
        )
        for k in range(workers)
    ]
    for process in processes:
        process.start()
    shards: list[_Shard] = []
    try:
        while len(shards) < workers:
            try:
                kind, payload = results.get(timeout=1.0)
            except queues.Empty:
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"sim eval worker(s) died: {', '.join(dead)}") from None
                continue
            if kind == "record" and progress is not None:
                progress(payload)
            elif kind == "shard":
                shards.append(payload)
            elif kind == "error":
                raise RuntimeError(f"sim eval worker failed: {payload}")
    finally:
        for process in processes:
            if process.is_alive() and len(shards) < workers:
                process.terminate()
            process.join(timeout=30)
    return shards


def _worker(options: EvalOptions, jobs: list[Job], domain: int, threads: int, results: Any) -> None:
    """One parallel worker (a spawned process): set its domain and threads before rclpy and
    torch load, run its episodes, report each record and then the shard."""
    import os

    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        shard = _run_jobs(options, jobs, lambda record: results.put(("record", record)))
        results.put(("shard", shard))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _run_jobs(options: EvalOptions, jobs: Sequence[Job], progress: Progress | None) -> _Shard:
    """`jobs` through one stack in this process (one rclpy context, one executor)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from vla_ros.bringup import StackOptions, build_stack, ros_args_for
    from vla_ros.nodes.expert_node import ExpertNode
    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.transport import make_executor

    stack = StackOptions(
        mode=options.robot,
        model_dir=options.model_dir,
        params_file=options.params_file,
        overlay_params_files=options.overlay_params_files,
        use_sim_time=True,
        backend=options.backend,
    )
    params_file = stack.resolved_params_file()
    ros_args = ros_args_for(stack)
    out = Path(options.out)
    context = Context()
    rclpy.init(args=ros_args, context=context)
    nodes: list[Any] = []
    records: list[EpisodeRecord] = []
    spinners: list[_Spin] = []
    stop = threading.Event()
    sim_s = 0.0
    policy_driven = options.driver == "policy"
    latency = float(options.inference_latency_s) if policy_driven else -1.0
    sync: dict[str, Any] = {
        "holds": 0,
        "timeouts": 0,
        "inference_latency_s": options.inference_latency_s if policy_driven else None,
        "inference_holds": 0,
        "inference_timeouts": 0,
    }
    try:
        sim = SimNode(
            context=context,
            parameter_overrides=[
                Parameter("autostart", value=False),
                Parameter("real_time_factor", value=float(options.real_time_factor)),
                Parameter("sync_lag_s", value=SYNC_LAG_S),
                Parameter("inference_latency_s", value=latency),
                Parameter("time_limit_s", value=float(options.time_limit_s or 0.0)),
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
        spinner = _Spin(executor, "sim_eval_spin")
        spinners.append(spinner)
        bags = out / "bags"
        bags.mkdir(exist_ok=True)
        for job in jobs:
            record = _episode(
                job.scenario,
                job.seed,
                job.language,
                options,
                sim=sim,
                nodes=nodes,
                context=context,
                executor=executor,
                spinner=spinner,
                bag=bags / f"{job.scenario.name}_seed{job.seed}_{job.language}",
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
        if nodes:
            controller, policy = nodes[0].controller_hold, nodes[0].policy_lockstep.hold
            sync.update(holds=controller.holds, timeouts=controller.timeouts)
            sync.update(inference_holds=policy.holds, inference_timeouts=policy.timeouts)
        for spinner in reversed(spinners):
            spinner.close()
        for node in reversed(nodes):
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return _Shard(records, sync, sim_s)


def _episode(
    scenario: Scenario,
    seed: int,
    language: str,
    options: EvalOptions,
    *,
    sim: Any,
    nodes: Sequence[Any],
    context: Any,
    executor: Any,
    spinner: _Spin,
    bag: Path,
    reset_sim: Any,
    reset_policy: Any,
    stop: threading.Event,
    params_file: Path,
) -> EpisodeRecord:
    """Record, reset, wait for the end, check the bag."""
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from vla_ros.bag.check import check_bag
    from vla_ros.bag.harness import wait_until_wired
    from vla_ros.bag.record import BagRecorder
    from vla_ros.params import load_node_params

    shutil.rmtree(bag, ignore_errors=True)
    recorder = BagRecorder(
        tuple(
            dict.fromkeys(
                (*record_topics(options.robot, options.demonstrations), *options.extra_topics)
            )
        ),
        bag,
        context=context,
        keep=True,
        use_sim_time=True,
        overwrite=True,
    )
    # On the stack's executor, not a thread of its own: receive times follow the sim clock, and
    # a recorder starved on another thread would stamp late messages with a later clock.
    with spinner.paused():
        executor.add_node(recorder.node)
    try:
        deadline = time.monotonic() + 10.0
        while recorder.pending and time.monotonic() < deadline and not stop.wait(0.02):
            if set(recorder.pending) <= OPTIONAL_TOPICS:
                break
        wait_until_wired([*nodes, recorder.node], 10.0, stop)
        foreign = _foreign_publishers(sim, options.robot)
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
        # A hang detector, not a speed requirement: allows an achieved real-time factor of 0.1.
        sim_budget = (options.time_limit_s or scenario.time_limit_s) + 5.0
        timeout = options.wall_timeout_s or (120.0 + 10.0 * sim_budget)
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
        with spinner.paused():
            executor.remove_node(recorder.node)
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
        foreign_publishers=foreign,
        interventions=_interventions(items, options.robot),
        bag=str(bag),
        trajectory=status["trajectory"],
        layout=status["layout"],
    )


def plot_trajectories(records: Sequence[EpisodeRecord], out: Path) -> list[Path]:
    """One top-down PNG per scenario (boxes, cups and every episode's path, green = success) and
    trajectories.png with every scenario side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_scenario: dict[str, list[EpisodeRecord]] = defaultdict(list)
    for record in records:
        by_scenario[record.scenario].append(record)
    paths = []
    for name, group in by_scenario.items():
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        _draw_scenario(ax, name, group)
        paths.append(_save(fig, out / f"trajectories_{name}.png"))
    if by_scenario:
        columns = min(len(by_scenario), 4)
        rows = math.ceil(len(by_scenario) / columns)
        fig, axes = plt.subplots(
            rows, columns, figsize=(4.5 * columns, 3.0 * rows), dpi=100, squeeze=False
        )
        for ax, (name, group) in zip(axes.flat, by_scenario.items(), strict=False):
            _draw_scenario(ax, name, group)
        for ax in list(axes.flat)[len(by_scenario) :]:
            ax.set_visible(False)
        paths.append(_save(fig, out / "trajectories.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_scenario(ax: Any, name: str, group: Sequence[EpisodeRecord]) -> None:
    from matplotlib.patches import Polygon

    from vla_ros.sim.scenario import BLOCK_COLOURS, Box

    for record in group:
        for b in record.layout.get("boxes", []):
            box = Box(b[0], b[1], b[2], tuple(b[3:6]))
            ax.add_patch(Polygon(box.corners(), closed=True, fc="#b8864d", ec="none", alpha=0.15))
        cup = record.layout.get("cup")
        if cup and record.layout.get("boxes"):
            ax.plot(*cup, "o", color="#d62728", ms=4)
        for colour, x, y in record.layout.get("blocks", []):
            ax.plot(x, y, "s", color=BLOCK_COLOURS[colour], ms=5, alpha=0.5)
        if record.trajectory:
            xs, ys = zip(*record.trajectory, strict=True)
            ok = record.result.get("success")
            ax.plot(xs, ys, "-", lw=1, color="#2ca02c" if ok else "#1f77b4", alpha=0.7)
    successes = sum(bool(r.result.get("success")) for r in group)
    ax.set_title(f"{name}: {successes}/{len(group)} success")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m), left +" if group[0].layout.get("boxes") else "y (m)")
    ax.grid(alpha=0.3)


def _with_interval(summary: dict[str, Any], rate: str) -> str:
    """`97% [87-100]`: the rate and its Wilson 95 % interval."""
    low, high = summary.get("intervals_95", {}).get(rate, (None, None))
    if low is None:
        return f"{summary[rate]:.0%}"
    return f"{summary[rate]:.0%} [{low:.0%}-{high:.0%}]"


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
            _with_interval(s, "success_rate"),
            _with_interval(s, "collision_rate"),
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
    console = Console(width=max(120, Console().width))
    console.print(table)
    if summary["episodes_with_foreign_publishers"]:
        console.print(
            f"[red]{summary['episodes_with_foreign_publishers']} episode(s) had foreign "
            "publishers (another process on this ROS_DOMAIN_ID): their results are not valid[/red]"
        )

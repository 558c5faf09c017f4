"""Closed-loop simulator cost on this machine: physics and render ms per step, real-time factor.

In process (no DDS): the mobile3 world stepped at 50 Hz by the expert with 10 Hz camera frames
(224x224, cheap lighting) and 10 Hz lidar scans, as the sim node does; then the real-time
factor that loop reaches, and the same with default MuJoCo lighting (shadows + reflections on)
as the baseline the cheap settings are measured against. With --eval-episodes > 0 it also runs
`vla-ros sim eval` with the expert through the ROS stack and reports episodes per minute.
Prints medians and ratios; writes sim.json to --out.

    python test/bench/bench_sim.py --out out/bench
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from vla_ros import bench
from vla_ros.sim.expert import MobileExpert
from vla_ros.sim.scenario import resolve_scenarios
from vla_ros.sim.world import MobileWorld, Renderer

CAMERA_EVERY = 5
"""Camera and scan every 5th 50 Hz step = 10 Hz, the sim node's defaults."""


def _loop(world: MobileWorld, renderer: Renderer, seeds: range) -> dict[str, float]:
    physics, render, scan = [], [], []
    sim_s = 0.0
    started = time.perf_counter()
    for seed in seeds:
        layout = world.reset(seed)
        expert = MobileExpert(world.scenario, layout)
        for step in range(int(world.scenario.time_limit_s / world.dt)):
            command = expert.command(world.odom().pose, world.dt)
            t0 = time.perf_counter()
            result = world.step(command)
            physics.append(time.perf_counter() - t0)
            if step % CAMERA_EVERY == 0:
                t0 = time.perf_counter()
                renderer.render(world.snapshot())
                render.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                world.scan()
                scan.append(time.perf_counter() - t0)
            sim_s += world.dt
            if result.done:
                break
    wall = time.perf_counter() - started
    return {
        "physics_ms_p50": statistics.median(physics) * 1e3,
        "render_ms_p50": statistics.median(render) * 1e3,
        "scan_ms_p50": statistics.median(scan) * 1e3,
        "real_time_factor": sim_s / wall,
        "steps": len(physics),
    }


def _default_lighting_render_ms(name: str, frames: int = 30) -> float:
    """The same scene with MuJoCo's usual look: shadow map, shadow-casting light, reflections."""
    world = MobileWorld(resolve_scenarios(name)[0], cheap_lighting=False)
    world.reset(0)
    with Renderer(world) as renderer:
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            renderer.render(world.snapshot())
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _eval_throughput(episodes: int) -> dict[str, float]:
    from vla_ros.evaluate import EvalOptions, run_eval

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_eval(
            EvalOptions(
                scenarios=resolve_scenarios("1box_vert_left"),
                out=Path(tmp),
                episodes=episodes,
                real_time_factor=2.0,
            )
        )
    return {**summary["throughput"], "success_rate": summary["success_rate"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for sim.json")
    parser.add_argument("--seeds", type=int, default=3, help="expert episodes per measurement")
    parser.add_argument("--eval-episodes", type=int, default=2, help="0 skips the ROS run")
    args = parser.parse_args(argv)
    started = bench.conditions()

    world = MobileWorld(resolve_scenarios("2box_vert_left")[0])
    with Renderer(world) as renderer:
        cheap = _loop(world, renderer, range(args.seeds))
    default_ms = _default_lighting_render_ms("2box_vert_left")
    report = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "image": [world.image_size, world.image_size],
        "physics_dt_s": world.dt,
        "cheap_lighting": cheap,
        "default_lighting_render_ms_p50": default_ms,
        "render_speedup_cheap_vs_default": default_ms / cheap["render_ms_p50"],
    }
    if args.eval_episodes > 0:
        report["eval_through_ros"] = _eval_throughput(args.eval_episodes)
    print(f"physics step (50 Hz, 4 substeps): {cheap['physics_ms_p50']:.3f} ms median")
    print(f"render 224x224 cheap lighting:    {cheap['render_ms_p50']:.2f} ms median")
    print(f"render 224x224 default lighting:  {default_ms:.2f} ms median")
    print(f"  cheap / default speed-up:       {report['render_speedup_cheap_vs_default']:.1f}x")
    print(f"lidar scan (360 rays):            {cheap['scan_ms_p50']:.3f} ms median")
    print(f"real-time factor, in process:     {cheap['real_time_factor']:.1f}x")
    if "eval_through_ros" in report:
        ros = report["eval_through_ros"]
        print(
            f"eval through ROS (rtf 2 asked):   {ros['episodes_per_min']:.1f} episodes/min, "
            f"achieved rtf {ros['achieved_real_time_factor']:.2f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    bench.write_report(args.out / "sim.json", report, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

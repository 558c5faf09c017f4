"""The ROS-free world core: scenario schema, placements, world physics and sensors, success
rules and the scripted expert (plain pytest, no ROS)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("MUJOCO_GL", "egl")

from vla_ros.sim.expert import ExpertConfig, MobileExpert, NoiseConfig, run_expert
from vla_ros.sim.rules import MobileEpisode
from vla_ros.sim.scenario import (
    ROBOT_RADIUS_M,
    SCENARIO_DIR,
    ScenarioError,
    builtin_names,
    load_scenario,
    resolve_scenarios,
    sample_layout,
)
from vla_ros.sim.world import MobileWorld, Renderer

MOBILE = [
    f"{n}_{o}_{s}" for n in ("1box", "2box") for o in ("vert", "hori") for s in ("left", "right")
]


def _raw(name: str = "1box_vert_left") -> dict:
    return yaml.safe_load((SCENARIO_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_the_eight_mobile_scenarios_ship_with_english_and_korean() -> None:
    assert set(MOBILE) <= set(builtin_names())
    scenarios = resolve_scenarios("mobile")
    assert sorted(s.name for s in scenarios) == sorted(MOBILE)
    for scenario in scenarios:
        assert scenario.text("en")
        assert scenario.text("ko")
        assert len(scenario.boxes) == (1 if scenario.name.startswith("1box") else 2)
        length, width = scenario.boxes[0].size[:2]
        assert (length > width) == ("_vert_" in scenario.name)
        assert scenario.side == scenario.name.rsplit("_", 1)[1]
    assert "왼쪽" in resolve_scenarios("1box_vert_left")[0].text("ko")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.update(colour="red"), "colour"),
        (lambda r: r["boxes"][0].update(mass=3), "boxes[0].mass"),
        (lambda r: r["start"].update(z=1), "start.z"),
        (lambda r: r["instruction"].update(fr="x"), "instruction.fr"),
        (lambda r: r.update(side="up"), "side"),
        (lambda r: r["cup"].update(x=[3.0, 2.0]), "cup.x"),
        (lambda r: r["boxes"][0].update(size=[0.5, -1, 0.4]), "boxes[0].size[1]"),
        (lambda r: r.update(time_limit_s="long"), "time_limit_s"),
        (lambda r: r["boxes"][0].update(x=[0.0, 0.1]), "boxes[0]"),
        (lambda r: r["boxes"][0].update(x=[3.0, 3.1]), "boxes[0]"),
        (lambda r: r["cup"].update(x=[0.2, 0.3]), "cup"),
        (lambda r: r.pop("boxes"), "boxes"),
    ],
)
def test_bad_scenario_files_name_the_file_and_the_field(tmp_path, mutate, field) -> None:
    raw = _raw()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(path) in str(error.value)
    assert f": {field}:" in str(error.value)


def test_two_boxes_that_can_overlap_are_refused(tmp_path) -> None:
    raw = _raw("2box_vert_left")
    raw["boxes"][1]["x"] = [1.1, 1.3]
    with pytest.raises(ScenarioError, match=r"boxes\[1\]: can overlap boxes\[0\]"):
        load_scenario(_write(tmp_path, raw))


def test_unknown_names_and_missing_files_are_clear_errors(tmp_path) -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        resolve_scenarios("nope")
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml is missing"):
        resolve_scenarios(str(tmp_path / "missing.yaml"))


def test_a_user_file_and_a_suite_file_resolve(tmp_path) -> None:
    raw = _raw()
    raw["name"] = "mine"
    path = _write(tmp_path, raw)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"scenarios: [{path.name}, 2box_hori_right]\n")
    assert [s.name for s in resolve_scenarios(str(suite))] == ["mine", "2box_hori_right"]


@given(st.sampled_from(MOBILE), st.integers(0, 2**31 - 1))
def test_sampled_layouts_stay_in_range_and_never_overlap(name, seed) -> None:
    scenario = resolve_scenarios(name)[0]
    layout = sample_layout(scenario, seed)
    assert layout == sample_layout(scenario, seed)
    for value, key in zip(layout.start, ("x", "y", "yaw"), strict=True):
        low, high = scenario.start[key]
        assert low <= value <= high
    for box in layout.boxes:
        assert box.distance(*layout.start[:2]) > ROBOT_RADIUS_M
        assert box.distance(*layout.cup) > scenario.goal_tolerance_m


@pytest.fixture(scope="module")
def worlds():
    built = {name: MobileWorld(resolve_scenarios(name)[0]) for name in MOBILE}
    return built


@pytest.mark.parametrize("name", MOBILE)
def test_the_expert_succeeds_on_every_scenario(worlds, name) -> None:
    world = worlds[name]
    for seed in (0, 1, 2):
        run_expert(world, seed)
        result = world.result
        assert result.outcome == "success", result
        assert result.compliant
        assert not result.collision
        assert result.sides == [world.scenario.side] * len(world.scenario.boxes)
        assert 0.5 < result.spl <= 1.0


def test_the_noisy_expert_deviates_and_recovers(worlds) -> None:
    world = worlds["1box_vert_right"]
    clean = run_expert(world, 4)
    noisy = run_expert(world, 4, noise=NoiseConfig(burst_rate_hz=1.0))
    assert world.result.success
    n = min(len(clean), len(noisy))
    deviation = max(math.dist(a[:2], b[:2]) for a, b in zip(clean[:n], noisy[:n], strict=True))
    assert deviation > 0.05


def test_the_noisy_experts_label_is_the_clean_command_for_the_same_pose(worlds) -> None:
    """Demonstrations teach the label: on the noisy expert's own (perturbed) path, a clean
    expert given the same poses wants exactly the label, and the label differs from the
    executed (noisy) command where the noise acts."""
    world = worlds["1box_vert_left"]
    layout = world.reset(5)
    noisy = MobileExpert(world.scenario, layout, noise=NoiseConfig(burst_rate_hz=1.0), seed=5)
    clean = MobileExpert(
        world.scenario, layout, config=ExpertConfig(max_accel=1e9, max_turn_accel=1e9)
    )
    gaps = []
    for _ in range(200):
        pose = world.odom().pose
        executed = noisy.command(pose, world.dt)
        assert clean.command(pose, world.dt) == pytest.approx(noisy.label, abs=1e-9)
        gaps.append(abs(executed[2] - noisy.label[2]))
        if world.step(executed).done:
            break
    assert max(gaps) > 0.2


def test_same_seed_same_first_frames_and_same_trajectory(worlds) -> None:
    world = worlds["2box_hori_left"]
    frames = []
    with Renderer(world) as renderer:
        for _ in range(2):
            world.reset(7)
            first = [renderer.render(world.snapshot())]
            world.step((0.3, 0.0, 0.2))
            first.append(renderer.render(world.snapshot()))
            frames.append(first)
    assert frames[0][0].shape == (224, 224, 3)
    assert frames[0][0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(*frames, strict=True))
    assert not np.array_equal(frames[0][0], frames[0][1])
    assert run_expert(world, 7) == run_expert(world, 7)
    assert run_expert(world, 7) != run_expert(world, 8)


def test_driving_into_the_box_is_a_collision_and_the_robot_stops(worlds) -> None:
    world = worlds["1box_hori_left"]
    layout = world.reset(0)
    box = layout.boxes[0]
    world.data.qpos[2] = math.atan2(box.y - layout.start[1], box.x - layout.start[0])
    for _ in range(400):
        result = world.step((0.6, 0.0, 0.0))
        if result.done:
            break
    assert result.outcome == "collision"
    assert result.collision
    assert not result.success
    x, y, _ = world.odom().pose
    assert box.distance(x, y) < ROBOT_RADIUS_M + 0.05
    world.step((0.6, 0.0, 0.0))
    assert world.odom().pose[:2] == pytest.approx((x, y), abs=0.02)


def test_passing_on_the_wrong_side_is_not_success(worlds) -> None:
    scenario = worlds["1box_vert_left"].scenario
    layout = sample_layout(scenario, 0)
    episode = MobileEpisode(scenario, layout)
    box = layout.boxes[0]
    result = None
    for x in np.linspace(layout.start[0], layout.cup[0], 200):
        y = box.y - 0.6 if abs(x - box.x) < 0.8 else layout.cup[1]
        result = episode.update(float(x), float(x), float(y), contact=False)
    assert result is not None
    assert result.reached
    assert not result.compliant
    assert result.outcome == "wrong_side"
    assert result.spl == 0.0
    assert result.sides == ["right"]


def test_lidar_sees_the_box_ahead_and_commands_are_limited(worlds) -> None:
    world = worlds["1box_vert_left"]
    layout = world.reset(3)
    scan = world.scan()
    assert scan.ranges.shape == (360,)
    box = layout.boxes[0]
    expected = box.distance(*layout.start[:2])
    assert float(np.min(scan.ranges)) == pytest.approx(expected, abs=0.08)
    world.step((float("nan"), 0.0, float("inf")))
    assert world.odom().twist == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    for _ in range(40):
        world.step((5.0, 0.0, 0.0))
    assert world.odom().twist[0] == pytest.approx(world.limits.max_velocity[0], abs=0.02)


def test_a_timeout_ends_the_episode(worlds) -> None:
    world = worlds["1box_vert_left"]
    world.reset(0)
    steps = int(world.scenario.time_limit_s / world.dt) + 1
    for _ in range(steps):
        result = world.step((0.0, 0.0, 0.0))
    assert result.outcome == "timeout"
    assert result.timeout
    assert result.spl == 0.0


def test_no_gl_backend_is_a_clear_error(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "from vla_ros.sim.scenario import resolve_scenarios\n"
        "from vla_ros.sim.world import MobileWorld\n"
        "MobileWorld(resolve_scenarios('1box_vert_left')[0])\n"
    )
    env = {**os.environ, "MUJOCO_GL": "nonsense"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "RenderUnavailableError: cannot load MuJoCo with MUJOCO_GL=nonsense" in done.stderr
    assert "MUJOCO_GL=egl" in done.stderr


def test_a_headless_machine_renders_without_setting_mujoco_gl() -> None:
    """MUJOCO_GL unset and no display: the simulator picks egl (it aborted the process)."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "from vla_ros.sim.scenario import resolve_scenarios\n"
        "from vla_ros.sim.world import MobileWorld, Renderer\n"
        "world = MobileWorld(resolve_scenarios('1box_vert_left')[0])\n"
        "world.reset(0)\n"
        "with Renderer(world) as renderer:\n"
        "    print(renderer.render(world.snapshot()).shape, os.environ['MUJOCO_GL'])\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "egl"


ARM = [f"arm_{t}_{c}" for t in ("reach", "pick") for c in ("red", "green", "blue")]


@pytest.fixture(scope="module")
def arm_worlds():
    from vla_ros.sim.arm import ArmWorld

    return {name: ArmWorld(resolve_scenarios(name)[0]) for name in ARM}


def _run_arm(world, seed: int, expert=None):
    from vla_ros.sim.arm import ArmExpert

    layout = world.reset(seed)
    expert = expert or ArmExpert(world.scenario, layout, seed)
    trace = []
    for _ in range(int(world.scenario.time_limit_s / world.dt) + 2):
        result = world.step(expert.command(world.ee_position(), world.ee_rotation(), world.dt))
        trace.append(tuple(world.ee_position()))
        if result.done:
            break
    return result, trace


@pytest.mark.parametrize("name", ARM)
def test_the_arm_expert_reaches_and_picks_the_instructed_block(arm_worlds, name) -> None:
    world = arm_worlds[name]
    assert world.scenario.text("en")
    assert world.scenario.text("ko")
    for seed in (0, 1):
        result, _ = _run_arm(world, seed)
        assert result.outcome == "success", result
        assert result.compliant
        assert 0.3 < result.spl <= 1.0
        if world.scenario.task == "pick":
            assert result.grasped == world.scenario.target
            assert world.block_position(world.scenario.target)[2] > 0.08


def test_the_noisy_arm_experts_label_is_the_clean_command_for_the_same_pose(arm_worlds) -> None:
    """As for the mobile expert: along the noisy approach, a clean arm expert fed the same hand
    poses wants exactly the label, and the executed twist departs from it by the noise."""
    from vla_ros.sim.arm import ArmExpert

    world = arm_worlds["arm_reach_green"]
    layout = world.reset(3)
    noisy = ArmExpert(world.scenario, layout, 3, noise=0.15)
    clean = ArmExpert(world.scenario, layout, 3)
    gaps = []
    for _ in range(int(world.scenario.time_limit_s / world.dt)):
        ee, rotation = world.ee_position(), world.ee_rotation()
        executed = noisy.command(ee, rotation, world.dt)
        wanted = clean.command(ee, rotation, world.dt)
        np.testing.assert_allclose(noisy.label[0], wanted[0], atol=1e-12)
        assert noisy.label[1] == wanted[1]
        gaps.append(float(np.linalg.norm(executed[0] - noisy.label[0])))
        if world.step(executed).done:
            break
    assert world.result.success
    assert max(gaps) > 0.01


def test_the_reach_experts_command_depends_on_the_pose_alone(arm_worlds) -> None:
    """No hidden phase for a policy to guess from one image: along a noisy approach, an expert
    made fresh at each pose commands what the running expert's label says."""
    from vla_ros.sim.arm import ArmExpert

    world = arm_worlds["arm_reach_red"]
    layout = world.reset(4)
    running = ArmExpert(world.scenario, layout, 4, noise=0.15)
    for _ in range(int(world.scenario.time_limit_s / world.dt)):
        ee, rotation = world.ee_position(), world.ee_rotation()
        executed = running.command(ee, rotation, world.dt)
        fresh = ArmExpert(world.scenario, layout, 4).command(ee, rotation, world.dt)
        np.testing.assert_allclose(running.label[0], fresh[0], atol=1e-12)
        if world.step(executed).done:
            break
    assert world.result.success


def test_the_arm_expert_descends_only_as_it_centres_over_the_block(arm_worlds) -> None:
    """The funnel approach: low over the table only when nearly above the target, so a hand
    that is off to the side is high above the other blocks."""
    from vla_ros.sim.arm import APPROACH_HEIGHT_M, APPROACH_SLOPE

    world = arm_worlds["arm_reach_blue"]
    for seed in range(6):
        result, trace = _run_arm(world, seed)
        assert result.success
        final = world.target_point()
        for x, y, z in trace:
            off_axis = math.hypot(x - final[0], y - final[1])
            assert z - final[2] >= min(APPROACH_HEIGHT_M, APPROACH_SLOPE * off_axis) - 0.02


def _colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    from vla_ros.sim.scenario import BLOCK_COLOURS

    rgb = np.asarray(BLOCK_COLOURS[colour][:3], dtype=float) * 255
    return np.abs(frame.astype(float) - rgb).max(axis=-1) < 70


def test_the_wrist_camera_sees_the_target_grow_to_one_place_between_the_fingers() -> None:
    """What makes reaching learnable from the image: the view moves with the hand, so at the
    goal the target block fills the same pixels whatever the layout, and it is larger there
    than at the start."""
    from vla_ros.sim.arm import ArmWorld

    world = ArmWorld(resolve_scenarios("arm_reach_green")[0], image_size=64)
    assert world.camera == "wrist"
    centres = []
    with Renderer(world) as renderer:
        for seed in range(4):
            world.reset(seed)
            start = _colour_mask(renderer.render(world.snapshot()), "green")
            result, _ = _run_arm(world, seed)
            assert result.success
            goal = _colour_mask(renderer.render(world.snapshot()), "green")
            assert 0 < start.sum() < goal.sum() / 3
            rows, cols = np.nonzero(goal)
            centres.append((rows.mean(), cols.mean()))
    spread = np.ptp(np.array(centres), axis=0)
    assert spread.max() < 6, centres


def test_the_arm_is_deterministic_and_the_blocks_move_with_the_seed(arm_worlds) -> None:
    world = arm_worlds["arm_pick_green"]
    assert _run_arm(world, 5)[1] == _run_arm(world, 5)[1]
    world.reset(5)
    first = {c: tuple(world.block_position(c)) for c in world.scenario.blocks}
    world.reset(6)
    assert first != {c: tuple(world.block_position(c)) for c in world.scenario.blocks}


def test_reaching_the_wrong_block_and_hitting_the_table_end_the_episode(arm_worlds) -> None:
    from vla_ros.sim.arm import ArmExpert

    world = arm_worlds["arm_reach_red"]
    layout = world.reset(2)
    result, _ = _run_arm(world, 2, ArmExpert(world.scenario, layout, 2, target="blue"))
    assert result.outcome == "wrong_block"
    assert not result.compliant
    assert not result.success
    world.reset(2)
    for _ in range(200):
        result = world.step(((0.0, 0.0, -0.25, 0.0, 0.0, 0.0), 1.0))
        if result.done:
            break
    assert result.outcome == "collision"
    assert result.collision


def test_arm_twists_are_servoed_through_the_jacobian(arm_worlds) -> None:
    world = arm_worlds["arm_reach_blue"]
    world.reset(0)
    start = world.ee_position()
    for _ in range(10):
        world.step(((0.1, 0.0, 0.0, 0.0, 0.0, 0.0), None))
    moved = world.ee_position() - start
    assert moved[0] == pytest.approx(0.02, abs=0.003)
    assert abs(moved[1]) < 0.002
    assert abs(moved[2]) < 0.002
    world.step(((float("nan"),) * 6, 1.0))
    assert world.ee_position() == pytest.approx(start + moved, abs=1e-9)


@settings(max_examples=16, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MOBILE), st.integers(0, 2**31 - 1))
def test_the_expert_succeeds_for_any_seed(worlds, name, seed) -> None:
    world = worlds[name]
    run_expert(world, seed)
    assert world.result.success, world.result


def test_one_finish_rule_for_every_robot():
    from vla_ros.sim.arm import ArmResult
    from vla_ros.sim.rules import EpisodeResult

    for result in (EpisodeResult("s", 0), ArmResult("s", 0)):
        result.path_length_m, result.shortest_m = 4.0, 3.0
        result.finish("success")
        assert (result.done, result.success, result.spl) == (True, True, 0.75)
    for outcome in ("collision", "timeout", "wrong_side", "wrong_block", "aborted"):
        result = EpisodeResult("s", 0, path_length_m=4.0, shortest_m=3.0)
        result.finish(outcome)
        assert (result.outcome, result.success, result.spl) == (outcome, False, 0.0)

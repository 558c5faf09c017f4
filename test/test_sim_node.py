"""The sim node, the expert driver and `vla-ros sim eval` through real rclpy and DDS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def stack_context():
    """An rclpy context initialised with config/mobile.yaml, as a deployment is."""
    import rclpy
    from rclpy.context import Context

    from vla_ros.bringup import StackOptions, ros_args_for

    context = Context()
    rclpy.init(args=ros_args_for(StackOptions(mode="mobile", use_sim_time=True)), context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


def test_reset_mid_episode_holds_the_robot_until_the_safety_output_is_zero(
    stack_context, spin_until
) -> None:
    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from vla_ros.bringup import StackOptions, build_stack
    from vla_ros.nodes.expert_node import ExpertNode
    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, make_executor

    context = stack_context
    sim = SimNode(context=context, parameter_overrides=[Parameter("seed", value=3)])
    nodes = [
        sim,
        *build_stack(context, StackOptions(mode="mobile", use_sim_time=True), inference=False),
        ExpertNode(context=context, parameter_overrides=[Parameter("use_sim_time", value=True)]),
    ]
    probe = rclpy.create_node("probe", context=context)
    seen: dict = {"cmd": [], "states": [], "odom": None}

    def on_episode(msg: String) -> None:
        state = json.loads(msg.data)["state"]
        last = seen["cmd"][-1] if seen["cmd"] else None
        seen["states"].append((state, last, seen["odom"]))

    probe.create_subscription(
        Twist, "/cmd_vel", lambda m: seen["cmd"].append((m.linear.x, m.angular.z)), COMMAND_QOS
    )
    probe.create_subscription(String, "/vla_sim/episode", on_episode, LATCHED_QOS)
    probe.create_subscription(
        Odometry,
        "/odom",
        lambda m: seen.update(odom=(m.pose.pose.position.x, m.pose.pose.position.y)),
        SENSOR_QOS,
    )
    reset = probe.create_client(Trigger, "/vla_sim/reset")
    executor = make_executor(context)
    for node in [*nodes, probe]:
        executor.add_node(node)
    try:

        def moving() -> bool:
            last = seen["cmd"][-1] if seen["cmd"] else (0.0, 0.0)
            return sim.state == "running" and abs(last[0]) > 0.1

        assert spin_until(executor, moving, 30.0), sim.state
        sim.set_parameters([Parameter("seed", value=4)])
        future = reset.call_async(Trigger.Request())
        assert spin_until(executor, future.done, 10.0)
        assert future.result().success, future.result().message
        assert sim.state == "settling"
        marker = len(seen["states"])
        start = sim.episode.world.layout.start[:2]
        assert spin_until(
            executor, lambda: any(s[0] == "running" for s in seen["states"][marker:]), 30.0
        )
        _state, last_cmd, odom = next(s for s in seen["states"][marker:] if s[0] == "running")
        assert last_cmd == (0.0, 0.0)
        assert odom == pytest.approx(start, abs=1e-6)
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in [probe, *reversed(nodes)]:
            node.destroy_node()


def test_bad_scenarios_are_refused_with_their_name(stack_context, spin_until) -> None:
    from rclpy.parameter import Parameter

    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.params import ParameterError

    with pytest.raises(ParameterError, match="unknown scenario 'nope'"):
        SimNode(context=stack_context, parameter_overrides=[Parameter("scenario", value="nope")])
    with pytest.raises(ParameterError, match=r"step_dt must be a multiple of 0\.005"):
        SimNode(context=stack_context, parameter_overrides=[Parameter("step_dt", value=0.013)])
    sim = SimNode(context=stack_context)
    try:
        sim.set_parameters([Parameter("scenario", value="/no/such/file.yaml")])
        ok, message = sim.reset_episode()
        assert not ok
        assert "/no/such/file.yaml" in message
        assert sim.state == "settling"
    finally:
        sim.destroy_node()


def test_expert_eval_through_the_stack_writes_summary_bags_and_png(tmp_path) -> None:
    from vla_ros.bag.check import check_bag
    from vla_ros.evaluate import EvalOptions, run_eval
    from vla_ros.params import default_params_file
    from vla_ros.sim.scenario import resolve_scenarios

    out = tmp_path / "eval"
    summary = run_eval(
        EvalOptions(
            scenarios=resolve_scenarios("2box_hori_right"),
            out=out,
            episodes=1,
            seed_start=5,
            languages=("ko",),
            real_time_factor=2.0,
        )
    )
    for key in (
        "episodes",
        "success_rate",
        "collision_rate",
        "compliance_rate",
        "spl",
        "vlm_calls_per_frame",
        "safety_violations",
    ):
        assert key in summary
        assert key in summary["scenarios"]["2box_hori_right"]
        assert key in summary["languages"]["ko"]
    assert summary["episodes"] == 1
    assert summary["success_rate"] == 1.0
    assert summary["collision_rate"] == 0.0
    assert summary["vlm_calls_per_frame"] == 0.0
    written = json.loads((out / "summary.json").read_text())
    assert written["episode_results"][0]["language"] == "ko"
    bag = written["episode_results"][0]["bag"]
    check = check_bag(bag, default_params_file("mobile"), time_tolerance_s=0.04)
    assert check.samples > 50
    assert (out / "trajectories_2box_hori_right.png").stat().st_size > 1000


def test_parallel_workers_run_the_same_episodes_and_report_them_in_order(tmp_path) -> None:
    """Two worker processes (each on a domain of its own) share the episodes; the summary lists
    them in the run's order with the languages they would have had in one process."""
    from vla_ros.evaluate import EvalOptions, episode_jobs, run_eval
    from vla_ros.sim.scenario import resolve_scenarios

    options = EvalOptions(
        scenarios=resolve_scenarios("1box_hori_left,2box_hori_right"),
        out=tmp_path / "eval",
        episodes=1,
        seed_start=5,
        languages=("en", "ko"),
        real_time_factor=2.0,
        workers=2,
    )
    seen = []
    summary = run_eval(options, progress=seen.append)
    order = [(r["scenario"], r["seed"], r["language"]) for r in summary["episode_results"]]
    jobs = [(job.scenario.name, job.seed, job.language) for job in episode_jobs(options)]
    assert order == jobs == [("1box_hori_left", 5, "en"), ("2box_hori_right", 5, "ko")]
    assert sorted((r.scenario, r.seed, r.language) for r in seen) == sorted(jobs)
    assert summary["throughput"]["workers"] == 2
    assert summary["success_rate"] == 1.0
    assert summary["episodes_with_foreign_publishers"] == 0
    for result in summary["episode_results"]:
        assert Path(result["bag"]).parent == tmp_path / "eval" / "bags"
        assert (Path(result["bag"]) / "metadata.yaml").is_file()


def test_episode_jobs_cycle_languages_over_the_whole_run_and_workers_are_bounded(tmp_path):
    from vla_ros.evaluate import EvalOptions, episode_jobs
    from vla_ros.sim.scenario import resolve_scenarios

    scenarios = resolve_scenarios("1box_hori_left,1box_hori_right")
    options = EvalOptions(scenarios=scenarios, out=tmp_path, episodes=3, languages=("en", "ko"))
    jobs = episode_jobs(options)
    assert [(j.scenario.name[-4:], j.seed, j.language) for j in jobs] == [
        ("left", 0, "en"), ("left", 1, "ko"), ("left", 2, "en"),
        ("ight", 0, "ko"), ("ight", 1, "en"), ("ight", 2, "ko"),
    ]  # fmt: skip
    for workers in (0, 33):
        with pytest.raises(ValueError, match="--workers must be in"):
            EvalOptions(scenarios=scenarios, out=tmp_path, workers=workers)


@pytest.mark.parametrize("trigger", ["event", "every-frame"])
def test_policy_eval_counts_vlm_calls_per_frame(tmp_path, tiny_model_dir, trigger) -> None:
    from vla_ros.evaluate import EvalOptions, run_eval
    from vla_ros.sim.scenario import resolve_scenarios

    summary = run_eval(
        EvalOptions(
            scenarios=resolve_scenarios("1box_vert_left"),
            out=tmp_path / "eval",
            episodes=1,
            driver="policy",
            model_dir=str(tiny_model_dir),
            trigger=trigger,
            time_limit_s=3.0,
        )
    )
    episode = summary["episode_results"][0]
    assert episode["outcome"] in ("timeout", "collision", "wrong_side")
    assert episode["time_s"] <= 3.0 + 0.05
    assert episode["frames"] > 10
    assert episode["inferences"] >= 1
    assert summary["vlm_calls_per_frame"] > 0.0
    # At most one call per frame, plus the instruction event, which starts a new history and
    # may therefore run on the frame already at hand.
    assert episode["inferences"] <= episode["frames"] + 1


def test_cli_refuses_a_missing_model_dir_before_starting_anything(tmp_path, capsys) -> None:
    from vla_ros.cli import main

    code = main(["sim", "eval", "--driver", "policy", "--model-dir", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err
    assert "has no policy.yaml" in err
    assert str(tmp_path / "none") in err


@pytest.mark.parametrize(
    ("section", "value", "named"),
    [
        ("vla_safty", "0.3", "did you mean 'vla_safety'"),
        ("vla_safety", "fast", "vla_safety.max_linear_speed is 'fast', a str"),
        ("vla_safety", '"0.2"', "vla_safety.max_linear_speed is '0.2', a str"),
        ("vla_safety", "1", "vla_safety.max_linear_speed is 1, a int"),
    ],
)
def test_cli_refuses_an_overlay_whose_limit_would_silently_not_apply(
    tmp_path, capsys, section, value, named
) -> None:
    from vla_ros.cli import main

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"{section}:\n  ros__parameters:\n    max_linear_speed: {value}\n")
    code = main(["sim", "eval", "--episodes", "1", "--params-overlay", str(overlay)])
    assert code == 2
    assert named in capsys.readouterr().err


def test_cli_refuses_a_missing_parameter_overlay_by_name(tmp_path, capsys) -> None:
    from vla_ros.cli import main

    missing = tmp_path / "guard.yaml"
    code = main(["sim", "eval", "--episodes", "1", "--params-overlay", str(missing)])
    assert code == 2
    assert f"parameter overlay {missing} does not exist" in capsys.readouterr().err


def test_arm_expert_eval_picks_through_servo_twist_and_gripper(tmp_path) -> None:
    from vla_ros.bag.io import BagReader
    from vla_ros.evaluate import EvalOptions, run_eval
    from vla_ros.sim.scenario import resolve_scenarios

    summary = run_eval(
        EvalOptions(
            scenarios=resolve_scenarios("arm_pick_blue"),
            out=tmp_path / "arm",
            episodes=1,
            seed_start=3,
            real_time_factor=2.0,
        )
    )
    episode = summary["episode_results"][0]
    assert episode["outcome"] == "success", episode
    assert episode["grasped"] == "blue"
    assert summary["safety_violations"] == 0
    with BagReader(episode["bag"]) as reader:
        topics = {t.name for t in reader.info().topics}
    assert {"/servo_node/delta_twist_cmds", "/gripper/command", "/vla/ee_pose"} <= topics


def test_arm_demonstrations_record_the_clean_label_beside_the_noisy_command(tmp_path) -> None:
    """What `sim collect` records for arm7: the noisy raw twist the robot executed and, on its own
    topic, the clean twist the dataset learns from; they differ while the noise acts."""
    import numpy as np

    from vla_ros.bag.io import deserialize, read_messages
    from vla_ros.evaluate import EvalOptions, run_eval
    from vla_ros.safety.config import twist_vector
    from vla_ros.sim.scenario import resolve_scenarios

    summary = run_eval(
        EvalOptions(
            scenarios=resolve_scenarios("arm_reach_blue"),
            out=tmp_path / "demos",
            episodes=1,
            seed_start=4,
            real_time_factor=2.0,
            noise=True,
            demonstrations=True,
        )
    )
    episode = summary["episode_results"][0]
    assert episode["outcome"] == "success", episode
    twists: dict[str, dict] = {"/vla/arm_cmd_raw": {}, "/vla/arm_cmd_expert": {}}
    for item in read_messages(episode["bag"], list(twists)):
        message = deserialize(item.data, item.msgtype, item.topic)
        stamp = (message.header.stamp.sec, message.header.stamp.nanosec)
        twists[item.topic][stamp] = np.array(twist_vector(message))
    raw, label = twists["/vla/arm_cmd_raw"], twists["/vla/arm_cmd_expert"]
    both = sorted(raw.keys() & label.keys())
    assert len(both) >= 10
    assert all(np.all(np.isfinite(label[stamp])) for stamp in both)
    assert max(np.linalg.norm(raw[stamp] - label[stamp]) for stamp in both) > 0.005


def test_the_camera_can_be_published_as_jpeg(ros_context, spin_until) -> None:
    import cv2
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage

    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.transport import SENSOR_QOS, make_executor

    sim = SimNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("compressed", value=True),
            Parameter("image_size", value=96),
            Parameter("real_time_factor", value=4.0),
        ],
    )
    probe = rclpy.create_node("jpeg_probe", context=ros_context)
    frames: list = []
    probe.create_subscription(
        CompressedImage, "/camera/image_raw/compressed", frames.append, SENSOR_QOS
    )
    executor = make_executor(ros_context)
    executor.add_node(sim)
    executor.add_node(probe)
    try:
        assert spin_until(executor, lambda: len(frames) >= 2, 20.0)
    finally:
        executor.shutdown(timeout_sec=5.0)
        probe.destroy_node()
        sim.destroy_node()
    image = cv2.imdecode(np.frombuffer(bytes(frames[-1].data), np.uint8), cv2.IMREAD_COLOR)
    assert frames[-1].format == "jpeg"
    assert image.shape == (96, 96, 3)
    assert frames[-1].header.stamp.sec + frames[-1].header.stamp.nanosec > 0


def test_the_clock_holds_for_an_inference_longer_than_the_stated_latency(
    ros_context, spin_until
) -> None:
    import rclpy
    from rclpy.parameter import Parameter
    from std_msgs.msg import Bool

    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.transport import LATCHED_QOS, make_executor

    sim = SimNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("real_time_factor", value=4.0),
            Parameter("inference_latency_s", value=0.1),
            Parameter("inference_timeout_s", value=60.0),
        ],
    )
    probe = rclpy.create_node("busy_probe", context=ros_context)
    busy = probe.create_publisher(Bool, "/vla/busy", LATCHED_QOS)
    executor = make_executor(ros_context)
    for node in (sim, probe):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: sim.time_s > 1.0, 20.0)
        busy.publish(Bool(data=True))
        assert spin_until(executor, lambda: sim.policy_lockstep.hold.holds > 0, 20.0)
        held_at = sim.time_s
        assert spin_until(executor, lambda: sim.policy_lockstep.hold.holds > 50, 20.0)
        assert sim.time_s == held_at
        busy.publish(Bool(data=False))
        assert spin_until(executor, lambda: sim.time_s > held_at + 0.5, 20.0)
        assert sim.policy_lockstep.hold.timeouts == 0
    finally:
        for node in (sim, probe):
            executor.remove_node(node)
            node.destroy_node()


@pytest.mark.parametrize("guard", [False, True])
def test_the_lidar_guard_overlay_stops_a_driver_steering_into_a_box(guard, spin_until) -> None:
    """A driver aiming at the box hits it through config/mobile.yaml alone; with the lidar guard
    overlay the safety node, reading the sim's /scan, holds it short of the box."""
    import math

    import rclpy
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from std_msgs.msg import Bool, String

    from vla_ros.bringup import StackOptions, build_stack, ros_args_for
    from vla_ros.files import config_file
    from vla_ros.nodes.sim_node import SimNode
    from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, make_executor

    overlays = (str(config_file("mobile_lidar_guard.yaml")),) if guard else ()
    options = StackOptions(mode="mobile", use_sim_time=True, overlay_params_files=overlays)
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    sim = SimNode(
        context=context,
        parameter_overrides=[
            Parameter("scenario", value="1box_vert_left"),
            Parameter("seed", value=7),
            Parameter("real_time_factor", value=4.0),
            Parameter("time_limit_s", value=8.0),
        ],
    )
    nodes = [sim, *build_stack(context, options, inference=False)]
    driver = rclpy.create_node("reckless_driver", context=context)
    cmd = driver.create_publisher(Twist, "/vla/cmd_raw", COMMAND_QOS)
    driver.create_publisher(Bool, "/vla/active", LATCHED_QOS).publish(Bool(data=True))
    episode: dict = {}
    driver.create_subscription(
        String, "/vla_sim/episode", lambda m: episode.update(json.loads(m.data)), LATCHED_QOS
    )

    def steer_at_the_box(msg: Odometry) -> None:
        if episode.get("state") != "running":
            return  # the sim starts an episode only once the safety output is zero
        box_x, box_y = episode["layout"]["boxes"][0][:2]
        pose = msg.pose.pose
        yaw = 2.0 * math.atan2(pose.orientation.z, pose.orientation.w)
        bearing = math.atan2(box_y - pose.position.y, box_x - pose.position.x) - yaw
        twist = Twist()
        twist.linear.x = 0.4
        twist.angular.z = max(
            -1.0, min(1.0, 2.0 * math.atan2(math.sin(bearing), math.cos(bearing)))
        )
        cmd.publish(twist)

    driver.create_subscription(Odometry, "/odom", steer_at_the_box, SENSOR_QOS)
    executor = make_executor(context)
    for node in [*nodes, driver]:
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: bool(sim.episodes), 60.0), sim.state
        outcome = sim.episodes[0]["result"]["outcome"]
        assert outcome == ("timeout" if guard else "collision")
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in [driver, *reversed(nodes)]:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)


def test_the_expert_reads_yaw_from_a_quaternion_of_any_norm(ros_context) -> None:
    """An odometry driver need not normalise its quaternion; a zero one keeps the last pose."""
    import math

    from nav_msgs.msg import Odometry

    from vla_ros.nodes.expert_node import ExpertNode

    expert = ExpertNode(context=ros_context)
    try:
        half = math.radians(60.0) / 2
        for scale in (1.0, 2.5, 0.2):
            msg = Odometry()
            msg.pose.pose.position.x = 1.0
            q = msg.pose.pose.orientation
            q.x, q.y, q.z, q.w = 0.0, 0.0, scale * math.sin(half), scale * math.cos(half)
            expert._on_odom(msg)
            assert expert._pose[2] == pytest.approx(math.radians(60.0)), scale
        zero = Odometry()
        zero.pose.pose.orientation.w = 0.0
        zero.pose.pose.position.x = 9.0
        expert._on_odom(zero)
        assert expert._pose[0] == 1.0
    finally:
        expert.destroy_node()

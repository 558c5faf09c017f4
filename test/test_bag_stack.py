"""Regression: synthetic bags through the whole stack (camera -> inference/StubPolicy -> safety).

Real nodes on real DDS in one process, driven by bag time (`/clock` + use_sim_time) exactly as a
user replays a robot recording. Checks: no motion before an instruction; inference events on
scene changes and instruction changes but not on static frames; every command passes `bag
check`; an e-stop in the bag stops the robot within one output period.
"""

from __future__ import annotations

import json

import pytest

from vla_ros.bag.check import check_bag
from vla_ros.bag.harness import BagHarness
from vla_ros.bag.replay import ReplayOptions
from vla_ros.bag.synth import read_timeline
from vla_ros.safety.config import twist_vector

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SAFETY_OUTPUT_HZ = 25.0
REPLAY_RATE = 1.0
"""Bag time per wall second; the nodes follow /clock, so a loaded CI box can lower it."""
MAX_GAP_S = 0.5
"""Silence allowed while moving: this shared 2-core box can starve the whole process for a few
output periods; silence detection itself is tested in test_bag_check and the safety tests."""
SCENE_GRACE_S = 0.5
"""A frame just after motion stops still differs from the keyframe taken while moving."""
MOBILE_SAFETY = {"output_rate_hz": SAFETY_OUTPUT_HZ, "command_timeout": 0.5}
ARM_SAFETY = {"output_rate_hz": SAFETY_OUTPUT_HZ, "command_timeout": 0.5}
COMMON = ["/vla/instruction", "/vla/estop", "/vla/inference_event", "/vla_safety/status"]
RECORD = {
    "mobile3": [*COMMON, "/vla/cmd_raw", "/cmd_vel"],
    "arm7": [*COMMON, "/vla/arm_cmd_raw", "/servo_node/delta_twist_cmds", "/gripper/command"],
}


def stack_factory(action_space: str, safety: dict):
    """Camera, inference (StubPolicy with a chunk longer than the bag) and safety nodes.

    Heartbeat and chunk-low events are pushed out of the bag's time span so that every event
    the test sees was caused by the scene or the instruction.
    """
    from rclpy.parameter import Parameter

    from vla_ros.nodes.camera_node import CameraNode
    from vla_ros.nodes.inference_node import InferenceNode
    from vla_ros.nodes.safety_node import SafetyNode
    from vla_ros.policy.stub import StubPolicy
    from vla_ros.policy.types import PolicySpec

    spec = PolicySpec(
        action_space=action_space, chunk=200, window=8, action_period_s=0.1, image_size=32
    )

    def build(context):
        sim = Parameter("use_sim_time", value=True)
        camera = CameraNode(
            context=context, parameter_overrides=[sim, Parameter("image_size", value=32)]
        )
        inference = InferenceNode(
            policy=StubPolicy(spec),
            context=context,
            parameter_overrides=[
                sim,
                Parameter("action_space", value=action_space),
                Parameter("control_rate_hz", value=20.0),
                Parameter("scene_change_threshold", value=0.1),
                Parameter("chunk_low_threshold", value=0),
                Parameter("min_interval_s", value=0.2),
                Parameter("max_interval_s", value=3600.0),
            ],
        )
        safety_node = SafetyNode(
            context=context,
            parameter_overrides=[
                sim,
                Parameter("mode", value=action_space),
                *(Parameter(k, value=v) for k, v in safety.items()),
            ],
        )
        return [camera, inference, safety_node]

    return build


def _moving(twist) -> bool:
    return any(abs(v) > 1e-9 for v in twist_vector(twist))


def _run(tmp_path, ros_context, action_space, safety, **synth):
    harness = BagHarness(ros_context, tmp_path)
    bag = harness.synth(width=96, height=72, fps=10.0, images="raw", **synth)
    result = harness.run(
        bag,
        stack_factory(action_space, safety),
        RECORD[action_space],
        save=True,
        replay=ReplayOptions(clock=True, clock_hz=100.0, rate=REPLAY_RATE),
        tail_s=0.5,
    )
    assert result.wired, "stack never finished DDS matching"
    assert not result.missing_topics
    assert not result.replay.interrupted
    return read_timeline(bag), result


def _bag_s(timeline, stamp_ns: int) -> float:
    return (stamp_ns - timeline.start_ns) / 1e9


def test_mobile_stack_on_a_synthetic_bag(tmp_path, ros_context):
    timeline, result = _run(
        tmp_path,
        ros_context,
        "mobile3",
        MOBILE_SAFETY,
        duration_s=6.0,
        segments=(("static", 1.5), ("moving", 1.5)),
        instructions=((0.5, "move forward to the red box"), (3.5, "빨간 상자 쪽으로 천천히 가")),
        estops=((5.2, True),),
    )
    commands = result.on("/cmd_vel")
    assert len(commands) > SAFETY_OUTPUT_HZ, "the safety node barely published"

    # 1. No motion before the first instruction; motion after it.
    first_instruction = result.on("/vla/instruction")[0].receive_ns
    assert not [c for c in commands if c.receive_ns < first_instruction and _moving(c.msg)]
    assert not [
        c for c in result.on("/vla/cmd_raw") if c.receive_ns < first_instruction and _moving(c.msg)
    ]
    assert any(_moving(c.msg) for c in commands)

    # 2. Events: the instruction (and its change), the scene changes, nothing on static frames.
    events = [json.loads(m.msg.data) for m in result.on("/vla/inference_event")]
    assert events, "no inference ran"
    causes = [e["cause"] for e in events]
    assert causes[0] in ("start", "instruction")
    assert set(causes) <= {"start", "instruction", "scene_change"}, causes
    korean_at = timeline.instructions[1][0]
    changed = [
        _bag_s(timeline, m.receive_ns)
        for m in result.on("/vla/inference_event")
        if json.loads(m.msg.data)["cause"] == "instruction"
    ]
    assert len(changed) == 1
    assert korean_at <= changed[0] < korean_at + 1.0
    for message in result.on("/vla/inference_event"):
        event = json.loads(message.msg.data)
        at = _bag_s(timeline, round(event["frame_stamp"] * 1e9))
        moving = any(a <= at <= b + SCENE_GRACE_S for a, b in timeline.moving)
        assert event["cause"] != "scene_change" or moving, (
            f"scene-change event on a static frame at {at:.2f} s"
        )
    for start, end in timeline.moving:
        in_span = [
            e
            for e in events
            if e["cause"] == "scene_change"
            and start <= _bag_s(timeline, round(e["frame_stamp"] * 1e9)) <= end + SCENE_GRACE_S
        ]
        assert in_span, f"no scene-change event while the scene moved in [{start}, {end})"

    # 3. Every published command passes the offline safety check.
    checked = check_bag(result.bag, {**MOBILE_SAFETY, "mode": "mobile3"}, max_gap_s=MAX_GAP_S)
    assert checked.samples == len(commands)
    assert checked.ok, checked.summary()

    # 4. The e-stop stops the robot within one output period.
    _assert_estop_stops(result, "/cmd_vel")


def test_arm_stack_on_a_synthetic_bag(tmp_path, ros_context):
    _, result = _run(
        tmp_path,
        ros_context,
        "arm7",
        ARM_SAFETY,
        duration_s=3.0,
        segments=(("static", 1.0), ("moving", 1.0)),
        instructions=((0.4, "pick up the red block"),),
        estops=((2.4, True),),
    )
    commands = result.on("/servo_node/delta_twist_cmds")
    assert any(_moving(c.msg) for c in commands)
    assert result.on("/gripper/command"), "no gripper command reached the robot"
    checked = check_bag(result.bag, {**ARM_SAFETY, "mode": "arm7"}, max_gap_s=MAX_GAP_S)
    assert checked.ok, checked.summary()
    _assert_estop_stops(result, "/servo_node/delta_twist_cmds")


def _assert_estop_stops(result, topic):
    """After the recorder saw the e-stop, at most the one output already in flight may move."""
    engaged = [m.receive_ns for m in result.on("/vla/estop") if m.msg.data]
    assert engaged, "the bag's e-stop was not replayed"
    after = [c for c in result.on(topic) if c.receive_ns >= engaged[0]]
    assert len(after) >= 3, "no output after the e-stop: the robot went silent"
    moving = [c for c in after if _moving(c.msg)]
    assert len(moving) <= 1, f"{len(moving)} moving outputs after the e-stop"
    assert not _moving(after[-1].msg)
    states = [
        next((kv.value for kv in m.msg.values if kv.key == "state"), "")
        for m in result.on("/vla_safety/status")
        if m.receive_ns >= engaged[0]
    ]
    assert "estop" in states

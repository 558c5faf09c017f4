"""InferenceCore without ROS: generations, frame use, pairing, outcomes, confidence, receipt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.inference import CoreConfig, InferenceCore, Outcome
from vla_ros.core.trigger import Cause, TriggerConfig
from vla_ros.policy.types import ActionChunk, PolicySpec

PERIOD = 0.1
CONFIG = CoreConfig(
    trigger=TriggerConfig(
        scene_change_threshold=0.15, chunk_low_threshold=3, min_interval_s=0.05, max_interval_s=1.0
    ),
    max_frame_age_s=0.5,
    max_frame_lead_s=0.05,
)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Call:
    serial: int
    instruction: str
    epoch: int


@dataclass
class FakePolicy:
    """Encodes the call number in every action, so a command says which call produced it.

    `during_step` runs inside `step` (the core's lock is free then), like events arriving while
    the model computes; `fail` makes the next steps raise or return NaN.
    """

    spec: PolicySpec = field(
        default_factory=lambda: PolicySpec("mobile3", 10, 4, PERIOD, 8, "fake")
    )
    calls: list[Call] = field(default_factory=list)
    fed: set[int] = field(default_factory=set)
    repeats: list[int] = field(default_factory=list)
    resets: int = 0
    epoch: int = 0
    fail: str = ""
    during_step: list = field(default_factory=list)
    motion: np.ndarray | None = None

    def step(self, image: np.ndarray, instruction: str) -> ActionChunk:
        serial = int(image[0, 0, 0]) | int(image[0, 0, 1]) << 8 | int(image[0, 0, 2]) << 16
        if serial in self.fed:
            self.repeats.append(serial)
        self.fed.add(serial)
        self.calls.append(Call(serial, instruction, self.epoch))
        for action in self.during_step:
            action()
        self.during_step = []
        if self.fail == "raise":
            raise RuntimeError("CUDA out of memory")
        motion = np.full((self.spec.chunk, 3), float(len(self.calls)))
        if self.motion is not None:
            motion = self.motion
        if self.fail == "nan":
            motion = motion.copy()
            motion[1, 0] = np.nan
        return ActionChunk(motion=motion, action_period_s=PERIOD, confidence=1.0)

    def reset(self) -> None:
        self.resets += 1
        self.fed.clear()


def frame(serial: int) -> np.ndarray:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[0, 0] = (serial & 0xFF, (serial >> 8) & 0xFF, (serial >> 16) & 0xFF)
    return image


def make(config: CoreConfig = CONFIG) -> tuple[InferenceCore, FakePolicy, Clock]:
    clock = Clock()
    policy = FakePolicy()
    return InferenceCore(policy, config, clock, perf=clock), policy, clock


def offer(core: InferenceCore, clock: Clock, serial: int, frame_id: str = "cam") -> None:
    stamp_ns = round(clock.now * 1e9)
    assert core.offer_frame(frame(serial), stamp_ns, frame_id) is None


def test_superseded_instruction_chunk_is_discarded_and_the_plan_cleared():
    core, policy, clock = make()
    core.set_instruction("go forward")
    offer(core, clock, 1)
    assert core.work_once().status == "ok"
    clock.now += 0.1
    assert core.command().moving
    offer(core, clock, 2)
    core.request()
    policy.during_step = [lambda: core.set_instruction("stop")]
    outcome = core.work_once()
    assert outcome is not None
    assert outcome.status == "superseded"
    assert outcome.chunk is None
    # The chunk of "go forward" that was already playing stopped too.
    assert not core.command().moving
    offer(core, clock, 3)
    clock.now += 0.06
    outcome = core.work_once()
    assert outcome.status == "ok"
    assert outcome.job.instruction == "stop"
    assert outcome.job.firing.cause == Cause.INSTRUCTION
    assert policy.resets == 2  # before the first step and when "stop" arrived


def _moving_while_the_camera_is_gone(
    camera_tick: Callable[[InferenceCore, Clock], None],
) -> tuple[Any, ...]:
    """Plan a chunk (1 s long) on frame 1, then for 0.9 s call `camera_tick` every 50 ms and
    note whether the command moves; returns (core, policy, clock, [(t, moving)])."""
    core, policy, clock = make()
    core.set_instruction("go forward")
    offer(core, clock, 1)
    assert core.work_once().status == "ok"
    start = clock.now
    moving = []
    while clock.now < start + 0.9:
        clock.now += 0.05
        camera_tick(core, clock)
        moving.append((round(clock.now - start, 2), core.command().moving))
    assert all(m for t, m in moving if t <= CONFIG.max_frame_age_s)
    assert not any(m for t, m in moving if t > CONFIG.max_frame_age_s + 1e-9)
    return core, policy, clock, moving


def test_a_chunk_stops_when_the_camera_does_and_plays_again_on_a_fresh_frame():
    """A 1 s chunk planned on a view the robot no longer gets is not played out blind: zero
    once the newest frame is older than max_frame_age_s (0.5 s), not at the chunk's end."""
    core, _policy, clock, _moving = _moving_while_the_camera_is_gone(lambda core, clock: None)
    assert core.diagnostics()[2]["commands_zeroed_no_frame"] > 0
    offer(core, clock, 2)  # the camera is back, while the chunk still has actions left
    assert core.command().moving


def test_a_frozen_camera_counts_as_stopped_though_its_stamps_are_fresh():
    """A frozen driver repeats one image with new stamps: the image ages from its first arrival,
    so the chunk stops max_frame_age_s after the freeze and no inference runs on it."""

    def frozen(core, clock):
        assert core.offer_frame(frame(1), round(clock.now * 1e9), "cam") == "identical"
        assert core.work_once() is None

    core, policy, clock, moving = _moving_while_the_camera_is_gone(frozen)
    assert core.diagnostics()[2]["frames_identical"] == len(moving)
    assert core.diagnostics()[1] == "no fresh frame (camera frozen?)"
    assert len(policy.calls) == 1
    offer(core, clock, 2)  # a changed image: the camera lives again
    assert core.work_once().status == "ok"
    assert core.command().moving


def test_identical_frames_are_fresh_when_the_check_is_off():
    config = CoreConfig(trigger=CONFIG.trigger, max_frame_age_s=0.5, identical_frames_stale=False)
    core, _policy, clock = make(config)
    core.set_instruction("go forward")
    for _ in range(20):
        clock.now += 0.05
        assert core.offer_frame(frame(1), round(clock.now * 1e9), "cam") is None
    assert core.work_once().status == "ok"
    assert core.command().moving


def test_reset_during_inference_discards_the_result():
    core, policy, clock = make()
    core.set_instruction("go")
    offer(core, clock, 1)
    policy.during_step = [core.reset]
    assert core.work_once().status == "superseded"
    assert not core.command().moving
    clock.now += 0.1
    offer(core, clock, 2)
    outcome = core.work_once()
    assert outcome.job.firing.cause == Cause.START
    assert outcome.status == "ok"


def test_a_seen_frame_is_only_used_again_after_the_history_was_cleared():
    core, policy, clock = make()
    core.set_instruction("go")
    offer(core, clock, 1)
    assert core.work_once().status == "ok"
    clock.now += 0.2
    assert core.request()
    assert core.work_once() is None  # explicit, but the frame is in the history already
    offer(core, clock, 2)
    assert core.work_once().job.firing.cause == Cause.EXPLICIT
    clock.now += 0.1
    core.set_instruction("turn")  # new history: the same frame may start it
    outcome = core.work_once()
    assert outcome.job.frame.stamp_ns == round((clock.now - 0.1) * 1e9)
    assert outcome.job.reset_history
    assert policy.repeats == []


def test_scores_pair_with_their_frame_by_stamp_and_frame_id():
    core, _, clock = make()
    core.set_instruction("go")
    offer(core, clock, 1)
    assert core.work_once().status == "ok"
    clock.now += 0.3
    stamp_ns = round(clock.now * 1e9)
    # Same stamp, other camera: not this frame's score.
    assert not core.offer_score(0.9, stamp_ns, "other_cam", clock.now - 0.3)
    offer(core, clock, 2)
    assert core.work_once() is None
    # The score that arrives before its frame waits for it.
    clock.now += 0.1
    stamp_ns = round(clock.now * 1e9)
    assert not core.offer_score(0.9, stamp_ns, "cam", clock.now - 0.4)
    offer(core, clock, 3)
    outcome = core.work_once()
    assert outcome.job.firing.cause == Cause.SCENE_CHANGE
    assert outcome.job.frame.frame_id == "cam"


def test_stale_and_future_frames_are_refused():
    core, policy, clock = make()
    core.set_instruction("go")
    now_ns = round(clock.now * 1e9)
    assert core.offer_frame(frame(1), now_ns - 2 * 10**9, "cam") == "stale"
    assert core.offer_frame(frame(2), now_ns + 10**9, "cam") == "future"
    assert core.work_once() is None
    assert policy.calls == []
    offer(core, clock, 3)
    clock.now += 0.6  # the stored frame became stale while waiting
    assert core.work_once() is None
    _, _, values = core.diagnostics()
    assert values["frames_stale"] == 1
    assert values["frames_future"] == 1


@pytest.mark.parametrize("fail", ["raise", "nan"])
def test_a_failed_inference_is_an_error_outcome_and_a_zero_command(fail):
    core, policy, clock = make()
    core.set_instruction("go")
    offer(core, clock, 1)
    assert core.work_once().status == "ok"
    clock.now += 0.1
    assert core.command().moving
    policy.fail = fail
    offer(core, clock, 2)
    core.request()
    outcome = core.work_once()
    assert outcome.status == "error"
    assert outcome.event()["error"]
    assert "error" in outcome.event()
    assert not core.command().moving
    level, message, values = core.diagnostics()
    assert level == 1
    assert message.startswith("policy error")
    assert values["policy_errors"] == 1
    policy.fail = ""
    clock.now += 1.1
    offer(core, clock, 3)
    assert core.work_once().status == "ok"  # the heartbeat retries


def test_confidence_drops_when_the_new_chunk_disagrees_with_the_rest_of_the_old():
    core, policy, clock = make()
    core.set_instruction("go")
    policy.motion = np.tile([0.5, 0.0, 0.1], (10, 1))
    offer(core, clock, 1)
    first = core.work_once()
    assert first.confidence == pytest.approx(1.0)
    clock.now += 0.2
    offer(core, clock, 2)
    core.request()
    agreeing = core.work_once()
    assert agreeing.confidence == pytest.approx(1.0)
    clock.now += 0.2
    policy.motion = np.tile([-0.5, 0.2, -0.1], (10, 1))
    offer(core, clock, 3)
    core.request()
    disagreeing = core.work_once()
    assert disagreeing.agreement < 0.3
    assert disagreeing.confidence < 0.3
    assert disagreeing.event()["confidence"] == pytest.approx(disagreeing.confidence, abs=1e-4)


def test_confidence_includes_the_gripper_margin():
    from vla_ros.core.confidence import chunk_agreement, combined, gripper_margin

    assert gripper_margin(np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert gripper_margin(np.array([0.5, 0.55])) < 0.1
    assert chunk_agreement(None, np.ones((3, 3))) == 1.0
    assert chunk_agreement(np.zeros((3, 3)), np.zeros((2, 3))) == 1.0
    assert chunk_agreement(np.ones((3, 3)), -np.ones((3, 3))) == pytest.approx(0.0)
    assert combined(1.0, float("nan"), 1.0) == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("go\x00 left", "NUL"),
        ("go\x1b[2J", "U+001B"),
        ("x" * 5000, "5000 characters"),
    ],
)
def test_bad_instructions_are_refused_and_the_current_one_stays(text, reason):
    core, _, _ = make()
    assert core.set_instruction("go").changed
    receipt = core.set_instruction(text)
    assert not receipt.changed
    assert reason in receipt.refused
    assert core.instruction == "go"
    assert core.set_instruction("  빨간 컵으로 가\n").changed


def test_the_policy_is_asked_how_long_an_instruction_may_be():
    core, policy, _ = make()
    policy.instruction_problem = lambda text: "too many tokens" if len(text) > 5 else None
    assert core.set_instruction("short").changed
    assert core.set_instruction("much longer").refused == "too many tokens"


def test_an_instruction_from_before_the_start_is_held_until_resume_or_a_new_one():
    from vla_ros.core.instruction import published_before

    assert published_before(5, 10, latched=True)
    assert not published_before(15, 10, latched=True)  # published while listening
    assert not published_before(5, 10, latched=False)  # volatile: never history
    assert not published_before(0, 10, latched=True)  # no source time: a live message
    core, _, _ = make()
    core.hold_instruction("go forward")
    assert core.instruction is None
    assert core.held_instruction == "go forward"
    assert core.diagnostics()[2]["held_instruction"] == "go forward"
    receipt = core.resume()
    assert receipt is not None
    assert receipt.changed
    assert core.instruction == "go forward"
    assert core.held_instruction is None
    assert core.resume() is None
    core.hold_instruction("turn left")
    core.set_instruction("stop here")  # a new instruction replaces the held one
    assert core.held_instruction is None
    assert core.instruction == "stop here"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])))
def test_cdr_string_reads_what_rclpy_serializes(text):
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from vla_ros.core.instruction import cdr_string

    assert cdr_string(serialize_message(String(data=text))) == text


def test_cdr_string_keeps_nuls_and_refuses_garbage():
    from vla_ros.core.instruction import cdr_string, instruction_problem

    text = cdr_string(b"\x00\x01\x00\x00" + (9).to_bytes(4, "little") + b"go\0 left\0")
    assert text == "go\0 left"
    assert instruction_problem(text) == "contains a NUL at position 2"
    big_endian = b"\x00\x00\x00\x00" + (3).to_bytes(4, "big") + b"go\0"
    assert cdr_string(big_endian) == "go"
    for garbage in (b"", b"\x07garbage", b"\x00\x01\x00\x00" + (50).to_bytes(4, "little") + b"x"):
        with pytest.raises(ValueError):
            cdr_string(garbage)


def test_instruction_dedupe_pairs_copies_from_the_two_subscriptions():
    from vla_ros.core.instruction import ReceiptDeduper

    clock = Clock(0.0)
    dedupe = ReceiptDeduper(clock, window_s=0.25)
    seen = [
        text
        for source, text in [(0, "a"), (0, "b"), (1, "a"), (0, "a"), (1, "b"), (1, "a")]
        if not dedupe.is_duplicate(source, text)
    ]
    assert seen == ["a", "b", "a"]
    clock.now = 1.0
    assert not dedupe.is_duplicate(1, "c")
    clock.now = 2.0
    assert not dedupe.is_duplicate(0, "c")  # too late to be a copy: a new message


def test_gripper_holds_its_last_commanded_value():
    core, policy, clock = make()
    policy.spec = PolicySpec("arm7", 10, 4, PERIOD, 8, "fake")
    core = InferenceCore(policy, CONFIG, clock, perf=clock)
    assert core.command().gripper is None

    def arm_step(image: np.ndarray, instruction: str) -> ActionChunk:
        return ActionChunk(
            motion=np.zeros((10, 6)),
            action_period_s=PERIOD,
            gripper=np.zeros(10),
            gripper_prob=np.full(10, 0.2),
        )

    policy.step = arm_step
    core.set_instruction("pick")
    offer(core, clock, 1)
    outcome = core.work_once()
    assert outcome.confidence == pytest.approx(0.6)
    assert core.command().gripper == 0.0
    core.reset()
    assert core.command().gripper == 0.0
    assert not core.command().moving


def test_predicted_path_integrates_the_chunk():
    from vla_ros.core.path import planar_path, spatial_path

    poses = planar_path(np.tile([1.0, 0.0, np.pi / 2], (2, 1)), 1.0)
    assert len(poses) == 3
    assert poses[1][0] == pytest.approx((1.0, 0.0, 0.0))
    assert poses[2][0] == pytest.approx((1.0, 1.0, 0.0), abs=1e-9)
    poses = spatial_path(np.tile([0.0, 0.0, 0.1], (3, 1)), np.zeros((3, 3)), 0.5)
    assert poses[-1][0] == pytest.approx((0.0, 0.0, 0.15))
    assert poses[-1][1] == (0.0, 0.0, 0.0, 1.0)


def test_every_frame_mode_runs_on_each_new_frame_within_the_rate_bound():
    config = CoreConfig(
        trigger=TriggerConfig(min_interval_s=0.05, max_interval_s=10.0, every_frame=True)
    )
    core, policy, clock = make(config)
    core.set_instruction("go")
    causes = []
    for serial in range(1, 6):
        offer(core, clock, serial)
        causes.append(core.work_once().job.firing.cause)
        clock.now += 0.06
    assert causes[0] == Cause.START
    assert causes[1:] == [Cause.FRAME] * 4
    assert [call.serial for call in policy.calls] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- properties

FRESH = ("frame", 0.0, "cam")
EVENTS = [
    *[FRESH] * 3,
    ("frame", -0.1, "cam"),
    ("frame", -0.8, "cam"),
    ("frame", 0.1, "cam"),
    ("frame", 0.0, "cam2"),
    *[("advance", 0.06)] * 2,
    ("advance", 0.02),
    ("advance", 0.3),
    ("advance", 1.1),
    ("advance", -0.3),
    ("score", 0.9, "current"),
    ("score", 0.9, "next"),
    ("score", 0.05, "current"),
    *[("request",)] * 2,
    ("instruction", "a"),
    ("instruction", "b"),
    ("instruction", ""),
    ("instruction", "go\x00"),
    ("reset",),
    ("fail", "raise"),
    ("fail", "nan"),
    *[("fail", "")] * 2,
]
"""Concrete events, repeated by how often they should come up: a flat list lets hypothesis
reach meaningful sequences (instruction, frame, work, request, work ...) quickly."""
STEPS = [
    *EVENTS,
    *[("work", ())] * 6,
    ("work", (("instruction", "b"),)),
    ("work", (("instruction", ""),)),
    ("work", (("reset",),)),
    ("work", (("request",), FRESH)),
    ("work", (FRESH, ("advance", 0.3))),
    ("command",),
]


class Model:
    """Drives a core with generated steps and checks the invariants after each one."""

    def __init__(self) -> None:
        self.core, self.policy, self.clock = make()
        self.serial = 0
        self.epoch = 0
        self.owed: set[Cause] = set()
        self.outcomes: list[Outcome] = []

    def apply(self, event: tuple) -> None:
        kind = event[0]
        core, clock = self.core, self.clock
        if kind == "advance":
            clock.now += event[1]
        elif kind == "frame":
            self.serial += 1
            core.offer_frame(frame(self.serial), round((clock.now + event[1]) * 1e9), event[2])
        elif kind == "score":
            offset = 0.0 if event[2] == "current" else 0.01
            stamp_ns = round((clock.now + offset) * 1e9)
            if core.offer_score(event[1], stamp_ns, "cam", clock.now - 0.1):
                self.owed.add(Cause.SCENE_CHANGE)
        elif kind == "instruction":
            receipt = core.set_instruction(event[1])
            if receipt.changed:
                self.epoch += 1
                self.policy.epoch = self.epoch
                self.owed = {Cause.INSTRUCTION} if receipt.instruction else set()
        elif kind == "request":
            if core.request():
                self.owed.add(Cause.EXPLICIT)
        elif kind == "reset":
            core.reset()
            self.epoch += 1
            self.policy.epoch = self.epoch
            self.owed = {Cause.START}
        elif kind == "fail":
            self.policy.fail = event[1]

    def step(self, step: tuple) -> None:
        if step[0] == "work":
            self.policy.during_step = [lambda e=e: self.apply(e) for e in step[1]]
            calls = len(self.policy.calls)
            outcome = self.core.work_once()
            stepped = len(self.policy.calls) - calls
            # One firing, one outcome: an inference never ends without a trace.
            assert stepped == (1 if outcome is not None else 0)
            if outcome is not None:
                self.outcomes.append(outcome)
                self.owed -= outcome.job.firing.causes
                # Scene changes seen while the model ran are dropped by design (the trigger's
                # outdated-reference rule); nothing else is.
                if outcome.status == "ok":
                    self.owed.discard(Cause.SCENE_CHANGE)
            self.policy.during_step = []
        elif step[0] == "command":
            pass
        else:
            self.apply(step)
        self.check()

    def check(self) -> None:
        command = self.core.command()
        if command.moving:
            call = self.policy.calls[int(command.motion[0]) - 1]
            assert call.epoch == self.epoch, "played a chunk of a superseded instruction or reset"
            assert call.instruction == self.core.instruction
        assert self.policy.repeats == [], "a frame entered the history twice"

    def drain(self) -> None:
        """Fresh frames and time until every owed event has been answered."""
        self.policy.fail = ""
        for _ in range(40):
            if not self.owed or self.core.instruction is None:
                break
            self.clock.now += 0.3
            self.serial += 1
            self.core.offer_frame(frame(self.serial), round(self.clock.now * 1e9), "cam")
            self.step(("work", []))
        if self.core.instruction is None:
            self.owed.discard(Cause.START)
        assert self.owed == set(), f"events never answered: {self.owed}"


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(STEPS), max_size=30))
def test_property_never_plays_superseded_never_repeats_a_frame_loses_no_event(steps):
    model = Model()
    for step in [("instruction", "a"), *steps]:
        model.step(step)
    model.drain()


def test_the_real_policy_refuses_instructions_longer_than_its_token_budget(tiny_model_dir):
    from vla_ros.policy.backbone import MAX_TEXT_TOKENS
    from vla_ros.policy.model import VLAPolicy

    policy = VLAPolicy.from_pretrained(tiny_model_dir)
    assert policy.instruction_problem("go to the kitchen") is None
    assert policy.instruction_problem("빨간 컵으로 가") is None
    problem = policy.instruction_problem("go " * 400)
    assert f"at most {MAX_TEXT_TOKENS}" in problem
    core = InferenceCore(policy, CONFIG, Clock())
    assert core.set_instruction("go").changed
    assert "tokens long" in core.set_instruction("go " * 400).refused
    assert core.instruction == "go"

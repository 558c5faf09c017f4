"""EventTrigger: which events fire the VLM, when, and exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.trigger import Cause, EventTrigger, TriggerConfig

CONFIG = TriggerConfig(
    scene_change_threshold=0.15, chunk_low_threshold=3, min_interval_s=0.2, max_interval_s=2.0
)


def started(now: float = 0.0, config: TriggerConfig = CONFIG) -> EventTrigger:
    """A trigger with an instruction whose first (start) inference ran and finished at `now`."""
    trigger = EventTrigger(config)
    trigger.set_instruction("go to the red cup")
    firing = trigger.poll(now)
    assert firing is not None
    trigger.finish(now, success=True)
    return trigger


def test_nothing_fires_without_instruction():
    trigger = EventTrigger(CONFIG)
    assert not trigger.request()
    assert not trigger.scene_change(1.0, 0.0)
    for now in (0.0, 1.0, 100.0):
        assert trigger.poll(now, remaining=0) is None
    assert trigger.pending == {Cause.START}


def test_first_inference_is_start_and_coalesces_the_instruction():
    trigger = EventTrigger(CONFIG)
    assert trigger.set_instruction("  빨간 컵으로 가  ")
    assert trigger.instruction == "빨간 컵으로 가"
    firing = trigger.poll(0.0)
    assert firing is not None
    assert firing.cause is Cause.START
    assert firing.causes == {Cause.START, Cause.INSTRUCTION}
    assert trigger.busy


def test_idle_trigger_stays_quiet_until_heartbeat():
    trigger = started(0.0)
    for now in (0.25, 0.5, 1.0, 1.99):
        assert trigger.poll(now, remaining=10) is None
    firing = trigger.poll(2.0, remaining=10)
    assert firing is not None
    assert firing.causes == {Cause.HEARTBEAT}


def test_same_instruction_is_not_an_event_but_a_changed_one_is():
    trigger = started(0.0)
    assert not trigger.set_instruction("go to the red cup")
    assert trigger.poll(1.0, remaining=10) is None
    assert trigger.set_instruction("stop")
    firing = trigger.poll(1.0, remaining=10)
    assert firing is not None
    assert firing.cause is Cause.INSTRUCTION


def test_blank_instruction_clears_and_silences():
    trigger = started(0.0)
    trigger.request()
    assert trigger.set_instruction("   ")
    assert trigger.instruction is None
    assert trigger.poll(10.0, remaining=0) is None
    assert trigger.pending == set()


def test_scene_change_needs_score_above_threshold():
    trigger = started(0.0)
    assert not trigger.scene_change(0.15, 0.5)
    assert not trigger.scene_change(float("nan"), 0.5)
    assert trigger.poll(0.5, remaining=10) is None
    assert trigger.scene_change(0.16, 0.5)
    firing = trigger.poll(0.5, remaining=10)
    assert firing is not None
    assert firing.causes == {Cause.SCENE_CHANGE}


def test_scene_scores_against_an_outdated_reference_are_not_events():
    trigger = started(0.0)
    assert trigger.scene_change(0.9, 1.0)
    assert trigger.poll(1.0) is not None
    # Frames captured while the model ran were scored against the previous keyframe.
    assert trigger.scene_change(0.9, 1.05)
    trigger.finish(1.1, success=True)
    assert trigger.pending == set()
    assert not trigger.scene_change(0.9, 1.08)
    assert trigger.poll(1.5, remaining=10) is None
    # A frame captured after the keyframe went out is scored against it: a real change.
    assert trigger.scene_change(0.9, 1.12)
    firing = trigger.poll(1.5, remaining=10)
    assert firing is not None
    assert firing.cause is Cause.SCENE_CHANGE


def test_a_score_the_camera_made_against_an_older_keyframe_is_not_an_event():
    """The keyframe is in flight to the camera while it scores a newer frame: that score still
    compares with the previous keyframe, so it must not re-fire for a change already seen."""
    trigger = started(0.0)
    assert trigger.poll(1.0) is None
    trigger.request()
    assert trigger.poll(1.0) is not None
    trigger.finish(1.1, success=True, keyframe_stamp_s=1.0)
    assert not trigger.scene_change(0.9, 1.12, reference_stamp_s=0.5)
    assert not trigger.scene_change(0.9, 1.12, reference_stamp_s=0.0), "scored without reference"
    assert trigger.poll(1.5, remaining=10) is None
    assert trigger.scene_change(0.9, 1.15, reference_stamp_s=1.0)
    firing = trigger.poll(1.5, remaining=10)
    assert firing is not None
    assert firing.cause is Cause.SCENE_CHANGE


def test_a_frame_the_policy_has_seen_is_only_reused_when_the_history_starts_over():
    trigger = started(0.0)
    # Heartbeat due, but the newest frame was already used: it waits for a new frame.
    assert trigger.poll(2.5, remaining=10, fresh_frame=False) is None
    assert Cause.HEARTBEAT in trigger.pending
    firing = trigger.poll(2.6, remaining=10, fresh_frame=True)
    assert firing is not None
    assert firing.cause is Cause.HEARTBEAT
    trigger.finish(2.7, success=True)
    # A new instruction starts a new history, so the same frame is fine.
    assert trigger.set_instruction("now go left")
    firing = trigger.poll(3.0, remaining=10, fresh_frame=False)
    assert firing is not None
    assert firing.cause is Cause.INSTRUCTION


def test_scene_change_during_a_failed_inference_is_kept():
    trigger = started(0.0)
    trigger.request()
    assert trigger.poll(1.0) is not None
    trigger.scene_change(0.9, 1.05)
    trigger.finish(1.1, success=False)
    firing = trigger.poll(1.2)
    assert firing is not None
    assert firing.causes == {Cause.SCENE_CHANGE}


def test_chunk_low_fires_once_per_chunk():
    trigger = started(0.0)
    assert trigger.poll(0.5, remaining=4) is None
    firing = trigger.poll(0.6, remaining=3)
    assert firing is not None
    assert firing.causes == {Cause.CHUNK_LOW}
    trigger.finish(0.7, success=False)
    for now in (0.9, 1.0, 1.5):
        assert trigger.poll(now, remaining=0) is None
    trigger.request()
    assert trigger.poll(1.6) is not None
    trigger.finish(1.7, success=True)
    firing = trigger.poll(1.9, remaining=2)
    assert firing is not None
    assert firing.causes == {Cause.CHUNK_LOW}


def test_event_inside_min_interval_waits_then_fires_once():
    trigger = started(0.0)
    assert trigger.request()
    assert trigger.poll(0.1) is None
    assert trigger.pending == {Cause.EXPLICIT}
    assert trigger.time_until_allowed(0.1) == pytest.approx(0.1)
    firing = trigger.poll(0.2)
    assert firing is not None
    assert firing.causes == {Cause.EXPLICIT}
    trigger.finish(0.3, success=True)
    assert trigger.poll(0.5, remaining=10) is None


def test_events_while_busy_coalesce_into_one_follow_up():
    trigger = started(0.0)
    trigger.request()
    assert trigger.poll(1.0) is not None
    trigger.request()
    trigger.set_instruction("turn left")
    trigger.request()
    assert trigger.poll(1.5) is None
    trigger.finish(1.6, success=True)
    firing = trigger.poll(1.6)
    assert firing is not None
    assert firing.cause is Cause.INSTRUCTION
    assert firing.causes == {Cause.INSTRUCTION, Cause.EXPLICIT}
    trigger.finish(1.7, success=True)
    assert trigger.poll(1.9, remaining=10) is None


def test_reset_makes_the_next_inference_a_start():
    trigger = started(0.0)
    trigger.request()
    trigger.reset()
    firing = trigger.poll(0.5, remaining=0)
    assert firing is not None
    assert firing.causes == {Cause.START}


def test_clock_running_backwards_does_not_stall_the_trigger():
    trigger = started(100.0)
    assert trigger.time_until_allowed(0.0) == 0.0
    # Sim time restarted: without a fresh plan the robot would sit at zero for 100 s.
    firing = trigger.poll(0.0)
    assert firing is not None
    assert firing.causes == {Cause.HEARTBEAT}
    trigger.finish(0.1, success=True)
    # Keyframe time and rate bound now follow the new timeline.
    assert trigger.scene_change(0.9, 0.15)
    assert trigger.poll(0.15) is None
    firing = trigger.poll(0.2)
    assert firing is not None
    assert firing.causes == {Cause.SCENE_CHANGE}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scene_change_threshold", -0.1),
        ("chunk_low_threshold", -1),
        ("min_interval_s", float("nan")),
        ("max_interval_s", 0.0),
        ("min_interval_s", 3.0),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TriggerConfig(**{field: value})


# ------------------------------------------------------------------ properties

INSTRUCTIONS = ("", "  ", "pick the cup", "컵을 집어", "pick the cup ")
operations = st.lists(
    st.tuples(
        st.floats(0.0, 0.6, allow_nan=False),
        st.one_of(
            st.tuples(st.just("instruction"), st.sampled_from(INSTRUCTIONS)),
            st.tuples(st.just("request"), st.none()),
            st.tuples(st.just("scene"), st.tuples(st.floats(0.0, 1.0), st.floats(-0.5, 0.1))),
            st.tuples(st.just("reset"), st.none()),
            st.tuples(st.just("poll"), st.one_of(st.none(), st.integers(0, 10))),
            st.tuples(st.just("finish"), st.booleans()),
        ),
    ),
    max_size=60,
)
configs = st.builds(
    TriggerConfig,
    scene_change_threshold=st.floats(0.0, 1.0),
    chunk_low_threshold=st.integers(0, 10),
    min_interval_s=st.floats(0.0, 0.5),
    max_interval_s=st.floats(0.5, 3.0),
)


@settings(max_examples=300, deadline=None)
@given(config=configs, ops=operations)
def test_rate_bound_exactly_once_and_liveness(config, ops):
    trigger = EventTrigger(config)
    model: set[Cause] = {Cause.START}
    now = 0.0
    starts: list[float] = []
    chunk_low_allowed = False
    for dt, (kind, arg) in ops:
        now += dt
        if kind == "instruction":
            before = trigger.instruction
            changed = trigger.set_instruction(arg)
            assert changed == (before != (arg.strip() or None))
            if not arg.strip():
                model &= {Cause.START}
                chunk_low_allowed = False
            elif changed:
                model.add(Cause.INSTRUCTION)
        elif kind == "request":
            if trigger.request():
                model.add(Cause.EXPLICIT)
            else:
                assert trigger.instruction is None
        elif kind == "scene":
            score, lag = arg
            accepted = trigger.scene_change(score, now + lag)
            if accepted:
                assert trigger.instruction is not None
                assert score > config.scene_change_threshold
                model.add(Cause.SCENE_CHANGE)
        elif kind == "reset":
            trigger.reset()
            model = {Cause.START}
            chunk_low_allowed = False
        elif kind == "finish":
            if trigger.busy:
                trigger.finish(now, success=arg)
                if arg:
                    model.discard(Cause.SCENE_CHANGE)
                    chunk_low_allowed = True
        else:
            was_busy = trigger.busy
            firing = trigger.poll(now, remaining=arg)
            if firing is None:
                model |= trigger.pending & {Cause.CHUNK_LOW}
            else:
                assert trigger.instruction is not None, "fired without an instruction"
                assert not was_busy, "a second inference started while one was running"
                if starts:
                    assert now - starts[-1] >= config.min_interval_s, "rate bound violated"
                extra = firing.causes - model
                assert extra <= {Cause.CHUNK_LOW, Cause.HEARTBEAT}
                if Cause.CHUNK_LOW in extra:
                    assert chunk_low_allowed, "chunk_low fired twice for one chunk"
                    chunk_low_allowed = False
                if Cause.HEARTBEAT in firing.causes:
                    assert starts
                    assert now - starts[-1] >= config.max_interval_s
                assert model <= firing.causes, "a pending event was lost"
                assert firing.cause == min(firing.causes, key=list(Cause).index)
                starts.append(now)
                model = set()
        assert trigger.pending == model, "pending events differ from the accepted ones"

    # Every pending event fires once allowed, and a quiet trigger still beats.
    if trigger.busy:
        trigger.finish(now, success=True)
        model.discard(Cause.SCENE_CHANGE)
    later = now + config.min_interval_s
    firing = trigger.poll(later)
    if trigger.instruction is None:
        assert firing is None
        return
    if model:
        assert firing is not None
        assert model <= firing.causes
        trigger.finish(later, success=True)
    elif firing is not None:
        trigger.finish(later, success=True)
    beat = trigger.poll(later + config.max_interval_s + 1e-6)
    assert beat is not None
    assert Cause.HEARTBEAT in beat.causes

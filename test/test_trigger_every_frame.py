"""The `every_frame` trigger mode: the baseline of `vla-ros sim eval --trigger every-frame`."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.trigger import Cause, EventTrigger, TriggerConfig


def test_every_new_frame_is_an_event_once_an_instruction_is_set() -> None:
    trigger = EventTrigger(TriggerConfig(min_interval_s=0.0, every_frame=True))
    assert not trigger.new_frame()
    trigger.set_instruction("go to the cup")
    first = trigger.poll(0.0)
    assert first is not None
    trigger.finish(0.0, success=True, keyframe_stamp_s=0.0)
    assert trigger.poll(0.1) is None
    assert trigger.new_frame()
    firing = trigger.poll(0.1)
    assert firing is not None
    assert firing.cause == Cause.FRAME
    trigger.finish(0.1, success=True)
    assert trigger.new_frame()
    assert trigger.poll(0.2, fresh_frame=False) is None


def test_event_mode_ignores_new_frames() -> None:
    trigger = EventTrigger(TriggerConfig(min_interval_s=0.0))
    trigger.set_instruction("go to the cup")
    trigger.poll(0.0)
    trigger.finish(0.0, success=True)
    assert not trigger.new_frame()
    assert trigger.poll(0.1) is None


@given(st.lists(st.floats(0.001, 0.5), min_size=1, max_size=40))
def test_every_frame_still_respects_the_rate_bound(gaps) -> None:
    trigger = EventTrigger(TriggerConfig(min_interval_s=0.2, every_frame=True))
    trigger.set_instruction("x")
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        trigger.new_frame()
        firing = trigger.poll(now)
        if firing is not None:
            starts.append(now)
            trigger.finish(now, success=True)
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(starts))

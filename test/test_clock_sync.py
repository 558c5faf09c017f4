"""The sim's clock holds (sim/clock_sync.py), driven with a fake wall clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vla_ros.sim.clock_sync import ClockHold, PolicyLockstep


class FakeWall:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_hold_gives_up_once_after_its_timeout_and_counts_both() -> None:
    wall = FakeWall()
    hold = ClockHold(wall)
    assert hold.holding(1.0)
    wall.now = 0.9
    assert hold.holding(1.0)
    wall.now = 1.0
    assert not hold.holding(1.0)
    assert (hold.holds, hold.timeouts) == (2, 1)
    assert hold.holding(1.0)  # a new hold starts at the next call


def test_the_clock_runs_for_the_latency_then_holds_until_the_inference_ends() -> None:
    wall = FakeWall()
    lockstep = PolicyLockstep(wall)
    assert not lockstep.waiting(1.0, 0.1, 10.0)  # nothing computing
    lockstep.busy(True, 1.0)
    assert not lockstep.waiting(1.06, 0.1, 10.0)
    assert lockstep.waiting(1.1, 0.1, 10.0)
    wall.now = 5.0
    assert lockstep.waiting(1.1, 0.1, 10.0)
    lockstep.busy(False, 1.1)
    assert not lockstep.waiting(1.1, 0.1, 10.0)
    assert (lockstep.hold.holds, lockstep.hold.timeouts) == (2, 0)


def test_a_stuck_inference_holds_at_most_the_timeout_and_not_again() -> None:
    wall = FakeWall()
    lockstep = PolicyLockstep(wall)
    lockstep.busy(True, 0.0)
    assert lockstep.waiting(0.2, 0.1, 2.0)
    wall.now = 2.0
    assert not lockstep.waiting(0.2, 0.1, 2.0)
    lockstep.busy(True, 0.2)  # still reported busy: a new inference starts counting now
    assert not lockstep.waiting(0.25, 0.1, 2.0)
    assert lockstep.hold.timeouts == 1


@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 0.2)), max_size=40))
def test_a_negative_latency_never_holds(events) -> None:
    lockstep = PolicyLockstep(FakeWall())
    sim_s = 0.0
    for computing, step in events:
        sim_s += step
        lockstep.busy(computing, sim_s)
        assert not lockstep.waiting(sim_s, -1.0, 10.0)

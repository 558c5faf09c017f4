"""ChunkExecutor: latency-compensated playback and temporal blending of action chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vla_ros.core.chunk_executor import ChunkExecutor, blend_weights
from vla_ros.policy.types import ActionChunk

PERIOD = 0.1


def ramp(length: int = 5, dof: int = 3, offset: float = 0.0, gripper: bool = False) -> ActionChunk:
    """Row k is filled with offset + k so a command tells which action it came from."""
    motion = np.repeat(np.arange(length, dtype=float)[:, None] + offset, dof, axis=1)
    grip = np.array([k % 2 for k in range(length)], dtype=float) if gripper else None
    return ActionChunk(motion=motion, action_period_s=PERIOD, gripper=grip)


def test_plays_each_action_in_its_slot_then_runs_out():
    executor = ChunkExecutor(PERIOD)
    assert executor.command_at(0.0) is None
    assert executor.remaining(0.0) == 0
    assert executor.set_chunk(ramp(5), frame_stamp_s=10.0, now_s=10.0) == 0
    for now, row in ((10.0, 0), (10.05, 0), (10.1, 1), (10.29, 2), (10.3, 3), (10.49, 4)):
        command = executor.command_at(now)
        assert command is not None
        np.testing.assert_array_equal(command[0], [row] * 3)
        assert command[1] is None
        assert executor.remaining(now) == 5 - row
    assert executor.command_at(10.5) is None
    assert executor.remaining(10.5) == 0


def test_actions_late_because_of_the_model_are_skipped():
    executor = ChunkExecutor(PERIOD)
    skipped = executor.set_chunk(ramp(5), frame_stamp_s=10.0, now_s=10.32)
    assert skipped == 3
    command = executor.command_at(10.32)
    assert command is not None
    np.testing.assert_array_equal(command[0], [3, 3, 3])
    assert executor.set_chunk(ramp(5), frame_stamp_s=10.0, now_s=11.0) == 5
    assert executor.command_at(11.0) is None


def test_frame_stamped_slightly_ahead_plays_its_first_action():
    executor = ChunkExecutor(PERIOD)
    executor.set_chunk(ramp(5), frame_stamp_s=10.02, now_s=10.0)
    command = executor.command_at(10.0)
    assert command is not None
    np.testing.assert_array_equal(command[0], [0, 0, 0])
    assert executor.remaining(10.0) == 5


def test_frame_stamped_far_ahead_cannot_stretch_the_chunk():
    executor = ChunkExecutor(PERIOD)
    # The sim clock restarted while the model ran on a frame of the old timeline.
    assert executor.set_chunk(ramp(5), frame_stamp_s=1000.0, now_s=10.0) == 0
    command = executor.command_at(10.0)
    assert command is not None
    np.testing.assert_array_equal(command[0], [0, 0, 0])
    command = executor.command_at(10.45)
    assert command is not None
    np.testing.assert_array_equal(command[0], [4, 4, 4])
    assert executor.command_at(10.5) is None


def test_new_chunk_replaces_the_rest_of_the_old_one():
    executor = ChunkExecutor(PERIOD)
    executor.set_chunk(ramp(5), 10.0, 10.0)
    executor.set_chunk(ramp(5, offset=100.0), 10.2, 10.25)
    command = executor.command_at(10.25)
    assert command is not None
    np.testing.assert_array_equal(command[0], [100, 100, 100])
    assert executor.command_at(10.7) is None


def test_gripper_follows_the_newest_chunk():
    executor = ChunkExecutor(PERIOD, blend=True, blend_weight=0.5)
    executor.set_chunk(ramp(5, dof=6, gripper=True), 10.0, 10.0)
    executor.set_chunk(ramp(5, dof=6, offset=2.0, gripper=True), 10.1, 10.1)
    command = executor.command_at(10.1)
    assert command is not None
    assert command[1] == 0.0
    command = executor.command_at(10.2)
    assert command is not None
    assert command[1] == 1.0


def test_clock_running_backwards_drops_the_plan():
    executor = ChunkExecutor(PERIOD)
    executor.set_chunk(ramp(5), 100.0, 100.0)
    assert executor.command_at(100.1) is not None
    assert executor.command_at(3.0) is None
    assert executor.command_at(100.2) is None


def test_reset_clears_everything():
    executor = ChunkExecutor(PERIOD)
    executor.set_chunk(ramp(5), 10.0, 10.0)
    executor.reset()
    assert executor.command_at(10.0) is None
    assert executor.remaining(10.0) == 0


def test_blending_averages_overlapping_predictions():
    executor = ChunkExecutor(PERIOD, blend=True, blend_weight=0.75)
    executor.set_chunk(ramp(5), 10.0, 10.0)
    executor.set_chunk(ramp(5, offset=10.0), 10.2, 10.2)
    command = executor.command_at(10.2)
    assert command is not None
    # newest predicts 10 for this slot, the older chunk predicts 2
    np.testing.assert_allclose(command[0], [0.75 * 10 + 0.25 * 2] * 3)
    # once the old chunk is exhausted only the newest remains
    command = executor.command_at(10.55)
    assert command is not None
    np.testing.assert_allclose(command[0], [13] * 3)


def test_blend_weight_one_means_newest_only():
    executor = ChunkExecutor(PERIOD, blend=True, blend_weight=1.0)
    executor.set_chunk(ramp(5), 10.0, 10.0)
    executor.set_chunk(ramp(5, offset=10.0), 10.2, 10.2)
    command = executor.command_at(10.2)
    assert command is not None
    np.testing.assert_allclose(command[0], [10] * 3)


def test_configure_switches_blending_at_run_time():
    executor = ChunkExecutor(PERIOD)
    executor.configure(True, 0.5)
    assert executor.blend
    with pytest.raises(ValueError, match="blend_weight"):
        executor.configure(True, 0.0)


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (ActionChunk(motion=np.ones((3, 3)), action_period_s=0.2), "action_period_s"),
        (ActionChunk(motion=np.full((3, 3), np.nan), action_period_s=PERIOD), "NaN"),
        (
            ActionChunk(
                motion=np.ones((3, 6)),
                action_period_s=PERIOD,
                gripper=np.array([1.0, np.inf, 0.0]),
            ),
            "gripper",
        ),
    ],
)
def test_bad_chunks_are_refused_and_leave_the_plan_untouched(chunk, message):
    executor = ChunkExecutor(PERIOD)
    executor.set_chunk(ramp(5), 10.0, 10.0)
    with pytest.raises(ValueError, match=message):
        executor.set_chunk(chunk, 10.1, 10.1)
    command = executor.command_at(10.1)
    assert command is not None
    np.testing.assert_array_equal(command[0], [1, 1, 1])


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="action_period_s"):
        ChunkExecutor(0.0)
    with pytest.raises(ValueError, match="blend_weight"):
        ChunkExecutor(PERIOD, blend=True, blend_weight=1.5)
    with pytest.raises(ValueError, match="now_s"):
        ChunkExecutor(PERIOD).command_at(math.nan)


# ------------------------------------------------------------------ properties

motions = st.integers(1, 12).flatmap(
    lambda length: arrays(np.float64, (length, 3), elements=st.floats(-2.0, 2.0))
)


@settings(max_examples=200, deadline=None)
@given(
    motion=motions,
    stamp=st.floats(0.0, 100.0),
    latency=st.floats(-5.0, 2.0),
    steps=st.lists(st.floats(0.0, 0.3), max_size=30),
)
def test_never_plays_a_skipped_or_past_action(motion, stamp, latency, steps):
    executor = ChunkExecutor(PERIOD)
    now = stamp + latency
    skipped = executor.set_chunk(ActionChunk(motion, PERIOD), stamp, now)
    length = motion.shape[0]
    assert skipped == min(length, math.floor(max(latency, 0.0) / PERIOD + 1e-9))
    # A frame stamped in the future (negative latency) is played from `now`.
    stamp = min(stamp, now)
    last_index = skipped
    exhausted = False
    for dt in [0.0, *steps]:
        now += dt
        command = executor.command_at(now)
        remaining = executor.remaining(now)
        if command is None:
            assert remaining == 0
            exhausted = True
            continue
        assert not exhausted, "an exhausted chunk came back"
        index = length - remaining
        assert index >= last_index, "went back to an earlier action"
        assert stamp + index * PERIOD <= now + 1e-6, "played an action before its time"
        assert now < stamp + (index + 1) * PERIOD + 1e-6, "played an action after its slot"
        np.testing.assert_array_equal(command[0], motion[index])
        last_index = index
    assert executor.command_at(max(now, stamp + length * PERIOD)) is None


@settings(max_examples=200, deadline=None)
@given(count=st.integers(1, 12), weight=st.floats(0.01, 1.0))
def test_blend_weights_are_a_convex_combination(count, weight):
    weights = blend_weights(count, weight)
    assert weights.shape == (count,)
    assert np.all(weights >= 0)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-9)
    assert math.isclose(float(weights[0]), weight if count > 1 else 1.0)


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(
        arrays(np.float64, (10, 3), elements=st.floats(-2.0, 2.0)), min_size=1, max_size=6
    ),
    gaps=st.lists(st.floats(0.0, 0.5), min_size=6, max_size=6),
    query=st.floats(0.0, 1.5),
    weight=st.floats(0.01, 1.0),
)
def test_blended_command_lies_within_the_candidates(chunks, gaps, query, weight):
    executor = ChunkExecutor(PERIOD, blend=True, blend_weight=weight)
    stamp = 0.0
    stamps = []
    for motion, gap in zip(chunks, gaps, strict=False):
        stamp += gap
        stamps.append(stamp)
        executor.set_chunk(ActionChunk(motion, PERIOD), stamp, stamp)
    now = stamp + query
    candidates = [
        motion[max(0, math.floor((now - s) / PERIOD + 1e-9))]
        for motion, s in zip(chunks, stamps, strict=True)
        if math.floor((now - s) / PERIOD + 1e-9) < 10
    ][-executor.max_chunks :]
    command = executor.command_at(now)
    if not candidates:
        assert command is None
        return
    assert command is not None
    low = np.min(candidates, axis=0)
    high = np.max(candidates, axis=0)
    assert np.all(command[0] >= low - 1e-9)
    assert np.all(command[0] <= high + 1e-9)

"""Train-as-deployed history spacing and chunk targets (pure functions, property-tested)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.trigger import TriggerConfig
from vla_ros.learn.samples import (
    HistoryCadence,
    chunk_target,
    deployed_trigger,
    draw_gaps,
    event_cadence,
    history_indices,
    trigger_from_params,
)
from vla_ros.params import default_params_file


def test_shipped_mobile_config_spaces_history_two_to_seven_steps():
    trigger = trigger_from_params(default_params_file("mobile"))
    assert trigger.min_interval_s == 0.2
    assert trigger.chunk_low_threshold == 3
    cadence = event_cadence(trigger, period_s=0.1, chunk=10)
    assert (cadence.min_steps, cadence.max_steps) == (2, 7)


def test_an_arm_model_is_trained_for_the_arms_sooner_replanning(tmp_path):
    """config/arm.yaml replans with 7 of 10 actions left: an arm head's history gaps are 2-3
    steps, not the mobile base's 2-7; an explicit params file overrides the shipped one."""
    arm = event_cadence(deployed_trigger("arm7"), period_s=0.1, chunk=10)
    assert (arm.min_steps, arm.max_steps) == (2, 3)
    mobile = event_cadence(deployed_trigger("mobile3"), period_s=0.1, chunk=10)
    assert (mobile.min_steps, mobile.max_steps) == (2, 7)
    params = tmp_path / "params.yaml"
    params.write_text("vla_inference:\n  ros__parameters:\n    chunk_low_threshold: 5\n")
    assert deployed_trigger("arm7", params).chunk_low_threshold == 5


def test_trigger_params_are_read_as_the_node_reads_them(tmp_path):
    """A namespaced or wildcard section trains with the file's trigger, not the default, and a
    value the node refuses is refused here too (the bounds are declared once)."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    use_sim_time: true\n"
        "/robot1/vla_inference:\n  ros__parameters:\n"
        "    scene_change_threshold: 0.5\n    min_interval_s: 0.9\n"
    )
    trigger = trigger_from_params(params)
    assert (trigger.scene_change_threshold, trigger.min_interval_s) == (0.5, 0.9)
    params.write_text("vla_inference:\n  ros__parameters:\n    scene_change_threshold: 1.5\n")
    with pytest.raises(ValueError, match=r"scene_change_threshold must be in \[0.0, 1.0\]"):
        trigger_from_params(params)
    params.write_text("vla_safety:\n  ros__parameters:\n    max_linear_speed: 0.5\n")
    with pytest.raises(ValueError, match="no ros__parameters for node 'vla_inference'"):
        trigger_from_params(params)


def test_the_node_and_the_trigger_share_their_bounds():
    from vla_ros.core.trigger import TRIGGER_BOUNDS
    from vla_ros.nodes.inference_node import PARAMS

    specs = {spec.name: spec for spec in PARAMS}
    for name, (low, high) in TRIGGER_BOUNDS.items():
        assert (specs[name].min, specs[name].max) == (low, high), name
        with pytest.raises(ValueError, match=name):
            TriggerConfig(**{name: high * 2 + 1})


def test_heartbeat_bounds_the_gap_when_chunks_are_long():
    trigger = TriggerConfig(min_interval_s=0.0, chunk_low_threshold=0, max_interval_s=0.5)
    assert event_cadence(trigger, 0.1, 50) == HistoryCadence("event", 1, 5)


@given(
    target=st.integers(0, 300),
    window=st.integers(1, 12),
    low=st.integers(1, 5),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_history_ends_at_target_with_cadence_gaps(target, window, low, extra, seed):
    cadence = HistoryCadence("event", low, low + extra)
    gaps = draw_gaps(np.random.default_rng(seed), cadence, window - 1)
    rows = history_indices(target, window, gaps)
    assert 1 <= rows.size <= window
    assert rows[-1] == target
    assert rows[0] >= 0
    steps = np.diff(rows)
    assert np.all(steps >= low)
    assert np.all(steps <= low + extra)
    # Truncated only by the episode start, as after a reset at deployment.
    if rows.size < window:
        assert rows[0] - (gaps[rows.size - 1]) < 0


@given(length=st.integers(1, 40), target=st.integers(0, 39), chunk=st.integers(1, 12))
def test_chunk_target_masks_past_the_episode_end(length, target, chunk):
    target = min(target, length - 1)
    actions = np.arange(length, dtype=np.float32)[:, None].repeat(3, axis=1)
    values, mask = chunk_target(actions, target, chunk)
    valid = min(chunk, length - target)
    assert mask.sum() == valid
    assert np.all(mask[:valid] == 1)
    np.testing.assert_array_equal(values[:valid, 0], np.arange(target, target + valid))


def test_bad_cadence_is_refused():
    with pytest.raises(ValueError, match="history mode"):
        HistoryCadence("sometimes", 1, 2)
    with pytest.raises(ValueError, match="min"):
        HistoryCadence("event", 3, 2)

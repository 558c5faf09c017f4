"""ActionCodec: RoboVLMs normalization, SI scaling, gripper decoding and Twist field mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vla_ros.policy.codec import (
    ActionCodec,
    gripper_to_target,
    motion_to_twist_fields,
    sigmoid,
    twist_fields_to_motion,
)
from vla_ros.policy.config import PolicyConfig

PROPERTY = settings(max_examples=150, deadline=None)

FINITE = st.floats(allow_nan=False, allow_infinity=False)
UNIT = st.floats(min_value=-1.0, max_value=1.0)


@st.composite
def codecs(draw: st.DrawFn, dof: int | None = None) -> ActionCodec:
    """Codecs with realistic but varied bounds: asymmetric, narrow or wide, any positive scale."""
    n = dof if dof is not None else draw(st.sampled_from([3, 6]))
    low = draw(hnp.arrays(np.float64, n, elements=st.floats(-10.0, 10.0)))
    width = draw(hnp.arrays(np.float64, n, elements=st.floats(1e-3, 20.0)))
    scale = draw(hnp.arrays(np.float64, n, elements=st.floats(1e-3, 100.0)))
    threshold = draw(st.floats(0.01, 0.99))
    return ActionCodec(low, low + width, scale, gripper_threshold=threshold)


@st.composite
def codec_and_motion(draw: st.DrawFn, elements: st.SearchStrategy[float] = FINITE) -> tuple:
    codec = draw(codecs())
    shape = draw(st.sampled_from([(codec.dof,), (1, codec.dof), (4, codec.dof)]))
    return codec, draw(hnp.arrays(np.float64, shape, elements=elements))


# --- motion -----------------------------------------------------------------------------------


@PROPERTY
@given(codec_and_motion(elements=UNIT))
def test_encode_inverts_decode_on_the_unit_box(case):
    codec, normalized = case
    np.testing.assert_allclose(
        codec.encode_motion(codec.decode_motion(normalized)), normalized, rtol=0, atol=1e-9
    )


@PROPERTY
@given(codec_and_motion())
def test_decode_of_encode_is_the_clipped_command(case):
    codec, motion = case
    expected = np.clip(motion, codec.motion_low, codec.motion_high)
    atol = 1e-12 * np.maximum(np.abs(codec.motion_low), np.abs(codec.motion_high)) + 1e-15
    np.testing.assert_allclose(
        codec.decode_motion(codec.encode_motion(motion)), expected, rtol=1e-9, atol=atol.max()
    )


@PROPERTY
@given(codec_and_motion())
def test_decoded_motion_never_leaves_the_si_bounds(case):
    codec, normalized = case
    si = codec.decode_motion(normalized)
    assert si.shape == normalized.shape
    assert np.all(np.isfinite(si))
    assert np.all(si >= codec.motion_low)
    assert np.all(si <= codec.motion_high)


@PROPERTY
@given(codec_and_motion())
def test_encoded_motion_stays_in_the_unit_box(case):
    codec, motion = case
    normalized = codec.encode_motion(motion)
    assert np.all((normalized >= -1.0) & (normalized <= 1.0))


@pytest.mark.parametrize("extreme", [1e308, -1e308, np.finfo(np.float64).max, 5e-324])
def test_extreme_finite_inputs_saturate_without_overflow(extreme):
    codec = ActionCodec([-0.65] * 3, [0.65] * 3, [1e-3, 1.0, 100.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        si = codec.decode_motion([extreme] * 3)
        normalized = codec.encode_motion([extreme] * 3)
    assert np.all((si >= codec.motion_low) & (si <= codec.motion_high))
    assert np.all(np.abs(normalized) <= 1.0)


@PROPERTY
@given(codecs(), st.data())
def test_decode_and_encode_are_monotone_per_axis(codec, data):
    a = data.draw(hnp.arrays(np.float64, codec.dof, elements=FINITE))
    step = data.draw(hnp.arrays(np.float64, codec.dof, elements=st.floats(0.0, 1e6)))
    with np.errstate(over="ignore"):
        b = np.where(np.isfinite(a + step), a + step, a)
    assert np.all(codec.decode_motion(a) <= codec.decode_motion(b))
    assert np.all(codec.encode_motion(a) <= codec.encode_motion(b))
    assert np.all(codec.normalize(a) <= codec.normalize(b))


def test_robovlms_calvin_mapping_endpoints_and_midpoint():
    codec = ActionCodec([-0.65] * 6, [0.65] * 6, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    np.testing.assert_allclose(codec.normalize([0.65, -0.65, 0.0, 0.325, 9.0, -9.0]),
                               [1.0, -1.0, 0.0, 0.5, 1.0, -1.0])  # fmt: skip
    np.testing.assert_allclose(
        codec.decode_motion([1.0, -1.0, 0.0, 0.5, 3.0, -3.0]),
        [0.65, -0.65, 0.0, 0.65, 1.3, -1.3],
    )


def test_asymmetric_bounds_map_zero_to_the_midpoint():
    codec = ActionCodec([0.0, -1.0, -2.0], [1.0, 3.0, 0.0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(codec.decode_motion([0.0, 0.0, 0.0]), [0.5, 1.0, -1.0])
    np.testing.assert_allclose(codec.encode_motion([0.5, 1.0, -1.0]), [0.0, 0.0, 0.0])


@PROPERTY
@given(codec_and_motion(elements=st.floats(-3.0, 3.0)))
def test_a_chunk_decodes_row_by_row(case):
    codec, normalized = case
    chunk = np.atleast_2d(normalized)
    rows = np.stack([codec.decode_motion(row) for row in chunk])
    np.testing.assert_array_equal(codec.decode_motion(chunk), rows)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", ["encode_motion", "decode_motion", "normalize", "unnormalize"])
def test_non_finite_motion_is_refused(method, bad):
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="non-finite"):
        getattr(codec, method)(np.array([[0.0, bad, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("value", [np.zeros(6), np.zeros((2, 2)), np.zeros((1, 2, 3)), 0.5, "x"])
def test_wrong_shapes_and_types_are_refused(value):
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match=r"shape|numeric"):
        codec.decode_motion(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action_min": [1.0, 0.0, 0.0]}, r"action_min\[0\]=1.0 must be < action_max\[0\]"),
        ({"action_min": [0.0, 1.0, 0.0], "action_max": [1.0, 1.0, 1.0]}, r"action_min\[1\]"),
        ({"action_scale": [1.0, 0.0, 1.0]}, r"action_scale\[1\] must be > 0"),
        ({"action_scale": [1.0, 1.0, -2.0]}, r"action_scale\[2\] must be > 0"),
        ({"action_scale": [1.0, 1.0]}, "same length"),
        ({"action_max": [1.0, np.nan, 1.0]}, "non-finite"),
        ({"action_min": []}, "non-empty"),
        ({"gripper_threshold": 1.0}, "gripper_threshold"),
        ({"gripper_threshold": 0.0}, "gripper_threshold"),
        ({"gripper_threshold": float("nan")}, "gripper_threshold"),
        ({"action_min": [-1e308] * 3, "action_max": [1e308] * 3}, "finite"),
    ],
)
def test_inconsistent_codec_parameters_are_refused(kwargs, message):
    args = {"action_min": [0.0] * 3, "action_max": [1.0] * 3, "action_scale": [1.0] * 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ActionCodec(**args)


def test_codec_arrays_are_read_only():
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="read-only"):
        codec.motion_high[0] = 100.0


@pytest.mark.parametrize("action_space", ["mobile3", "arm7"])
def test_from_config_uses_the_policy_yaml_fields(action_space):
    dof = 3 if action_space == "mobile3" else 6
    cfg = PolicyConfig.create(
        action_space,
        hidden_size=8,
        action_min=tuple(-0.5 - 0.1 * i for i in range(dof)),
        action_max=tuple(0.5 + 0.1 * i for i in range(dof)),
        action_scale=tuple(1.0 + i for i in range(dof)),
        gripper_threshold=0.7,
    )
    codec = ActionCodec.from_config(cfg)
    assert codec.dof == cfg.motion_dof
    assert codec.gripper_threshold == 0.7
    np.testing.assert_allclose(codec.motion_high, np.array(cfg.action_max) * cfg.action_scale)
    np.testing.assert_allclose(codec.decode_motion(np.ones(dof)), codec.motion_high)


# --- gripper ----------------------------------------------------------------------------------


def test_gripper_training_labels_map_to_bce_targets():
    np.testing.assert_array_equal(gripper_to_target([-1.0, 1.0, 1.0, -1.0]), [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(gripper_to_target(np.array([[-1, 1]])), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="non-finite"):
        gripper_to_target([1.0, np.nan])


@PROPERTY
@given(
    st.floats(0.01, 0.99),
    hnp.arrays(np.float64, st.integers(1, 12), elements=FINITE),
)
def test_gripper_opens_exactly_above_the_threshold(threshold, logits):
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3, gripper_threshold=threshold)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        command, prob = codec.decode_gripper(logits)
    assert command.shape == prob.shape == logits.shape
    assert np.all((prob >= 0.0) & (prob <= 1.0))
    assert set(np.unique(command)) <= {0.0, 1.0}
    np.testing.assert_array_equal(command, (prob > threshold).astype(float))
    order = np.argsort(logits, kind="stable")
    assert np.all(np.diff(prob[order]) >= 0.0)
    # Far from the decision boundary the command follows the logit's side of logit(threshold).
    boundary = math.log(threshold / (1.0 - threshold))
    far = np.abs(logits - boundary) > 1e-6
    np.testing.assert_array_equal(command[far], (logits[far] > boundary).astype(float))


def test_sigmoid_is_stable_and_accurate_for_huge_logits():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        prob = sigmoid(np.array([-1e308, -800.0, -30.0, 0.0, 30.0, 800.0, 1e308]))
    assert prob[0] == 0.0
    assert prob[-1] == 1.0
    assert prob[3] == 0.5
    np.testing.assert_allclose(prob[2], math.exp(-30.0) / (1 + math.exp(-30.0)), rtol=1e-12)
    np.testing.assert_allclose(prob[4], 1 / (1 + math.exp(-30.0)), rtol=1e-15)
    np.testing.assert_allclose(prob[2] + prob[4], 1.0, rtol=1e-15)


def test_gripper_at_exactly_the_threshold_stays_closed():
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3)
    command, prob = codec.decode_gripper([0.0, 1e-9, -1e-9])
    np.testing.assert_array_equal(command, [0.0, 1.0, 0.0])
    assert prob[0] == 0.5


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gripper_logits_are_refused(bad):
    codec = ActionCodec([-1.0] * 3, [1.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="non-finite"):
        codec.decode_gripper([0.0, bad])


# --- Twist fields -----------------------------------------------------------------------------


@PROPERTY
@given(hnp.arrays(np.float64, 3, elements=FINITE))
def test_mobile3_twist_round_trip_with_unused_axes_exactly_zero(motion):
    linear, angular = motion_to_twist_fields(motion, "mobile3")
    assert linear == (motion[0], motion[1], 0.0)
    assert angular == (0.0, 0.0, motion[2])
    for unused in (linear[2], angular[0], angular[1]):
        assert unused == 0.0
        assert math.copysign(1.0, unused) == 1.0
    assert all(type(v) is float for v in (*linear, *angular))
    np.testing.assert_array_equal(twist_fields_to_motion(linear, angular, "mobile3"), motion)


@PROPERTY
@given(hnp.arrays(np.float64, 6, elements=FINITE))
def test_arm7_twist_round_trip(motion):
    linear, angular = motion_to_twist_fields(motion, "arm7")
    assert linear == tuple(motion[:3])
    assert angular == tuple(motion[3:])
    np.testing.assert_array_equal(twist_fields_to_motion(linear, angular, "arm7"), motion)


@PROPERTY
@given(hnp.arrays(np.float64, 6, elements=FINITE))
def test_mobile3_from_twist_drops_axes_a_base_cannot_execute(fields):
    motion = twist_fields_to_motion(fields[:3], fields[3:], "mobile3")
    np.testing.assert_array_equal(motion, [fields[0], fields[1], fields[5]])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: motion_to_twist_fields([0.0, 0.0, 0.0], "mobile4"), "action_space"),
        (lambda: motion_to_twist_fields([0.0] * 6, "mobile3"), r"shape \(3,\)"),
        (lambda: motion_to_twist_fields([0.0] * 3, "arm7"), r"shape \(6,\)"),
        (lambda: motion_to_twist_fields([0.0, np.nan, 0.0], "mobile3"), "non-finite"),
        (lambda: twist_fields_to_motion([0.0] * 3, [0.0, np.inf, 0.0], "mobile3"), "non-finite"),
        (lambda: twist_fields_to_motion([0.0] * 2, [0.0] * 3, "arm7"), "3 components"),
        (lambda: twist_fields_to_motion([0.0] * 3, [0.0] * 3, "arm6"), "action_space"),
    ],
)
def test_bad_twist_mappings_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()

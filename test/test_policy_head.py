"""LSTMPolicyHead: RoboVLMs window semantics, stateful mode, init, and the weight-file contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.policy.config import PolicyConfig
from vla_ros.policy.head import LSTMPolicyHead, load_head_weights, save_head_weights

HIDDEN, LSTM, LAYERS, MLP, CHUNK = 12, 10, 2, (9, 7, 5), 4


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_head(window: int = 3, mode: str = "window", gripper: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    head = LSTMPolicyHead(
        hidden_size=HIDDEN,
        chunk=CHUNK,
        motion_dof=6 if gripper else 3,
        with_gripper=gripper,
        lstm_hidden=LSTM,
        lstm_layers=LAYERS,
        mlp_hidden=MLP,
        window=window,
        history_mode=mode,
    ).eval()
    # Larger last layers so the Tanh works in its non-linear range and differences show.
    with torch.no_grad():
        head.motion[6].weight.mul_(20.0)
        if head.gripper is not None:
            head.gripper[6].weight.mul_(20.0)
    return head


def features(n: int, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(HIDDEN, generator=generator) for _ in range(n)]


# --- an independent reference: LSTM cell math and MLPs from the raw parameters -----------------


def ref_lstm(head, xs, state=None):
    """Run xs (list of (HIDDEN,)) through the LSTM weights step by step; returns (outs, state)."""
    params = dict(head.rnn.named_parameters())
    if state is None:
        state = [(torch.zeros(LSTM), torch.zeros(LSTM)) for _ in range(LAYERS)]
    outs = []
    for x in xs:
        new_state = []
        inp = x
        for k in range(LAYERS):
            h, c = state[k]
            gates = (
                params[f"weight_ih_l{k}"] @ inp
                + params[f"bias_ih_l{k}"]
                + params[f"weight_hh_l{k}"] @ h
                + params[f"bias_hh_l{k}"]
            )
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_state.append((h, c))
            inp = h
        state = new_state
        outs.append(inp)
    return outs, state


def ref_mlp(seq, x, tanh):
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for index, layer in enumerate(linears):
        x = F.linear(x, layer.weight, layer.bias)
        if index < len(linears) - 1:
            x = torch.relu(x)
    return torch.tanh(x) if tanh else x


def ref_window_outputs(head, xs, window):
    """RoboVLMs LSTMDecoder inference memory, written independently of the class under test."""
    history, state, results = [], None, []
    for x in xs:
        history.append(x)
        if len(history) <= window:
            outs, state = ref_lstm(head, [x], state)
        else:
            history = history[-window:]
            outs, _ = ref_lstm(head, history, None)
            state = None
        last = outs[-1]
        motion = ref_mlp(head.motion, last, tanh=True).reshape(CHUNK, -1)
        grip = ref_mlp(head.gripper, last, tanh=False) if head.gripper is not None else None
        results.append((motion, grip))
    return results


@settings(max_examples=20, deadline=None)
@given(
    window=st.integers(1, 4),
    steps=st.integers(1, 10),
    seed=st.integers(0, 10_000),
    gripper=st.booleans(),
)
def test_window_mode_matches_independent_robovlms_loop(window, steps, seed, gripper):
    head = make_head(window=window, gripper=gripper, seed=seed)
    xs = features(steps, seed=seed + 1)
    expected = ref_window_outputs(head, xs, window)
    for x, (motion_ref, grip_ref) in zip(xs, expected, strict=True):
        motion, grip = head.step(x)
        torch.testing.assert_close(motion, motion_ref, atol=1e-5, rtol=1e-5)
        if gripper:
            torch.testing.assert_close(grip, grip_ref, atol=1e-5, rtol=1e-5)
        else:
            assert grip is None
    assert len(head.history) == min(steps, window)


def test_window_mode_after_fill_equals_fresh_run_over_last_window():
    window = 3
    head = make_head(window=window)
    xs = features(9)
    for k, x in enumerate(xs, start=1):
        motion, grip = head.step(x)
        if k > window:
            fresh_motion, fresh_grip = head(torch.stack(xs[k - window : k]).unsqueeze(0))
            torch.testing.assert_close(motion, fresh_motion[0], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(grip, fresh_grip[0], atol=1e-6, rtol=1e-6)


def test_stateful_mode_equals_one_run_over_everything():
    head = make_head(window=3, mode="stateful")
    xs = features(8)
    for k, x in enumerate(xs, start=1):
        motion, _ = head.step(x)
        full_motion, _ = head(torch.stack(xs[:k]).unsqueeze(0))
        torch.testing.assert_close(motion, full_motion[0], atol=1e-5, rtol=1e-5)
    assert len(head.history) == 3


def test_stateful_differs_from_window_only_after_the_window_fills():
    window = 3
    window_head = make_head(window=window, mode="window", seed=5)
    stateful_head = make_head(window=window, mode="stateful", seed=5)
    xs = features(window + 3, seed=7)
    for k, x in enumerate(xs, start=1):
        a, ga = window_head.step(x)
        b, gb = stateful_head.step(x)
        if k <= window:
            assert torch.equal(a, b), f"step {k} differs before fill"
            assert torch.equal(ga, gb), f"step {k} gripper differs before fill"
        else:
            assert (a - b).abs().max() > 1e-4, f"step {k}: modes should differ after the fill"


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_reset_clears_history_and_state(mode):
    head = make_head(window=2, mode=mode)
    xs = features(5)
    first, _ = head.step(xs[0])
    for x in xs[1:]:
        head.step(x)
    assert len(head.history) == 2
    head.reset()
    assert head.history == ()
    again, _ = head.step(xs[0])
    assert torch.equal(first, again)


def test_shapes_range_and_bad_feature():
    head = make_head(window=2)
    motion, grip = head.step(features(1)[0])
    assert motion.shape == (CHUNK, 6)
    assert grip.shape == (CHUNK,)
    assert motion.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"feature must have shape \(12,\)"):
        head.step(torch.zeros(HIDDEN + 1))
    with pytest.raises(ValueError, match="features must be"):
        head(torch.zeros(1, HIDDEN))
    assert len(head.history) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk": 0}, "chunk must be a positive integer"),
        ({"window": True}, "window must be a positive integer"),
        ({"history_mode": "forever"}, "history_mode must be one of"),
    ],
)
def test_bad_construction(kwargs, message):
    args = {"hidden_size": 4, "chunk": 2, "motion_dof": 3, "with_gripper": False} | kwargs
    with pytest.raises(ValueError, match=message):
        LSTMPolicyHead(**args)


@pytest.mark.parametrize("action_space", ["mobile3", "arm7"])
def test_from_config_builds_what_policy_yaml_describes(action_space):
    config = PolicyConfig.create(
        action_space,
        hidden_size=HIDDEN,
        chunk=CHUNK,
        window=5,
        lstm_hidden=LSTM,
        lstm_layers=LAYERS,
        mlp_hidden=MLP,
        history_mode="stateful",
    )
    head = LSTMPolicyHead.from_config(config)
    assert (head.window, head.history_mode) == (5, "stateful")
    assert (head.rnn.input_size, head.rnn.hidden_size, head.rnn.num_layers) == (HIDDEN, LSTM, 2)
    assert [m.out_features for m in head.motion if isinstance(m, torch.nn.Linear)] == [
        *MLP,
        CHUNK * config.motion_dof,
    ]
    assert head.with_gripper == config.has_gripper


def test_init_follows_robovlms():
    head = LSTMPolicyHead(
        hidden_size=HIDDEN,
        chunk=CHUNK,
        motion_dof=6,
        with_gripper=True,
        lstm_hidden=LSTM,
        lstm_layers=LAYERS,
        mlp_hidden=MLP,
    )
    for seq in (head.motion, head.gripper):
        linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
        assert [layer.out_features for layer in linears[:-1]] == list(MLP)
        for layer in linears:
            bound = math.sqrt(6.0 / (layer.in_features + layer.out_features))
            assert layer.weight.abs().max() <= bound
            assert layer.weight.std() > bound / 4
            assert torch.count_nonzero(layer.bias) == 0
    assert isinstance(head.motion[-1], torch.nn.Tanh)
    assert isinstance(head.gripper[-1], torch.nn.Linear)
    lstm_bound = 1.0 / math.sqrt(LSTM)
    for name, value in head.rnn.named_parameters():
        assert value.abs().max() <= lstm_bound, name
        assert torch.count_nonzero(value) > 0, f"{name}: PyTorch default init, not zero"


def expected_keys(gripper: bool) -> set[str]:
    keys = {"action_token"}
    for k in range(LAYERS):
        keys |= {f"head.rnn.{p}_l{k}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    heads = ("motion", "gripper") if gripper else ("motion",)
    for name in heads:
        keys |= {f"head.{name}.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    return keys


@pytest.mark.parametrize("gripper", [True, False])
def test_weight_file_contract_and_roundtrip(tmp_path, gripper):
    from safetensors.torch import load_file

    head = make_head(gripper=gripper, seed=3)
    token = torch.randn(HIDDEN)
    path = save_head_weights(tmp_path / "policy_head.safetensors", token, head)
    tensors = load_file(str(path))
    assert set(tensors) == expected_keys(gripper)
    assert tensors["action_token"].shape == (HIDDEN,)
    assert tensors["head.rnn.weight_ih_l0"].shape == (4 * LSTM, HIDDEN)

    other = make_head(gripper=gripper, seed=99)
    loaded_token = load_head_weights(path, other)
    assert torch.equal(loaded_token, token)
    x = features(1)[0]
    a, ga = head.step(x)
    b, gb = other.step(x)
    assert torch.equal(a, b)
    assert gb is None if not gripper else torch.equal(ga, gb)


def test_weight_file_shape_mismatch_names_key_and_shapes(tmp_path):
    path = save_head_weights(tmp_path / "h.safetensors", torch.zeros(HIDDEN), make_head())
    bigger = LSTMPolicyHead(
        hidden_size=HIDDEN, chunk=CHUNK, motion_dof=6, with_gripper=True,
        lstm_hidden=LSTM + 2, lstm_layers=LAYERS, mlp_hidden=MLP,
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"head\.rnn\.weight_ih_l0 has shape \[40, 12\], expected \[48, 12\]"
    ):
        load_head_weights(path, bigger)
    wider = LSTMPolicyHead(
        hidden_size=HIDDEN + 4, chunk=CHUNK, motion_dof=6, with_gripper=True,
        lstm_hidden=LSTM, lstm_layers=LAYERS, mlp_hidden=MLP,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"action_token has shape \[12\], expected \[16\]"):
        load_head_weights(path, wider)


def test_weight_file_missing_unexpected_nonfinite_unreadable(tmp_path):
    mobile = save_head_weights(
        tmp_path / "m.safetensors", torch.zeros(HIDDEN), make_head(gripper=False)
    )
    arm = save_head_weights(
        tmp_path / "a.safetensors", torch.zeros(HIDDEN), make_head(gripper=True)
    )
    with pytest.raises(ValueError, match=r"missing tensor\(s\) head\.gripper\.0\.bias"):
        load_head_weights(mobile, make_head(gripper=True))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) head\.gripper\.0\.bias"):
        load_head_weights(arm, make_head(gripper=False))
    with pytest.raises(FileNotFoundError, match="policy head weights are required"):
        load_head_weights(tmp_path / "absent.safetensors", make_head())
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_head_weights(junk, make_head())
    with pytest.raises(ValueError, match=r"action_token must have shape \(12,\)"):
        save_head_weights(tmp_path / "x.safetensors", torch.zeros(3), make_head())

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(arm))
    tensors["head.motion.6.bias"][0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"head\.motion\.6\.bias contains NaN or Inf"):
        load_head_weights(tmp_path / "nan.safetensors", make_head())

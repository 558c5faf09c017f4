"""VLAPolicy: loading and validation of model directories, step/reset semantics, bad input."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import yaml

from vla_ros.policy.codec import ActionCodec
from vla_ros.policy.config import HEAD_FILE, POLICY_FILE, PolicyConfig
from vla_ros.policy.model import UNTRAINED_HEAD_KEY, VLAPolicy, read_spec, resolve_device
from vla_ros.policy.types import ActionChunk, Policy, PolicySpec, chunk_problem

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def mobile(tiny_model_dir):
    return VLAPolicy.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def arm(tiny_arm_model_dir):
    return VLAPolicy.from_pretrained(tiny_arm_model_dir)


@pytest.fixture
def fresh(mobile):
    mobile.reset()
    yield mobile
    mobile.reset()


def image(seed: int = 0, height: int = 120, width: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def copy_model(src, tmp_path):
    return shutil.copytree(src, tmp_path / "model")


def edit_policy_yaml(model_dir, **changes):
    path = model_dir / POLICY_FILE
    data = yaml.safe_load(path.read_text()) | changes
    path.write_text(yaml.safe_dump(data))


def test_spec_and_protocol(mobile, arm):
    policy: Policy = mobile
    assert isinstance(policy.spec, PolicySpec)
    assert mobile.spec.action_space == "mobile3"
    assert arm.spec.action_space == "arm7"
    assert mobile.spec.chunk == 10
    assert mobile.spec.window == 8
    assert mobile.spec.image_size == 224
    assert mobile.spec.device == "cpu"
    assert mobile.spec.model_id == "vla_ros/tiny-mobile3"


def test_read_spec_needs_no_weights(tiny_model_dir, mobile):
    assert read_spec(tiny_model_dir) == mobile.spec


def test_mobile_step_returns_si_chunk(fresh):
    chunk = fresh.step(image(), "move forward slowly")
    assert isinstance(chunk, ActionChunk)
    assert chunk.motion.shape == (10, 3)
    assert chunk.motion.dtype == np.float64
    assert chunk.gripper is None
    assert chunk.gripper_prob is None
    codec = ActionCodec.from_config(fresh.config)
    assert np.all(chunk.motion >= codec.motion_low)
    assert np.all(chunk.motion <= codec.motion_high)
    assert chunk.action_period_s == fresh.config.action_period_s
    assert set(chunk.timings_ms) == {"preprocess", "vision", "decoder", "head", "total"}
    assert all(v >= 0 for v in chunk.timings_ms.values())
    parts = sum(v for k, v in chunk.timings_ms.items() if k != "total")
    assert parts <= chunk.timings_ms["total"] + 1e-6


def test_arm_step_has_gripper(arm):
    arm.reset()
    chunk = arm.step(image(1), "pick up the red cup and put it in the bowl")
    assert chunk.motion.shape == (10, 6)
    assert chunk.gripper.shape == (10,)
    assert set(np.unique(chunk.gripper)) <= {0.0, 1.0}
    assert np.all((chunk.gripper_prob >= 0) & (chunk.gripper_prob <= 1))
    assert np.array_equal(chunk.gripper, (chunk.gripper_prob > 0.5).astype(float))
    assert chunk_problem(chunk, arm.spec) is None
    arm.reset()


ARM_SPEC = PolicySpec("arm7", chunk=3, window=2, action_period_s=0.1, image_size=224)


def arm_chunk(**changes):
    fields = {
        "motion": np.zeros((3, 6)),
        "action_period_s": 0.1,
        "gripper": np.array([0.0, 1.0, 1.0]),
        "confidence": np.float32(0.5),
    } | changes
    return ActionChunk(**fields)


@pytest.mark.parametrize(
    ("chunk", "words"),
    [
        (None, "not an ActionChunk"),
        (arm_chunk(motion=np.zeros((3, 3))), "3 axes, arm7 needs 6"),
        (arm_chunk(motion=np.full((3, 6), "x")), "dtype"),
        (arm_chunk(motion=np.full((3, 6), np.inf)), "NaN or Inf"),
        (arm_chunk(gripper=None), "without gripper"),
        (arm_chunk(gripper=np.array([0.0, np.nan, 1.0])), "gripper must be within"),
        (arm_chunk(gripper=np.array([0.0, 2.0, 1.0])), "gripper must be within"),
        (arm_chunk(action_period_s=0.2), "action_period_s"),
        (arm_chunk(confidence=float("nan")), "confidence must be within"),
        (arm_chunk(confidence=1.5), "confidence must be within"),
        (arm_chunk(confidence=None), "confidence must be a number"),
    ],
)
def test_chunk_problem_refuses_what_must_not_reach_the_robot(chunk, words):
    assert chunk_problem(arm_chunk(), ARM_SPEC) is None
    assert words in chunk_problem(chunk, ARM_SPEC)


def test_step_output_is_the_head_applied_to_the_pipeline(fresh):
    frame = image(2)
    chunk = fresh.step(frame, "turn left")
    backbone = fresh.backbone
    with torch.inference_mode():
        feature = backbone(backbone.preprocess(frame), backbone.text_ids("turn left"))
    assert len(fresh.features) == 1
    torch.testing.assert_close(fresh.features[0], feature)
    with torch.inference_mode():
        motion, _ = fresh.head(feature.reshape(1, 1, -1))
    expected = fresh.codec.decode_motion(motion[0].numpy())
    np.testing.assert_allclose(chunk.motion, expected, rtol=1e-6, atol=1e-9)


def test_history_is_bounded_and_reset_clears(fresh):
    for k in range(10):
        fresh.step(image(k), "go to the kitchen")
        assert len(fresh.features) == min(k + 1, fresh.spec.window)
    fresh.reset()
    assert fresh.features == ()


def test_same_inputs_after_reset_give_the_same_chunk(fresh):
    first = fresh.step(image(3), "open the drawer").motion
    fresh.step(image(4), "open the drawer")
    fresh.reset()
    assert np.array_equal(fresh.step(image(3), "open the drawer").motion, first)


def test_korean_instruction(fresh):
    fresh.step(image(5), "빨간 컵을 집어서 그릇에 넣어")
    korean = fresh.features[0]
    fresh.reset()
    fresh.step(image(5), "pick up the red cup and put it in the bowl")
    english = fresh.features[0]
    assert torch.isfinite(korean).all()
    assert not torch.allclose(korean, english)


def test_non_contiguous_and_read_only_images_work(fresh):
    base = image(6, 120, 320)
    strided = base[:, ::2]
    assert not strided.flags.c_contiguous
    a = fresh.step(strided, "stop").motion
    fresh.reset()
    b = fresh.step(np.ascontiguousarray(strided), "stop").motion
    fresh.reset()
    frozen = np.frombuffer(np.ascontiguousarray(strided).tobytes(), np.uint8).reshape(strided.shape)
    c = fresh.step(frozen, "stop").motion
    assert np.array_equal(a, b)
    assert np.array_equal(a, c)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((64, 64, 3), np.float32), "dtype uint8"),
        (np.zeros((64, 64), np.uint8), r"HxWx3 \(RGB\), got shape \(64, 64\)"),
        (np.zeros((64, 64, 4), np.uint8), r"got shape \(64, 64, 4\)"),
        (np.zeros((1, 64, 64, 3), np.uint8), "HxWx3"),
        (np.zeros((0, 64, 3), np.uint8), "between 1x1"),
        ([[[0, 0, 0]]], "numpy array"),
        (None, "numpy array"),
    ],
)
def test_bad_images_raise_and_leave_no_state(fresh, bad, message):
    with pytest.raises(ValueError, match=message):
        fresh.step(bad, "go to the kitchen")
    assert fresh.features == ()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "instruction is empty"),
        ("  \n\t ", "instruction is empty"),
        (None, "instruction must be a str, got NoneType"),
        (b"go", "instruction must be a str, got bytes"),
        (42, "instruction must be a str, got int"),
        ("go " * 2000, "at most 4096"),
        ("go " * 400, "at most 256 are supported"),
    ],
)
def test_bad_instructions_raise_and_leave_no_state(fresh, bad, message):
    with pytest.raises(ValueError, match=message):
        fresh.step(image(), bad)
    assert fresh.features == ()


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        POLICY_FILE,
        HEAD_FILE,
        "preprocessor_config.json",
        "tokenizer.json",
        "model.safetensors",
    ],
)
def test_missing_files_are_named(tiny_model_dir, tmp_path, name):
    model_dir = copy_model(tiny_model_dir, tmp_path)
    (model_dir / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        VLAPolicy.from_pretrained(model_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unusable_device_is_refused_before_loading(tiny_model_dir, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights must not be loaded for an unusable device")

    monkeypatch.setattr("vla_ros.policy.model.load_head_weights", no_weights)
    with pytest.raises(ValueError, match="CUDA is not available"):
        VLAPolicy.from_pretrained(tiny_model_dir, device="cuda:0")
    with pytest.raises(ValueError, match="invalid torch device 'gpu'"):
        VLAPolicy.from_pretrained(tiny_model_dir, device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VLAPolicy.from_pretrained(tmp_path / "nowhere")


def test_hidden_size_mismatch_between_policy_yaml_and_backbone(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path)
    edit_policy_yaml(model_dir, hidden_size=128)
    with pytest.raises(ValueError, match=r"hidden_size=128 does not match config\.json"):
        VLAPolicy.from_pretrained(model_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"lstm_hidden": 48},
            r"head\.rnn\.weight_ih_l0 has shape \[128, 64\], expected \[192, 64\]",
        ),
        ({"chunk": 5}, r"head\.motion\.6\.weight has shape \[30, 8\], expected \[15, 8\]"),
    ],
)
def test_policy_yaml_that_does_not_fit_the_head_names_the_tensor(
    tiny_model_dir, tmp_path, change, message
):
    model_dir = copy_model(tiny_model_dir, tmp_path)
    edit_policy_yaml(model_dir, **change)
    with pytest.raises(ValueError, match=message):
        VLAPolicy.from_pretrained(model_dir)


def test_arm_head_under_a_mobile_policy_yaml(tiny_arm_model_dir, tmp_path):
    model_dir = copy_model(tiny_arm_model_dir, tmp_path)
    config = PolicyConfig.load(model_dir)
    edit_policy_yaml(
        model_dir,
        action_space="mobile3",
        action_min=list(config.action_min[:3]),
        action_max=list(config.action_max[:3]),
        action_scale=list(config.action_scale[:3]),
    )
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) head\.gripper\.0\.bias"):
        VLAPolicy.from_pretrained(model_dir)


def test_constructor_cross_checks_hidden_size(mobile):
    other = PolicyConfig.create("mobile3", hidden_size=32)
    with pytest.raises(
        ValueError, match=r"hidden_size=32 but the backbone's text hidden_size is 64"
    ):
        VLAPolicy(mobile.backbone, mobile.head, other)


def test_untrained_head_is_announced(tiny_model_dir, tmp_path, caplog):
    model_dir = copy_model(tiny_model_dir, tmp_path)
    edit_policy_yaml(model_dir, **{UNTRAINED_HEAD_KEY: True})
    with caplog.at_level(logging.WARNING, logger="vla_ros.policy.model"):
        VLAPolicy.from_pretrained(model_dir)
    assert "UNTRAINED" in caplog.text


def test_stateful_history_mode_from_policy_yaml(tiny_model_dir, tmp_path):
    model_dir = copy_model(tiny_model_dir, tmp_path)
    edit_policy_yaml(model_dir, history_mode="stateful", window=2)
    policy = VLAPolicy.from_pretrained(model_dir)
    assert policy.head.history_mode == "stateful"
    assert policy.spec.window == 2
    for k in range(4):
        assert np.all(np.isfinite(policy.step(image(k), "stop").motion))
    assert len(policy.features) == 2


def test_action_token_is_loaded_into_the_backbone(tiny_model_dir, mobile):
    from safetensors.torch import load_file

    token = load_file(str(tiny_model_dir / HEAD_FILE))["action_token"]
    assert torch.equal(mobile.backbone.action_token.detach(), token)
    assert token.abs().sum() > 0

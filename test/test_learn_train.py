"""`vla-ros train` smoke runs: dataset -> trainer -> a model directory the inference path loads."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learn_support import blob_frame, write_toy_bag
from vla_ros.cli import main
from vla_ros.learn.build import build_dataset
from vla_ros.learn.spec import DatasetError, DatasetSpec
from vla_ros.learn.store import Dataset
from vla_ros.learn.train import TrainConfig, _lr_factor, robovlms_loss, train
from vla_ros.policy.config import PolicyConfig
from vla_ros.policy.model import VLAPolicy

EPISODES = tuple(
    (side, offset, language)
    for side in ("left", "right")
    for offset in (-0.5, 0.4)
    for language in ("en", "ko")
)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    from vla_ros.policy.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "learnable", preset="learnable")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, learnable):
    root = tmp_path_factory.mktemp("learn")
    bag = write_toy_bag(root / "bag", episodes=EPISODES, seconds=2.0, size=64)
    spec = DatasetSpec(image_size=64, val_fraction=0.25)
    build_dataset([bag], root / "ds", spec)
    return root / "ds"


def _config(dataset, init, out, **overrides):
    values = {
        "dataset": str(dataset),
        "init": str(init),
        "out": str(out),
        "recipe": "head",
        "max_steps": 4,
        "batch_size": 4,
        "lr": 1e-3,
        "progress": False,
    }
    values.update(overrides)
    return TrainConfig(**values).validate()


def test_loss_is_huber_plus_masked_bce():
    motion = torch.zeros(1, 3, 2)
    target = torch.tensor([[[0.5, 0.5], [3.0, 3.0], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    logits = torch.zeros(1, 3)
    grip = torch.ones(1, 3)
    total, motion_loss, gripper_loss = robovlms_loss(motion, target, mask, logits, grip)
    assert motion_loss.item() == pytest.approx((0.125 + 2.5) / 2)  # Huber: quadratic, then linear
    assert gripper_loss.item() == pytest.approx(np.log(2.0), rel=1e-6)
    assert total.item() == pytest.approx(motion_loss.item() + 0.01 * np.log(2.0), rel=1e-6)


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_planned_end(tmp_path):
    cosine = _lr_factor(_config("d", "i", "o", warmup_steps=10, lr_schedule="cosine"), 110)
    constant = _lr_factor(_config("d", "i", "o", warmup_steps=10), 110)
    assert [cosine(step) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert [constant(step) for step in (0, 9, 60, 500)] == pytest.approx([0.1, 1.0, 1.0, 1.0])
    decay = [cosine(step) for step in range(10, 111)]
    assert decay[0] == pytest.approx(1.0)
    assert decay[50] == pytest.approx(0.5)
    assert decay[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert cosine(1000) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        _config("d", "i", "o", lr_schedule="linear")
    with pytest.raises(ValueError, match="window"):
        _config("d", "i", "o", window=0)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        _config("d", "i", "o", warmup_steps=-5)


def _train_on_a_fake_clock(monkeypatch, dataset, learnable, out, ticks, minutes):
    """A cosine run with a time budget, on a clock that advances by `ticks` per reading."""
    from types import SimpleNamespace

    import vla_ros.learn.train as train_module

    clock = itertools.accumulate(ticks)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    cfg = _config(
        dataset, learnable, out, max_steps=None, epochs=10_000, max_minutes=minutes,
        lr_schedule="cosine", warmup_steps=2, budget_calibration_steps=4,
    )  # fmt: skip
    train(cfg)
    return cfg, json.loads((out / "training" / "summary.json").read_text())


def test_a_time_budget_ends_the_cosine_at_zero_when_time_runs_out(
    dataset, learnable, tmp_path, monkeypatch
):
    """--max-minutes with a cosine schedule: the run times its first steps, fixes how many fit
    the budget, and decays to zero there, instead of being cut near the peak rate of an epoch
    plan that would take far longer. A fake clock (one second per reading) makes it exact."""
    cfg, summary = _train_on_a_fake_clock(
        monkeypatch, dataset, learnable, tmp_path / "budgeted", itertools.repeat(1), 1.0
    )
    assert summary["step_budget"] is not None
    assert summary["steps"] == summary["step_budget"]
    assert summary["stopped_by"] == "max_minutes"
    assert summary["steps"] < summary["planned_steps"]
    assert 10 < summary["step_budget"] < 60
    assert summary["final_lr"] == pytest.approx(0.0, abs=1e-3 * cfg.lr)
    with pytest.raises(ValueError, match="max_minutes"):
        _config("d", "i", "o", max_minutes=0.0)


def test_each_epoch_re_times_the_budget_when_the_machine_slows_down(
    dataset, learnable, tmp_path, monkeypatch, capsys
):
    """A step rate timed while the machine was idle would overshoot once a load arrives: the
    deadline would then cut the run at a high learning rate. Re-timed at each epoch end, the
    budget shrinks and the cosine still ends at zero. The fake clock triples its tick after the
    first 40 readings."""
    ticks = itertools.chain(itertools.repeat(1, 40), itertools.repeat(3))
    cfg, summary = _train_on_a_fake_clock(
        monkeypatch, dataset, learnable, tmp_path / "re-timed", ticks, 5.0
    )
    budgets = [int(line.split()[2]) for line in capsys.readouterr().out.splitlines()
               if line.startswith("time budget:")]  # fmt: skip
    assert len(budgets) >= 2
    assert budgets[-1] < budgets[0]
    assert summary["steps"] == summary["step_budget"] == budgets[-1]
    assert summary["final_lr"] == pytest.approx(0.0, abs=1e-3 * cfg.lr)


def test_window_override_trains_and_saves_that_history_length(dataset, learnable, tmp_path):
    out = tmp_path / "single-frame"
    train(_config(dataset, learnable, out, recipe="full", window=1, max_steps=2))
    assert PolicyConfig.load(learnable).window != 1
    assert PolicyConfig.load(out).window == 1
    policy = VLAPolicy.from_pretrained(out)
    for _ in range(3):
        policy.step(blob_frame(0.2, 64), "steer left")
    assert len(policy.features) == 1


def test_head_recipe_writes_a_model_the_policy_loads(dataset, learnable, tmp_path):
    out = tmp_path / "model"
    result = train(_config(dataset, learnable, out))
    assert result.steps == 4
    assert np.isfinite(result.val_loss)
    config = PolicyConfig.load(out)
    low, high = Dataset(dataset).norm_bounds
    assert list(config.action_min) == pytest.approx(low)
    assert list(config.action_max) == pytest.approx(high)
    assert config.action_period_s == pytest.approx(0.1)
    cadence = config.extra["history_cadence"]
    assert (cadence["mode"], cadence["min_steps"], cadence["max_steps"]) == ("event", 2, 7)
    policy = VLAPolicy.from_pretrained(out)
    for _ in range(10):  # past the window
        chunk = policy.step(blob_frame(0.2, 64), "steer left")
    assert chunk.motion.shape == (10, 3)
    assert np.all(np.isfinite(chunk.motion))
    assert np.all(chunk.motion >= np.array(low) - 1e-6)
    assert np.all(chunk.motion <= np.array(high) + 1e-6)
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["samples_per_s"] > 0
    assert (out / "training" / "metrics.csv").read_text().count("\n") == 2
    assert list((out / "training" / "tensorboard").iterdir())


def test_lora_is_merged_and_full_trains_every_weight(dataset, learnable, tmp_path):
    from safetensors import safe_open

    before = VLAPolicy.from_pretrained(learnable)
    frame = blob_frame(-0.3, 64)
    for recipe in ("lora", "full"):
        out = tmp_path / recipe
        checkpointing = recipe == "full"
        train(
            _config(
                dataset,
                learnable,
                out,
                recipe=recipe,
                max_steps=2,
                lr=1e-2,
                gradient_checkpointing=checkpointing,
            )
        )
        with safe_open(str(out / "model.safetensors"), "pt") as handle:
            keys = list(handle.keys())
        assert not [key for key in keys if "lora" in key or "base_layer" in key]
        after = VLAPolicy.from_pretrained(out)
        assert not torch.equal(after.backbone.action_token, before.backbone.action_token)
        before.reset()
        after.reset()
        ids = before.backbone.text_ids("steer left")
        with torch.no_grad():
            old = before.backbone(before.backbone.preprocess(frame), ids)
            new = after.backbone(after.backbone.preprocess(frame), ids)
        assert not torch.allclose(old, new), f"{recipe}: the trunk did not change"


@settings(max_examples=60, deadline=None)
@given(
    recipe=st.sampled_from(["head", "lora", "full"]),
    epochs=st.integers(1, 500),
    lr=st.floats(1e-9, 10.0, allow_nan=False),
    max_minutes=st.one_of(st.none(), st.floats(0.01, 1e4, allow_nan=False)),
    window=st.one_of(st.none(), st.integers(1, 64)),
    progress=st.booleans(),
    keep_best=st.booleans(),
    history=st.sampled_from(["event", "step"]),
)
def test_a_configuration_is_its_command_line(
    recipe, epochs, lr, max_minutes, window, progress, keep_best, history
):
    """`to_argv` parses back to the same configuration (train-demo records stages this way)."""
    import argparse

    config = _config(
        "d e",
        "i",
        "o",
        recipe=recipe,
        epochs=epochs,
        lr=lr,
        max_minutes=max_minutes,
        window=window,
        progress=progress,
        keep_best=keep_best,
        history=history,
        max_steps=None,
    )
    parser = argparse.ArgumentParser()
    TrainConfig.add_arguments(parser)
    assert TrainConfig.from_args(parser.parse_args(config.to_argv())) == config


def test_a_new_recipe_is_one_registration(dataset, learnable, tmp_path):
    """A toy recipe (only the action token and the head learn) is one `register`: the CLI offers
    it, TrainConfig accepts it, and the trainer trains exactly what it says."""
    from vla_ros.learn.config import TrainConfig as Config
    from vla_ros.learn.recipes import RECIPES, Recipe, register

    @register
    class TokenRecipe(Recipe):
        name = "token"
        help = "only the action token and the head"

        def prepare(self, backbone):
            for param in backbone.parameters():
                param.requires_grad_(False)
            backbone.action_token.requires_grad_(True)
            return backbone

    try:
        import argparse

        parser = argparse.ArgumentParser()
        Config.add_arguments(parser)
        required = ["--dataset", "d", "--init", "i", "--out", "o", "--recipe", "token"]
        assert Config.from_args(parser.parse_args(required)).recipe == "token"
        out = tmp_path / "token"
        train(_config(dataset, learnable, out, recipe="token", max_steps=2, lr=1e-2))
        before = VLAPolicy.from_pretrained(learnable)
        after = VLAPolicy.from_pretrained(out)
        assert not torch.equal(after.backbone.action_token, before.backbone.action_token)
        frozen = dict(before.backbone.vlm.named_parameters())
        for name, value in after.backbone.vlm.named_parameters():
            assert torch.equal(value, frozen[name]), f"{name} trained"
        assert PolicyConfig.load(out).extra["trained"]["recipe"] == "token"
        with pytest.raises(ValueError, match="already registered"):
            register(TokenRecipe)
    finally:
        RECIPES.pop("token", None)
    with pytest.raises(ValueError, match="recipe must be one of"):
        _config(dataset, learnable, out, recipe="token")


@pytest.mark.parametrize(
    ("recipe", "option", "message"),
    [
        ("head", {"gradient_checkpointing": True}, "does not train the trunk"),
        ("full", {"lora_vision": True}, "lora_vision needs the lora recipe"),
        ("head", {"lora_vision": True}, "lora_vision needs the lora recipe"),
    ],
)
def test_a_recipe_refuses_the_options_it_would_ignore(recipe, option, message):
    with pytest.raises(ValueError, match=message):
        _config("d", "i", "o", recipe=recipe, **option)
    assert _config("d", "i", "o", recipe="lora", **option).recipe == "lora"


def test_step_history_ablation_is_recorded(dataset, learnable, tmp_path):
    out = tmp_path / "step"
    train(_config(dataset, learnable, out, history="step", max_steps=1))
    cadence = PolicyConfig.load(out).extra["history_cadence"]
    assert (cadence["mode"], cadence["min_steps"], cadence["max_steps"]) == ("step", 1, 1)


def test_interrupted_training_resumes_from_its_checkpoint(dataset, learnable, tmp_path):
    out = tmp_path / "model"
    train(_config(dataset, learnable, out, max_steps=3, checkpoint_every=2))
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert [p.name for p in checkpoints] == ["step-0000002", "step-0000003"]
    result = train(_config(dataset, learnable, out, max_steps=6, resume=True))
    assert result.steps == 6
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["steps"] == 6
    assert summary["samples"] == 6 * 4


def test_overwrite_takes_a_killed_runs_leftovers_but_not_a_foreign_directory(
    dataset, learnable, tmp_path
):
    killed = tmp_path / "killed"
    (killed / "checkpoints" / "step-0000002").mkdir(parents=True)
    (killed / "training").mkdir()
    (killed / "training" / "metrics.csv").write_text("epoch,step\n")
    train(_config(dataset, learnable, killed, max_steps=1, overwrite=True))
    assert PolicyConfig.load(killed).action_space == "mobile3"
    assert not (killed / "checkpoints" / "step-0000002").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match="not a vla_ros model directory"):
        train(_config(dataset, learnable, foreign, max_steps=1, overwrite=True))
    assert (foreign / "holiday.jpg").is_file()


def test_mismatched_action_space_and_bad_paths_are_clear(dataset, tmp_path, capsys):
    from vla_ros.policy.tiny import make_tiny_model

    arm = make_tiny_model(tmp_path / "arm", "arm7")
    with pytest.raises(DatasetError, match=r"is mobile3 but the init model .* is arm7"):
        train(_config(dataset, arm, tmp_path / "out"))
    with pytest.raises(DatasetError, match="not a vla_ros dataset"):
        train(_config(tmp_path, arm, tmp_path / "out2"))
    code = main(
        ["train", "--dataset", str(dataset), "--init", str(tmp_path / "none"), "--out", "x"]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_wrong_image_size_asks_for_a_rebuild(dataset, tmp_path):
    from vla_ros.policy.tiny import make_tiny_model

    wiring = make_tiny_model(tmp_path / "wiring", "mobile3")
    with pytest.raises(DatasetError, match=r"stores 64 px images but the model .* takes 224 px"):
        train(_config(dataset, wiring, tmp_path / "out"))


def test_keep_best_saves_the_lowest_validation_loss(dataset, learnable, tmp_path):
    import csv

    out = tmp_path / "best"
    config = _config(dataset, learnable, out, max_steps=None, epochs=3, lr=3e-2, keep_best=True)
    result = train(config)
    with (out / "training" / "metrics.csv").open() as handle:
        losses = [float(row["val_loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 3
    assert result.val_loss == pytest.approx(min(losses), rel=1e-3)
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert 0 < summary["best_step"] <= result.steps


def _weights_checksum(model_dir):
    import hashlib

    digest = hashlib.sha256()
    for name in ("model.safetensors", "policy_head.safetensors"):
        digest.update((model_dir / name).read_bytes())
    return digest.hexdigest()


def test_same_seed_and_data_give_the_same_weights_and_the_summary_says_what_stopped_it(
    dataset, learnable, tmp_path
):
    """A work budget (epochs) on CPU: two runs give bit-identical weights; another seed does not.
    What ended each run is recorded, so a run cut by the clock cannot pass for a full one."""
    runs = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        out = tmp_path / name
        train(_config(dataset, learnable, out, max_steps=None, epochs=2, seed=seed))
        summary = json.loads((out / "training" / "summary.json").read_text())
        runs[name] = (_weights_checksum(out), summary)
    assert runs["first"][0] == runs["again"][0]
    assert runs["first"][0] != runs["other"][0]
    summary = runs["first"][1]
    assert summary["stopped_by"] == "epochs"
    assert summary["steps"] == summary["planned_steps"]
    capped = tmp_path / "capped"
    train(_config(dataset, learnable, capped, max_steps=3))
    assert json.loads((capped / "training/summary.json").read_text())["stopped_by"] == "max_steps"


def test_the_train_cli_is_generated_from_train_config():
    """Each option's default exists once: parsing only the required ones gives TrainConfig's
    defaults, every CLI option sets its field, and out-of-range values are refused by name."""
    import argparse
    from dataclasses import MISSING, fields

    from vla_ros.learn.config import TrainConfig

    parser = argparse.ArgumentParser()
    TrainConfig.add_arguments(parser)
    required = ["--dataset", "d", "--init", "i", "--out", "o"]
    parsed = TrainConfig.from_args(parser.parse_args(required))
    for spec in fields(TrainConfig):
        if spec.default is not MISSING:
            assert getattr(parsed, spec.name) == spec.default, spec.name
    flags = TrainConfig.from_args(
        parser.parse_args(
            [
                *required,
                "--no-progress",
                "--recipe",
                "lora",
                "--lora-vision",
                "--lr-schedule",
                "cosine",
            ]
        )
    )
    assert (flags.progress, flags.lora_vision, flags.lr_schedule) == (False, True, "cosine")
    with pytest.raises(SystemExit):
        parser.parse_args([*required, "--recipe", "adapter"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig.from_args(parser.parse_args([*required, "--batch-size", "0"]))
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig("d", "i", "o", recipe="adapter")

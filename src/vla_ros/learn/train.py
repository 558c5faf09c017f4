"""`vla-ros train`: fine-tune a vla_ros model directory on a dataset, on Hugging Face Accelerate.

The model is the deployed one, not a copy: `PaliGemmaBackbone` (the same `sequence`/`decode`
the inference path runs, batched by `batch_features`) and `LSTMPolicyHead` (its LSTM and MLPs),
so what is trained is exactly what `VLAPolicy` loads. Which weights train is the recipe's
(`recipes.py`: `head`, `lora`, `full`); with a frozen trunk the ACT feature of every dataset frame
is computed once (the trunk runs once per frame per dataset, not per epoch).

Losses are RoboVLMs': Huber (delta 1) on the normalised motion + 0.01 BCE-with-logits on the
gripper, both masked by the chunk mask; actions are clipped to the dataset's [min, max] and mapped
to [-1, 1] by the `ActionCodec` the policy decodes with. Histories are spaced as deployed
(`samples.py`). Processes, devices, DDP/FSDP and mixed precision are Accelerate's: run it with
`accelerate launch` (or torchrun) for several GPUs or machines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.learn.config import TrainConfig
from vla_ros.learn.recipes import recipe_for
from vla_ros.learn.samples import (
    HistoryCadence,
    chunk_target,
    deployed_trigger,
    draw_gaps,
    event_cadence,
    history_indices,
)
from vla_ros.learn.spec import DatasetError
from vla_ros.learn.store import MIN_AXIS_RANGE, Dataset, LoadedSplit

GRIPPER_WEIGHT = 0.01
HUBER_DELTA = 1.0
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "training"
KEEP_CHECKPOINTS = 2
PROBE_SAMPLES = 256
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
)


@dataclass
class TrainResult:
    out: Path
    steps: int
    val_loss: float
    val_nrmse: float
    samples_per_s: float


def robovlms_loss(
    motion: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    logits: torch.Tensor | None = None,
    gripper_target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, motion, gripper) losses: Huber(delta 1) + 0.01 BCE-with-logits, chunk-masked."""
    valid = mask.sum().clamp_min(1.0)
    huber = F.huber_loss(motion, target, delta=HUBER_DELTA, reduction="none").mean(-1)
    motion_loss = (huber * mask).sum() / valid
    gripper_loss = torch.zeros((), device=motion.device)
    if logits is not None and gripper_target is not None:
        bce = F.binary_cross_entropy_with_logits(logits, gripper_target, reduction="none")
        gripper_loss = (bce * mask).sum() / valid
    return motion_loss + GRIPPER_WEIGHT * gripper_loss, motion_loss, gripper_loss


class SampleSet(torch.utils.data.Dataset):
    """One sample per (episode, frame): history rows as deployed + the target chunk.

    The order and the history gaps are a pure function of (seed, epoch, index), so a resumed
    run and every process see the same samples.
    """

    def __init__(
        self,
        split: LoadedSplit,
        normalized: np.ndarray,
        window: int,
        chunk: int,
        cadence: HistoryCadence,
        seed: int,
        shuffle: bool,
    ) -> None:
        self.split = split
        self.normalized = normalized
        self.window = window
        self.chunk = chunk
        self.cadence = cadence
        self.seed = seed
        self.shuffle = shuffle
        self.targets = [
            (int(start), int(length), t)
            for start, length in zip(split.episode_starts, split.episode_lengths, strict=True)
            for t in range(int(length))
        ]
        self.order = np.arange(len(self.targets))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.targets))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start, length, t = self.targets[int(self.order[index])]
        if self.cadence.mode == "step":
            gaps = np.ones(self.window - 1, dtype=np.int64)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])
            gaps = draw_gaps(rng, self.cadence, self.window - 1)
        rows = history_indices(t, self.window, gaps) + start
        padded = np.full(self.window, -1, dtype=np.int64)
        padded[: rows.size] = rows
        episode = self.normalized[start : start + length]
        target, mask = chunk_target(episode, t, self.chunk)
        item = {
            "rows": torch.from_numpy(padded),
            "length": torch.tensor(rows.size),
            "target": torch.from_numpy(target.astype(np.float32)),
            "mask": torch.from_numpy(mask),
        }
        if self.split.gripper is not None:
            grip, _ = chunk_target(self.split.gripper[start : start + length, None], t, self.chunk)
            item["gripper"] = torch.from_numpy((grip[:, 0] > 0).astype(np.float32))
        return item


class TrainablePolicy(nn.Module):
    """Backbone + head as one module for Accelerate; no backbone: the features come cached (a
    recipe that does not train the trunk)."""

    def __init__(self, backbone: nn.Module | None, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        inverse: torch.Tensor,
        lengths: torch.Tensor,
        features: torch.Tensor | None = None,
        pixels: torch.Tensor | None = None,
        text_ids: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unique-frame features -> per-sample histories (B, T) -> the head's chunk."""
        if features is None:
            features = self.backbone.batch_features(pixels, text_ids)
        features = features.to(torch.float32)
        history = features[inverse.clamp_min(0)] * (inverse >= 0).unsqueeze(-1)
        packed = nn.utils.rnn.pack_padded_sequence(
            history, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.head.rnn(packed)
        return self.head.decode(h_n[-1])


def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct frame rows of a batch and, per history slot, its index into them (-1 = pad)."""
    flat = rows.reshape(-1)
    valid = flat >= 0
    unique, inverse = torch.unique(flat[valid], return_inverse=True)
    full = torch.full_like(flat, -1)
    full[valid] = inverse
    return unique, full.reshape(rows.shape)


def _param_checksum(module: nn.Module) -> str:
    """SHA-256 over all parameters: equal across ranks iff the ranks hold the same model."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Trainer:
    """One run: data, model, Accelerate objects, loop, validation, export."""

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.utils import set_seed

        self.config = config
        self.recipe = recipe_for(config)
        self.out = Path(config.out)
        mixed = config.mixed_precision
        if mixed == "auto":
            mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        plugin = None
        if config.strategy == "fsdp":
            from accelerate import FullyShardedDataParallelPlugin

            plugin = FullyShardedDataParallelPlugin()
        self.accelerator = Accelerator(
            # Without CUDA, processes started by `accelerate launch`/torchrun form a gloo group.
            cpu=not torch.cuda.is_available(),
            gradient_accumulation_steps=config.grad_accum,
            mixed_precision=mixed,
            fsdp_plugin=plugin,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        if self.accelerator.device.type == "cpu":
            # The cores are shared by the processes: more intra-op threads than that thrash.
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            torch.set_num_threads(max(1, cores // self.accelerator.num_processes))
        set_seed(config.seed)
        self.is_main = self.accelerator.is_main_process

    # -- data and model -------------------------------------------------------------------

    def load(self) -> None:
        from vla_ros.policy.backbone import PaliGemmaBackbone
        from vla_ros.policy.codec import ActionCodec
        from vla_ros.policy.config import HEAD_FILE, PolicyConfig
        from vla_ros.policy.head import LSTMPolicyHead, load_head_weights
        from vla_ros.policy.model import check_model_dir

        cfg = self.config
        dataset = Dataset(cfg.dataset)
        init = check_model_dir(cfg.init)
        policy = PolicyConfig.load(init)
        if dataset.action_space != policy.action_space:
            raise DatasetError(
                f"dataset {cfg.dataset} is {dataset.action_space} but the init model {init} is "
                f"{policy.action_space}: the head's outputs would not match the actions"
            )
        self.train_split = dataset.load("train")
        self.val_split = dataset.load("validation")
        if self.train_split.frame_count == 0:
            raise DatasetError(f"dataset {cfg.dataset}: the train split is empty")
        backbone = PaliGemmaBackbone.from_pretrained(init)
        if backbone.image_size != dataset.image_size:
            raise DatasetError(
                f"dataset {cfg.dataset} stores {dataset.image_size} px images but the model "
                f"{init} takes {backbone.image_size} px: rebuild it with --model-dir {init}"
            )
        head = LSTMPolicyHead.from_config(policy)
        token = load_head_weights(init / HEAD_FILE, head)
        with torch.no_grad():
            backbone.action_token.copy_(token)
        low, high = dataset.norm_bounds
        period = 1.0 / dataset.control_rate_hz
        if cfg.history == "event":
            trigger = deployed_trigger(policy.action_space, cfg.trigger_params)
            cadence = event_cadence(trigger, period, policy.chunk)
        else:
            cadence = HistoryCadence("step", 1, 1)
        self.cadence = cadence
        extra = {k: v for k, v in policy.extra.items() if k != "untrained_head"}
        extra["history_cadence"] = cadence.to_dict(period)
        extra["trained"] = {
            "recipe": cfg.recipe,
            "dataset": str(cfg.dataset),
            "init": str(init),
            "seed": cfg.seed,
        }
        window = cfg.window or policy.window
        self.policy = replace(
            policy,
            window=window,
            action_min=tuple(low),
            action_max=tuple(high),
            action_scale=(1.0,) * policy.motion_dof,
            action_period_s=period,
            model_id=f"{policy.model_id}+{cfg.recipe}",
            extra=extra,
        )
        self.policy.validate()
        codec = ActionCodec.from_config(self.policy)
        stats = dataset.meta["stats"]["action"]
        self.moving_axes = torch.tensor(
            [hi - lo >= MIN_AXIS_RANGE for lo, hi in zip(stats["min"], stats["max"], strict=True)]
        )
        self.init_dir = init
        self.sets = {}
        splits = (
            ("train", self.train_split),
            ("validation", self.val_split),
            ("train_probe", self.train_split),
        )
        for name, split in splits:
            normalized = codec.normalize(split.actions) if split.frame_count else split.actions
            self.sets[name] = SampleSet(
                split,
                normalized.astype(np.float32),
                window,
                policy.chunk,
                cadence,
                cfg.seed,
                shuffle=name == "train",
            )
        self.instruction_ids = {}
        self.backbone = backbone
        self.head = head
        trunk = self.recipe.prepare(backbone)
        if not self.recipe.trains_trunk:
            self.cache = {
                name: self._cache_features(split)
                for name, split in (("train", self.train_split), ("validation", self.val_split))
            }
        self.model = TrainablePolicy(trunk, head)

    def _text_ids(self, instructions: list[str]) -> list[torch.Tensor]:
        ids = []
        for text in instructions:
            if text not in self.instruction_ids:
                self.instruction_ids[text] = self.backbone.text_ids(text).cpu()
            ids.append(self.instruction_ids[text])
        return ids

    def _pixels(self, split: LoadedSplit, rows: np.ndarray) -> torch.Tensor:
        return torch.cat([self.backbone.preprocess(split.frames[int(r)]).cpu() for r in rows])

    @torch.no_grad()
    def _cache_features(self, split: LoadedSplit, batch: int = 64) -> torch.Tensor:
        """ACT feature of every frame of a split with the frozen trunk (once per dataset)."""
        backbone = self.backbone.to(self.accelerator.device).eval()
        out = torch.zeros(split.frame_count, backbone.hidden_size)
        for begin in range(0, split.frame_count, batch):
            rows = np.arange(begin, min(begin + batch, split.frame_count))
            pixels = self._pixels(split, rows).to(backbone.device)
            ids = [
                t.to(backbone.device) for t in self._text_ids([split.instructions[r] for r in rows])
            ]
            out[rows] = backbone.batch_features(pixels, ids).float().cpu()
        return out

    def _inputs(self, name: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        unique, inverse = _unique_rows(batch["rows"].cpu())
        device = self.accelerator.device
        inputs: dict[str, Any] = {
            "inverse": inverse.to(device),
            "lengths": batch["length"].cpu(),
        }
        if not self.recipe.trains_trunk:
            inputs["features"] = self.cache[_cache_key(name)][unique].to(device)
        else:
            split = self.val_split if name == "validation" else self.train_split
            rows = unique.numpy()
            inputs["pixels"] = self._pixels(split, rows).to(device)
            inputs["text_ids"] = [
                t.to(device) for t in self._text_ids([split.instructions[r] for r in rows])
            ]
        return inputs

    # -- loop -------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg = self.config
        acc = self.accelerator
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # Accelerate steps a prepared scheduler once per process on every optimizer step, so
        # the schedule counts optimizer steps times processes. The horizon is a list because a
        # time budget shortens it once the step rate is known.
        horizon = [self._planned_steps()]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_factor(cfg, lambda: horizon[0] * acc.num_processes)
        )
        loaders = {
            name: torch.utils.data.DataLoader(
                data,
                batch_size=cfg.batch_size,
                shuffle=False,
                num_workers=cfg.workers,
                drop_last=False,
            )
            for name, data in self.sets.items()
        }
        model, optimizer, scheduler, train_loader = acc.prepare(
            self.model, optimizer, scheduler, loaders["train"]
        )
        val_loader = acc.prepare(loaders["validation"]) if len(self.sets["validation"]) else None
        # A fixed slice of the training samples: the loss the optimiser actually lowers.
        probe = torch.utils.data.Subset(
            self.sets["train_probe"], range(min(PROBE_SAMPLES, len(self.sets["train_probe"])))
        )
        probe_loader = acc.prepare(torch.utils.data.DataLoader(probe, batch_size=cfg.batch_size))
        state = {"step": 0, "epoch": 0, "batch": 0, "samples": 0, "seconds": 0.0}
        ckpt_root = self.out / CHECKPOINT_DIR
        if cfg.resume:
            latest = _latest_checkpoint(ckpt_root)
            if latest is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {ckpt_root}")
            acc.load_state(str(latest))
            state.update(json.loads((latest / "trainer_state.json").read_text()))
            state.pop("stopped_by", None)  # what ended the earlier run does not end this one
            if self.is_main:
                print(f"resumed from {latest} (step {state['step']}, epoch {state['epoch']})")
        if "step_budget" in state:
            horizon[0] = state["step_budget"]
        log_dir = self.out / LOG_DIR
        writer = None
        if self.is_main:
            log_dir.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(log_dir / "tensorboard"))
        deadline = (
            time.monotonic() + cfg.max_minutes * 60.0 - state["seconds"]
            if cfg.max_minutes
            else None
        )
        budgeted = deadline is not None and cfg.lr_schedule == "cosine"
        planned = self._planned_steps()
        if "initial_val_loss" not in state:
            state["initial_val_loss"] = self._validate(model, val_loader)[0]
            state["initial_train_loss"] = self._validate(model, probe_loader, "train_probe")[0]
        # Timed from here, after the initial validation, which would otherwise count as steps.
        timing = (state["step"], time.monotonic())
        progress = _Progress(cfg.progress and self.is_main, horizon[0], state["step"])
        val_loss = val_nrmse = float("nan")
        best: dict[str, torch.Tensor] | None = None
        stop = False
        run_start = time.monotonic() - state["seconds"]
        for epoch in range(state["epoch"], cfg.epochs):
            self.sets["train"].set_epoch(epoch)
            loader = train_loader
            if state["batch"]:
                loader = acc.skip_first_batches(train_loader, state["batch"])
            model.train()
            running = []
            for batch in loader:
                with acc.accumulate(model):
                    motion, logits = model(**self._inputs("train", batch))
                    loss, _, _ = robovlms_loss(
                        motion, batch["target"], batch["mask"], logits, batch.get("gripper")
                    )
                    acc.backward(loss)
                    if acc.sync_gradients:
                        acc.clip_grad_norm_(trainable, 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                state["batch"] += 1
                state["samples"] += int(batch["target"].shape[0]) * acc.num_processes
                running.append(float(loss.detach()))
                if not acc.sync_gradients:
                    continue
                state["step"] += 1
                state["seconds"] = time.monotonic() - run_start
                rate = state["samples"] / max(state["seconds"], 1e-9)
                progress.update(state["step"], running[-1], rate, epoch)
                if writer is not None:
                    writer.add_scalar("train/loss", running[-1], state["step"])
                    writer.add_scalar("train/samples_per_s", rate, state["step"])
                calibrated = state["step"] == timing[0] + cfg.budget_calibration_steps
                if budgeted and "step_budget" not in state and calibrated:
                    horizon[0] = state["step_budget"] = self._steps_in_budget(
                        state["step"], timing, deadline, planned
                    )
                    progress.set_total(horizon[0])
                if state["step"] % cfg.checkpoint_every == 0:
                    self._checkpoint(state, ckpt_root)
                if cfg.max_steps and state["step"] >= cfg.max_steps:
                    state["stopped_by"] = "max_steps"
                elif self._deadline_passed(deadline) or state["step"] >= state.get(
                    "step_budget", math.inf
                ):
                    # The clock, not the work budget, ended it (unless the budget fit it all).
                    state["stopped_by"] = "max_minutes" if state["step"] < planned else "epochs"
                if state.get("stopped_by"):
                    stop = True
                    break
            if not stop:
                state["epoch"] = epoch + 1
                state["batch"] = 0
            val_loss, val_nrmse = self._validate(model, val_loader)
            if budgeted and not stop and "step_budget" in state and state["step"] > timing[0]:
                # Each epoch re-times the run: a rate measured in 30 steps under a passing load
                # would otherwise fix the whole schedule.
                horizon[0] = state["step_budget"] = self._steps_in_budget(
                    state["step"], timing, deadline, planned
                )
                progress.set_total(horizon[0])
            if cfg.keep_best and val_loss < state.get("best_val_loss", math.inf):
                state["best_val_loss"], state["best_step"] = val_loss, state["step"]
                best = _trainable_copy(acc.unwrap_model(model))
            train_loss = float(np.mean(running)) if running else float("nan")
            if self.is_main:
                self._log_epoch(log_dir, epoch, state, train_loss, val_loss, val_nrmse, writer)
            if stop:
                break
        progress.close()
        if best is not None and val_loss > state["best_val_loss"]:
            _restore(acc.unwrap_model(model), best)
            val_loss, val_nrmse = self._validate(model, val_loader)
        state["final_train_loss"] = self._validate(model, probe_loader, "train_probe")[0]
        state["final_lr"] = float(optimizer.param_groups[0]["lr"])
        self._checkpoint(state, ckpt_root)
        state["seconds"] = time.monotonic() - run_start
        samples_per_s = state["samples"] / max(state["seconds"], 1e-9)
        self._export(model, state, val_loss, val_nrmse, samples_per_s)
        if writer is not None:
            writer.close()
        return TrainResult(self.out, state["step"], val_loss, val_nrmse, samples_per_s)

    def _deadline_passed(self, deadline: float | None) -> bool:
        """Whether time is up, agreed by all ranks: each reads its own clock, and a rank that
        stopped alone would leave the others waiting in their next gradient all-reduce."""
        if deadline is None:
            return False
        passed = time.monotonic() >= deadline
        if self.accelerator.num_processes == 1:
            return passed
        votes = torch.tensor(float(passed), device=self.accelerator.device)
        return bool(self.accelerator.reduce(votes, "sum") > 0)

    def _steps_in_budget(
        self, step: int, timing: tuple[int, float], deadline: float, planned: int
    ) -> int:
        """The last step that fits before `deadline` at the rate of the steps timed since
        `timing` (step, clock) (95 % of the time left: validation passes take the rest). Ranks
        agree on the mean of their estimates, so their schedules stay identical."""
        now = time.monotonic()
        per_step = (now - timing[1]) / max(1, step - timing[0])
        fit = step + 0.95 * max(0.0, deadline - now) / max(per_step, 1e-9)
        agreed = self.accelerator.reduce(
            torch.tensor(fit, dtype=torch.float64, device=self.accelerator.device), "mean"
        )
        budget = min(planned, max(step + 1, int(agreed)))
        if self.is_main:
            print(f"time budget: {budget} of {planned} planned steps fit; the cosine ends there")
        return budget

    def _planned_steps(self) -> int:
        """Optimizer steps of the whole run (what a cosine schedule decays over)."""
        cfg = self.config
        per_process = math.ceil(
            len(self.sets["train"]) / (cfg.batch_size * self.accelerator.num_processes)
        )
        return cfg.max_steps or cfg.epochs * math.ceil(per_process / cfg.grad_accum)

    @torch.no_grad()
    def _validate(
        self, model: nn.Module, loader: Any, name: str = "validation"
    ) -> tuple[float, float]:
        """Mean masked loss and action NRMSE (RMSE / range, over the axes that move)."""
        if loader is None:
            return float("nan"), float("nan")
        model.eval()
        acc = self.accelerator
        sums = torch.zeros(3 + self.policy.motion_dof, device=acc.device)
        for batch in loader:
            motion, logits = model(**self._inputs(name, batch))
            loss, _, _ = robovlms_loss(
                motion, batch["target"], batch["mask"], logits, batch.get("gripper")
            )
            mask = batch["mask"]
            weight = mask.sum()
            err = ((motion.float() - batch["target"]) / 2.0) ** 2 * mask.unsqueeze(-1)
            sums[0] += loss * weight
            sums[1] += weight
            sums[2] += 1
            sums[3:] += err.sum(dim=(0, 1))
        sums = acc.reduce(sums, reduction="sum")
        loss = float(sums[0] / sums[1].clamp_min(1))
        per_axis = torch.sqrt(sums[3:] / sums[1].clamp_min(1)).cpu()
        moving = self.moving_axes
        nrmse = float(per_axis[moving].mean()) if bool(moving.any()) else 0.0
        model.train()
        return loss, nrmse

    def _log_epoch(
        self,
        log_dir: Path,
        epoch: int,
        state: dict[str, Any],
        train_loss: float,
        val_loss: float,
        val_nrmse: float,
        writer: Any,
    ) -> None:
        path = log_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            if new:
                out.writerow(
                    ["epoch", "step", "train_loss", "val_loss", "val_nrmse", "samples_per_s", "s"]
                )
            rate = state["samples"] / max(state["seconds"], 1e-9)
            out.writerow(
                [
                    epoch,
                    state["step"],
                    f"{train_loss:.6f}",
                    f"{val_loss:.6f}",
                    f"{val_nrmse:.6f}",
                    f"{rate:.2f}",
                    f"{state['seconds']:.1f}",
                ]
            )
        if writer is not None:
            writer.add_scalar("val/loss", val_loss, state["step"])
            writer.add_scalar("val/action_nrmse", val_nrmse, state["step"])
        print(
            f"epoch {epoch}: step {state['step']} train loss {train_loss:.4f} "
            f"val loss {val_loss:.4f} val NRMSE {val_nrmse:.4f}",
            flush=True,
        )

    def _checkpoint(self, state: dict[str, Any], root: Path) -> None:
        acc = self.accelerator
        path = root / f"step-{state['step']:07d}"
        acc.wait_for_everyone()
        acc.save_state(str(path))
        if self.is_main:
            (path / "trainer_state.json").write_text(json.dumps(state) + "\n")
            for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _export(
        self,
        model: nn.Module,
        state: dict[str, Any],
        val_loss: float,
        val_nrmse: float,
        samples_per_s: float,
    ) -> None:
        """Write the complete model directory (merged LoRA) and the run summary."""
        from vla_ros.policy.backbone import quiet_progress
        from vla_ros.policy.config import HEAD_FILE
        from vla_ros.policy.head import save_head_weights

        acc = self.accelerator
        unwrapped = acc.unwrap_model(model)
        checksum = _param_checksum(unwrapped)
        checksums = _gather_strings(acc, checksum)
        acc.wait_for_everyone()
        if not self.is_main:
            return
        self.recipe.before_save(self.backbone)
        backbone = self.backbone
        with quiet_progress():
            backbone.vlm.save_pretrained(str(self.out))
        for name in TOKENIZER_FILES:
            source = self.init_dir / name
            if source.is_file():
                shutil.copy2(source, self.out / name)
        self.policy.save(self.out)
        save_head_weights(
            self.out / HEAD_FILE, backbone.action_token.detach().float().cpu(), self.head.cpu()
        )
        summary = {
            "config": asdict(self.config),
            "steps": state["step"],
            "epochs_done": state["epoch"],
            "samples": state["samples"],
            "seconds": round(state["seconds"], 2),
            "samples_per_s": round(samples_per_s, 2),
            "best_step": state.get("best_step"),
            "step_budget": state.get("step_budget"),
            "planned_steps": self._planned_steps(),
            "stopped_by": state.get("stopped_by", "epochs"),
            "final_lr": state["final_lr"],
            "initial_val_loss": state["initial_val_loss"],
            "initial_train_loss": state["initial_train_loss"],
            "final_train_loss": state["final_train_loss"],
            "val_loss": val_loss,
            "val_nrmse": val_nrmse,
            "history_cadence": self.cadence.to_dict(self.policy.action_period_s),
            "world_size": acc.num_processes,
            "rank_checksums": checksums,
            "ranks_identical": len(set(checksums)) == 1,
        }
        (self.out / LOG_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _plot_curves(self.out / LOG_DIR)


def _lr_factor(config: TrainConfig, total_steps: int | Callable[[], int]) -> Any:
    """Linear warm-up, then constant or a cosine decay to zero at the planned last step (a
    pure function of the step and the horizon, so every rank and a resumed run use the same
    rate). `total_steps` may be a callable: a time budget fixes the horizon during the run."""
    warmup = max(1, config.warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        total = total_steps() if callable(total_steps) else total_steps
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _gather_strings(acc: Any, text: str) -> list[str]:
    """Every rank's string, in rank order (gloo and NCCL both carry tensors, so bytes go as one)."""
    data = torch.tensor(list(bytes.fromhex(text)), dtype=torch.int64, device=acc.device)
    gathered = acc.gather(data.unsqueeze(0)).reshape(acc.num_processes, -1).cpu()
    return [bytes(row.tolist()).hex() for row in gathered]


def _trainable_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


@torch.no_grad()
def _restore(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    for name, param in module.named_parameters():
        if name in values:
            param.copy_(values[name].to(param.device))


def _cache_key(name: str) -> str:
    return "validation" if name == "validation" else "train"


def _latest_checkpoint(root: Path) -> Path | None:
    candidates = sorted(p for p in root.glob("step-*") if (p / "trainer_state.json").is_file())
    return candidates[-1] if candidates else None


def _plot_curves(log_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = log_dir / "metrics.csv"
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(steps, [float(r["train_loss"]) for r in rows], label="train")
    ax_loss.plot(steps, [float(r["val_loss"]) for r in rows], label="validation")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_err.plot(steps, [float(r["val_nrmse"]) for r in rows])
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("validation action NRMSE")
    fig.tight_layout()
    fig.savefig(log_dir / "curves.png", dpi=80)
    plt.close(fig)


class _Progress:
    """A rich progress bar with loss and throughput (main process only; silent otherwise)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=done, info="")

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def update(self, step: int, loss: float, rate: float, epoch: int) -> None:
        if self._bar is not None:
            info = f"epoch {epoch} loss {loss:.4f} {rate:.1f} samples/s"
            self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def train(config: TrainConfig) -> TrainResult:
    """Run one training (any process of a launched group); the main process writes --out."""
    from vla_ros.policy.config import POLICY_FILE

    out = Path(config.out)
    if not config.resume and out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise ValueError(f"{out} exists and is not empty (use --overwrite or --resume)")
        # A run killed before its first save leaves only checkpoints/ and training/ behind.
        ours = ((out / POLICY_FILE).is_file(), (out / "checkpoints").is_dir())
        if not any((*ours, (out / "training").is_dir())):
            raise ValueError(f"refusing to overwrite {out}: it is not a vla_ros model directory")
        if out.resolve() == Path(config.init).resolve():
            raise ValueError(f"--out {out} is the --init model; write the result elsewhere")
    trainer = _Trainer(config)
    if trainer.is_main and config.overwrite and not config.resume and out.exists():
        shutil.rmtree(out)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.load()
        result = trainer.run()
        # The other ranks leave _export while the main one still writes: a rank that tears
        # its gloo group down first can abort ("terminate called without an active
        # exception"), so all of them end together.
        trainer.accelerator.wait_for_everyone()
        return result
    finally:
        trainer.accelerator.end_training()

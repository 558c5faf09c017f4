"""The on-disk dataset: Parquet files any Arrow reader opens, plus metadata and a dataset card.

Layout (Hugging Face `datasets` parquet conventions, so `load_dataset("parquet", data_dir=...)`
and plain `pyarrow.parquet.read_table` both work without vla_ros)::

    DIR/data/train.parquet        one row per control step of the training episodes
    DIR/data/validation.parquet   the same for the held-out episodes (split by episode)
    DIR/meta.json                 spec, per-axis action statistics, episode table, skip counts
    DIR/README.md                 dataset card (topics, counts, durations, action ranges)

Row columns: episode_index, frame_index, timestamp (s from episode start), instruction,
action (list of float32, SI units: m/s, rad/s), gripper (arm only, 1 open / -1 closed) and
image ({bytes: PNG at the model input size, path}), the layout of the `datasets` Image feature.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros import action_space as action_spaces
from vla_ros.learn.spec import DatasetError, DatasetSpec

FORMAT = "vla_ros.dataset/1"
META_FILE = "meta.json"
CARD_FILE = "README.md"
SPLITS = ("train", "validation")
MIN_AXIS_RANGE = 0.01
"""An axis whose demonstrations span less than this (vy on a differential drive; the arm's
rotation, only holding the hand level: ~0.002 rad/s) gets its bounds widened by it on each
side: min < max, and its jitter is not stretched over [-1, 1] where the loss would fit it."""


def _split_episodes(count: int, fraction: float, seed: int) -> list[str]:
    """Per-episode split labels; at least one validation episode when there are two or more."""
    labels = ["train"] * count
    n_val = round(fraction * count)
    n_val = max(1, min(n_val, count - 1)) if fraction > 0 and count >= 2 else 0
    for index in np.random.default_rng(seed).permutation(count)[:n_val]:
        labels[int(index)] = "validation"
    return labels


def action_stats(actions: np.ndarray) -> dict[str, list[float]]:
    """Per-axis statistics and the normalisation bounds (min/max, widened if degenerate)."""
    low = actions.min(axis=0).astype(np.float64)
    high = actions.max(axis=0).astype(np.float64)
    norm_low, norm_high = low.copy(), high.copy()
    flat = (high - low) < MIN_AXIS_RANGE
    norm_low[flat] -= MIN_AXIS_RANGE
    norm_high[flat] += MIN_AXIS_RANGE
    return {
        "min": low.tolist(),
        "max": high.tolist(),
        "mean": actions.mean(axis=0).astype(np.float64).tolist(),
        "std": actions.std(axis=0).astype(np.float64).tolist(),
        "q01": np.quantile(actions, 0.01, axis=0).tolist(),
        "q99": np.quantile(actions, 0.99, axis=0).tolist(),
        "norm_min": norm_low.tolist(),
        "norm_max": norm_high.tolist(),
    }


def _hf_features(dof: int, gripper: bool) -> dict[str, Any]:
    """The `datasets` feature description stored in the Parquet schema metadata."""

    def value(dtype: str) -> dict[str, str]:
        return {"dtype": dtype, "_type": "Value"}

    features: dict[str, Any] = {
        "episode_index": value("int32"),
        "frame_index": value("int32"),
        "timestamp": value("float64"),
        "instruction": value("string"),
        "action": {"feature": value("float32"), "length": dof, "_type": "Sequence"},
        "image": {"_type": "Image"},
    }
    if gripper:
        features["gripper"] = value("float32")
    return features


def write_dataset(
    out: Path,
    episodes: Sequence[Any],
    spec: DatasetSpec,
    skipped: dict[str, int],
    errors: list[str],
) -> dict[str, int]:
    """Write Parquet splits, meta.json and the card; returns episodes per split."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    labels = _split_episodes(len(episodes), spec.val_fraction, spec.seed)
    has_gripper = spec.gripper_topic is not None
    features = _hf_features(spec.motion_dof, has_gripper)
    table_rows: list[dict[str, Any]] = []
    for split in SPLITS:
        columns: dict[str, list[Any]] = {name: [] for name in features}
        for index, (episode, label) in enumerate(zip(episodes, labels, strict=True)):
            if label != split:
                continue
            for k in range(episode.length):
                ok, png = cv2.imencode(".png", episode.frames[k][..., ::-1])
                if not ok:
                    raise DatasetError(f"{episode.bag}: cannot encode frame {k} as PNG")
                columns["episode_index"].append(index)
                columns["frame_index"].append(k)
                columns["timestamp"].append(k * spec.period_s)
                columns["instruction"].append(episode.instruction)
                columns["action"].append(episode.actions[k].tolist())
                columns["image"].append({"bytes": png.tobytes(), "path": None})
                if has_gripper:
                    columns["gripper"].append(float(episode.gripper[k]))
        schema = pa.schema(
            [
                ("episode_index", pa.int32()),
                ("frame_index", pa.int32()),
                ("timestamp", pa.float64()),
                ("instruction", pa.string()),
                ("action", pa.list_(pa.float32(), spec.motion_dof)),
                ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                *([("gripper", pa.float32())] if has_gripper else []),
            ],
            metadata={"huggingface": json.dumps({"info": {"features": features}})},
        )
        table = pa.Table.from_pydict(columns, schema=schema)
        pq.write_table(table, out / "data" / f"{split}.parquet", row_group_size=1024)
    for index, (episode, label) in enumerate(zip(episodes, labels, strict=True)):
        table_rows.append(
            {
                "episode_index": index,
                "bag": episode.bag,
                "instruction": episode.instruction,
                "length": episode.length,
                "start_ns": episode.start_ns,
                "split": label,
            }
        )
    train_actions = np.concatenate(
        [e.actions for e, label in zip(episodes, labels, strict=True) if label == "train"]
    )
    meta = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "action_space": spec.action_space,
        "motion_dof": spec.motion_dof,
        "control_rate_hz": spec.control_rate_hz,
        "image_size": spec.image_size,
        "stats": {"action": action_stats(train_actions)},
        "episodes": table_rows,
        "skipped": skipped,
        "errors": errors,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
    counts = {split: labels.count(split) for split in SPLITS}
    return counts


def record_build_time(out: Path, seconds: float, frames_per_s: float) -> None:
    """Add the build time to meta.json and (re)write the card, which quotes it."""
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    meta["build"] = {"seconds": round(seconds, 3), "frames_per_s": round(frames_per_s, 1)}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (out / CARD_FILE).write_text(dataset_card(meta), encoding="utf-8")


def dataset_card(meta: dict[str, Any]) -> str:
    """A Hugging Face style dataset card (YAML front matter + tables) from meta.json."""
    spec = meta["spec"]
    stats = meta["stats"]["action"]
    episodes = meta["episodes"]
    period = 1.0 / meta["control_rate_hz"]
    axes = axis_names(meta["action_space"])
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train.parquet",
        "  - split: validation",
        "    path: data/validation.parquet",
        "tags: [robotics, vla_ros, rosbag2]",
        "---",
        "",
        f"# vla_ros dataset ({meta['action_space']})",
        "",
        "Built by `vla-ros dataset build` from rosbag2 recordings; readable with `pyarrow` or "
        "`datasets` alone.",
        "",
        "| topic | role |",
        "|---|---|",
        f"| `{spec['camera_topic']}` | camera, stored as PNG at {meta['image_size']} px |",
        f"| `{spec['instruction_topic']}` | instruction (episode ends when it changes) |",
        f"| `{spec['action_topic']}` | commanded motion {', '.join(axes)} |",
    ]
    if spec.get("gripper_topic"):
        lines.append(f"| `{spec['gripper_topic']}` | gripper command |")
    for topic in spec["marker_topics"]:
        lines.append(f"| `{topic}` | episode marker |")
    total = sum(e["length"] for e in episodes)
    lines += [
        "",
        f"- control rate {meta['control_rate_hz']:g} Hz (one row every {period:g} s)",
        f"- episodes: {len(episodes)} "
        f"(train {sum(e['split'] == 'train' for e in episodes)}, "
        f"validation {sum(e['split'] == 'validation' for e in episodes)})",
        f"- frames: {total} ({total * period:.1f} s); "
        f"episode length {min(e['length'] for e in episodes) * period:.1f}-"
        f"{max(e['length'] for e in episodes) * period:.1f} s",
        f"- instructions: {len({e['instruction'] for e in episodes})} distinct",
    ]
    if "build" in meta:
        lines.append(
            f"- built in {meta['build']['seconds']:.1f} s ({meta['build']['frames_per_s']:.0f} "
            "frames/s)"
        )
    lines += ["", "| axis | min | max | mean | std |", "|---|---|---|---|---|"]
    for i, axis in enumerate(axes):
        lines.append(
            f"| {axis} | {stats['min'][i]:.4f} | {stats['max'][i]:.4f} | "
            f"{stats['mean'][i]:.4f} | {stats['std'][i]:.4f} |"
        )
    if meta["skipped"]:
        lines += ["", "Skipped (reason: count): "]
        lines += [f"- {reason}: {count}" for reason, count in sorted(meta["skipped"].items())]
    return "\n".join(lines) + "\n"


def axis_names(action_space: str) -> tuple[str, ...]:
    return action_spaces.get(action_space).axes


@dataclass
class LoadedSplit:
    """One split in memory: frames decoded once, actions, and episode boundaries."""

    frames: np.ndarray  # (N, S, S, 3) uint8
    actions: np.ndarray  # (N, dof) float32
    gripper: np.ndarray | None
    instructions: list[str]  # per frame
    episode_starts: np.ndarray  # (E,) row of each episode's first frame
    episode_lengths: np.ndarray  # (E,)

    @property
    def frame_count(self) -> int:
        return int(self.actions.shape[0])


class Dataset:
    """A built dataset directory: metadata plus lazily loaded splits."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise DatasetError(
                f"{self.path} is not a vla_ros dataset ({META_FILE} missing; "
                "build one with `vla-ros dataset build`)"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{meta_path}: not valid JSON: {exc}") from exc
        if self.meta.get("format") != FORMAT:
            raise DatasetError(
                f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT}"
            )

    @property
    def action_space(self) -> str:
        return str(self.meta["action_space"])

    @property
    def control_rate_hz(self) -> float:
        return float(self.meta["control_rate_hz"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def norm_bounds(self) -> tuple[list[float], list[float]]:
        stats = self.meta["stats"]["action"]
        return list(stats["norm_min"]), list(stats["norm_max"])

    def load(self, split: str) -> LoadedSplit:
        """Read one split, decoding every PNG once (frames are small at the model size)."""
        import cv2
        import pyarrow.parquet as pq

        if split not in SPLITS:
            raise DatasetError(f"split must be one of {list(SPLITS)}, got {split!r}")
        path = self.path / "data" / f"{split}.parquet"
        if not path.is_file():
            raise DatasetError(f"{path} is missing")
        table = pq.read_table(path)
        n = table.num_rows
        size = self.image_size
        frames = np.empty((n, size, size, 3), dtype=np.uint8)
        for i, cell in enumerate(table.column("image").to_pylist()):
            bgr = cv2.imdecode(np.frombuffer(cell["bytes"], np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape != (size, size, 3):
                raise DatasetError(f"{path}: row {i} has an unreadable or mis-sized image")
            frames[i] = bgr[..., ::-1]
        dof = int(self.meta["motion_dof"])
        actions = np.asarray(table.column("action").to_pylist(), dtype=np.float32).reshape(n, dof)
        gripper = (
            np.asarray(table.column("gripper").to_pylist(), dtype=np.float32)
            if "gripper" in table.column_names
            else None
        )
        episode = np.asarray(table.column("episode_index").to_pylist(), dtype=np.int64)
        if n:
            change = np.flatnonzero(np.diff(episode) != 0) + 1
            starts = np.concatenate([[0], change]).astype(np.int64)
        else:
            starts = np.zeros(0, dtype=np.int64)
        lengths = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
        return LoadedSplit(
            frames=frames,
            actions=actions,
            gripper=gripper,
            instructions=[str(s) for s in table.column("instruction").to_pylist()],
            episode_starts=starts,
            episode_lengths=lengths,
        )

    def summary(self) -> list[tuple[str, str]]:
        """Rows for `vla-ros dataset info`."""
        episodes = self.meta["episodes"]
        period = 1.0 / self.control_rate_hz
        frames = sum(e["length"] for e in episodes)
        stats = self.meta["stats"]["action"]
        rows = [
            ("path", str(self.path)),
            ("action_space", self.action_space),
            ("control rate", f"{self.control_rate_hz:g} Hz"),
            ("image size", f"{self.image_size} px"),
            (
                "episodes",
                f"{len(episodes)} (train {sum(e['split'] == 'train' for e in episodes)}, "
                f"validation {sum(e['split'] == 'validation' for e in episodes)})",
            ),
            ("frames", f"{frames} ({frames * period:.1f} s)"),
            ("instructions", str(len({e["instruction"] for e in episodes}))),
        ]
        for i, axis in enumerate(axis_names(self.action_space)):
            rows.append((f"action {axis}", f"[{stats['min'][i]:.3f}, {stats['max'][i]:.3f}]"))
        if self.meta.get("skipped"):
            skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.meta["skipped"].items()))
            rows.append(("skipped", skipped))
        if "build" in self.meta:
            rows.append(("build", f"{self.meta['build']['frames_per_s']:.0f} frames/s"))
        return rows

    def preview(self, out_png: str | Path, episodes: int = 4) -> Path:
        """First, middle and last frame plus the action traces of the first few episodes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        split = self.load("train")
        count = min(episodes, len(split.episode_starts))
        fig, axes = plt.subplots(count, 4, figsize=(12, 2.6 * count), squeeze=False)
        names = axis_names(self.action_space)
        period = 1.0 / self.control_rate_hz
        for row in range(count):
            start, length = int(split.episode_starts[row]), int(split.episode_lengths[row])
            for col, offset in enumerate((0, length // 2, length - 1)):
                ax = axes[row][col]
                ax.imshow(split.frames[start + offset])
                ax.set_axis_off()
                ax.set_title(f"t={offset * period:.1f}s", fontsize=8)
            ax = axes[row][3]
            t = np.arange(length) * period
            for i, name in enumerate(names):
                ax.plot(t, split.actions[start : start + length, i], label=name)
            ax.set_title(_ascii(split.instructions[start])[:48], fontsize=8)
            ax.legend(fontsize=6)
        fig.tight_layout()
        out_png = Path(out_png)
        fig.savefig(out_png, dpi=80)
        plt.close(fig)
        return out_png


def _ascii(text: str) -> str:
    """Matplotlib's default font has no Hangul; keep the plot title readable either way."""
    return text if text.isascii() else text.encode("unicode_escape").decode("ascii")

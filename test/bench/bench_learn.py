"""Learning throughput on this machine: dataset build frames/s, training samples/s per recipe.

A demonstration bag like the simulator's (224x224 rgb8 camera at 10 Hz, 20 Hz Twist commands)
is built into a 64 px dataset for the learnable tiny model, then each recipe trains for a fixed
number of steps (batch 8, one thread). Prints medians over repeats; writes learn.json to --out.

    python test/bench/bench_learn.py --out out/bench
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learn_support import write_toy_bag
from vla_ros import bench
from vla_ros.learn.build import build_dataset
from vla_ros.learn.spec import DatasetSpec
from vla_ros.learn.train import TrainConfig, train
from vla_ros.policy.tiny import make_tiny_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    started = bench.conditions()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        episodes = [(side, 0.3, "en") for side in ("left", "right")] * 4
        bag = write_toy_bag(root / "bag", episodes=episodes, seconds=4.0, size=224)
        model = make_tiny_model(root / "init", preset="learnable")
        rates = []
        for repeat in range(args.repeats):
            report = build_dataset(
                [bag], root / f"ds{repeat}", DatasetSpec(image_size=64, val_fraction=0.25)
            )
            rates.append(report.frames_per_s)
        results["dataset_build_frames_per_s"] = statistics.median(rates)
        print(f"dataset build: {statistics.median(rates):.0f} frames/s (224 px rgb8 -> 64 px)")
        for recipe in ("head", "lora", "full"):
            rates = []
            for repeat in range(args.repeats):
                config = TrainConfig(
                    dataset=str(root / "ds0"),
                    init=str(model),
                    out=str(root / f"{recipe}{repeat}"),
                    recipe=recipe,
                    max_steps=args.steps,
                    batch_size=8,
                    lr=1e-3,
                    progress=False,
                )
                started = time.perf_counter()
                result = train(config)
                rates.append(result.samples_per_s)
                if repeat == 0:
                    wall = time.perf_counter() - started
                    print(f"  {recipe}: first run {wall:.1f} s wall incl. load/cache/export")
            results[f"train_{recipe}_samples_per_s"] = statistics.median(rates)
            print(f"train --recipe {recipe}: {statistics.median(rates):.1f} samples/s (batch 8)")
    args.out.mkdir(parents=True, exist_ok=True)
    bench.write_report(args.out / "learn.json", results, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

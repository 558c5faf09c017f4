"""Policy core benchmark: per-stage step latency (tiny model), preprocessing fast path vs the HF
processor, window vs stateful head at the real RoboVLMs head size, and real per-frame FLOPs.

    python test/bench/bench_policy.py --out out/bench [--model-dir DIR] [--repeats N]

Prints medians and ratios measured in this run and writes bench_policy.json to --out.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vla_ros import bench


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def bench_step(model_dir: Path, repeats: int) -> dict[str, dict[str, float]]:
    from vla_ros.policy.model import VLAPolicy

    policy = VLAPolicy.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    results = {}
    for name, shape in (("224x224", (224, 224, 3)), ("480x640", (480, 640, 3))):
        frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(4)]
        stages: dict[str, list[float]] = {}
        for k in range(repeats + 2):
            chunk = policy.step(frames[k % 4], "pick up the red cup and put it in the bowl")
            if k >= 2:
                for stage, value in chunk.timings_ms.items():
                    stages.setdefault(stage, []).append(value)
        results[name] = {stage: statistics.median(v) for stage, v in stages.items()}
        policy.reset()
    return results


def bench_preprocess(model_dir: Path, repeats: int) -> dict[str, float]:
    from transformers import AutoImageProcessor

    from vla_ros.policy.backbone import PaliGemmaBackbone

    backbone = PaliGemmaBackbone.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ours = median_ms(lambda: backbone.preprocess(frame), repeats)
    hf = median_ms(lambda: processor(images=frame, return_tensors="pt"), repeats)
    native = frame[:224, :224].copy()
    ours_native = median_ms(lambda: backbone.preprocess(native), repeats)
    hf_native = median_ms(lambda: processor(images=native, return_tensors="pt"), repeats)
    return {
        "ours_480x640_ms": ours,
        "hf_480x640_ms": hf,
        "speedup_480x640": hf / ours,
        "ours_224_ms": ours_native,
        "hf_224_ms": hf_native,
        "speedup_224": hf_native / ours_native,
    }


def bench_head(repeats: int) -> dict[str, float]:
    from vla_ros.policy.head import LSTMPolicyHead

    results = {}
    feature = torch.randn(2048)
    for mode in ("window", "stateful"):
        head = LSTMPolicyHead(2048, chunk=10, motion_dof=6, with_gripper=True, history_mode=mode)
        for _ in range(head.window):
            head.step(feature)
        results[f"{mode}_ms"] = median_ms(lambda h=head: h.step(feature), repeats)
    results["window_over_stateful"] = results["window_ms"] / results["stateful_ms"]
    return results


def bench_flops() -> dict[str, float]:
    from vla_ros.policy.config import PolicyConfig
    from vla_ros.policy.flops import frame_flops

    flops = frame_flops(policy=PolicyConfig.create("arm7", hidden_size=2048))
    return {key: value / 1e12 for key, value in flops.items() if key != "tokens"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    started = bench.conditions()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from vla_ros.policy.tiny import make_tiny_model

            model_dir = make_tiny_model(Path(tmp) / "tiny", "arm7", seed=0)
        report = {
            "threads": args.threads,
            "repeats": args.repeats,
            "step_ms": bench_step(model_dir, args.repeats),
            "preprocess": bench_preprocess(model_dir, args.repeats),
            "head_real_size": bench_head(args.repeats),
            "flops_tflop_paligemma_3b": bench_flops(),
        }

    print(f"policy step, tiny model, median ms ({args.repeats} runs, {args.threads} thread):")
    stages = list(next(iter(report["step_ms"].values())))
    print(f"  {'frame':<10}" + "".join(f"{s:>12}" for s in stages))
    for frame, values in report["step_ms"].items():
        print(f"  {frame:<10}" + "".join(f"{values[s]:>12.2f}" for s in stages))
    pre = report["preprocess"]
    print("preprocess, median ms:   ours      HF   HF/ours")
    for size in ("480x640", "224"):
        print(
            f"  {size:<18}{pre[f'ours_{size}_ms']:>9.2f}{pre[f'hf_{size}_ms']:>8.2f}"
            f"{pre[f'speedup_{size}']:>9.1f}x"
        )
    head = report["head_real_size"]
    print(
        f"head step at RoboVLMs size (LSTM 2048->1024 x4, window 8), median ms: window "
        f"{head['window_ms']:.2f}, stateful {head['stateful_ms']:.2f}, "
        f"ratio {head['window_over_stateful']:.1f}x"
    )
    flops = report["flops_tflop_paligemma_3b"]
    print(
        "paligemma-3b-pt-224 per frame (TFLOP): "
        + ", ".join(f"{k} {v:.3f}" for k, v in flops.items())
    )
    path = args.out / "bench_policy.json"
    bench.write_report(path, report, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

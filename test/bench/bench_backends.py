"""Trunk backends on this CPU: torch eager vs onnxruntime fp32 and INT8, tiny and mid-size model.

    python test/bench/bench_backends.py --out out/bench [--frames N] [--skip-mid]

Both models are arm7, so gripper decisions are compared too. Mid-size = PaliGemma-3B widths
(SigLIP So400m 1152 / Gemma 2048, MQA 8x256) with 2 vision and 1 decoder layer
(`vla_ros.policy.wide`): per layer the same GEMM shapes as the 3B model, and about its
vision:decoder FLOP split. Per backend: median trunk time per frame (preprocess + vision +
decoder, from `VLAPolicy.step`), the ratio to torch measured in this run, ACT-feature cosine /
action NRMSE / action max |delta| / gripper decisions against torch on the same frames, resident
and peak memory of a fresh process that loaded the policy and ran one step, and the export time.
INT8: dynamic (no bag) and static QDQ calibrated on a synthetic bag. Writes bench_backends.json
to --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vla_ros import bench

INSTRUCTIONS = ("go to the red box", "빨간 상자를 피해서 왼쪽으로 가")


_MEMORY_PROBE = """
import json, sys
import numpy as np
from vla_ros.policy.model import VLAPolicy
model_dir, backend, onnx_dir = sys.argv[1], sys.argv[2], sys.argv[3] or None
policy = VLAPolicy.from_pretrained(model_dir, backend=backend, onnx_dir=onnx_dir)
policy.step(np.zeros((224, 224, 3), np.uint8), "go to the red box")
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}))
"""


def memory_mb(model_dir: Path, backend: str, onnx_dir: Path | None) -> dict[str, float]:
    """Resident and peak memory of a fresh process that loaded the policy and ran one step."""
    import subprocess
    import sys

    args = [sys.executable, "-c", _MEMORY_PROBE, str(model_dir), backend, str(onnx_dir or "")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, check=True)
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rss_mb": raw["VmRSS"], "peak_mb": raw["VmHWM"]}


def samples(count: int) -> list:
    from vla_ros.policy.onnx_export import Sample

    rng = np.random.default_rng(5)
    return [
        Sample(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), INSTRUCTIONS[k % 2])
        for k in range(count)
    ]


def timed_export(model_dir: Path, out: Path, **kwargs: object) -> float | str:
    """Seconds the export took, or why it was refused (an INT8 export can miss the gate)."""
    from vla_ros.policy.onnx_export import ExportError, export_onnx

    start = time.perf_counter()
    try:
        export_onnx(model_dir, out, text_buckets=(32,), **kwargs)
    except ExportError as exc:
        return str(exc)
    return time.perf_counter() - start


def bench_model(name: str, model_dir: Path, frames: int, bag: Path) -> dict:
    from vla_ros.policy.model import VLAPolicy
    from vla_ros.policy.onnx_export import compare, run_policy

    exports = {
        "onnxruntime fp32": (model_dir / "onnx", {}),
        "onnxruntime int8 dynamic": (model_dir / "onnx-int8", {"precision": "int8"}),
        "onnxruntime int8 QDQ": (
            model_dir / "onnx-int8-qdq",
            {"precision": "int8", "calibration": bag},
        ),
    }
    export_s = {label: timed_export(model_dir, out, **kw) for label, (out, kw) in exports.items()}
    warm = samples(2)
    measured = samples(frames)
    rows: dict[str, dict] = {}
    reference = None
    for label in ("torch eager", *exports):
        if isinstance(export_s.get(label), str):
            print(f"{name}: {label} not benchmarked: {export_s[label]}")
            continue
        gc.collect()
        backend, onnx_dir = (
            ("torch", None) if label == "torch eager" else ("onnxruntime", exports[label][0])
        )
        policy = VLAPolicy.from_pretrained(model_dir, backend=backend, onnx_dir=onnx_dir)
        run_policy(policy, warm)
        result = run_policy(policy, measured)
        trunk = bench.spread(result.trunk_ms)
        row = {
            "trunk_ms": trunk["median"],
            "trunk_p10_ms": trunk["p10"],
            "trunk_p90_ms": trunk["p90"],
        }
        row.update(memory_mb(model_dir, backend, onnx_dir))
        if reference is None:
            reference = result
        else:
            row.update(compare(reference, result))
            row["export_s"] = export_s[label]
        rows[label] = row
        del policy
    base = rows["torch eager"]["trunk_ms"]
    for row in rows.values():
        row["speedup_vs_torch"] = base / row["trunk_ms"]
    print(f"\n{name} ({model_dir.name}), {frames} frames, torch threads {torch.get_num_threads()}")
    print(
        f"{'backend':<26}{'trunk ms':>10}{'x torch':>9}{'cosine':>11}{'NRMSE':>10}"
        f"{'max|d|':>10}{'gripper':>9}{'RSS MB':>9}{'peak MB':>9}"
    )
    for label, row in rows.items():
        cosine = f"{row['cosine_min']:.6f}" if "cosine_min" in row else "ref"
        nrmse = f"{row['action_nrmse']:.2e}" if "action_nrmse" in row else ""
        max_abs = f"{row['action_max_abs']:.1e}" if "action_max_abs" in row else ""
        gripper = {True: "same", False: "DIFFER", None: ""}[row.get("gripper_agree")]
        print(
            f"{label:<26}{row['trunk_ms']:>10.1f}{row['speedup_vs_torch']:>8.2f}x{cosine:>11}"
            f"{nrmse:>10}{max_abs:>10}{gripper:>9}{row['rss_mb']:>9.0f}{row['peak_mb']:>9.0f}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--frames", type=int, default=0, help="frames per backend (0: 20 / 5)")
    parser.add_argument("--skip-mid", action="store_true", help="tiny model only")
    args = parser.parse_args()
    started = bench.conditions()

    from vla_ros.bag.synth import SynthConfig, synthesize
    from vla_ros.policy.tiny import make_tiny_model
    from vla_ros.policy.wide import make_wide_model

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        root = Path(tmp)
        bag = root / "calib"
        synthesize(bag, SynthConfig(duration_s=3.0))
        tiny = make_tiny_model(root / "tiny", "arm7")
        results["tiny"] = bench_model("tiny", tiny, args.frames or 20, bag)
        if not args.skip_mid:
            wide = make_wide_model(
                root / "mid", vision_layers=2, text_layers=1, action_space="arm7"
            )
            results["mid"] = bench_model("mid-size (3B widths)", wide, args.frames or 5, bag)
    bench.write_report(args.out / "bench_backends.json", results, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

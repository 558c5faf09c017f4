"""`vla-ros make-tiny-model`, `fetch-model`, `import-robovlms` and `policy-info`.

torch/transformers are imported inside the handlers so `vla-ros --help` stays fast.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vla_ros.action_space import add_mode_argument


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the model commands on the `vla-ros` CLI (kept here, next to the code they run)."""
    tiny = subparsers.add_parser(
        "make-tiny-model", help="generate a tiny random PaliGemma policy (tests, demos; offline)"
    )
    tiny.add_argument("out", type=Path, help="model directory to write")
    add_mode_argument(tiny)
    tiny.add_argument("--seed", type=int, default=0, help="weight seed")
    tiny.add_argument("--overwrite", action="store_true", help="replace a non-empty directory")
    tiny.add_argument(
        "--preset",
        choices=("wiring", "learnable"),
        default="wiring",
        help="wiring: real token count, for tests; learnable: small enough to train on a CPU",
    )
    tiny.set_defaults(handler=_handle_make_tiny)

    fetch = subparsers.add_parser(
        "fetch-model", help="download the PaliGemma backbone from the Hugging Face hub"
    )
    fetch.add_argument(
        "--out", type=Path, default=Path("models/paligemma-3b-pt-224"), help="directory to write"
    )
    fetch.add_argument(
        "--repo-id", default="google/paligemma-3b-pt-224", help="Hugging Face repository"
    )
    fetch.add_argument(
        "--revision", default=None, help="branch, tag or commit (e.g. bfloat16; default: main)"
    )
    add_mode_argument(fetch, help_extra="; the head an --init-head writes")
    fetch.add_argument(
        "--init-head",
        action="store_true",
        help="also write a RANDOM, UNTRAINED head (bring-up tests only)",
    )
    fetch.set_defaults(handler=_handle_fetch)

    imp = subparsers.add_parser(
        "import-robovlms", help="convert a RoboVLMs PaliGemma+LSTM checkpoint to a model directory"
    )
    imp.add_argument("ckpt", type=Path, help="RoboVLMs checkpoint (.ckpt/.pt or DeepSpeed dir)")
    imp.add_argument("--config", type=Path, required=True, help="RoboVLMs training config JSON")
    imp.add_argument("--backbone", type=Path, required=True, help="HF PaliGemma directory")
    imp.add_argument("--out", type=Path, required=True, help="model directory to write")
    add_mode_argument(imp, default=None, help_extra="; else detected from the checkpoint")
    imp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    imp.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a pickled checkpoint (runs code from the file: trusted sources only)",
    )
    imp.set_defaults(handler=_handle_import)

    info = subparsers.add_parser(
        "policy-info", help="print a model directory's policy spec and per-frame FLOPs"
    )
    info.add_argument("model_dir", type=Path)
    info.add_argument("--text-tokens", type=int, default=20, help="instruction length assumed")
    info.set_defaults(handler=_handle_info)

    export = subparsers.add_parser(
        "export", help="export the trunk as ONNX graphs (onnxruntime/tensorrt backends)"
    )
    export.add_argument("model_dir", type=Path)
    export.add_argument("--format", choices=["onnx"], default="onnx", help="graph format")
    export.add_argument("--out", type=Path, default=None, help="default MODEL_DIR/onnx")
    export.add_argument(
        "--precision",
        choices=["fp32", "fp16", "bf16", "int8"],
        default="fp32",
        help="graph precision; int8 must pass the accuracy gate",
    )
    export.add_argument(
        "--calibration", type=Path, default=None, help="rosbag2 with camera frames (int8 QDQ)"
    )
    export.add_argument(
        "--text-buckets",
        default="16,32,64",
        help="comma-separated prefix lengths (instruction tokens + ACT), one graph each",
    )
    export.set_defaults(handler=_handle_export)

    engines = subparsers.add_parser(
        "build-engines",
        help="build (or check) the TensorRT engines of an ONNX export on this GPU",
    )
    engines.add_argument("model_dir", type=Path)
    engines.add_argument("--onnx-dir", type=Path, default=None, help="default MODEL_DIR/onnx")
    engines.add_argument(
        "--device", default="cuda:0", help="GPU the engines are built for (default: cuda:0)"
    )
    engines.set_defaults(handler=_handle_engines)


def _handle_make_tiny(args: argparse.Namespace) -> int:
    from vla_ros.policy.tiny import make_tiny_model

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        if not args.overwrite:
            raise ValueError(f"{args.out} exists and is not empty (pass --overwrite to replace it)")
        if args.out.is_dir():
            shutil.rmtree(args.out)
        else:
            args.out.unlink()
    out = make_tiny_model(args.out, args.mode, seed=args.seed, preset=args.preset)
    note = "train it with `vla-ros train`" if args.preset == "learnable" else "wiring tests only"
    print(f"wrote tiny {args.mode} model to {out} (random weights: {note})")
    return 0


def _handle_fetch(args: argparse.Namespace) -> int:
    from vla_ros.policy.hub import fetch_model

    out = fetch_model(
        args.out,
        repo_id=args.repo_id,
        action_space=args.mode,
        revision=args.revision,
        init_head=args.init_head,
    )
    print(f"backbone in {out}")
    if args.init_head:
        print(
            "WARNING: the policy head is RANDOM and UNTRAINED. Its actions are noise: use it "
            "only for bring-up tests, with the safety node in place.",
            file=sys.stderr,
        )
    else:
        print(
            "next: add trained head weights with `vla-ros import-robovlms CKPT --config "
            f"CONFIG.json --backbone {out} --out DIR`"
        )
    return 0


def _handle_import(args: argparse.Namespace) -> int:
    from vla_ros.policy.robovlms import import_checkpoint

    out = import_checkpoint(
        args.ckpt,
        args.config,
        args.backbone,
        args.out,
        action_space=args.mode,
        overwrite=args.overwrite,
        allow_pickle=args.allow_pickle,
    )
    print(f"wrote {out}")
    return 0


def _handle_info(args: argparse.Namespace) -> int:
    from vla_ros.policy.config import PolicyConfig
    from vla_ros.policy.flops import frame_flops
    from vla_ros.policy.integrity import check_model_files
    from vla_ros.policy.model import UNTRAINED_HEAD_KEY, check_model_dir, read_spec

    check_model_files(check_model_dir(args.model_dir))
    spec = read_spec(args.model_dir)
    config = PolicyConfig.load(args.model_dir)
    flops = frame_flops(args.model_dir, text_tokens=args.text_tokens, policy=config)
    rows = [
        ("model_id", spec.model_id),
        ("action_space", spec.action_space),
        ("chunk x period", f"{spec.chunk} x {spec.action_period_s:g} s"),
        ("window / history", f"{spec.window} / {config.history_mode}"),
        ("image_size", f"{spec.image_size} px"),
        ("tokens per frame", f"{flops['tokens']:.0f}"),
        ("vision", _gflop(flops["vision"])),
        ("decoder", _gflop(flops["decoder"])),
        ("head", _gflop(flops["head"])),
        ("total per frame", _gflop(flops["total"])),
        ("LM head (skipped)", _gflop(flops["lm_head_avoided"])),
    ]
    if config.extra.get(UNTRAINED_HEAD_KEY):
        rows.append(("WARNING", "untrained (random) policy head"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _handle_export(args: argparse.Namespace) -> int:
    from vla_ros.policy.onnx_export import export_onnx, manifest_summary

    try:
        buckets = [int(part) for part in args.text_buckets.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"--text-buckets must be integers, got {args.text_buckets!r}") from exc
    manifest = export_onnx(
        args.model_dir,
        args.out,
        precision=args.precision,
        calibration=args.calibration,
        text_buckets=buckets,
    )
    out = args.out or args.model_dir / "onnx"
    print(f"wrote {out} (parity verified against torch)")
    rows = manifest_summary(manifest)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _handle_engines(args: argparse.Namespace) -> int:
    from vla_ros.policy.model import VLAPolicy

    policy = VLAPolicy.from_pretrained(
        args.model_dir, device=args.device, backend="tensorrt", onnx_dir=args.onnx_dir
    )
    print(f"TensorRT engines ready in {policy.backbone.engine_dir}")
    return 0


def _gflop(value: float) -> str:
    return f"{value / 1e9:,.3f} GFLOP"

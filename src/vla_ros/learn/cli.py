"""`vla-ros dataset build|info` and `vla-ros train`; heavy imports stay inside the handlers."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vla_ros.action_space import add_mode_argument
from vla_ros.learn.config import TrainConfig


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the learning commands on the `vla-ros` CLI."""
    dataset = subparsers.add_parser("dataset", help="build and inspect training datasets")
    commands = dataset.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="rosbags -> Parquet episodes + stats + card")
    build.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories or files")
    build.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    build.add_argument("--spec", type=Path, default=None, help="dataset.yaml (topic map, rules)")
    add_mode_argument(build, default=None, help_extra=" (default: --spec's, else mobile3)")
    build.add_argument(
        "--camera-topic",
        default=None,
        help="Image or CompressedImage topic of the frames "
        "(default: --spec's, else /camera/image_raw)",
    )
    build.add_argument(
        "--instruction-topic",
        default=None,
        help="instruction topic (std_msgs/String) (default: --spec's, else /vla/instruction)",
    )
    build.add_argument(
        "--action-topic",
        default=None,
        help="Twist/TwistStamped command the policy learns (default: --spec's, else /cmd_vel)",
    )
    build.add_argument(
        "--gripper-topic",
        default=None,
        help="gripper command topic; arm7 needs it, mobile3 must not have it (default: --spec's)",
    )
    build.add_argument(
        "--control-rate",
        type=float,
        default=None,
        metavar="HZ",
        help="rate of the resampled timeline; becomes the policy's action period "
        "(default: --spec's, else 10)",
    )
    build.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="side of the stored frames, the model's input size; --model-dir overrides it "
        "(default: --spec's, else 224)",
    )
    build.add_argument(
        "--camera-image-size",
        type=int,
        default=None,
        metavar="PX",
        help="the camera node's image_size at deployment (config/*.yaml: 224)",
    )
    build.add_argument(
        "--model-dir", type=Path, default=None, help="take the image size from this model"
    )
    build.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of episodes held out for validation, 0-0.9 (default: --spec's, else 0.1)",
    )
    build.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the train/validation episode split (default: --spec's, else 0)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    build.add_argument("--no-preview", action="store_true", help="skip preview.png")
    build.set_defaults(handler=_handle_build)

    info = commands.add_parser("info", help="summary of a built dataset (+ preview PNG)")
    info.add_argument("dataset", type=Path)
    info.add_argument("--preview", type=Path, default=None, help="write a preview PNG here")
    info.set_defaults(handler=_handle_info)

    train = subparsers.add_parser("train", help="train a policy on a dataset (Accelerate)")
    TrainConfig.add_arguments(train)
    train.set_defaults(handler=_handle_train)


def _handle_build(args: argparse.Namespace) -> int:
    from vla_ros.learn.build import build_dataset
    from vla_ros.learn.spec import DatasetSpec
    from vla_ros.learn.store import Dataset

    image_size, resample = args.image_size, None
    if args.model_dir is not None:
        from vla_ros.policy.backbone import PREPROCESSOR_FILE, ImagePreprocessing

        preprocessing = ImagePreprocessing.from_file(args.model_dir / PREPROCESSOR_FILE)
        image_size, resample = preprocessing.size, preprocessing.resample
    spec = DatasetSpec.load(
        args.spec,
        action_space=args.mode,
        camera_topic=args.camera_topic,
        instruction_topic=args.instruction_topic,
        action_topic=args.action_topic,
        gripper_topic=args.gripper_topic,
        control_rate_hz=args.control_rate,
        image_size=image_size,
        camera_image_size=args.camera_image_size,
        resample=resample,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    report = build_dataset(args.bags, args.out, spec, overwrite=args.overwrite, progress=print)
    if not args.no_preview:
        Dataset(args.out).preview(args.out / "preview.png")
    print(
        f"wrote {report.out}: {report.episodes} episode(s) (train {report.train_episodes}, "
        f"validation {report.val_episodes}), {report.frames} frames in {report.seconds:.1f} s "
        f"({report.frames_per_s:.0f} frames/s)"
    )
    if report.skipped:
        print("skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())))
    return 0


def _handle_info(args: argparse.Namespace) -> int:
    from vla_ros.learn.store import Dataset

    dataset = Dataset(args.dataset)
    rows = dataset.summary()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.preview is not None:
        print(f"preview: {dataset.preview(args.preview)}")
    return 0


def _handle_train(args: argparse.Namespace) -> int:
    from vla_ros.learn.train import train

    config = TrainConfig.from_args(args)
    result = train(config)
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(
        f"wrote {result.out}: {result.steps} step(s), val loss {result.val_loss:.4f}, "
        f"action NRMSE {result.val_nrmse:.4f}, {result.samples_per_s:.1f} samples/s"
    )
    return 0

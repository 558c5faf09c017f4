"""Calibration and held-out frames for INT8 export, read from a rosbag2 recording.

Camera frames (sensor_msgs/Image or CompressedImage, the first image topic the bag has) are
decoded to model frames as the camera node does; each frame is paired with the latest
instruction before it (String topics named `.../instruction`: other String topics, such as the
sim's episode JSON, are not instructions; frames before any instruction use the first one).
Frames are spread evenly over the bag; every fourth one is held out for the accuracy gate and
never used for calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_FRAMES = 48
HOLD_OUT_EVERY = 4
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INSTRUCTION_TYPE = "std_msgs/msg/String"
FALLBACK_INSTRUCTION = "go to the red box"


@dataclass(frozen=True)
class Sample:
    """One model input: an RGB frame at the model's size and the instruction it is paired with."""

    frame: np.ndarray
    instruction: str


def calibration_samples(
    bag: str | Path, size: int, max_frames: int = MAX_FRAMES
) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held-out) samples from `bag`; ValueError when it has too few frames."""
    from vla_ros.bag.io import BagReader, deserialize
    from vla_ros.core.image import compressed_msg_to_frame, image_msg_to_frame

    path = Path(bag)
    if not path.exists():
        raise FileNotFoundError(f"calibration bag {path} does not exist")
    with BagReader(path) as reader:
        info = reader.info()
        images = [t for t in info.topics if t.msgtype in IMAGE_TYPES and t.count > 0]
        if not images:
            raise ValueError(f"{path}: no camera frames (no {' or '.join(IMAGE_TYPES)} topic)")
        camera = images[0]
        texts = [
            t.name
            for t in info.topics
            if t.msgtype == INSTRUCTION_TYPE and t.count > 0 and t.name.endswith("instruction")
        ]
        topics = [camera.name, *texts]
        step = max(1, camera.count // max_frames)
        frames: list[tuple[object, int]] = []
        instructions: list[str] = []
        index = 0
        for message in reader.messages(topics):
            if message.topic != camera.name:
                text = deserialize(message.data, message.msgtype, message.topic).data.strip()
                if text:
                    instructions.append(text)
                continue
            if index % step == 0 and len(frames) < max_frames:
                msg = deserialize(message.data, message.msgtype, message.topic)
                if message.msgtype.endswith("CompressedImage"):
                    frame = compressed_msg_to_frame(msg, size)
                else:
                    frame = image_msg_to_frame(msg, size)
                frames.append((frame, len(instructions)))
            index += 1
    if len(frames) < 2 * HOLD_OUT_EVERY:
        raise ValueError(
            f"{path}: {len(frames)} camera frames on {camera.name}; INT8 calibration needs at "
            f"least {2 * HOLD_OUT_EVERY}"
        )
    first = instructions[0] if instructions else FALLBACK_INSTRUCTION
    samples = [
        Sample(frame, instructions[seen - 1] if seen else first)  # type: ignore[arg-type]
        for frame, seen in frames
    ]
    held_out = samples[HOLD_OUT_EVERY - 1 :: HOLD_OUT_EVERY]
    calibration = [s for k, s in enumerate(samples) if k % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    return calibration, held_out

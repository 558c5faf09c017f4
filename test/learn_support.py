"""Demonstration bags for the dataset and trainer tests: what a robot logs, written ROS-free.

The toy task is learnable from pixels and language: a red blob sits left or right of the image
centre; "steer left"/"왼쪽으로" asks to turn toward it with wz = gain * offset, "steer right" the
mirror. The camera is raw rgb8 (header-stamped), the instruction a std_msgs/String, the command a
geometry_msgs/Twist without header (so bag time is used), exactly like a stack recording.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vla_ros.bag.io import BagWriter, typestore

START_NS = 1_700_000_000_000_000_000
INSTRUCTIONS = {
    "left": ("steer left", "왼쪽으로 돌아"),
    "right": ("steer right", "오른쪽으로 돌아"),
}


def _time(ns: int):
    store = typestore()
    return store.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def image_msg(rgb: np.ndarray, stamp_ns: int):
    store = typestore()
    header = store.types["std_msgs/msg/Header"](stamp=_time(stamp_ns), frame_id="camera")
    height, width = rgb.shape[:2]
    return store.types["sensor_msgs/msg/Image"](
        header=header,
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )


def twist_msg(vx: float, vy: float, wz: float):
    store = typestore()
    vec = store.types["geometry_msgs/msg/Vector3"]
    return store.types["geometry_msgs/msg/Twist"](
        linear=vec(x=vx, y=vy, z=0.0), angular=vec(x=0.0, y=0.0, z=wz)
    )


def string_msg(text: str):
    return typestore().types["std_msgs/msg/String"](data=text)


def blob_frame(offset: float, size: int = 48, phase: float = 0.0) -> np.ndarray:
    """A grey frame with a red blob at horizontal `offset` in [-1, 1] from the centre."""
    frame = np.full((size, size, 3), 90, dtype=np.uint8)
    frame[: size // 3] = (150, 170, 200)
    cx = int((offset * 0.4 + 0.5) * size)
    cy = size // 2 + int(3 * math.sin(phase))
    r = max(2, size // 8)
    frame[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = (220, 30, 30)
    return frame


def write_toy_bag(
    path: Path,
    episodes: Sequence[tuple[str, float, str]] = (("left", 0.6, "en"), ("right", -0.4, "en")),
    seconds: float = 3.0,
    fps: float = 10.0,
    cmd_hz: float = 20.0,
    gap_s: float = 1.0,
    nan_at: float | None = None,
    camera_topic: str = "/camera/image_raw",
    size: int = 48,
) -> Path:
    """One bag with consecutive episodes (side, start offset, language), separated by `gap_s`."""
    store = typestore()
    with BagWriter(path, overwrite=True) as writer:
        writer.add_topic(camera_topic, "sensor_msgs/msg/Image")
        writer.add_topic("/vla/instruction", "std_msgs/msg/String")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        t0 = START_NS
        for side, offset, language in episodes:
            text = INSTRUCTIONS[side][0 if language == "en" else 1]
            writer.write(
                "/vla/instruction",
                t0,
                store.serialize_cdr(string_msg(text), "std_msgs/msg/String"),
            )
            sign = 1.0 if side == "left" else -1.0
            steps = int(seconds * cmd_hz)
            for k in range(steps):
                t = t0 + int(k * 1e9 / cmd_hz)
                x = offset * math.exp(-0.5 * k / cmd_hz)
                wz = 0.8 * sign * (1.0 + x) / 2.0
                if nan_at is not None and abs(k / cmd_hz - nan_at) < 1e-9:
                    wz = float("nan")
                data = store.serialize_cdr(twist_msg(0.2, 0.0, wz), "geometry_msgs/msg/Twist")
                writer.write("/cmd_vel", t + 3_000_000, data)
                if k % round(cmd_hz / fps) == 0:
                    msg = image_msg(blob_frame(x, size, phase=k * 0.3), t)
                    writer.write(
                        camera_topic,
                        t + 5_000_000,
                        store.serialize_cdr(msg, "sensor_msgs/msg/Image"),
                    )
            t0 += int((seconds + gap_s) * 1e9)
    return path

"""A camera-view animation of an episode: the frames the policy saw, its predicted path drawn on
the floor, and the instruction, written as a GIF.

The path the inference node publishes (`/vla/predicted_path`) is in the robot's base frame; it is
projected into the image through the simulated camera's own pose and field of view, read from the
MuJoCo model, so the overlay lands where the robot would drive and moves with the camera if the
world changes. ROS-free: callers read the bag and hand over arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_GIF_BYTES = 5 * 1024 * 1024
"""What the README and the demo allow one animation to weigh."""
CAPTION_PX = 30
PATH_COLOUR = (255, 220, 0)
INSET_PX = 64
INSET_PX_PER_M = 60.0


@dataclass(frozen=True)
class PinholeCamera:
    """A MuJoCo camera in its body's frame: `rotation` columns are the camera's x (image right),
    y (image up) and z (backwards: MuJoCo cameras look along -z) axes."""

    position: np.ndarray
    rotation: np.ndarray
    fovy_deg: float
    size: int

    @classmethod
    def from_model(cls, model: object, name: str, size: int) -> PinholeCamera:
        camera = model.camera(name)  # type: ignore[attr-defined]
        rotation = np.asarray(model.cam_mat0[camera.id], dtype=float).reshape(3, 3)  # type: ignore[attr-defined]
        return cls(
            position=np.asarray(model.cam_pos[camera.id], dtype=float),  # type: ignore[attr-defined]
            rotation=rotation,
            fovy_deg=float(model.cam_fovy[camera.id]),  # type: ignore[attr-defined]
            size=int(size),
        )

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (u, v) of (N, 3) body-frame points and whether each lies in front of the lens."""
        local = (np.asarray(points, dtype=float) - self.position) @ self.rotation
        depth = -local[:, 2]
        in_front = depth > 1e-3
        focal = (self.size / 2.0) / math.tan(math.radians(self.fovy_deg) / 2.0)
        safe = np.where(in_front, depth, 1.0)
        u = self.size / 2.0 + focal * local[:, 0] / safe
        v = self.size / 2.0 - focal * local[:, 1] / safe
        return np.stack([u, v], axis=1), in_front


def mobile_camera(scenario: object, image_size: int) -> tuple[PinholeCamera, float]:
    """The mobile world's egocentric camera and the floor's height in the base frame."""
    from vla_ros.sim.world import MobileWorld

    world = MobileWorld(scenario, image_size=image_size)  # type: ignore[arg-type]
    base = world.model.body("base").id
    floor_z = -float(world.model.body_pos[base][2])
    return PinholeCamera.from_model(world.model, world.camera, image_size), floor_z


Pose2D = tuple[float, float, float]
"""x, y, yaw of the base in the odometry frame."""


def pose_at(poses: Sequence[tuple[int, Pose2D]], t_ns: int) -> Pose2D | None:
    """The newest (time, pose) at or before t_ns; poses are sorted by time."""
    times = [t for t, _ in poses]
    index = int(np.searchsorted(times, t_ns, side="right")) - 1
    return poses[index][1] if index >= 0 else None


def rebase(path_xy: np.ndarray, then: Pose2D, now: Pose2D) -> np.ndarray:
    """A path given in the base frame at pose `then`, expressed in the base frame at `now`, so
    it stays put on the floor while the robot drives along it."""
    xy = np.asarray(path_xy, dtype=float).reshape(-1, 2)
    c0, s0 = math.cos(then[2]), math.sin(then[2])
    world = np.column_stack(
        [then[0] + c0 * xy[:, 0] - s0 * xy[:, 1], then[1] + s0 * xy[:, 0] + c0 * xy[:, 1]]
    )
    dx, dy = world[:, 0] - now[0], world[:, 1] - now[1]
    c1, s1 = math.cos(now[2]), math.sin(now[2])
    return np.column_stack([c1 * dx + s1 * dy, -s1 * dx + c1 * dy])


def floor_points(path_xy: np.ndarray, floor_z: float) -> np.ndarray:
    """(N, 2) base-frame path points lifted onto the floor plane (z = floor_z in the base frame)."""
    xy = np.asarray(path_xy, dtype=float).reshape(-1, 2)
    return np.column_stack([xy, np.full(len(xy), floor_z)])


def draw_frame(
    rgb: np.ndarray,
    caption: str,
    path_xy: np.ndarray | None,
    camera: PinholeCamera,
    floor_z: float,
    font: object | None = None,
) -> object:
    """One animation frame (a PIL image): the camera image, the projected path, the caption."""
    from PIL import Image, ImageDraw

    frame = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + CAPTION_PX), (20, 20, 20))
    frame.paste(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)), (0, CAPTION_PX))
    draw = ImageDraw.Draw(frame)
    draw.multiline_text((4, 2), caption, fill=(255, 255, 255), font=font)
    if path_xy is not None and len(path_xy) > 1:
        pixels, in_front = camera.project(floor_points(path_xy, floor_z))
        visible = [
            (float(u), float(v) + CAPTION_PX)
            for (u, v), ok in zip(pixels, in_front, strict=True)
            if ok
        ]
        if len(visible) > 1:
            draw.line(visible, fill=PATH_COLOUR, width=3)
            for u, v in visible[1:]:
                draw.ellipse((u - 2, v - 2, u + 2, v + 2), fill=PATH_COLOUR)
        _draw_inset(draw, path_xy, frame.width, frame.height)
    return frame


def _draw_inset(draw: object, path_xy: np.ndarray, width: int, height: int) -> None:
    """A top-down view of the predicted path in the corner: a chunk covers about a second, which
    the egocentric camera mostly does not see (its view of the floor starts further out)."""
    left, top = width - INSET_PX - 4, height - INSET_PX - 4
    draw.rectangle(  # type: ignore[attr-defined]
        (left, top, left + INSET_PX, top + INSET_PX), fill=(30, 30, 30), outline=(200, 200, 200)
    )
    origin_u, origin_v = left + INSET_PX / 2.0, top + INSET_PX - 8
    xy = np.asarray(path_xy, dtype=float).reshape(-1, 2)
    points = [(origin_u - y * INSET_PX_PER_M, origin_v - x * INSET_PX_PER_M) for x, y in xy]
    draw.polygon(  # type: ignore[attr-defined]
        [(origin_u, origin_v - 5), (origin_u - 4, origin_v + 3), (origin_u + 4, origin_v + 3)],
        fill=(90, 140, 255),
    )
    draw.line(points, fill=PATH_COLOUR, width=2)  # type: ignore[attr-defined]


def caption_font(size: int = 11) -> object:
    """DejaVu Sans, which matplotlib ships, so the caption looks the same on every machine. It has
    no Hangul: the demo animates its English episode."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def wrap(text: str, width: int) -> str:
    """At most two lines of `width` characters, the rest elided."""
    import textwrap

    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder=" ...")]
    return "\n".join(lines)


def write_gif(
    frames: Sequence[object], out: Path, fps: float, max_bytes: int = MAX_GIF_BYTES
) -> Path:
    """Write an animated GIF, dropping every other frame (and halving the rate) until it fits
    `max_bytes`; ValueError if even two frames do not."""
    if not frames:
        raise ValueError("no frames to animate")
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen, rate = list(frames), float(fps)
    while True:
        duration_ms = max(20, round(1000.0 / rate))
        first, *rest = chosen
        first.save(  # type: ignore[attr-defined]
            out, save_all=True, append_images=rest, duration=duration_ms, loop=0, optimize=True
        )
        if out.stat().st_size <= max_bytes:
            return out
        if len(chosen) <= 2:
            out.unlink()
            raise ValueError(f"{out}: even {len(chosen)} frames exceed {max_bytes} bytes")
        chosen, rate = chosen[::2], rate / 2.0

"""Synthetic camera bags: deterministic scenes that exercise event triggering and safety.

The scene alternates static stretches (nothing changes, so no scene-change event may fire) with
moving stretches (shapes slide and bounce), and instructions (English and Korean) and e-stop
events arrive at set times. The timeline is stored in the bag's custom data so that tests can
assert against what the bag contains without re-deriving it.
"""

from __future__ import annotations

import array
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.bag.io import DEFAULT_VERSION, STORAGES, BagError, BagWriter, serialize

TIMELINE_KEY = "vla_ros.synth"
IMAGE_MODES = ("raw", "compressed", "both")
BANDS = 8
"""Vertical colour bands of the background; panning them changes the whole view."""
ENCODINGS = ("rgb8", "bgr8")
DEFAULT_START_NS = 1_700_000_000_000_000_000

DEFAULT_INSTRUCTIONS = ("move forward to the red box", "빨간 상자 쪽으로 천천히 이동해")
"""Sent at 5 % (at most 0.5 s) and at 60 % of the bag unless `instructions` is given."""


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize. Times are seconds from the start of the bag."""

    duration_s: float = 10.0
    fps: float = 10.0
    width: int = 320
    height: int = 240
    images: str = "both"
    encoding: str = "rgb8"
    jpeg_quality: int = 85
    segments: tuple[tuple[str, float], ...] = (("static", 2.0), ("moving", 2.0))
    shapes: int = 3
    pan_speed: float = 0.25
    noise_std: float = 1.0  # a live camera's; 0 gives byte-identical static frames (a frozen one)
    instructions: tuple[tuple[float, str], ...] | None = None
    estops: tuple[tuple[float, bool], ...] = ()
    scan: bool = False
    scan_hz: float = 10.0
    odom: bool = False
    odom_hz: float = 20.0
    storage: str = "sqlite3"
    version: int = DEFAULT_VERSION
    seed: int = 0
    start_ns: int = DEFAULT_START_NS
    frame_id: str = "camera"
    image_topic: str = "/camera/image_raw"
    instruction_topic: str = "/vla/instruction"
    estop_topic: str = "/vla/estop"
    scan_topic: str = "/scan"
    odom_topic: str = "/odom"

    def instruction_events(self) -> tuple[tuple[float, str], ...]:
        if self.instructions is not None:
            return tuple(self.instructions)
        first, second = DEFAULT_INSTRUCTIONS
        return ((min(0.5, 0.05 * self.duration_s), first), (0.6 * self.duration_s, second))

    def validate(self) -> None:
        """Raise BagError naming the first bad field."""
        checks = [
            (self.duration_s > 0 and math.isfinite(self.duration_s), "duration_s must be > 0"),
            (0 < self.fps <= 1000, "fps must be in (0, 1000]"),
            (8 <= self.width <= 8192 and 8 <= self.height <= 8192, "width/height in [8, 8192]"),
            (self.images in IMAGE_MODES, f"images must be one of {list(IMAGE_MODES)}"),
            (self.encoding in ENCODINGS, f"encoding must be one of {list(ENCODINGS)}"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in [1, 100]"),
            (self.storage in STORAGES, f"storage must be one of {list(STORAGES)}"),
            (bool(self.segments), "segments must not be empty"),
            (0 <= self.shapes <= 32, "shapes must be in [0, 32]"),
            (0 <= self.pan_speed <= 10, "pan_speed must be in [0, 10] image widths per second"),
            (0 <= self.noise_std <= 64, "noise_std must be in [0, 64]"),
            (0 < self.scan_hz <= 1000 and 0 < self.odom_hz <= 1000, "scan_hz/odom_hz in (0, 1000]"),
            (self.start_ns >= 0, "start_ns must be >= 0"),
        ]
        for ok, reason in checks:
            if not ok:
                raise BagError(f"synth: {reason}")
        for kind, length in self.segments:
            if kind not in ("static", "moving") or not length > 0:
                raise BagError(f"synth: bad segment ({kind!r}, {length!r})")
        for when, _ in (*self.instruction_events(), *self.estops):
            if not 0 <= when < self.duration_s:
                raise BagError(f"synth: event time {when} outside [0, {self.duration_s})")


@dataclass(frozen=True)
class Timeline:
    """Ground truth of a synthetic bag, in seconds from its start."""

    start_ns: int
    duration_s: float
    fps: float
    moving: tuple[tuple[float, float], ...]
    static: tuple[tuple[float, float], ...]
    instructions: tuple[tuple[float, str], ...]
    estops: tuple[tuple[float, bool], ...]
    frames: int
    topics: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Timeline:
        raw = json.loads(text)
        return cls(
            start_ns=int(raw["start_ns"]),
            duration_s=float(raw["duration_s"]),
            fps=float(raw["fps"]),
            moving=tuple((float(a), float(b)) for a, b in raw["moving"]),
            static=tuple((float(a), float(b)) for a, b in raw["static"]),
            instructions=tuple((float(t), str(s)) for t, s in raw["instructions"]),
            estops=tuple((float(t), bool(s)) for t, s in raw["estops"]),
            frames=int(raw["frames"]),
            topics=dict(raw.get("topics", {})),
        )

    def is_moving(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.moving)


def read_timeline(bag: str | Path) -> Timeline:
    """The timeline stored by `synthesize` in the bag's custom data."""
    from vla_ros.bag.io import bag_info

    info = bag_info(bag)
    text = info.custom_data.get(TIMELINE_KEY)
    if text is None:
        raise BagError(f"{bag}: not a synthetic bag (no {TIMELINE_KEY} custom data)")
    return Timeline.from_json(text)


def segment_spans(
    segments: Sequence[tuple[str, float]], duration_s: float
) -> dict[str, list[tuple[float, float]]]:
    """The repeating segment pattern laid over [0, duration)."""
    spans: dict[str, list[tuple[float, float]]] = {"static": [], "moving": []}
    t = 0.0
    while t < duration_s:
        for kind, length in segments:
            end = min(t + length, duration_s)
            spans[kind].append((t, end))
            t = end
            if t >= duration_s:
                break
    return spans


class Scene:
    """Shapes over a banded wall that pans while moving (the robot turning); `render(t)` is a pure
    function of time and seed."""

    def __init__(self, config: SynthConfig, moving: Sequence[tuple[float, float]]) -> None:
        rng = np.random.default_rng(config.seed)
        self.config = config
        self._moving = list(moving)
        w, h = config.width, config.height
        bands = rng.uniform(20, 235, size=(BANDS, 3)).astype(np.float32)
        columns = bands[(np.arange(w) * BANDS) // w]
        background = np.repeat(columns[None, :, :], h, axis=0)
        background[int(h * 0.65) :, :, :] *= 0.6
        self._background = np.clip(background, 0, 255).astype(np.uint8)
        self._start = rng.uniform(
            (0.15 * w, 0.15 * h), (0.85 * w, 0.85 * h), size=(config.shapes, 2)
        )
        speed = rng.uniform(0.15, 0.35, size=config.shapes) * min(w, h)
        angle = rng.uniform(0, 2 * math.pi, size=config.shapes)
        self._velocity = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]
        self._size = rng.uniform(0.06, 0.14, size=config.shapes) * min(w, h)
        self._colors = rng.integers(30, 256, size=(config.shapes, 3))
        self._kinds = rng.integers(0, 2, size=config.shapes)

    def moving_time(self, t: float) -> float:
        """Seconds of motion before t: shapes only advance while the scene is moving."""
        return sum(max(0.0, min(t, b) - a) for a, b in self._moving if a < t)

    def positions(self, t: float) -> np.ndarray:
        w, h = self.config.width, self.config.height
        raw = self._start + self._velocity * self.moving_time(t)
        size = np.array([w, h], dtype=float)
        folded = np.mod(raw, 2 * size)
        return np.where(folded > size, 2 * size - folded, folded)

    def render(self, t: float, frame_index: int) -> np.ndarray:
        """RGB uint8 (height, width, 3)."""
        import cv2

        pan = round(self.config.pan_speed * self.config.width * self.moving_time(t))
        image = np.ascontiguousarray(np.roll(self._background, -pan, axis=1))
        for (x, y), size, color, kind in zip(
            self.positions(t), self._size, self._colors, self._kinds, strict=True
        ):
            colour = tuple(int(c) for c in color)
            centre = (round(x), round(y))
            radius = max(2, round(size))
            if kind == 0:
                cv2.circle(image, centre, radius, colour, thickness=-1, lineType=cv2.LINE_8)
            else:
                cv2.rectangle(
                    image,
                    (centre[0] - radius, centre[1] - radius),
                    (centre[0] + radius, centre[1] + radius),
                    colour,
                    thickness=-1,
                )
        if self.config.noise_std > 0:
            rng = np.random.default_rng((self.config.seed, frame_index))
            noise = rng.normal(0.0, self.config.noise_std, size=image.shape)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return image


def synthesize(
    out: str | Path, config: SynthConfig | None = None, overwrite: bool = False
) -> Timeline:
    """Write a synthetic bag to `out` (a rosbag2 directory) and return its timeline."""
    import cv2
    from geometry_msgs.msg import Quaternion
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Bool, String

    from vla_ros.transport import LATCHED_QOS, SENSOR_QOS

    config = config or SynthConfig()
    config.validate()
    spans = segment_spans(config.segments, config.duration_s)
    scene = Scene(config, spans["moving"])
    frames = max(1, math.floor(config.duration_s * config.fps - 1e-9) + 1)
    compressed_topic = f"{config.image_topic}/compressed"
    topics: dict[str, str] = {}
    events: list[tuple[int, int, str, bytes]] = []

    def at(seconds: float) -> int:
        return config.start_ns + round(seconds * 1e9)

    def header(msg: Any, t_ns: int, frame_id: str) -> None:
        msg.header.stamp.sec = t_ns // 1_000_000_000
        msg.header.stamp.nanosec = t_ns % 1_000_000_000
        msg.header.frame_id = frame_id

    for when, text in config.instruction_events():
        events.append(
            (
                at(when),
                0,
                config.instruction_topic,
                serialize(String(data=text), "std_msgs/msg/String"),
            )
        )
    for when, engaged in config.estops:
        events.append(
            (
                at(when),
                0,
                config.estop_topic,
                serialize(Bool(data=bool(engaged)), "std_msgs/msg/Bool"),
            )
        )
    if config.scan:
        for k in range(math.floor(config.duration_s * config.scan_hz - 1e-9) + 1):
            t_ns = at(k / config.scan_hz)
            scan = _scan(k / config.scan_hz)
            header(scan, t_ns, "base_scan")
            events.append(
                (t_ns, 2, config.scan_topic, serialize(scan, "sensor_msgs/msg/LaserScan"))
            )
    if config.odom:
        for k in range(math.floor(config.duration_s * config.odom_hz - 1e-9) + 1):
            t_ns = at(k / config.odom_hz)
            odom = Odometry(child_frame_id="base_link")
            odom.pose.pose.orientation = Quaternion(w=1.0)
            header(odom, t_ns, "odom")
            events.append((t_ns, 3, config.odom_topic, serialize(odom, "nav_msgs/msg/Odometry")))
    events.sort(key=lambda e: (e[0], e[1]))

    with BagWriter(out, storage=config.storage, version=config.version, overwrite=overwrite) as bag:
        if config.images in ("raw", "both"):
            bag.add_topic(config.image_topic, "sensor_msgs/msg/Image", [SENSOR_QOS])
            topics[config.image_topic] = "sensor_msgs/msg/Image"
        if config.images in ("compressed", "both"):
            bag.add_topic(compressed_topic, "sensor_msgs/msg/CompressedImage", [SENSOR_QOS])
            topics[compressed_topic] = "sensor_msgs/msg/CompressedImage"
        kinds = {
            config.instruction_topic: (
                "std_msgs/msg/String",
                LATCHED_QOS,
                bool(config.instruction_events()),
            ),
            config.estop_topic: ("std_msgs/msg/Bool", LATCHED_QOS, bool(config.estops)),
            config.scan_topic: ("sensor_msgs/msg/LaserScan", SENSOR_QOS, config.scan),
            config.odom_topic: ("nav_msgs/msg/Odometry", SENSOR_QOS, config.odom),
        }
        for topic, (msgtype, qos, wanted) in kinds.items():
            if wanted:
                bag.add_topic(topic, msgtype, [qos])
                topics[topic] = msgtype
        timeline = Timeline(
            start_ns=config.start_ns,
            duration_s=config.duration_s,
            fps=config.fps,
            moving=tuple(spans["moving"]),
            static=tuple(spans["static"]),
            instructions=config.instruction_events(),
            estops=tuple(config.estops),
            frames=frames,
            topics=topics,
        )
        bag.set_custom_data(TIMELINE_KEY, timeline.to_json())
        pending = iter(events)
        event = next(pending, None)
        for k in range(frames):
            t_ns = at(k / config.fps)
            while event is not None and event[0] <= t_ns:
                bag.write(event[2], event[0], event[3])
                event = next(pending, None)
            rgb = scene.render(k / config.fps, k)
            if config.images in ("raw", "both"):
                pixels = rgb if config.encoding == "rgb8" else rgb[:, :, ::-1]
                image = Image(
                    height=config.height,
                    width=config.width,
                    encoding=config.encoding,
                    step=config.width * 3,
                )
                image.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
                header(image, t_ns, config.frame_id)
                bag.write(config.image_topic, t_ns, serialize(image, "sensor_msgs/msg/Image"))
            if config.images in ("compressed", "both"):
                ok, jpeg = cv2.imencode(
                    ".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
                )
                if not ok:
                    raise BagError("synth: JPEG encoding failed")
                compressed = CompressedImage(format="rgb8; jpeg compressed bgr8")
                compressed.data = array.array("B", jpeg.tobytes())
                header(compressed, t_ns, config.frame_id)
                bag.write(
                    compressed_topic, t_ns, serialize(compressed, "sensor_msgs/msg/CompressedImage")
                )
        while event is not None:
            bag.write(event[2], event[0], event[3])
            event = next(pending, None)
    return timeline


def _scan(t: float) -> Any:
    """A 6 m x 4 m room seen from its centre, with a box that drifts closer and back."""
    from sensor_msgs.msg import LaserScan

    beams = 180
    angles = np.linspace(-math.pi, math.pi, beams, endpoint=False)
    with np.errstate(divide="ignore"):
        to_x = np.where(np.abs(np.cos(angles)) > 1e-9, 3.0 / np.abs(np.cos(angles)), np.inf)
        to_y = np.where(np.abs(np.sin(angles)) > 1e-9, 2.0 / np.abs(np.sin(angles)), np.inf)
    ranges = np.minimum(to_x, to_y)
    box = 1.2 + 0.6 * math.cos(2 * math.pi * t / 8.0)
    ahead = np.abs(angles) < 0.15
    ranges[ahead] = np.minimum(ranges[ahead], box)
    scan = LaserScan(
        angle_min=-math.pi,
        angle_max=math.pi - 2 * math.pi / beams,
        angle_increment=2 * math.pi / beams,
        range_min=0.05,
        range_max=12.0,
        scan_time=0.1,
    )
    scan.ranges = array.array("f", ranges.astype(np.float32).tobytes())
    return scan

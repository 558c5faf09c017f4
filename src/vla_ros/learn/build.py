"""`vla-ros dataset build`: rosbags -> resampled episodes in Parquet, with stats and a card.

Per bag: the camera, instruction, action (and gripper) topics are read and deserialized with the
`rosbags` typestore (no ROS needed). Every message gets a time on one clock: its header stamp
where it has one, else its bag (receive) time shifted by the camera's median receive delay, so a
bag recorded on wall time from a sim-time stack still lines up. The timeline is resampled at the
control rate (zero-order hold: the newest image / action / instruction at or before each tick) and
cut into episodes at instruction changes, marker messages, gaps and clock jumps. Episodes that
cannot be used are skipped with a counted reason; a bag that cannot be used at all says why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros import action_space as action_spaces
from vla_ros.bag.io import BagError, BagReader, typestore
from vla_ros.core.image import ImageFormatError, compressed_msg_to_frame, image_msg_to_frame
from vla_ros.learn.spec import DatasetError, DatasetSpec

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ACTION_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")
CLOCK_OFFSET_MIN_S = 1.0
"""Header and bag clocks closer than this are taken as the same clock (just receive latency)."""


@dataclass
class Episode:
    """One resampled episode: frames at the model size, actions in SI units."""

    bag: str
    instruction: str
    start_ns: int
    frames: np.ndarray
    actions: np.ndarray
    gripper: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class BagResult:
    """What one bag contributed, and why anything was left out."""

    bag: str
    episodes: list[Episode] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    camera_frames: int = 0


def _stream_time(msg: Any, bag_ns: int, use_header: bool) -> tuple[int, bool]:
    """(time ns, came from a header) of one deserialized message."""
    header = getattr(msg, "header", None)
    if use_header and header is not None:
        stamp = header.stamp
        ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        if ns > 0:
            return ns, True
    return bag_ns, False


def _action_vector(msg: Any, action_space: str) -> np.ndarray:
    twist = getattr(msg, "twist", msg)
    lin, ang = twist.linear, twist.angular
    six = (lin.x, lin.y, lin.z, ang.x, ang.y, ang.z)
    return np.array(action_spaces.get(action_space).from_twist(six), dtype=np.float64)


class _Streams:
    """The time-stamped messages of one bag that a dataset needs."""

    def __init__(self) -> None:
        self.camera: list[tuple[int, int, Any]] = []  # (time, bag time, message)
        self.camera_type = ""
        self.actions: list[tuple[int, np.ndarray]] = []
        self.action_headers = 0
        self.gripper: list[tuple[int, float]] = []
        self.instructions: list[tuple[int, str]] = []  # bag time
        self.markers: list[int] = []  # bag time


def _read_streams(path: Path, spec: DatasetSpec, result: BagResult) -> _Streams | None:
    store = typestore()
    with BagReader(path) as reader:
        info = reader.info()
        present = {topic.name: topic for topic in info.topics}
        missing = [topic for topic in spec.required_topics if topic not in present]
        if missing:
            result.error = (
                f"{path}: missing topic(s) {', '.join(missing)} (bag has {sorted(present)}); "
                "set the topic map with --spec or --camera-topic/--action-topic/..."
            )
            result.skipped["missing_topic"] += 1
            return None
        checks = ((spec.camera_topic, IMAGE_TYPES), (spec.action_topic, ACTION_TYPES))
        for topic, allowed in checks:
            if present[topic].msgtype not in allowed:
                result.error = (
                    f"{path}: topic {topic} has type {present[topic].msgtype}, "
                    f"expected one of {list(allowed)}"
                )
                result.skipped["wrong_type"] += 1
                return None
        markers = [topic for topic in spec.marker_topics if topic in present]
        streams = _Streams()
        streams.camera_type = present[spec.camera_topic].msgtype
        topics = [*spec.required_topics, *markers]
        for message in reader.messages(topics):
            try:
                msg = store.deserialize_cdr(message.data, message.msgtype)
            except Exception as exc:  # the CDR decoder raises many unrelated types on garbage
                raise BagError(
                    f"{path}: topic {message.topic}: cannot deserialize {message.msgtype}: {exc}"
                ) from exc
            if message.topic == spec.camera_topic:
                stamp, _ = _stream_time(msg, message.timestamp_ns, spec.header_stamps)
                streams.camera.append((stamp, message.timestamp_ns, msg))
            elif message.topic == spec.action_topic:
                stamp, from_header = _stream_time(msg, message.timestamp_ns, spec.header_stamps)
                streams.action_headers += from_header
                streams.actions.append((stamp, _action_vector(msg, spec.action_space)))
            elif message.topic == spec.gripper_topic:
                streams.gripper.append((message.timestamp_ns, float(msg.data)))
            elif message.topic == spec.instruction_topic:
                streams.instructions.append((message.timestamp_ns, str(msg.data).strip()))
            else:
                streams.markers.append(message.timestamp_ns)
    return streams


def _decode(msg: Any, msgtype: str, spec: DatasetSpec) -> np.ndarray:
    """The frame the policy sees at deployment: camera-node conversion, then its preprocessor."""
    from PIL import Image

    size = spec.camera_image_size
    if msgtype.endswith("CompressedImage"):
        frame = compressed_msg_to_frame(msg, size)
    else:
        frame = image_msg_to_frame(msg, size)
    if size == spec.image_size:
        return frame
    resized = Image.fromarray(frame).resize((spec.image_size,) * 2, resample=spec.resample)
    return np.asarray(resized, dtype=np.uint8)


def _camera_offset_ns(streams: _Streams) -> int:
    """Median (bag time - header time) of the camera: the shift that puts bag times on the
    header clock (0 when both clocks agree to within receive latency)."""
    if not streams.camera:
        return 0
    delays = np.array([bag - stamp for stamp, bag, _ in streams.camera], dtype=np.int64)
    offset = int(np.median(delays))
    return offset if abs(offset) >= CLOCK_OFFSET_MIN_S * 1e9 else 0


def _segments(times: np.ndarray, max_gap_ns: int, skipped: Counter[str]) -> list[np.ndarray]:
    """Camera frame indices cut where the stamp runs backwards or a gap exceeds max_gap.

    A small step back (a reordered frame) drops the frame; a big one is a clock restart.
    """
    segments: list[list[int]] = []
    current: list[int] = []
    last = None
    for index, stamp in enumerate(times):
        if last is not None and stamp <= last:
            if last - stamp <= max_gap_ns:
                skipped["non_monotonic_frame"] += 1
                continue
            skipped["clock_jump"] += 1
            segments.append(current)
            current = []
        elif last is not None and stamp - last > max_gap_ns:
            skipped["camera_gap"] += 1
            segments.append(current)
            current = []
        current.append(index)
        last = stamp
    segments.append(current)
    return [np.asarray(seg, dtype=np.int64) for seg in segments if seg]


def _sorted_stream(
    items: Sequence[tuple[int, Any]], name: str, skipped: Counter[str]
) -> tuple[np.ndarray, list[Any]]:
    """Times (sorted, stable) and values; out-of-order messages are counted, then sorted."""
    times = np.array([t for t, _ in items], dtype=np.int64)
    if times.size > 1 and np.any(np.diff(times) < 0):
        skipped[f"non_monotonic_{name}"] += int(np.sum(np.diff(times) < 0))
    order = np.argsort(times, kind="stable")
    return times[order], [items[i][1] for i in order]


def build_bag(path: str | Path, spec: DatasetSpec) -> BagResult:
    """Resample one bag into episodes; never raises for bad content, only for unreadable files."""
    path = Path(path)
    result = BagResult(bag=str(path))
    streams = _read_streams(path, spec, result)
    if streams is None:
        return result
    result.camera_frames = len(streams.camera)
    if not streams.instructions or not any(text for _, text in streams.instructions):
        result.error = f"{path}: no instruction on {spec.instruction_topic}"
        result.skipped["no_instruction"] += 1
        return result
    if not streams.camera or not streams.actions:
        empty = spec.camera_topic if not streams.camera else spec.action_topic
        result.error = f"{path}: no messages on {empty}"
        result.skipped["empty_topic"] += 1
        return result

    offset = _camera_offset_ns(streams)
    period_ns = round(spec.period_s * 1e9)
    max_gap_ns = round(spec.max_gap_s * 1e9)
    cam_times = np.array([stamp for stamp, _, _ in streams.camera], dtype=np.int64)
    shift = offset if streams.action_headers == 0 else 0
    act_times, act_values = _sorted_stream(
        [(t - shift, v) for t, v in streams.actions], "action", result.skipped
    )
    actions = np.stack(act_values)
    # A non-finite command anywhere in an episode's span spoils it, sampled by a tick or not.
    bad_times = act_times[~np.all(np.isfinite(actions), axis=1)]
    ins_times, ins_values = _sorted_stream(
        [(t - offset, v) for t, v in streams.instructions], "instruction", result.skipped
    )
    marker_times = np.sort(np.array(streams.markers, dtype=np.int64) - offset)
    grip_times = grip_values = None
    if spec.gripper_topic:
        grip_times, grip_list = _sorted_stream(
            [(t - offset, v) for t, v in streams.gripper], "gripper", result.skipped
        )
        grip_values = np.asarray(grip_list, dtype=np.float64)

    decoded: dict[int, np.ndarray] = {}

    def frame(index: int) -> np.ndarray:
        if index not in decoded:
            _, _, msg = streams.camera[index]
            decoded[index] = _decode(msg, streams.camera_type, spec)
        return decoded[index]

    for segment in _segments(cam_times, max_gap_ns, result.skipped):
        seg_times = cam_times[segment]
        ticks = np.arange(seg_times[0], seg_times[-1] + 1, period_ns, dtype=np.int64)
        cam_idx = segment[np.searchsorted(seg_times, ticks, side="right") - 1]
        act_idx = np.searchsorted(act_times, ticks, side="right") - 1
        ins_idx = np.searchsorted(ins_times, ticks, side="right") - 1
        marks = np.searchsorted(marker_times, ticks, side="right")
        fresh = (act_idx >= 0) & (ticks - act_times[np.maximum(act_idx, 0)] <= max_gap_ns)
        if grip_times is not None:
            grip_idx = np.searchsorted(grip_times, ticks, side="right") - 1
            fresh &= (grip_idx >= 0) & (ticks - grip_times[np.maximum(grip_idx, 0)] <= max_gap_ns)
        texts = [ins_values[i] if i >= 0 else "" for i in ins_idx]
        keys: list[tuple[Any, ...] | None] = []
        run = 0
        for k in range(ticks.size):
            if not texts[k]:
                result.skipped["frames_without_instruction"] += 1
                keys.append(None)
            elif not fresh[k]:
                if k > 0 and keys[-1] is not None:
                    result.skipped["action_gap"] += 1
                run += 1
                keys.append(None)
            else:
                keys.append((texts[k], int(marks[k]), run))
        start = 0
        while start < ticks.size:
            if keys[start] is None:
                start += 1
                continue
            end = start
            while end + 1 < ticks.size and keys[end + 1] == keys[start]:
                end += 1
            sel = np.arange(start, end + 1)
            ep_actions = actions[act_idx[sel]]
            gripper = None if grip_values is None else grip_values[grip_idx[sel]]
            reason = None
            span = np.searchsorted(bad_times, [ticks[start] - period_ns, ticks[end]], side="right")
            if (
                span[1] > span[0]
                or not np.all(np.isfinite(ep_actions))
                or (gripper is not None and not np.all(np.isfinite(gripper)))
            ):
                reason = "nan_action"
            elif sel.size < spec.min_episode_steps:
                reason = "too_short"
            if reason:
                result.skipped[reason] += 1
            else:
                try:
                    frames = np.stack([frame(int(i)) for i in cam_idx[sel]])
                except ImageFormatError as exc:
                    result.skipped["bad_image"] += 1
                    result.error = f"{path}: topic {spec.camera_topic}: {exc}"
                    start = end + 1
                    continue
                result.episodes.append(
                    Episode(
                        bag=path.name,
                        instruction=texts[start],
                        start_ns=int(ticks[start]),
                        frames=frames,
                        actions=ep_actions.astype(np.float32),
                        gripper=None if gripper is None else gripper.astype(np.float32),
                    )
                )
            start = end + 1
    if result.skipped["nan_action"] and not result.episodes:
        result.error = f"{path}: topic {spec.action_topic}: every episode has NaN/Inf actions"
    return result


@dataclass
class BuildReport:
    """Totals of a build, printed by the CLI and stored in the dataset metadata."""

    out: Path
    bags: int
    episodes: int
    frames: int
    train_episodes: int
    val_episodes: int
    skipped: dict[str, int]
    errors: list[str]
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def build_dataset(
    bags: Sequence[str | Path],
    out: str | Path,
    spec: DatasetSpec,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build the dataset directory from bags; raises DatasetError when nothing is usable."""
    from vla_ros.learn.store import write_dataset

    if not bags:
        raise DatasetError("dataset build: no bags given")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} exists and is not empty (use --overwrite to replace it)")
    start = time.perf_counter()
    episodes: list[Episode] = []
    skipped: Counter[str] = Counter()
    errors: list[str] = []
    for bag in bags:
        try:
            result = build_bag(bag, spec)
        except BagError as exc:  # unreadable or truncated (e.g. a recording that was killed)
            result = BagResult(bag=str(bag), error=str(exc))
            result.skipped["unreadable_bag"] += 1
        episodes.extend(result.episodes)
        skipped.update(result.skipped)
        if result.error:
            errors.append(result.error)
        if progress is not None:
            progress(
                f"{bag}: {len(result.episodes)} episode(s), "
                f"{sum(e.length for e in result.episodes)} frames"
                + (f"; {result.error}" if result.error else "")
            )
    if not episodes:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none"
        detail = "; ".join(errors) if errors else "no episode long enough"
        raise DatasetError(f"dataset build: no usable episode ({detail}) [skipped: {reasons}]")
    split = write_dataset(out, episodes, spec, skipped=dict(skipped), errors=errors)
    seconds = time.perf_counter() - start
    report = BuildReport(
        out=out,
        bags=len(bags),
        episodes=len(episodes),
        frames=sum(e.length for e in episodes),
        train_episodes=split["train"],
        val_episodes=split["validation"],
        skipped=dict(skipped),
        errors=errors,
        seconds=seconds,
    )
    from vla_ros.learn.store import record_build_time

    record_build_time(out, report.seconds, report.frames_per_s)
    return report

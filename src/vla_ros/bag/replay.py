"""Replay a rosbag2 with its original timing by publishing the stored CDR bytes through rclpy.

`Schedule` (pure) maps bag time to wall time; `BagPlayer` owns a node whose publishers carry each
bag topic with the QoS the recorded publishers offered. Playback runs on the caller's thread (no
executor needed to publish); a prefetch thread reads the bag so slow storage does not add jitter.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_ros.bag.io import (
    BagError,
    BagMessage,
    BagReader,
    adapt_qos,
    message_class,
)
from vla_ros.files import read_mapping

CLOCK_TOPIC = "/clock"
PREFETCH = 64
TIMING_WINDOW = 100_000

ProgressCallback = Callable[[int, int, float], None]
"""progress(messages published, messages per pass (0 if unknown), bag seconds played)."""


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """`old:=new` pairs, as `ros2 bag play --remap` takes them."""
    remaps: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition(":=")
        if not sep or not old.strip() or not new.strip():
            raise BagError(f"remap must look like old:=new, got {item!r}")
        remaps[old.strip()] = new.strip()
    return remaps


_QOS_KEYS = {
    "reliability": ("reliable", "best_effort"),
    "durability": ("volatile", "transient_local"),
}


def load_qos_overrides(path: str | Path) -> dict[str, Any]:
    """`{topic: {reliability, durability, depth}}` from YAML (as `ros2 bag play
    --qos-profile-overrides-path` takes), e.g. to replay 720p raw frames reliably."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    raw = read_mapping(path, "no QoS override file", "topic names to QoS settings", BagError)
    overrides: dict[str, Any] = {}
    for topic, settings in raw.items():
        if not isinstance(settings, dict):
            raise BagError(f"{path}: {topic}: expected a mapping")
        unknown = set(settings) - {*_QOS_KEYS, "depth", "history"}
        if unknown:
            raise BagError(f"{path}: {topic}: unknown QoS keys {sorted(unknown)}")
        for key, allowed in _QOS_KEYS.items():
            if key in settings and settings[key] not in allowed:
                raise BagError(f"{path}: {topic}: {key} must be one of {list(allowed)}")
        depth = settings.get("depth", 10)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise BagError(f"{path}: {topic}: depth must be a positive integer, got {depth!r}")
        if settings.get("history", "keep_last") != "keep_last":
            raise BagError(f"{path}: {topic}: only history keep_last is supported")
        overrides[str(topic)] = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy[settings.get("reliability", "reliable").upper()],
            durability=DurabilityPolicy[settings.get("durability", "volatile").upper()],
        )
    return overrides


@dataclass(frozen=True)
class ReplayOptions:
    """Playback settings; see `vla-ros replay --help`."""

    rate: float = 1.0
    loop: bool = False
    start_offset_s: float = 0.0
    topics: tuple[str, ...] | None = None
    remap: Mapping[str, str] = field(default_factory=dict)
    clock: bool = False
    clock_hz: float = 40.0
    qos_overrides: Mapping[str, Any] = field(default_factory=dict)
    max_loops: int | None = None

    def validate(self) -> None:
        if not (0.001 <= self.rate <= 1000.0):
            raise BagError(f"rate must be in [0.001, 1000], got {self.rate}")
        if not 0 <= self.start_offset_s < math.inf:
            raise BagError(f"start offset must be finite and >= 0, got {self.start_offset_s}")
        if not (0.1 <= self.clock_hz <= 10000.0):
            raise BagError(f"clock rate must be in [0.1, 10000] Hz, got {self.clock_hz}")
        if self.max_loops is not None and self.max_loops < 1:
            raise BagError(f"max_loops must be >= 1, got {self.max_loops}")


class Schedule:
    """Bag time <-> wall time for one playback pass at `rate` (rate 2 = twice as fast)."""

    def __init__(self, bag_start_ns: int, wall_start_s: float, rate: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.bag_start_ns = bag_start_ns
        self.wall_start_s = wall_start_s
        self.rate = rate

    def wall_time(self, bag_ns: int) -> float:
        return self.wall_start_s + (bag_ns - self.bag_start_ns) / 1e9 / self.rate

    def bag_time(self, wall_s: float) -> int:
        return self.bag_start_ns + round((wall_s - self.wall_start_s) * self.rate * 1e9)


@dataclass
class ReplayStats:
    """What a playback did; `timing` holds (topic, scheduled, actual) monotonic times of the
    latest `TIMING_WINDOW` messages (bounded, so an endless loop does not grow memory)."""

    published: dict[str, int] = field(default_factory=dict)
    timing: deque[tuple[str, float, float]] = field(
        default_factory=lambda: deque(maxlen=TIMING_WINDOW)
    )
    loops: int = 0
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.published.values())


_END = object()


class BagPlayer:
    """Publishes a bag's messages as raw CDR on a node of its own.

    Construct it, optionally `wait_for_subscribers`, then `play()`; `close()` destroys the node.
    Unknown message types fail here, before anything is published, naming the topic.
    """

    def __init__(
        self,
        bag: str | Path,
        options: ReplayOptions | None = None,
        *,
        context: Any = None,
        node_name: str = "vla_bag_player",
    ) -> None:
        import rclpy

        self.options = options or ReplayOptions()
        self.options.validate()
        self.reader = BagReader(bag)
        try:
            self.info = self.reader.info()
            available = {t.name: t for t in self.info.topics}
            wanted = self.options.topics if self.options.topics is not None else tuple(available)
            missing = [t for t in wanted if t not in available]
            if missing:
                raise BagError(f"{bag}: no topic(s) {missing} (bag has {sorted(available)})")
            classes = {t: message_class(available[t].msgtype, t) for t in wanted}
            self.topics: tuple[str, ...] = tuple(wanted)
            self.node = rclpy.create_node(node_name, context=context)
        except BaseException:
            self.reader.close()
            raise
        self.publishers: dict[str, Any] = {}
        self._clock_pub = None
        try:
            for topic in self.topics:
                self.publishers[topic] = self._publisher(
                    classes[topic], topic, available[topic].offered_qos
                )
            if self.options.clock:
                from rclpy.qos import QoSProfile, ReliabilityPolicy
                from rosgraph_msgs.msg import Clock

                self._clock_pub = self.node.create_publisher(
                    Clock,
                    CLOCK_TOPIC,
                    QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
                )
                self._clock_cls = Clock
        except BaseException:
            self.close()
            raise
        self._last_clock_ns = -1
        self.count_per_pass = sum(available[t].count for t in self.topics)

    def _publisher(self, cls: type, topic: str, offered: Any) -> Any:
        out = self.options.remap.get(topic, topic)
        qos = self.options.qos_overrides.get(topic) or adapt_qos(offered)
        try:
            return self.node.create_publisher(cls, out, qos)
        except Exception as exc:  # rclpy raises several types for bad names and QoS
            raise BagError(f"topic {topic!r} -> {out!r}: cannot publish: {exc}") from exc

    def close(self, ack_timeout_s: float = 1.0) -> None:
        """Give reliable subscribers up to `ack_timeout_s` to acknowledge the last messages
        (a destroyed writer cannot resend a lost fragment), then destroy the node."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + ack_timeout_s
        for publisher in self.publishers.values():
            left = max(0.0, deadline - time.monotonic())
            publisher.wait_for_all_acked(Duration(nanoseconds=round(left * 1e9)))
        self.reader.close()
        self.node.destroy_node()

    def __enter__(self) -> BagPlayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_for_subscribers(
        self, timeout_s: float, stop: threading.Event | None = None, every_topic: bool = False
    ) -> bool:
        """Until every subscriber the graph knows on our topics is matched (or `timeout_s`).

        `every_topic` also waits for at least one subscriber per topic, for a recorder or stack
        started in another process that only subscribes once it sees our publishers.
        """
        deadline = time.monotonic() + timeout_s
        stop = stop or threading.Event()
        pubs = list(self.publishers.values())

        def matched(publisher: Any) -> bool:
            known = self.node.count_subscribers(publisher.topic_name)
            count = publisher.get_subscription_count()
            return count >= known and (count > 0 or not every_topic)

        while not all(matched(p) for p in pubs):
            if time.monotonic() >= deadline or stop.wait(0.01):
                return False
        return True

    def play(
        self, stop: threading.Event | None = None, progress: ProgressCallback | None = None
    ) -> ReplayStats:
        """Publish until the bag ends (or `stop` is set, or Ctrl-C); returns what happened."""
        stop = stop or threading.Event()
        stats = ReplayStats(published=dict.fromkeys(self.topics, 0))
        if not self.topics:
            return stats
        start_ns = self.info.start_ns + round(self.options.start_offset_s * 1e9)
        span_ns = max(0, self.info.end_ns - start_ns)
        gap_ns = span_ns // max(1, self.count_per_pass - 1) if self.count_per_pass > 1 else 0
        items: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH)
        halt = threading.Event()
        reader = threading.Thread(
            target=self._prefetch, args=(items, halt, start_ns), name="bag_prefetch", daemon=True
        )
        wall_begin = time.monotonic()
        schedule: Schedule | None = None
        loop_index = -1
        reader.start()
        try:
            while not stop.is_set():
                item = items.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                index, message = item
                if index != loop_index:
                    loop_index = index
                    stats.loops = index + 1
                    if schedule is None:
                        schedule = Schedule(start_ns, time.monotonic(), self.options.rate)
                    else:
                        schedule = Schedule(
                            start_ns,
                            schedule.wall_time(start_ns + span_ns + gap_ns),
                            self.options.rate,
                        )
                        # /clock jumps back with the bag, as in `ros2 bag play --loop`; held at
                        # the end instead, sim time would freeze for the whole pass.
                        self._last_clock_ns = -1
                due = schedule.wall_time(message.timestamp_ns)
                if not self._wait_until(due, schedule, stop):
                    break
                self._send(message, stats, due)
                if progress is not None:
                    progress(
                        stats.total, self.count_per_pass, (message.timestamp_ns - start_ns) / 1e9
                    )
        except KeyboardInterrupt:
            stats.interrupted = True
        finally:
            halt.set()
            while reader.is_alive():
                try:
                    items.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)
        stats.interrupted = stats.interrupted or stop.is_set()
        stats.wall_s = time.monotonic() - wall_begin
        return stats

    def _send(self, message: BagMessage, stats: ReplayStats, due: float) -> None:
        if self._clock_pub is not None:
            self._publish_clock(message.timestamp_ns)
        sent = time.monotonic()
        self.publishers[message.topic].publish(message.data)
        stats.published[message.topic] += 1
        stats.timing.append((message.topic, due, sent))

    def _wait_until(self, due: float, schedule: Schedule, stop: threading.Event) -> bool:
        """Sleep until `due`, ticking /clock meanwhile; False when asked to stop."""
        period = 1.0 / self.options.clock_hz
        while True:
            now = time.monotonic()
            if now >= due:
                return not stop.is_set()
            wake = due
            if self._clock_pub is not None:
                self._publish_clock(schedule.bag_time(now))
                wake = min(due, now + period)
            if stop.wait(max(0.0, wake - now)):
                return False

    def _publish_clock(self, bag_ns: int) -> None:
        """Never backwards within one pass (the /clock tick and a message's time interleave)."""
        bag_ns = max(bag_ns, self._last_clock_ns)
        self._last_clock_ns = bag_ns
        msg = self._clock_cls()
        msg.clock.sec = bag_ns // 1_000_000_000
        msg.clock.nanosec = bag_ns % 1_000_000_000
        self._clock_pub.publish(msg)

    def _prefetch(self, items: queue.Queue[Any], halt: threading.Event, start_ns: int) -> None:
        def put(item: Any) -> bool:
            while not halt.is_set():
                try:
                    items.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        index = 0
        try:
            while not halt.is_set():
                sent = 0
                for message in self.reader.messages(self.topics, start_ns=start_ns):
                    if not put((index, message)):
                        return
                    sent += 1
                index += 1
                limit = self.options.max_loops
                if not sent or not self.options.loop or (limit is not None and index >= limit):
                    break
            put(_END)
        except BaseException as exc:  # handed to the playing thread, which raises it
            put(exc)

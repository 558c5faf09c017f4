"""Record live topics as raw CDR into a rosbag2, or into memory for tests and the harness.

Topics are subscribed once a publisher shows up in the graph, with a QoS that matches what the
publishers offer (as `ros2 bag record` does), and their offered QoS and type hash go into the bag.
Callbacks only enqueue bytes; a writer thread owns the bag file, so a slow disk never blocks an
executor, and `stop()` always leaves a readable bag behind.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_ros.bag.io import (
    DEFAULT_VERSION,
    BagError,
    BagWriter,
    adapt_qos,
    message_class,
    qos_to_offered,
)

QUEUE_LIMIT = 2000
RECORD_DEPTH = 20
"""Reader history: a briefly busy executor must not drop best-effort messages already received."""
_STOP = object()


@dataclass(frozen=True)
class RecordedItem:
    """One received message: receive time (node clock, ns) and its CDR bytes."""

    topic: str
    msgtype: str
    receive_ns: int
    data: bytes


@dataclass
class RecordStats:
    counts: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    before_clock: int = 0
    """Messages that arrived under use_sim_time before the first /clock: not recorded, since
    their time would be 0 (a bag starting at the epoch and lasting 1.7e9 s)."""
    errors: list[str] = field(default_factory=list)
    path: Path | None = None


class BagRecorder:
    """Subscribes to `topics` (or every topic with `all_topics`) on a node of its own.

    `out=None` records into memory only (`items`); `keep=True` keeps an in-memory copy as well.
    The node must be spun by an executor for anything to arrive.
    """

    def __init__(
        self,
        topics: Sequence[str] = (),
        out: str | Path | None = None,
        *,
        context: Any = None,
        storage: str = "sqlite3",
        version: int = DEFAULT_VERSION,
        overwrite: bool = False,
        keep: bool = False,
        all_topics: bool = False,
        exclude: Sequence[str] = (),
        discovery_period_s: float = 0.1,
        use_sim_time: bool = False,
        node_name: str = "vla_bag_recorder",
    ) -> None:
        import rclpy
        from rclpy.clock import Clock, ClockType
        from rclpy.expand_topic_name import expand_topic_name
        from rclpy.parameter import Parameter

        if not topics and not all_topics:
            raise BagError("record: give at least one topic (or all_topics)")
        self.node = rclpy.create_node(
            node_name,
            context=context,
            parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)],
        )
        namespace, name = self.node.get_namespace(), self.node.get_name()
        try:
            self.topics = tuple(
                dict.fromkeys(expand_topic_name(t, name, namespace) for t in topics)
            )
            self._exclude = {expand_topic_name(t, name, namespace) for t in exclude}
        except Exception as exc:  # rclpy raises its own exception types for bad names
            self.node.destroy_node()
            raise BagError(f"record: bad topic name: {exc}") from exc
        self._all = all_topics
        self._wait_for_clock = use_sim_time
        self._keep = keep or out is None
        self._lock = threading.Lock()
        self._closed = False
        self._subscriptions: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self.items: list[RecordedItem] = []
        self.stats = RecordStats(counts=dict.fromkeys(self.topics, 0))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._writer_thread: threading.Thread | None = None
        self._writer_ready = threading.Event()
        if out is not None:
            self.stats.path = Path(out)
            self._writer_thread = threading.Thread(
                target=self._write_loop,
                args=(Path(out), storage, version, overwrite),
                name="bag_writer",
                daemon=True,
            )
            self._writer_thread.start()
            self._writer_ready.wait()
            if self.stats.errors:
                self.node.destroy_node()
                raise BagError(self.stats.errors[0])
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = self.node.create_timer(discovery_period_s, self.discover, clock=steady)
        self.discover()

    @property
    def pending(self) -> list[str]:
        """Requested topics not subscribed yet (no publisher seen so far)."""
        return [t for t in self.topics if t not in self._subscriptions]

    @property
    def ready(self) -> bool:
        return not self.pending

    def discover(self) -> None:
        """Subscribe to newly published requested topics; runs on a steady timer (a sim clock
        that has not started yet must not stall discovery)."""
        if self._closed:
            return
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._subscriptions or topic in self._exclude:
                continue
            if not self._all and topic not in self.topics:
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self._subscribe(topic, types[0], publishers)

    def _subscribe(self, topic: str, msgtype: str, publishers: Sequence[Any]) -> None:
        try:
            cls = message_class(msgtype, topic)
        except BagError as exc:
            if topic not in self._types:
                self._types[topic] = msgtype
                self.stats.errors.append(str(exc))
                self.node.get_logger().error(str(exc))
            return
        offered = [qos_to_offered(p.qos_profile) for p in publishers if p.topic_type == msgtype]
        digest = next(
            (str(h) for p in publishers if (h := getattr(p, "topic_type_hash", None)) is not None),
            None,
        )
        self._types[topic] = msgtype
        self.stats.counts.setdefault(topic, 0)
        if self._writer_thread is not None:
            self._put(("topic", topic, msgtype, offered, digest))
        qos = adapt_qos(offered)
        qos.depth = max(qos.depth, RECORD_DEPTH)
        self._subscriptions[topic] = self.node.create_subscription(
            cls, topic, self._callback_for(topic, msgtype), qos, raw=True
        )

    def _callback_for(self, topic: str, msgtype: str) -> Callable[[bytes], None]:
        clock = self.node.get_clock()

        def on_bytes(data: bytes) -> None:
            now_ns = clock.now().nanoseconds
            item = RecordedItem(topic, msgtype, now_ns, bytes(data))
            with self._lock:
                if self._closed:
                    return
                if self._wait_for_clock and now_ns == 0:
                    self.stats.before_clock += 1
                    return
                self.stats.counts[topic] = self.stats.counts.get(topic, 0) + 1
                if self._keep:
                    self.items.append(item)
                if self._writer_thread is not None:
                    self._put(("msg", item))

        return on_bytes

    def _put(self, entry: Any) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.stats.dropped += 1

    def _write_loop(self, out: Path, storage: str, version: int, overwrite: bool) -> None:
        try:
            writer = BagWriter(out, storage=storage, version=version, overwrite=overwrite)
        except BagError as exc:
            self.stats.errors.append(str(exc))
            self._writer_ready.set()
            return
        self._writer_ready.set()
        with writer:
            while True:
                entry = self._queue.get()
                if entry is _STOP:
                    return
                try:
                    if entry[0] == "topic":
                        _, topic, msgtype, offered, digest = entry
                        writer.add_topic(topic, msgtype, offered, digest)
                    else:
                        item: RecordedItem = entry[1]
                        writer.write(item.topic, item.receive_ns, item.data)
                except Exception as exc:  # a full disk must not kill the thread silently
                    self._error(f"{out}: {type(exc).__name__}: {exc}")

    def _error(self, text: str) -> None:
        if text not in self.stats.errors and len(self.stats.errors) < 50:
            self.stats.errors.append(text)

    def snapshot(self) -> list[RecordedItem]:
        with self._lock:
            return list(self.items)

    def stop(self) -> RecordStats:
        """Stop receiving, flush and close the bag; safe to call twice and after Ctrl-C."""
        with self._lock:
            already = self._closed
            self._closed = True
        if already:
            return self.stats
        try:
            self.node.destroy_node()
        except Exception as exc:  # the context may already be shut down by a signal
            self.stats.errors.append(f"destroying recorder node: {exc}")
        if self._writer_thread is not None:
            deadline = time.monotonic() + 30.0
            while self._writer_thread.is_alive() and time.monotonic() < deadline:
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._writer_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return self.stats

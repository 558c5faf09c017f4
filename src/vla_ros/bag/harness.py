"""Replay a bag through caller-supplied nodes in one process and capture what they publish.

Real nodes, real DDS: the player, the nodes under test and a recorder share one rclpy Context;
the nodes under test spin on one executor, the recorder on its own thread. Used by
the stack regression tests and by `vla-ros demo`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vla_ros.bag.io import deserialize, stamp_ns
from vla_ros.bag.record import BagRecorder, RecordStats
from vla_ros.bag.replay import BagPlayer, ProgressCallback, ReplayOptions, ReplayStats

NodeFactory = Callable[[Any], Sequence[Any]]
"""Builds the nodes under test in the given rclpy Context; the harness destroys them after."""

_INFRASTRUCTURE_TOPICS = ("/rosout", "/parameter_events")


@dataclass(frozen=True)
class RecordedMessage:
    """An output of the nodes under test: receive time (ns, recorder clock), header stamp."""

    topic: str
    receive_ns: int
    stamp_ns: int | None
    msg: Any
    data: bytes


@dataclass
class HarnessResult:
    """What a run produced. `wired`: every publisher had matched its subscribers before the
    first replayed message; `missing_topics`: requested topics that nobody published."""

    messages: list[RecordedMessage]
    replay: ReplayStats
    record: RecordStats
    bag: Path | None = None
    wired: bool = True
    missing_topics: list[str] = field(default_factory=list)

    def on(self, topic: str) -> list[RecordedMessage]:
        return [m for m in self.messages if m.topic == topic]


def _compatible(pub_qos: Any, sub_qos: Any) -> bool:
    """Would DDS match them? Only reliability and durability matter for our profiles."""
    pub_rel = getattr(pub_qos.reliability, "name", str(pub_qos.reliability)).upper()
    sub_rel = getattr(sub_qos.reliability, "name", str(sub_qos.reliability)).upper()
    pub_dur = getattr(pub_qos.durability, "name", str(pub_qos.durability)).upper()
    sub_dur = getattr(sub_qos.durability, "name", str(sub_qos.durability)).upper()
    if pub_rel == "BEST_EFFORT" and sub_rel == "RELIABLE":
        return False
    return not (pub_dur == "VOLATILE" and sub_dur == "TRANSIENT_LOCAL")


def unmatched_publishers(nodes: Sequence[Any]) -> list[str]:
    """Publishers that have not yet matched every QoS-compatible subscription in the graph."""
    waiting = []
    for node in nodes:
        for publisher in list(node.publishers):
            topic = publisher.topic_name
            if topic in _INFRASTRUCTURE_TOPICS:
                continue
            expected = sum(
                _compatible(publisher.qos_profile, info.qos_profile)
                for info in node.get_subscriptions_info_by_topic(topic)
            )
            if publisher.get_subscription_count() < expected:
                waiting.append(f"{node.get_name()}:{topic}")
    return waiting


def wait_until_wired(nodes: Sequence[Any], timeout_s: float, stop: threading.Event) -> bool:
    """Until every publisher reaches its subscribers, so the first replayed message is not lost."""
    deadline = time.monotonic() + timeout_s
    while unmatched_publishers(nodes):
        if time.monotonic() >= deadline or stop.wait(0.02):
            return False
    return True


class _Spinner:
    """Spins an executor on a background thread until stopped."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="harness_spin", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as exc:  # surfaced to the caller after the run
            self.error = exc

    def __enter__(self) -> _Spinner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10.0)


def run_bag(
    bag: str | Path,
    nodes: NodeFactory | Sequence[Any],
    *,
    context: Any,
    record_topics: Sequence[str],
    rate: float | None = None,
    replay: ReplayOptions | None = None,
    out_bag: str | Path | None = None,
    storage: str = "sqlite3",
    tail_s: float = 0.5,
    wire_timeout_s: float = 10.0,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    use_sim_time: bool | None = None,
) -> HarnessResult:
    """Replay `bag` into `nodes`, record `record_topics`, return (and maybe save) them.

    `rate` overrides `replay.rate` (playback speed, default 1).
    `nodes` is either a factory `f(context) -> nodes` (the harness destroys what it built) or
    nodes the caller owns. Recording starts once every requested topic has a publisher (or
    `wire_timeout_s` passes) and every publisher has matched its subscribers; it continues
    `tail_s` after the last replayed message. Ctrl-C or `stop` end the run early; the output bag
    is still closed properly. Receive times follow `/clock` (bag time) when the replay publishes
    it, unless `use_sim_time` says otherwise, so they compare directly with header stamps.
    """
    from vla_ros.transport import make_executor

    stop = stop or threading.Event()
    options = replay or ReplayOptions()
    if rate is not None:
        options = replace(options, rate=rate)
    built = list(nodes(context)) if callable(nodes) else []
    under_test = built if callable(nodes) else list(nodes)
    recorder: BagRecorder | None = None
    player: BagPlayer | None = None
    stats = ReplayStats()
    wired = False
    executor = make_executor(context)
    # The recorder spins alone so its receive times are not queued behind the nodes' callbacks.
    record_executor = make_executor(context)
    try:
        recorder = BagRecorder(
            record_topics,
            out_bag,
            context=context,
            storage=storage,
            keep=True,
            use_sim_time=options.clock if use_sim_time is None else use_sim_time,
        )
        player = BagPlayer(bag, options, context=context)
        for node in under_test:
            executor.add_node(node)
        record_executor.add_node(recorder.node)
        with _Spinner(record_executor) as record_spinner, _Spinner(executor) as spinner:
            deadline = time.monotonic() + wire_timeout_s
            while not recorder.ready and time.monotonic() < deadline and not stop.wait(0.02):
                pass
            everyone = [player.node, *under_test, recorder.node]
            wired = wait_until_wired(everyone, max(0.0, deadline - time.monotonic()), stop)
            stats = player.play(stop=stop, progress=progress)
            if not stats.interrupted:
                stop.wait(tail_s)
        for failed in (spinner.error, record_spinner.error):
            if failed is not None:
                raise failed
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        executor.shutdown(timeout_sec=5.0)
        record_executor.shutdown(timeout_sec=5.0)
        record_stats = recorder.stop() if recorder is not None else RecordStats()
        if player is not None:
            player.close()
        for node in built:
            node.destroy_node()
    items = recorder.snapshot() if recorder is not None else []
    messages = []
    for item in items:
        msg = deserialize(item.data, item.msgtype, item.topic)
        messages.append(RecordedMessage(item.topic, item.receive_ns, stamp_ns(msg), msg, item.data))
    return HarnessResult(
        messages=messages,
        replay=stats,
        record=record_stats,
        bag=Path(out_bag) if out_bag is not None else None,
        wired=wired,
        missing_topics=recorder.pending if recorder is not None else list(record_topics),
    )


class BagHarness:
    """pytest-friendly wrapper: synthesizes bags into a work directory and runs them.

    One per test, bound to that test's rclpy Context::

        harness = BagHarness(ros_context, tmp_path)
        bag = harness.synth(duration_s=4.0)
        result = harness.run(bag, build_nodes, record_topics=["/cmd_vel"])
    """

    def __init__(self, context: Any, workdir: str | Path) -> None:
        self.context = context
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._runs = 0

    def synth(self, name: str = "input", **config: Any) -> Path:
        from vla_ros.bag.synth import SynthConfig, synthesize

        path = self.workdir / name
        synthesize(path, SynthConfig(**config), overwrite=True)
        return path

    def run(
        self,
        bag: str | Path,
        nodes: NodeFactory | Sequence[Any],
        record_topics: Sequence[str],
        *,
        save: bool = False,
        **kwargs: Any,
    ) -> HarnessResult:
        """`run_bag` in this harness's context; `save=True` also writes the outputs to a bag."""
        self._runs += 1
        out = self.workdir / f"run_{self._runs}" if save else None
        return run_bag(
            bag, nodes, context=self.context, record_topics=record_topics, out_bag=out, **kwargs
        )

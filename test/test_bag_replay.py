"""Replay through real DDS: bit-exact round trips, timing options, QoS, clean interruption."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.bag.harness import run_bag
from vla_ros.bag.io import BagError, BagWriter, deserialize, read_messages, stamp_ns
from vla_ros.bag.replay import BagPlayer, ReplayOptions, Schedule, parse_remaps
from vla_ros.bag.synth import SynthConfig, synthesize

pytestmark = pytest.mark.ros

REFERENCE = Path(__file__).parent / "data" / "bags" / "v9_mcap"
ALL_TOPICS = ["/chatter", "/cmd_vel", "/camera/image_raw", "/camera/image_raw/compressed", "/scan"]


def _by_topic(messages):
    grouped: dict[str, list] = {}
    for m in messages:
        grouped.setdefault(m.topic, []).append(m)
    return grouped


def _fingerprint(records):
    """(bytes, header stamp) per message, in order; stamps come from the bytes themselves."""
    return [(r.data, stamp_ns(deserialize(r.data, r.msgtype))) for r in records]


@given(
    st.integers(0, 2**62),
    st.floats(0.0, 1e6),
    st.floats(0.01, 100.0),
    st.lists(st.integers(0, 10**12), min_size=2, max_size=20),
)
def test_schedule_is_monotonic_and_scales_with_rate(bag_start, wall_start, rate, offsets):
    schedule = Schedule(bag_start, wall_start, rate)
    times = sorted(bag_start + o for o in offsets)
    walls = [schedule.wall_time(t) for t in times]
    assert walls == sorted(walls)
    assert walls[0] >= wall_start
    span_bag = (times[-1] - times[0]) / 1e9
    assert walls[-1] - walls[0] == pytest.approx(span_bag / rate, rel=1e-9, abs=1e-6)
    for t, wall in zip(times, walls, strict=True):
        assert abs(schedule.bag_time(wall) - t) <= max(2, t * 1e-15) + rate * 1e3


def test_remap_parsing():
    assert parse_remaps(["/a:=/b", " /c := /d "]) == {"/a": "/b", "/c": "/d"}
    for bad in ("/a", "/a:=", ":=/b", "/a=/b"):
        with pytest.raises(BagError, match="old:=new"):
            parse_remaps([bad])


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (ReplayOptions(rate=0.0), "rate"),
        (ReplayOptions(rate=float("nan")), "rate"),
        (ReplayOptions(start_offset_s=-1.0), "offset"),
        (ReplayOptions(start_offset_s=float("inf")), "offset"),
        (ReplayOptions(clock_hz=0.0), "clock"),
        (ReplayOptions(max_loops=0), "max_loops"),
    ],
)
def test_bad_options_are_refused(options, field):
    with pytest.raises(BagError, match=field):
        options.validate()


def _reliable(topics):
    """Best-effort topics may drop under load (as with any DDS); exactness needs reliable."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return ReplayOptions(
        qos_overrides={
            t: QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) for t in topics
        }
    )


def test_replay_offers_the_recorded_qos(ros_context):
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    with BagPlayer(REFERENCE, context=ros_context) as player:
        scan = player.publishers["/scan"].qos_profile
        chatter = player.publishers["/chatter"].qos_profile
    assert scan.reliability == ReliabilityPolicy.BEST_EFFORT
    assert (chatter.reliability, chatter.durability) == (
        ReliabilityPolicy.RELIABLE,
        DurabilityPolicy.TRANSIENT_LOCAL,
    )


def test_round_trip_reference_bag_is_bit_exact(ros_context, tmp_path):
    """Strings (Korean too), twists, raw and compressed images, scans: same bytes, same stamps."""
    out = tmp_path / "recorded"
    result = run_bag(
        REFERENCE,
        [],
        context=ros_context,
        record_topics=ALL_TOPICS,
        out_bag=out,
        rate=2.0,
        replay=_reliable(ALL_TOPICS),
    )
    assert result.wired
    assert not result.replay.interrupted
    original = _by_topic(read_messages(REFERENCE))
    recorded = _by_topic(read_messages(out))
    assert set(recorded) == set(ALL_TOPICS)
    for topic in ALL_TOPICS:
        assert _fingerprint(recorded[topic]) == _fingerprint(original[topic]), topic
    in_memory = _by_topic(result.messages)
    for topic in ALL_TOPICS:
        assert [m.data for m in in_memory[topic]] == [m.data for m in original[topic]]
    texts = [m.msg.data for m in in_memory["/chatter"]]
    assert texts[-1] == "안녕하세요 로봇, 앞으로 가"


def test_round_trip_synthetic_camera_bag(ros_context, tmp_path):
    synthesize(
        tmp_path / "in",
        SynthConfig(duration_s=1.5, fps=10.0, width=64, height=48, scan=True, odom=True),
    )
    topics = ["/camera/image_raw", "/camera/image_raw/compressed", "/vla/instruction", "/scan"]
    result = run_bag(
        tmp_path / "in",
        [],
        context=ros_context,
        record_topics=topics,
        out_bag=tmp_path / "out",
        rate=3.0,
        replay=_reliable([*topics, "/odom"]),
    )
    original = _by_topic(read_messages(tmp_path / "in", topics))
    recorded = _by_topic(read_messages(tmp_path / "out"))
    for topic in topics:
        assert _fingerprint(recorded[topic]) == _fingerprint(original[topic]), topic
    assert result.replay.published["/odom"] == 30


def test_topics_remap_and_start_offset(ros_context, tmp_path):
    options = ReplayOptions(topics=("/chatter",), remap={"/chatter": "/talk"}, start_offset_s=0.15)
    result = run_bag(
        REFERENCE, [], context=ros_context, record_topics=["/talk"], replay=options, rate=2.0
    )
    assert result.replay.published == {"/chatter": 1}
    assert [m.msg.data for m in result.on("/talk")] == ["안녕하세요 로봇, 앞으로 가"]


def test_loop_replays_the_bag_again(ros_context):
    options = ReplayOptions(topics=("/cmd_vel",), loop=True, max_loops=3)
    result = run_bag(
        REFERENCE, [], context=ros_context, record_topics=["/cmd_vel"], replay=options, rate=4.0
    )
    assert result.replay.loops == 3
    speeds = [round(m.msg.linear.x, 6) for m in result.on("/cmd_vel")]
    assert speeds == [0.1, 0.2, 0.3] * 3
    scheduled = [due for _, due, _ in result.replay.timing]
    assert scheduled == sorted(scheduled)


def _clock_ticks(ros_context, spin_until, options):
    """Every /clock value a listener saw during one full playback."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    node = __import__("rclpy").create_node("clock_listener", context=ros_context)
    ticks: list[int] = []
    node.create_subscription(
        Clock,
        "/clock",
        lambda m: ticks.append(m.clock.sec * 1_000_000_000 + m.clock.nanosec),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT),
    )
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    with BagPlayer(REFERENCE, options, context=ros_context) as player:
        clock_pub = next(p for p in player.node.publishers if p.topic_name == "/clock")
        assert spin_until(executor, lambda: clock_pub.get_subscription_count() > 0, 10.0)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (player.play(), done.set()))
        worker.start()
        spin_until(executor, done.is_set, 20.0)
        worker.join()
        spin_until(executor, lambda: False, 0.2)
    node.destroy_node()
    return ticks


def test_clock_follows_bag_time(ros_context, spin_until):
    options = ReplayOptions(clock=True, clock_hz=200.0, topics=("/chatter",))
    ticks = _clock_ticks(ros_context, spin_until, options)
    start = read_messages(REFERENCE)[0].timestamp_ns
    end = read_messages(REFERENCE)[-1].timestamp_ns
    assert len(ticks) >= 5
    assert ticks == sorted(ticks)
    assert start <= ticks[0]
    assert ticks[-1] <= end


def test_clock_restarts_with_each_loop_instead_of_freezing(ros_context, spin_until):
    """A /clock held at the end of pass 1 would stop every sim-time timer (the safety node's
    output among them) for the whole next pass."""
    options = ReplayOptions(
        clock=True, clock_hz=200.0, topics=("/chatter",), loop=True, max_loops=2, rate=2.0
    )
    ticks = _clock_ticks(ros_context, spin_until, options)
    jumps = [i for i in range(1, len(ticks)) if ticks[i] < ticks[i - 1]]
    assert len(jumps) == 1
    second = ticks[jumps[0] :]
    assert second == sorted(second)
    assert len(set(second)) >= 5


def test_latched_topics_reach_late_subscribers(ros_context, spin_until):
    """Offered QoS from the bag: /chatter was transient-local, so a late joiner still gets it."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    options = ReplayOptions(topics=("/chatter",))
    with BagPlayer(REFERENCE, options, context=ros_context) as player:
        player.play()
        node = rclpy.create_node("late_joiner", context=ros_context)
        got: list[str] = []
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        node.create_subscription(String, "/chatter", lambda m: got.append(m.data), latched)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        assert spin_until(executor, lambda: bool(got), 10.0)
        node.destroy_node()
    assert got == ["안녕하세요 로봇, 앞으로 가"]


def test_unknown_message_type_fails_before_publishing(ros_context, tmp_path):
    from std_msgs.msg import String

    from vla_ros.bag.io import serialize

    with BagWriter(tmp_path / "custom") as bag:
        bag.add_topic("/chatter", "std_msgs/msg/String")
        bag.add_topic("/widgets", "acme_msgs/msg/Widget", digest="RIHS01_" + "cd" * 32)
        bag.write("/chatter", 1, serialize(String(data="hi")))
        bag.write("/widgets", 2, b"\x00\x01\x00\x00")
    with pytest.raises(BagError, match=r"topic '/widgets'.*acme_msgs/msg/Widget.*--topics"):
        BagPlayer(tmp_path / "custom", context=ros_context)
    with BagPlayer(
        tmp_path / "custom", ReplayOptions(topics=("/chatter",)), context=ros_context
    ) as player:
        assert player.play().published == {"/chatter": 1}


def test_corrupt_bag_is_reported_by_player(ros_context, tmp_path):
    import shutil

    shutil.copytree(REFERENCE, tmp_path / "bag")
    (tmp_path / "bag" / "v9_mcap.mcap").write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 64)
    with pytest.raises(BagError, match="v9_mcap"):
        BagPlayer(tmp_path / "bag", context=ros_context)


def test_stop_and_ctrl_c_end_playback_cleanly(ros_context, tmp_path):
    synthesize(tmp_path / "in", SynthConfig(duration_s=3.0, width=16, height=16, images="raw"))
    stop = threading.Event()

    def stop_after_five(done: int, total: int, bag_s: float) -> None:
        if done >= 5:
            stop.set()

    def ctrl_c_after_three(done: int, total: int, bag_s: float) -> None:
        if done >= 3:
            raise KeyboardInterrupt

    with BagPlayer(tmp_path / "in", context=ros_context) as player:
        stats = player.play(stop, progress=stop_after_five)
        assert stats.interrupted
        assert stats.total == 5
        stats = player.play(progress=ctrl_c_after_three)
        assert stats.interrupted
        assert stats.total == 3


def test_harness_stopped_mid_run_leaves_a_valid_bag(ros_context, tmp_path):
    synthesize(tmp_path / "in", SynthConfig(duration_s=4.0, width=16, height=16, images="raw"))
    stop = threading.Event()

    def stop_soon(done: int, total: int, bag_s: float) -> None:
        if bag_s >= 1.0:
            stop.set()

    result = run_bag(
        tmp_path / "in",
        [],
        context=ros_context,
        record_topics=["/camera/image_raw"],
        out_bag=tmp_path / "out",
        rate=2.0,
        progress=stop_soon,
        stop=stop,
    )
    assert result.replay.interrupted
    recorded = read_messages(tmp_path / "out")
    assert 1 <= len(recorded) < 40
    assert [m.data for m in recorded] == [m.data for m in result.on("/camera/image_raw")]


def test_bad_remap_target_is_a_clear_error(ros_context):
    options = ReplayOptions(topics=("/chatter",), remap={"/chatter": "/not a topic!"})
    with pytest.raises(BagError, match="/chatter"):
        BagPlayer(REFERENCE, options, context=ros_context)


def test_qos_override_file(tmp_path):
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from vla_ros.bag.replay import load_qos_overrides

    path = tmp_path / "qos.yaml"
    path.write_text(
        "/camera/image_raw: {reliability: reliable, depth: 3}\n"
        "/vla/instruction: {durability: transient_local}\n",
        encoding="utf-8",
    )
    overrides = load_qos_overrides(path)
    image = overrides["/camera/image_raw"]
    assert (image.reliability, image.depth) == (ReliabilityPolicy.RELIABLE, 3)
    assert overrides["/vla/instruction"].durability == DurabilityPolicy.TRANSIENT_LOCAL
    for bad, needle in (
        ("/a: {reliability: sometimes}", "reliability"),
        ("/a: {depth: 0}", "depth"),
        ("/a: {deadline: 1}", "unknown"),
        ("- /a", "mapping"),
    ):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(BagError, match=needle):
            load_qos_overrides(path)

"""Recording live topics: the bag carries raw CDR, type hashes, definitions and offered QoS."""

from __future__ import annotations

import sqlite3

import pytest

from vla_ros.bag.io import BagError, bag_info, message_definition, read_messages, serialize
from vla_ros.bag.record import BagRecorder

pytestmark = pytest.mark.ros


@pytest.fixture
def talker(ros_context):
    import rclpy
    from geometry_msgs.msg import Twist
    from std_msgs.msg import String

    from vla_ros.transport import LATCHED_QOS, SENSOR_QOS

    node = rclpy.create_node("talker", context=ros_context)
    node.string_pub = node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
    node.twist_pub = node.create_publisher(Twist, "/cmd_vel", SENSOR_QOS)
    yield node
    node.destroy_node()


def _executor(context, *nodes):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    return executor


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_recorded_bag_has_hashes_definitions_and_offered_qos(
    ros_context, spin_until, talker, tmp_path, storage
):
    from geometry_msgs.msg import Twist
    from std_msgs.msg import String

    out = tmp_path / "rec"
    recorder = BagRecorder(
        ["/vla/instruction", "cmd_vel"], out, context=ros_context, storage=storage
    )
    executor = _executor(ros_context, recorder.node)
    assert spin_until(executor, lambda: recorder.ready, 10.0)
    talker.string_pub.publish(String(data="왼쪽으로 가"))
    for k in range(3):
        twist = Twist()
        twist.linear.x = 0.1 * k
        talker.twist_pub.publish(twist)
        spin_until(executor, lambda n=k: recorder.stats.counts["/cmd_vel"] > n, 5.0)
    assert spin_until(executor, lambda: recorder.stats.counts["/vla/instruction"] == 1, 5.0)
    stats = recorder.stop()
    assert not stats.errors
    assert stats.counts == {"/vla/instruction": 1, "/cmd_vel": 3}

    info = bag_info(out)
    assert info.storage == storage
    live_hash = {
        topic: str(talker.get_publishers_info_by_topic(topic)[0].topic_type_hash)
        for topic in ("/vla/instruction", "/cmd_vel")
    }
    for topic in ("/vla/instruction", "/cmd_vel"):
        recorded = info.topic(topic)
        assert recorded.digest == live_hash[topic]
        assert recorded.digest == message_definition(recorded.msgtype)[1]
    latched = info.topic("/vla/instruction").offered_qos
    assert [(q.reliability.name, q.durability.name) for q in latched] == [
        ("RELIABLE", "TRANSIENT_LOCAL")
    ]
    assert info.topic("/cmd_vel").offered_qos[0].reliability.name == "BEST_EFFORT"
    messages = read_messages(out)
    assert [m.data for m in messages if m.topic == "/vla/instruction"] == [
        serialize(String(data="왼쪽으로 가"))
    ]
    times = [m.timestamp_ns for m in messages]
    assert times == sorted(times)
    assert info.version == 9


def test_recorded_sqlite_has_rosbag2_tables(ros_context, spin_until, talker, tmp_path):
    """What `ros2 bag` (Iron and later) reads: schema 4 with definitions and type hashes."""
    from std_msgs.msg import String

    out = tmp_path / "rec"
    recorder = BagRecorder(["/vla/instruction"], out, context=ros_context, version=8)
    executor = _executor(ros_context, recorder.node)
    assert spin_until(executor, lambda: recorder.ready, 10.0)
    talker.string_pub.publish(String(data="go"))
    assert spin_until(executor, lambda: recorder.stats.counts["/vla/instruction"] == 1, 5.0)
    recorder.stop()
    db = sqlite3.connect(out / "rec.db3")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema", "metadata", "topics", "messages", "message_definitions"} <= tables
    ((encoding, definition, digest),) = db.execute(
        "SELECT encoding, encoded_message_definition, type_description_hash "
        "FROM message_definitions"
    ).fetchall()
    db.close()
    assert encoding == "ros2msg"
    assert definition.strip() == "string data"
    assert digest.startswith("RIHS01_")
    assert bag_info(out).version == 8


def test_topic_published_later_is_picked_up(ros_context, spin_until, tmp_path):
    import rclpy
    from std_msgs.msg import String

    recorder = BagRecorder(["/late"], tmp_path / "rec", context=ros_context)
    executor = _executor(ros_context, recorder.node)
    spin_until(executor, lambda: False, 0.3)
    assert recorder.pending == ["/late"]
    node = rclpy.create_node("late_talker", context=ros_context)
    publisher = node.create_publisher(String, "/late", 10)
    assert spin_until(executor, lambda: recorder.ready, 10.0)
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 10.0)
    publisher.publish(String(data="finally"))
    assert spin_until(executor, lambda: recorder.stats.counts.get("/late") == 1, 5.0)
    recorder.stop()
    node.destroy_node()
    assert len(read_messages(tmp_path / "rec")) == 1


def test_all_topics_with_exclusions_in_memory(ros_context, spin_until, talker):
    from std_msgs.msg import String

    recorder = BagRecorder(
        context=ros_context, all_topics=True, exclude=["/rosout", "/parameter_events", "/cmd_vel"]
    )
    executor = _executor(ros_context, recorder.node)
    assert spin_until(executor, lambda: "/vla/instruction" in recorder.stats.counts, 10.0)
    talker.string_pub.publish(String(data="hello"))
    assert spin_until(executor, lambda: len(recorder.items) == 1, 5.0)
    stats = recorder.stop()
    assert "/cmd_vel" not in stats.counts
    assert recorder.items[0].topic == "/vla/instruction"
    assert recorder.stop() is stats


def test_record_needs_topics_and_refuses_existing_output(ros_context, tmp_path):
    with pytest.raises(BagError, match="at least one topic"):
        BagRecorder([], context=ros_context)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(BagError, match="exists"):
        BagRecorder(["/x"], tmp_path / "taken", context=ros_context)


def test_under_sim_time_nothing_is_stamped_before_the_first_clock(
    ros_context, spin_until, talker, tmp_path
):
    """A recording started before the replay: messages before /clock would be stamped 0."""
    from geometry_msgs.msg import Twist
    from rosgraph_msgs.msg import Clock

    recorder = BagRecorder(["/cmd_vel"], tmp_path / "rec", context=ros_context, use_sim_time=True)
    clock_pub = talker.create_publisher(Clock, "/clock", 10)
    executor = _executor(ros_context, recorder.node, talker)
    assert spin_until(executor, lambda: recorder.ready, 10.0)
    talker.twist_pub.publish(Twist())
    assert spin_until(executor, lambda: recorder.stats.before_clock == 1, 5.0)
    tick = Clock()
    tick.clock.sec = 42
    clock_pub.publish(tick)
    assert spin_until(executor, lambda: recorder.node.get_clock().now().nanoseconds > 0, 5.0)
    talker.twist_pub.publish(Twist())
    assert spin_until(executor, lambda: recorder.stats.counts["/cmd_vel"] == 1, 5.0)
    stats = recorder.stop()
    assert stats.before_clock == 1
    info = bag_info(tmp_path / "rec")
    assert info.count == 1
    assert info.start_ns == 42 * 10**9


def test_record_gives_up_when_nothing_arrives(tmp_path, capsys):
    """The README replay flow hung in `wait` when the stack was missing."""
    from vla_ros.cli import main

    out = tmp_path / "rec"
    code = main(["record", str(out), "--topics", "/nobody", "--duration", "5", "--wait", "1"])
    assert code == 1
    assert "nothing was recorded within 1 s" in " ".join(capsys.readouterr().err.split())

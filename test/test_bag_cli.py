"""The `vla-ros` bag verbs as users run them: exit codes, error messages, Ctrl-C."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros.bag.io import BagWriter, bag_info, deserialize, read_messages, serialize
from vla_ros.cli import main

REFERENCE = Path(__file__).parent / "data" / "bags" / "v9_sqlite3"


def test_replay_of_a_corrupt_bag_exits_2_naming_the_file(tmp_path, capsys):
    shutil.copytree(REFERENCE, tmp_path / "bag")
    (tmp_path / "bag" / "v9_sqlite3.db3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    assert main(["replay", str(tmp_path / "bag"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vla-ros replay: error:" in err
    assert "v9_sqlite3.db3" in err


def test_replay_of_an_unknown_type_exits_2_naming_the_topic(tmp_path, capsys):
    from std_msgs.msg import String

    with BagWriter(tmp_path / "custom") as bag:
        bag.add_topic("/ok", "std_msgs/msg/String")
        bag.add_topic("/gadget", "acme_msgs/msg/Gadget", digest="RIHS01_" + "ef" * 32)
        bag.write("/ok", 1, serialize(String(data="x")))
    assert main(["replay", str(tmp_path / "custom"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'/gadget'" in err
    assert "acme_msgs/msg/Gadget" in err
    assert main(["replay", str(tmp_path / "custom"), "--no-progress", "--topics", "/ok"]) == 0


def test_replay_rejects_bad_remap(capsys):
    assert main(["replay", str(REFERENCE), "--remap", "/chatter"]) == 2
    assert "old:=new" in capsys.readouterr().err


@pytest.mark.ros
@pytest.mark.slow
def test_record_survives_ctrl_c_with_a_valid_bag(tmp_path, ros_context, spin_until):
    """`vla-ros record` in its own process, real DDS, interrupted like a user would."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    out = tmp_path / "rec"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "vla_ros.cli", "record", str(out)),
            *("--topics", "/chatter", "--no-progress"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        node = rclpy.create_node("cli_talker", context=ros_context)
        publisher = node.create_publisher(String, "/chatter", 10)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0, 30.0), (
            "recorder never subscribed"
        )
        for k in range(5):
            publisher.publish(String(data=f"message {k} 안녕"))
        spin_until(executor, lambda: False, 0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        node.destroy_node()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert bag_info(out).count == 5
    texts = [deserialize(m.data, m.msgtype).data for m in read_messages(out)]
    assert texts == [f"message {k} 안녕" for k in range(5)]

"""Regenerates the committed reference bags in this directory (run from the repository root).

    .venv/bin/python test/data/bags/make_bags.py

The same messages in every layout rosbag2 writes today (sqlite3 and mcap, metadata versions 8
and 9) plus a Humble-layout bag (metadata version 5, sqlite3 schema 3: no type hashes, no
message definitions, QoS as a YAML string with numeric enums), which is what the Jetson
deployment target (ROS 2 Humble) records. `expected.json` lists the SHA-256 of every message so
tests can prove each reader returns the identical bytes.
"""

from __future__ import annotations

import array
import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
START_NS = 1_717_000_000_000_000_000
LAYOUTS = (("v8_sqlite3", "sqlite3", 8), ("v9_sqlite3", "sqlite3", 9), ("v8_mcap", "mcap", 8))
LAYOUTS += (("v9_mcap", "mcap", 9),)
HUMBLE = "humble_v5_sqlite3"


def messages() -> list[tuple[str, str, int, bytes]]:
    """(topic, type, bag time ns, CDR) in time order."""
    import cv2
    import numpy as np
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import CompressedImage, Image, LaserScan
    from std_msgs.msg import String

    from vla_ros.bag.io import serialize

    def stamped(msg: object, t_ns: int, frame: str) -> object:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
        msg.header.frame_id = frame
        return msg

    out = []
    for k, text in enumerate(("hello robot", "move forward", "안녕하세요 로봇, 앞으로 가")):
        t = START_NS + k * 100_000_000
        out.append(
            (
                "/chatter",
                "std_msgs/msg/String",
                t,
                serialize(String(data=text), "std_msgs/msg/String"),
            )
        )
    for k in range(3):
        twist = Twist()
        twist.linear.x, twist.angular.z = 0.1 * (k + 1), -0.05 * k
        t = START_NS + 20_000_000 + k * 100_000_000
        out.append(
            ("/cmd_vel", "geometry_msgs/msg/Twist", t, serialize(twist, "geometry_msgs/msg/Twist"))
        )
    for k in range(2):
        t = START_NS + 40_000_000 + k * 100_000_000
        pixels = (np.arange(4 * 3 * 3, dtype=np.uint8) * (k + 3)).reshape(3, 4, 3)
        image = Image(height=3, width=4, encoding="rgb8", step=12)
        image.data = array.array("B", pixels.tobytes())
        out.append(
            (
                "/camera/image_raw",
                "sensor_msgs/msg/Image",
                t,
                serialize(stamped(image, t, "camera"), "sensor_msgs/msg/Image"),
            )
        )
        ok, jpeg = cv2.imencode(".jpg", np.full((8, 8, 3), 40 * (k + 1), np.uint8))
        assert ok
        compressed = CompressedImage(format="rgb8; jpeg compressed bgr8")
        compressed.data = array.array("B", jpeg.tobytes())
        out.append(
            (
                "/camera/image_raw/compressed",
                "sensor_msgs/msg/CompressedImage",
                t,
                serialize(stamped(compressed, t, "camera"), "sensor_msgs/msg/CompressedImage"),
            )
        )
        scan = LaserScan(angle_min=-1.0, angle_max=1.0, angle_increment=0.25, range_max=5.0)
        scan.ranges = array.array("f", [1.0 + 0.1 * i + k for i in range(9)])
        out.append(
            (
                "/scan",
                "sensor_msgs/msg/LaserScan",
                t + 5_000_000,
                serialize(stamped(scan, t + 5_000_000, "laser"), "sensor_msgs/msg/LaserScan"),
            )
        )
    out.sort(key=lambda m: m[2])
    return out


def write_layout(name: str, storage: str, version: int, msgs: list) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from vla_ros.bag.io import BagWriter

    qos = {
        "/chatter": QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        ),
        "/scan": QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT),
    }
    with BagWriter(HERE / name, storage=storage, version=version, overwrite=True) as bag:
        for topic, msgtype, _, _ in msgs:
            bag.add_topic(topic, msgtype, [qos.get(topic, QoSProfile(depth=10))])
        for topic, _, t, data in msgs:
            bag.write(topic, t, data)


HUMBLE_SCHEMA = """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL,
                      metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL,
                      timestamp INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
INSERT INTO schema VALUES (3, 'humble');
"""

HUMBLE_QOS = (
    "- history: 3\n  depth: 0\n  reliability: {reliability}\n  durability: {durability}\n"
    "  deadline:\n    sec: 9223372036\n    nsec: 854775807\n"
    "  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: 1\n"
    "  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n"
    "  avoid_ros_namespace_conventions: false"
)


def write_humble(msgs: list) -> None:
    """What `ros2 bag record` on Humble leaves behind (metadata v5, db schema 3)."""
    path = HERE / HUMBLE
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    db = path / f"{HUMBLE}_0.db3"
    topics: dict[str, tuple[int, str]] = {}
    for topic, msgtype, _, _ in msgs:
        topics.setdefault(topic, (len(topics) + 1, msgtype))
    qos = {
        topic: HUMBLE_QOS.format(
            reliability=1 if topic != "/scan" else 2, durability=1 if topic == "/chatter" else 2
        )
        for topic in topics
    }
    connection = sqlite3.connect(db)
    connection.executescript(HUMBLE_SCHEMA)
    for topic, (topic_id, msgtype) in topics.items():
        connection.execute(
            "INSERT INTO topics VALUES (?, ?, ?, 'cdr', ?)", (topic_id, topic, msgtype, qos[topic])
        )
    for topic, _, t, data in msgs:
        connection.execute(
            "INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
            (topics[topic][0], t, data),
        )
    connection.commit()
    connection.close()
    start, end = msgs[0][2], msgs[-1][2]
    counts = {topic: sum(1 for m in msgs if m[0] == topic) for topic in topics}
    info = {
        "version": 5,
        "storage_identifier": "sqlite3",
        "duration": {"nanoseconds": end - start},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": len(msgs),
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": topic,
                    "type": msgtype,
                    "serialization_format": "cdr",
                    "offered_qos_profiles": qos[topic],
                },
                "message_count": counts[topic],
            }
            for topic, (_, msgtype) in topics.items()
        ],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [db.name],
        "files": [
            {
                "path": db.name,
                "starting_time": {"nanoseconds_since_epoch": start},
                "duration": {"nanoseconds": end - start},
                "message_count": len(msgs),
            }
        ],
    }
    text = yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False)
    (path / "metadata.yaml").write_text(text, encoding="utf-8")


def main() -> int:
    msgs = messages()
    for name, storage, version in LAYOUTS:
        write_layout(name, storage, version, msgs)
    write_humble(msgs)
    expected = {
        "start_ns": START_NS,
        "layouts": [name for name, _, _ in LAYOUTS] + [HUMBLE],
        "messages": [
            {"topic": topic, "type": msgtype, "t": t, "sha256": hashlib.sha256(data).hexdigest()}
            for topic, msgtype, t, data in msgs
        ],
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

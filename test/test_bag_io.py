"""Reading and writing rosbag2 files: every layout rosbag2 writes, corrupt files, unknown types."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.bag.io import (
    BagError,
    BagReader,
    BagWriter,
    adapt_qos,
    bag_info,
    deserialize,
    message_class,
    message_definition,
    qos_to_offered,
    read_messages,
    stamp_ns,
)

DATA = Path(__file__).parent / "data" / "bags"
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("layout", EXPECTED["layouts"])
def test_reference_bags_read_back_identical_bytes(layout):
    messages = read_messages(DATA / layout)
    got = [
        {"topic": m.topic, "type": m.msgtype, "t": m.timestamp_ns, "sha256": _sha(m.data)}
        for m in messages
    ]
    assert got == EXPECTED["messages"]


@pytest.mark.parametrize("layout", EXPECTED["layouts"])
def test_reference_bags_metadata(layout):
    info = bag_info(DATA / layout)
    assert info.count == len(EXPECTED["messages"])
    assert info.start_ns == EXPECTED["start_ns"]
    version, storage = {
        "v8_sqlite3": (8, "sqlite3"),
        "v9_sqlite3": (9, "sqlite3"),
        "v8_mcap": (8, "mcap"),
        "v9_mcap": (9, "mcap"),
        "humble_v5_sqlite3": (5, "sqlite3"),
    }[layout]
    assert (info.version, info.storage) == (version, storage)
    chatter = info.topic("/chatter")
    assert chatter.count == 3
    assert [(q.reliability.name, q.durability.name) for q in chatter.offered_qos] == [
        ("RELIABLE", "TRANSIENT_LOCAL")
    ]
    assert [q.reliability.name for q in info.topic("/scan").offered_qos] == ["BEST_EFFORT"]
    if layout.startswith("humble"):
        assert chatter.digest == ""
    else:
        assert chatter.digest == message_definition("std_msgs/msg/String")[1]


@pytest.mark.parametrize("layout", ["v9_sqlite3", "humble_v5_sqlite3", "v8_mcap"])
def test_reference_bag_contents_deserialize(layout):
    messages = read_messages(DATA / layout)
    texts = [deserialize(m.data, m.msgtype).data for m in messages if m.topic == "/chatter"]
    assert texts == ["hello robot", "move forward", "안녕하세요 로봇, 앞으로 가"]
    twists = [deserialize(m.data, m.msgtype) for m in messages if m.topic == "/cmd_vel"]
    assert [round(t.linear.x, 6) for t in twists] == [0.1, 0.2, 0.3]
    images = [(m, deserialize(m.data, m.msgtype)) for m in messages if m.topic.endswith("raw")]
    for record, image in images:
        assert (image.width, image.height, image.encoding, len(image.data)) == (4, 3, "rgb8", 36)
        assert stamp_ns(image) == record.timestamp_ns
    scans = [deserialize(m.data, m.msgtype) for m in messages if m.topic == "/scan"]
    assert [len(s.ranges) for s in scans] == [9, 9]


def test_bare_storage_files_open_too(tmp_path):
    for layout, name in (("v9_sqlite3", "v9_sqlite3.db3"), ("v9_mcap", "v9_mcap.mcap")):
        assert len(read_messages(DATA / layout / name)) == len(EXPECTED["messages"])


def test_topic_filter_and_missing_topic():
    with BagReader(DATA / "v9_mcap") as reader:
        assert {m.topic for m in reader.messages(["/scan"])} == {"/scan"}
        with pytest.raises(BagError, match="/nope"):
            list(reader.messages(["/nope"]))


def test_missing_bag_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        BagReader(tmp_path / "does_not_exist")


def test_directory_without_metadata_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="empty"):
        BagReader(tmp_path / "empty")


def test_corrupt_metadata_names_the_file(tmp_path):
    bag = _copy(tmp_path, "v9_sqlite3")
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed", encoding="utf-8")
    with pytest.raises(BagError, match=r"metadata\.yaml"):
        BagReader(bag)


def test_missing_storage_file_named(tmp_path):
    bag = _copy(tmp_path, "v9_sqlite3")
    (bag / "v9_sqlite3.db3").unlink()
    with pytest.raises(BagError, match=r"v9_sqlite3\.db3"):
        BagReader(bag)


@pytest.mark.parametrize(
    ("layout", "name"), [("v9_sqlite3", "v9_sqlite3.db3"), ("v8_mcap", "v8_mcap.mcap")]
)
def test_garbage_storage_file_names_the_bag(tmp_path, layout, name):
    bag = _copy(tmp_path, layout)
    (bag / name).write_bytes(b"\x00garbage, not a bag" * 100)
    with pytest.raises(BagError, match=str(bag)):
        list(BagReader(bag).messages())


def test_truncated_mcap_is_a_clear_error(tmp_path):
    bag = _copy(tmp_path, "v9_mcap")
    data = (bag / "v9_mcap.mcap").read_bytes()
    (bag / "v9_mcap.mcap").write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match="v9_mcap"):
        list(BagReader(bag).messages())


def test_unknown_message_type_names_the_topic():
    with pytest.raises(BagError, match=r"topic '/widgets'.*acme_msgs/msg/Widget"):
        message_class("acme_msgs/msg/Widget", "/widgets")
    with pytest.raises(BagError, match="malformed"):
        message_class("not-a-type", "/x")
    assert message_class("std_msgs/String").__name__ == "String"


def test_garbage_bytes_do_not_crash_deserialize():
    with pytest.raises(BagError, match="/img"):
        deserialize(b"\x00\x01\x00\x00\xff\xff\xff\x7f", "sensor_msgs/msg/Image", "/img")


def test_writer_round_trip_both_storages_and_versions(tmp_path):
    from std_msgs.msg import String

    from vla_ros.bag.io import serialize

    for storage in ("sqlite3", "mcap"):
        for version in (8, 9):
            path = tmp_path / f"{storage}{version}"
            with BagWriter(path, storage=storage, version=version) as bag:
                bag.add_topic("/t", "std_msgs/msg/String")
                for k in range(3):
                    bag.write("/t", 1000 + k, serialize(String(data=f"m{k}")))
            info = bag_info(path)
            assert (info.storage, info.version, info.count) == (storage, version, 3)
            texts = [deserialize(m.data, m.msgtype).data for m in read_messages(path)]
            assert texts == ["m0", "m1", "m2"]


def test_writer_refuses_to_clobber_unless_asked(tmp_path):
    with BagWriter(tmp_path / "b") as bag:
        bag.add_topic("/t", "std_msgs/msg/String")
    with pytest.raises(BagError, match="exists"):
        BagWriter(tmp_path / "b")
    BagWriter(tmp_path / "b", overwrite=True).close()
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x", encoding="utf-8")
    with pytest.raises(BagError, match="not a rosbag2"):
        BagWriter(tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_writer_rejects_bad_options_and_unknown_topics(tmp_path):
    with pytest.raises(BagError, match="storage"):
        BagWriter(tmp_path / "a", storage="rosbag1")
    with pytest.raises(BagError, match="version"):
        BagWriter(tmp_path / "b", version=5)
    with BagWriter(tmp_path / "c") as bag, pytest.raises(BagError, match="/never_added"):
        bag.write("/never_added", 1, b"")


def test_interrupted_writer_still_leaves_a_readable_bag(tmp_path):
    from std_msgs.msg import String

    from vla_ros.bag.io import serialize

    path = tmp_path / "interrupted"

    def record_then_ctrl_c() -> None:
        with BagWriter(path, storage="sqlite3") as bag:
            bag.add_topic("/t", "std_msgs/msg/String")
            for k in range(5):
                bag.write("/t", 10 + k, serialize(String(data=str(k))))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record_then_ctrl_c()
    assert [m.timestamp_ns for m in read_messages(path)] == [10, 11, 12, 13, 14]


def test_type_unknown_to_the_typestore_needs_a_live_hash(tmp_path):
    with pytest.raises(BagError, match="acme_msgs/msg/Widget"):
        message_definition("acme_msgs/msg/Widget")
    digest = "RIHS01_" + "ab" * 32
    definition, got = message_definition("acme_msgs/msg/Widget", digest)
    assert (definition, got) == ("", digest)
    with BagWriter(tmp_path / "custom") as bag:
        bag.add_topic("/widgets", "acme_msgs/msg/Widget", digest=digest)
        bag.write("/widgets", 5, b"\x00\x01\x00\x00")
    assert bag_info(tmp_path / "custom").topic("/widgets").digest == digest


_QOS_NAMES = st.sampled_from(["RELIABLE", "BEST_EFFORT"])
_DURABILITY = st.sampled_from(["VOLATILE", "TRANSIENT_LOCAL"])


@given(st.lists(st.tuples(_QOS_NAMES, _DURABILITY, st.integers(0, 50)), min_size=1, max_size=5))
def test_adapted_qos_matches_every_recorded_publisher(offers):
    """Reliable/transient-local only when every recorded publisher was; depth never 0."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    recorded = [
        qos_to_offered(
            QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=max(1, depth),
                reliability=ReliabilityPolicy[rel],
                durability=DurabilityPolicy[dur],
            )
        )
        for rel, dur, depth in offers
    ]
    profile = adapt_qos(recorded)
    all_reliable = all(rel == "RELIABLE" for rel, _, _ in offers)
    all_latched = all(dur == "TRANSIENT_LOCAL" for _, dur, _ in offers)
    assert (profile.reliability == ReliabilityPolicy.RELIABLE) == all_reliable
    assert (profile.durability == DurabilityPolicy.TRANSIENT_LOCAL) == all_latched
    assert profile.depth == max(max(1, depth) for _, _, depth in offers)


def test_adapted_qos_defaults_without_offers():
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    profile = adapt_qos([])
    assert profile.reliability == ReliabilityPolicy.RELIABLE
    assert profile.durability == DurabilityPolicy.VOLATILE
    assert profile.depth == 10


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copy(tmp_path: Path, layout: str) -> Path:
    target = tmp_path / layout
    shutil.copytree(DATA / layout, target)
    return target

"""`vla-ros dataset build|info`: real rosbag2 files in, Parquet any Arrow reader opens out."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from learn_support import START_NS, image_msg, string_msg, twist_msg, write_toy_bag
from vla_ros.bag.io import BagWriter, typestore
from vla_ros.cli import main
from vla_ros.learn.build import build_bag, build_dataset
from vla_ros.learn.spec import DatasetError, DatasetSpec
from vla_ros.learn.store import Dataset

SPEC = DatasetSpec(image_size=32)
FOUR = (("left", 0.6, "en"), ("right", -0.4, "ko"), ("left", -0.3, "ko"), ("right", 0.5, "en"))


@pytest.fixture(scope="module")
def toy_bag(tmp_path_factory):
    return write_toy_bag(tmp_path_factory.mktemp("bags") / "toy", episodes=FOUR)


def test_build_writes_parquet_readable_without_vla_ros(toy_bag, tmp_path):
    report = build_dataset([toy_bag], tmp_path / "ds", SPEC)
    assert report.episodes == 4
    assert report.train_episodes + report.val_episodes == 4
    assert report.val_episodes >= 1
    train = pq.read_table(tmp_path / "ds" / "data" / "train.parquet")
    assert {"episode_index", "frame_index", "timestamp", "instruction", "action", "image"} <= set(
        train.column_names
    )
    features = json.loads(train.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    row = train.slice(0, 1).to_pylist()[0]
    assert row["image"]["bytes"][:4] == b"\x89PNG"
    assert len(row["action"]) == 3
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["control_rate_hz"] == 10.0
    episodes = meta["episodes"]
    assert [e["instruction"] for e in episodes] == [
        "steer left",
        "오른쪽으로 돌아",
        "왼쪽으로 돌아",
        "steer right",
    ]
    # 3 s per episode at 10 Hz, resampled from 20 Hz commands and 10 fps frames.
    assert all(28 <= e["length"] <= 30 for e in episodes)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "/cmd_vel" in card
    assert "frames/s" in card


def test_resampled_actions_are_the_commands_in_effect(toy_bag, tmp_path):
    build_dataset([toy_bag], tmp_path / "ds", SPEC)
    dataset = Dataset(tmp_path / "ds")
    split = dataset.load("train")
    assert split.frames.shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(split.actions[:, 0], 0.2, atol=1e-6)
    np.testing.assert_allclose(split.actions[:, 1], 0.0, atol=1e-6)
    for start in split.episode_starts:
        instruction = split.instructions[start]
        sign = np.sign(split.actions[start, 2])
        assert sign == (1 if instruction in ("steer left", "왼쪽으로 돌아") else -1)
    stats = dataset.meta["stats"]["action"]
    low, high = dataset.norm_bounds
    assert low[1] < 0 < high[1], "a never-moving axis still gets min < max"
    assert stats["min"][2] < 0 < stats["max"][2]


def test_instruction_change_and_marker_split_episodes_without_a_gap(tmp_path):
    store = typestore()
    path = tmp_path / "bag"
    with BagWriter(path) as writer:
        for topic, kind in (
            ("/camera/image_raw", "sensor_msgs/msg/Image"),
            ("/vla/instruction", "std_msgs/msg/String"),
            ("/cmd_vel", "geometry_msgs/msg/Twist"),
            ("/vla/reset", "std_msgs/msg/Empty"),
        ):
            writer.add_topic(topic, kind)
        for k in range(90):
            t = START_NS + k * 100_000_000
            if k in (0, 30):
                text = "go left" if k == 0 else "go right"
                writer.write(
                    "/vla/instruction",
                    t,
                    store.serialize_cdr(string_msg(text), "std_msgs/msg/String"),
                )
            if k == 60:
                empty = store.types["std_msgs/msg/Empty"]()
                writer.write("/vla/reset", t, store.serialize_cdr(empty, "std_msgs/msg/Empty"))
            frame = np.full((16, 16, 3), k, dtype=np.uint8)
            writer.write(
                "/camera/image_raw",
                t,
                store.serialize_cdr(image_msg(frame, t), "sensor_msgs/msg/Image"),
            )
            writer.write(
                "/cmd_vel",
                t,
                store.serialize_cdr(twist_msg(0.1, 0.0, 0.0), "geometry_msgs/msg/Twist"),
            )
    result = build_bag(path, DatasetSpec(image_size=16))
    assert result.error is None
    assert [e.instruction for e in result.episodes] == ["go left", "go right", "go right"]
    assert [e.length for e in result.episodes] == [30, 30, 30]
    # Each tick holds the newest frame at or before it: frame k at tick k.
    assert result.episodes[1].frames[0, 0, 0, 0] == 30


def test_wall_clock_bag_of_a_sim_time_stack_is_aligned(tmp_path):
    """Header stamps on sim time, bag times on wall time: header-less topics are shifted."""
    store = typestore()
    path = tmp_path / "bag"
    wall = START_NS + 3600 * 10**9
    with BagWriter(path) as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/vla/instruction", "std_msgs/msg/String")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        writer.write(
            "/vla/instruction", wall, store.serialize_cdr(string_msg("go"), "std_msgs/msg/String")
        )
        for k in range(40):
            sim_t = 10**9 + k * 100_000_000
            frame = np.full((16, 16, 3), 50, dtype=np.uint8)
            data = store.serialize_cdr(image_msg(frame, sim_t), "sensor_msgs/msg/Image")
            writer.write("/camera/image_raw", wall + k * 100_000_000 + 1_000_000, data)
            twist = store.serialize_cdr(twist_msg(0.01 * k, 0.0, 0.0), "geometry_msgs/msg/Twist")
            writer.write("/cmd_vel", wall + k * 100_000_000, twist)
    result = build_bag(path, DatasetSpec(image_size=16))
    assert len(result.episodes) == 1
    np.testing.assert_allclose(
        result.episodes[0].actions[:5, 0], [0.0, 0.01, 0.02, 0.03, 0.04], atol=1e-6
    )


def test_missing_topic_names_bag_and_topic(toy_bag, tmp_path):
    spec = DatasetSpec(image_size=32, camera_topic="/front/image")
    with pytest.raises(DatasetError, match=r"toy: missing topic\(s\) /front/image"):
        build_dataset([toy_bag], tmp_path / "ds", spec)


def test_nan_actions_skip_episodes_with_counted_reason(tmp_path):
    bag = write_toy_bag(tmp_path / "nan", episodes=FOUR[:1], nan_at=1.0)
    with pytest.raises(DatasetError, match=r"nan.*topic /cmd_vel.*NaN") as info:
        build_dataset([bag], tmp_path / "ds", SPEC)
    assert "nan_action" in str(info.value)
    good = write_toy_bag(tmp_path / "good", episodes=FOUR[1:3])
    report = build_dataset([bag, good], tmp_path / "ds2", SPEC)
    assert report.episodes == 2
    assert report.skipped["nan_action"] >= 1


def test_no_instruction_and_empty_inputs_are_refused(tmp_path):
    store = typestore()
    path = tmp_path / "silent"
    with BagWriter(path) as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/vla/instruction", "std_msgs/msg/String")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        for k in range(20):
            t = START_NS + k * 100_000_000
            frame = np.zeros((16, 16, 3), dtype=np.uint8)
            writer.write(
                "/camera/image_raw",
                t,
                store.serialize_cdr(image_msg(frame, t), "sensor_msgs/msg/Image"),
            )
    with pytest.raises(DatasetError, match=r"silent: no instruction on /vla/instruction"):
        build_dataset([path], tmp_path / "ds", SPEC)
    with pytest.raises(DatasetError, match="no bags"):
        build_dataset([], tmp_path / "ds", SPEC)
    with pytest.raises(FileNotFoundError):
        build_dataset([tmp_path / "nope"], tmp_path / "ds", SPEC)


def test_non_monotonic_and_gappy_camera_is_cut_and_counted(tmp_path):
    store = typestore()
    path = tmp_path / "jumpy"
    with BagWriter(path) as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/vla/instruction", "std_msgs/msg/String")
        writer.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        writer.write(
            "/vla/instruction",
            START_NS,
            store.serialize_cdr(string_msg("go"), "std_msgs/msg/String"),
        )
        stamps = [START_NS + k * 100_000_000 for k in range(30)]
        stamps[10] = stamps[8]  # a reordered frame
        stamps += [START_NS + k * 100_000_000 for k in range(5, 35)]  # the clock restarts
        for i, stamp in enumerate(stamps):
            bag_t = START_NS + i * 100_000_000
            frame = np.zeros((16, 16, 3), dtype=np.uint8)
            data = store.serialize_cdr(image_msg(frame, stamp), "sensor_msgs/msg/Image")
            writer.write("/camera/image_raw", bag_t, data)
        for i in range(120):
            twist = store.serialize_cdr(twist_msg(0.1, 0.0, 0.0), "geometry_msgs/msg/Twist")
            writer.write("/cmd_vel", START_NS + i * 50_000_000, twist)
    result = build_bag(path, DatasetSpec(image_size=16))
    assert result.skipped["non_monotonic_frame"] == 1
    assert result.skipped["clock_jump"] == 1
    assert len(result.episodes) >= 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("action_space", "hexapod", "action_space"),
        ("camera_topic", "camera", "camera_topic"),
        ("control_rate_hz", 0.0, "control_rate_hz"),
        ("image_size", 4, "image_size"),
        ("image_size", 100000, r"image_size must be an integer in \[8, 4096\]"),
        ("gripper_topic", "/gripper", "mobile3 has no gripper"),
    ],
)
def test_spec_validation_names_the_field(field, value, message):
    with pytest.raises(DatasetError, match=message):
        DatasetSpec.load(None, **{field: value})


def test_spec_file_unknown_key_is_refused(tmp_path):
    path = tmp_path / "dataset.yaml"
    path.write_text("camera_topc: /x\n")
    with pytest.raises(DatasetError, match=r"unknown field.*camera_topc"):
        DatasetSpec.load(path)


def test_cli_build_info_and_preview(toy_bag, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["dataset", "build", str(toy_bag), "--out", str(out), "--image-size", "32"]) == 0
    assert (out / "preview.png").stat().st_size > 1000
    assert main(["dataset", "info", str(out), "--preview", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert "episodes" in printed
    assert "frames/s" in printed
    assert (tmp_path / "p.png").is_file()
    # A second build into the same directory needs --overwrite.
    assert main(["dataset", "build", str(toy_bag), "--out", str(out), "--image-size", "32"]) == 2
    assert "exists" in capsys.readouterr().err


def test_truncated_bag_is_skipped_and_named(toy_bag, tmp_path):
    killed = tmp_path / "killed_recording"
    killed.mkdir()
    (killed / "killed_recording_0.db3").write_bytes(b"")
    report = build_dataset([killed, toy_bag], tmp_path / "ds", SPEC)
    assert report.skipped["unreadable_bag"] == 1
    assert report.episodes == 4
    assert any("killed_recording" in error for error in report.errors)


def test_an_axis_that_barely_moves_is_not_stretched_over_the_unit_range():
    """The arm's rotation only holds the hand level (~0.002 rad/s of jitter): normalised to
    [-1, 1] it would be as loud in the loss as the motion that matters. Moving axes keep their
    exact min/max (RoboVLMs' normalisation)."""
    from vla_ros.learn.store import MIN_AXIS_RANGE, action_stats
    from vla_ros.policy.codec import ActionCodec

    rng = np.random.default_rng(0)
    actions = np.stack(
        [rng.uniform(-0.2, 0.2, 500), rng.uniform(-0.001, 0.001, 500), np.zeros(500)], axis=1
    )
    stats = action_stats(actions)
    assert stats["norm_min"][0] == stats["min"][0]
    assert stats["norm_max"][0] == stats["max"][0]
    for axis in (1, 2):
        assert stats["norm_max"][axis] - stats["norm_min"][axis] >= 2 * MIN_AXIS_RANGE
    codec = ActionCodec(stats["norm_min"], stats["norm_max"], [1.0] * 3)
    unit = codec.normalize(actions)
    assert np.abs(unit[:, 0]).max() == pytest.approx(1.0)
    assert np.abs(unit[:, 1:]).max() < 0.1

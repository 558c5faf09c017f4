"""Synthetic camera bags: deterministic, static where they say static, events where they say."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.bag.io import BagError, bag_info, deserialize, read_messages
from vla_ros.bag.synth import SynthConfig, Timeline, read_timeline, segment_spans, synthesize

SMALL = {"width": 48, "height": 32, "fps": 10.0, "duration_s": 4.0}


def _frames(bag, topic="/camera/image_raw"):
    frames = []
    for m in read_messages(bag, [topic]):
        msg = deserialize(m.data, m.msgtype)
        if topic.endswith("compressed"):
            bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
            frames.append((m.timestamp_ns, bgr[:, :, ::-1]))
        else:
            pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            frames.append((m.timestamp_ns, pixels if msg.encoding == "rgb8" else pixels[..., ::-1]))
    return frames


def test_same_seed_same_bytes_other_seed_other_scene(tmp_path):
    a = synthesize(tmp_path / "a", SynthConfig(seed=3, **SMALL))
    b = synthesize(tmp_path / "b", SynthConfig(seed=3, **SMALL))
    c = synthesize(tmp_path / "c", SynthConfig(seed=4, **SMALL))
    assert a == b
    first, second, other = (read_messages(tmp_path / n) for n in "abc")
    assert [(m.topic, m.timestamp_ns, m.data) for m in first] == [
        (m.topic, m.timestamp_ns, m.data) for m in second
    ]
    assert [m.data for m in first if m.topic == "/camera/image_raw"] != [
        m.data for m in other if m.topic == "/camera/image_raw"
    ]
    assert c.frames == a.frames


def test_static_stretches_are_static_and_moving_ones_move(tmp_path):
    config = SynthConfig(segments=(("static", 1.0), ("moving", 1.0)), noise_std=0.0, **SMALL)
    timeline = synthesize(tmp_path / "bag", config)
    frames = _frames(tmp_path / "bag")
    assert len(frames) == timeline.frames == 40
    start = timeline.start_ns
    for (t0, before), (t1, after) in itertools.pairwise(frames):
        a, b = (t0 - start) / 1e9, (t1 - start) / 1e9
        changed = not np.array_equal(before, after)
        both_static = any(lo <= a and b < hi for lo, hi in timeline.static)
        if both_static:
            assert not changed, f"frame changed inside a static stretch at {b:.2f} s"
        if timeline.is_moving(a) and timeline.is_moving(b):
            assert changed, f"frame did not change while moving at {b:.2f} s"


def test_compressed_frames_match_raw_frames(tmp_path):
    config = SynthConfig(images="both", jpeg_quality=95, width=160, height=120, duration_s=1.0)
    synthesize(tmp_path / "bag", config)
    raw = _frames(tmp_path / "bag")
    jpeg = _frames(tmp_path / "bag", "/camera/image_raw/compressed")
    assert [t for t, _ in raw] == [t for t, _ in jpeg]
    for (_, a), (_, b) in zip(raw, jpeg, strict=True):
        assert np.mean(np.abs(a.astype(int) - b.astype(int))) < 6.0


def test_bgr8_encoding_holds_the_same_scene(tmp_path):
    synthesize(tmp_path / "rgb", SynthConfig(images="raw", **SMALL))
    synthesize(tmp_path / "bgr", SynthConfig(images="raw", encoding="bgr8", **SMALL))
    for (_, a), (_, b) in zip(_frames(tmp_path / "rgb"), _frames(tmp_path / "bgr"), strict=True):
        assert np.array_equal(a, b)


def test_instructions_estops_scan_odom_and_headers(tmp_path):
    config = SynthConfig(
        instructions=((0.3, "go to the red box"), (2.5, "왼쪽으로 돌아")),
        estops=((1.0, True), (1.5, False)),
        scan=True,
        odom=True,
        storage="mcap",
        **SMALL,
    )
    timeline = synthesize(tmp_path / "bag", config)
    info = bag_info(tmp_path / "bag")
    assert info.storage == "mcap"
    counts = {t.name: t.count for t in info.topics}
    assert counts == {
        "/camera/image_raw": 40,
        "/camera/image_raw/compressed": 40,
        "/vla/instruction": 2,
        "/vla/estop": 2,
        "/scan": 40,
        "/odom": 80,
    }
    messages = read_messages(tmp_path / "bag")
    start = timeline.start_ns
    texts = [
        ((m.timestamp_ns - start) / 1e9, deserialize(m.data, m.msgtype).data)
        for m in messages
        if m.topic == "/vla/instruction"
    ]
    assert texts == [(0.3, "go to the red box"), (2.5, "왼쪽으로 돌아")]
    estops = [deserialize(m.data, m.msgtype).data for m in messages if m.topic == "/vla/estop"]
    assert estops == [True, False]
    assert [q.durability.name for q in info.topic("/vla/instruction").offered_qos] == [
        "TRANSIENT_LOCAL"
    ]
    for m in messages:
        msg = deserialize(m.data, m.msgtype)
        if hasattr(msg, "header"):
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == m.timestamp_ns
    scan = deserialize(
        next(m for m in messages if m.topic == "/scan").data, "sensor_msgs/msg/LaserScan"
    )
    assert all(scan.range_min <= r <= scan.range_max for r in scan.ranges)
    assert read_timeline(tmp_path / "bag") == timeline


def test_default_instructions_are_english_then_korean_and_fit_any_duration(tmp_path):
    timeline = synthesize(tmp_path / "bag", SynthConfig(**{**SMALL, "duration_s": 1.0}))
    (t0, first), (t1, second) = timeline.instructions
    assert 0 <= t0 < t1 < 1.0
    assert first.isascii()
    assert any("\uac00" <= ch <= "\ud7a3" for ch in second)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"fps": 0.0}, "fps"),
        ({"width": 2}, "width"),
        ({"images": "gif"}, "images"),
        ({"segments": (("wobbly", 1.0),)}, "segment"),
        ({"estops": ((99.0, True),)}, "event time"),
        ({"storage": "bag1"}, "storage"),
    ],
)
def test_bad_configs_are_refused_by_name(tmp_path, override, field):
    with pytest.raises(BagError, match=field):
        synthesize(tmp_path / "bag", SynthConfig(**{**SMALL, **override}))
    assert not (tmp_path / "bag").exists()


def test_timeline_survives_json():
    timeline = Timeline(1, 2.0, 10.0, ((0.0, 1.0),), ((1.0, 2.0),), ((0.5, "안녕"),), (), 20)
    assert Timeline.from_json(timeline.to_json()) == timeline


def test_plain_bag_has_no_timeline():
    from pathlib import Path

    with pytest.raises(BagError, match="not a synthetic bag"):
        read_timeline(Path(__file__).parent / "data" / "bags" / "v9_sqlite3")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["static", "moving"]), st.floats(0.05, 5.0)),
        min_size=1,
        max_size=4,
    ),
    st.floats(0.1, 30.0),
)
def test_segment_spans_tile_the_bag_without_gaps(segments, duration):
    spans = segment_spans(segments, duration)
    pieces = sorted(spans["static"] + spans["moving"])
    assert pieces[0][0] == 0.0
    assert pieces[-1][1] == pytest.approx(duration)
    for (_, end), (start, _) in itertools.pairwise(pieces):
        assert start == pytest.approx(end)
    assert all(b > a for a, b in pieces)

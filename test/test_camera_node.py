"""vla_camera over real rclpy + DDS: frames, scores, keyframes, refusals and diagnostics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Vector3Stamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vla_ros.core.image import SUPPORTED_ENCODINGS, resize_for_model
from vla_ros.nodes.camera_node import CameraNode, LatestSlot, main
from vla_ros.params import ParameterError
from vla_ros.transport import COMMAND_QOS, LATEST_ONLY_QOS, SENSOR_QOS

SIZE = 32

pytestmark = pytest.mark.ros


def blocky_rgb(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """8x8 colour blocks: exact under 4:2:2 chroma pairs and friendly to resizing and JPEG."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def pixel_bytes(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, float]:
    """Message pixels for `encoding` (built with OpenCV's encoders) and the expected error."""
    if encoding == "rgb8":
        return rgb, 0
    if encoding == "bgr8":
        return rgb[..., ::-1], 0
    if encoding == "rgba8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), 0
    if encoding == "bgra8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA), 0
    if encoding == "mono8":
        return rgb[..., :1], 0
    if encoding in ("yuv422", "uyvy"):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY), 3
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV), 3


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    return np.repeat(rgb[..., :1], 3, axis=-1) if encoding == "mono8" else rgb


def stamp(sec: int, nanosec: int = 0, frame_id: str = "camera_optical") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec = sec
    header.stamp.nanosec = nanosec
    return header


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def raw_image(pixels: np.ndarray, encoding: str, header: Header, pad: int = 0) -> Image:
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 77, np.uint8)], axis=1)
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        step=padded.shape[1],
        data=np.ascontiguousarray(padded).tobytes(),
    )


class Probe:
    """The rest of the system as the camera node sees it: driver, inference node, monitor."""

    def __init__(self, context: object) -> None:
        self.node = Node("camera_probe", context=context)
        self.image_pub = self.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.compressed_pub = self.node.create_publisher(
            CompressedImage, "camera/image_raw/compressed", SENSOR_QOS
        )
        self.keyframe_pub = self.node.create_publisher(Header, "vla/keyframe", COMMAND_QOS)
        self.frames: dict[int, Image] = {}
        self.scores: dict[int, float] = {}
        self.references: dict[int, float] = {}
        self.status: dict[str, str] = {}
        self.node.create_subscription(Image, "vla/frame", self._on_frame, LATEST_ONLY_QOS)
        self.node.create_subscription(
            Vector3Stamped, "vla/scene_change", self._on_score, LATEST_ONLY_QOS
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, COMMAND_QOS)

    def _on_frame(self, msg: Image) -> None:
        self.frames[stamp_ns(msg.header)] = msg

    def _on_score(self, msg: Vector3Stamped) -> None:
        self.scores[stamp_ns(msg.header)] = msg.vector.x
        self.references[stamp_ns(msg.header)] = msg.vector.y

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "vla_camera":
                self.status = {kv.key: kv.value for kv in status.values}

    def count(self, key: str) -> int:
        return int(self.status.get(key, "0"))


@pytest.fixture
def rig(ros_context, spin_until) -> Iterator[Callable[..., tuple]]:
    """Factory: a camera node with overrides, a probe, an executor spinning both."""
    created: list[tuple[SingleThreadedExecutor, Node, Node]] = []

    def make(**overrides: object) -> tuple[SingleThreadedExecutor, CameraNode, Probe, Callable]:
        params = {"image_size": SIZE, "diagnostics_period_s": 0.1, **overrides}
        camera = CameraNode(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        probe = Probe(ros_context)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(camera)
        executor.add_node(probe.node)
        created.append((executor, camera, probe.node))

        def exchange(publish: Callable[[], None], done: Callable[[], bool]) -> bool:
            """Publish until `done`: best-effort sensor QoS may drop a sample before discovery."""
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                publish()
                if spin_until(executor, done, timeout_sec=0.3):
                    return True
            return done()

        return executor, camera, probe, exchange

    yield make
    for executor, camera, probe_node in created:
        executor.shutdown()
        camera.destroy_node()
        probe_node.destroy_node()


def test_every_raw_encoding_becomes_a_model_frame_with_the_original_header(rig):
    _, _, probe, exchange = rig()
    rgb = blocky_rgb()
    for index, encoding in enumerate(SUPPORTED_ENCODINGS):
        pixels, tolerance = pixel_bytes(rgb, encoding)
        header = stamp(100 + index, 123_456, frame_id=f"cam_{encoding}")
        msg = raw_image(pixels, encoding, header, pad=index * 3)
        key = stamp_ns(header)

        assert exchange(
            lambda msg=msg: probe.image_pub.publish(msg), lambda k=key: k in probe.frames
        )

        frame = probe.frames[key]
        assert (frame.height, frame.width, frame.step) == (SIZE, SIZE, 3 * SIZE)
        assert frame.encoding == "rgb8"
        assert frame.header.frame_id == f"cam_{encoding}"
        assert (frame.header.stamp.sec, frame.header.stamp.nanosec) == (100 + index, 123_456)
        got = np.frombuffer(frame.data, np.uint8).reshape(SIZE, SIZE, 3)
        want = resize_for_model(expected_rgb(rgb, encoding), SIZE)
        assert np.abs(got.astype(int) - want).max() <= tolerance, encoding
        assert exchange(lambda: None, lambda k=key: k in probe.scores)
        assert 0.0 <= probe.scores[key] <= 1.0


def test_compressed_jpeg_and_png_frames_and_corrupt_jpeg_refusal(rig):
    _, _, probe, exchange = rig(compressed=True)
    rgb = blocky_rgb(96, 128, seed=4)
    want = resize_for_model(rgb, SIZE).astype(int)
    for index, (fmt, ext) in enumerate([("rgb8; jpeg compressed bgr8", ".jpg"), ("png", ".png")]):
        ok, encoded = cv2.imencode(ext, rgb[..., ::-1])
        assert ok
        msg = CompressedImage(header=stamp(200 + index), format=fmt, data=encoded.tobytes())
        key = stamp_ns(msg.header)

        assert exchange(
            lambda msg=msg: probe.compressed_pub.publish(msg), lambda k=key: k in probe.frames
        )

        frame = probe.frames[key]
        assert (frame.height, frame.width, frame.encoding) == (SIZE, SIZE, "rgb8")
        got = np.frombuffer(frame.data, np.uint8).reshape(SIZE, SIZE, 3)
        assert np.abs(got - want).mean() < 4, fmt

    corrupt = CompressedImage(header=stamp(300), format="jpeg", data=b"\xff\xd8\xff" + bytes(500))
    assert exchange(
        lambda: probe.compressed_pub.publish(corrupt), lambda: probe.count("malformed.corrupt") >= 1
    )
    assert stamp_ns(corrupt.header) not in probe.frames
    assert stamp_ns(corrupt.header) not in probe.scores


def test_malformed_raw_images_are_counted_by_reason_and_never_published(rig):
    _, _, probe, exchange = rig()
    good = blocky_rgb(16, 16)
    bad_length = raw_image(good, "rgb8", stamp(1))
    bad_length.data = bad_length.data[:-1]
    unknown = raw_image(good[..., :1], "bayer_rggb8", stamp(2))
    mono16 = raw_image(np.zeros((16, 32, 1), np.uint8), "mono16", stamp(3))
    mono16.width = 16
    zero = Image(header=stamp(4), height=0, width=16, encoding="rgb8", step=48, data=b"")
    cases = [
        (bad_length, "malformed.bad_length"),
        (unknown, "malformed.unsupported_encoding"),
        (mono16, "malformed.unsupported_encoding"),
        (zero, "malformed.zero_size"),
    ]
    for msg, key in cases:
        before = probe.count(key)
        assert exchange(
            lambda msg=msg: probe.image_pub.publish(msg), lambda k=key, b=before: probe.count(k) > b
        ), key

    valid = raw_image(good, "rgb8", stamp(5))
    assert exchange(
        lambda: probe.image_pub.publish(valid), lambda: stamp_ns(valid.header) in probe.frames
    )
    assert not {stamp_ns(msg.header) for msg, _ in cases} & (
        probe.frames.keys() | probe.scores.keys()
    )
    assert exchange(lambda: None, lambda: probe.count("frames_out") >= 1)
    assert probe.count("dropped_malformed") >= len(cases)
    assert probe.status["last_error"].startswith("zero_size: empty image")


def test_keyframe_resets_the_scene_reference(rig):
    _, camera, probe, exchange = rig()
    view_a, view_b = blocky_rgb(seed=1), blocky_rgb(seed=2)
    first = raw_image(view_a, "rgb8", stamp(10))
    assert exchange(
        lambda: probe.image_pub.publish(first), lambda: stamp_ns(first.header) in probe.scores
    )
    assert probe.scores[stamp_ns(first.header)] == 1.0, "no keyframe yet: everything is new"
    assert probe.references[stamp_ns(first.header)] == 0.0, "no reference yet"

    keyframe = stamp(10)
    assert exchange(
        lambda: probe.keyframe_pub.publish(keyframe),
        lambda: probe.status.get("reference_stamp_ns") == str(stamp_ns(keyframe)),
    )

    again = raw_image(view_a, "rgb8", stamp(11))
    assert exchange(
        lambda: probe.image_pub.publish(again), lambda: stamp_ns(again.header) in probe.scores
    )
    assert probe.scores[stamp_ns(again.header)] < 0.01
    assert probe.references[stamp_ns(again.header)] == pytest.approx(stamp_ns(keyframe) * 1e-9)

    other = raw_image(view_b, "rgb8", stamp(12))
    assert exchange(
        lambda: probe.image_pub.publish(other), lambda: stamp_ns(other.header) in probe.scores
    )
    assert probe.scores[stamp_ns(other.header)] > 0.1

    results = camera.set_parameters([Parameter("scene_thumbnail_size", value=8)])
    assert results[0].successful, results[0].reason
    fresh = raw_image(view_a, "rgb8", stamp(13))
    assert exchange(
        lambda: probe.image_pub.publish(fresh), lambda: stamp_ns(fresh.header) in probe.scores
    )
    assert probe.scores[stamp_ns(fresh.header)] == 1.0, "new thumbnails cannot use the old keyframe"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("image_size", 8, "image_size.*out of range|image_size must be >= 16"),
        ("image_size", 4096, "image_size.*out of range|image_size must be <= 1024"),
        ("image_topic", "bad topic!", "image_topic"),
        ("scene_thumbnail_size", 1, "scene_thumbnail_size"),
        ("log_throttle_s", -1.0, "log_throttle_s"),
    ],
)
def test_bad_start_up_parameters_are_refused_with_a_reason(ros_context, name, value, words):
    with pytest.raises(ParameterError, match=words):
        CameraNode(context=ros_context, parameter_overrides=[Parameter(name, value=value)])


def test_run_time_parameter_changes_are_validated(ros_context):
    camera = CameraNode(context=ros_context)
    try:
        (result,) = camera.set_parameters([Parameter("diagnostics_period_s", value=0.0)])
        assert not result.successful
        assert "diagnostics_period_s" in result.reason

        (result,) = camera.set_parameters([Parameter("image_size", value=448)])
        assert not result.successful
        assert "read-only" in result.reason or "read only" in result.reason
        assert camera.get_parameter("image_size").value == 224

        results = camera.set_parameters(
            [
                Parameter("scene_thumbnail_size", value=16),
                Parameter("diagnostics_period_s", value=0.5),
            ]
        )
        assert all(result.successful for result in results), results
        assert camera.get_parameter("scene_thumbnail_size").value == 16
    finally:
        camera.destroy_node()


def test_destroy_node_stops_the_worker_thread(ros_context):
    camera = CameraNode(context=ros_context)
    assert any(t.name == "vla_camera_worker" for t in threading.enumerate())
    camera.destroy_node()
    assert not any(t.name == "vla_camera_worker" for t in threading.enumerate())


def test_latest_slot_keeps_only_the_newest_item():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True, "replacing an untaken item reports a dropped frame"
    assert slot.take() == 2
    assert slot.put(3) is False


def test_latest_slot_close_wakes_a_blocked_taker():
    slot: LatestSlot[int] = LatestSlot()
    taken: list[object] = []
    worker = threading.Thread(target=lambda: taken.append(slot.take()))
    worker.start()
    slot.close()
    worker.join(timeout=10.0)
    assert not worker.is_alive()
    assert taken == [None]
    slot.put(4)
    assert slot.take() is None, "a closed slot hands out nothing"


def test_console_main_refuses_bad_parameters_with_exit_code_2(capsys):
    assert main(["camera_node", "--ros-args", "-p", "image_size:=8"]) == 2
    assert "image_size" in capsys.readouterr().err

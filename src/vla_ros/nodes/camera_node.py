"""`vla_camera`: camera frames -> model-sized RGB frames plus a scene-change score.

The subscription callback only drops the message into a one-slot mailbox (newest wins), and a
worker thread does the conversion, so the executor never blocks on image work and a slow
conversion drops stale frames instead of queueing them.
"""

from __future__ import annotations

import array
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Vector3Stamped
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vla_ros.core.image import (
    ImageFormatError,
    compressed_msg_to_frame,
    default_bridge,
    image_msg_to_frame,
)
from vla_ros.core.scene import SceneChangeDetector
from vla_ros.core.stats import LatencyStats
from vla_ros.nodes.common import (
    NodeParameters,
    ParamSpec,
    diagnostic_array,
    run_node,
    topic_name_problem,
)
from vla_ros.nodes.lifecycle import ManagedNode
from vla_ros.transport import COMMAND_QOS, LATEST_ONLY_QOS, SENSOR_QOS

NODE_NAME = "vla_camera"

PARAMETERS = (
    ParamSpec(
        "compressed",
        False,
        "Subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of raw sensor_msgs/Image",
        read_only=True,
    ),
    ParamSpec("image_topic", "camera/image_raw", "Raw camera topic", read_only=True),
    ParamSpec(
        "compressed_topic", "camera/image_raw/compressed", "Compressed camera topic", read_only=True
    ),
    ParamSpec(
        "image_size",
        224,
        "Side in pixels of the square RGB frame published on vla/frame (the model input)",
        min=16,
        max=1024,
        read_only=True,
    ),
    ParamSpec(
        "scene_thumbnail_size",
        32,
        "Side of the thumbnails the scene-change score compares; a change resets the reference",
        min=4,
        max=256,
    ),
    ParamSpec(
        "log_throttle_s",
        5.0,
        "Minimum seconds between warnings about malformed images (0 logs every one)",
        min=0.0,
        max=3600.0,
        read_only=True,
    ),
    ParamSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics status", min=0.05, max=60.0),
)

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """One-slot hand-off between a callback and a worker: the newest item wins, never a queue."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store `item`; True when it replaced an item the worker had not taken yet."""
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
            return replaced

    def take(self) -> T | None:
        """Block until an item arrives; None once the slot is closed (pending items are dropped)."""
        with self._condition:
            while self._item is None and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


def _validate(values: Mapping[str, Any]) -> str | None:
    return topic_name_problem(values, ("image_topic", "compressed_topic"))


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class CameraNode(ManagedNode):
    """Wiring only: parameters, subscriptions, the worker thread and diagnostics.

    Lifecycle: configure validates parameters and creates the publishers, activate subscribes
    and starts the worker, deactivate stops both (frames stop; the inference node then holds
    zero because it has no fresh frame).
    """

    def __init__(self, autostart: bool | None = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._mailbox: LatestSlot[Image | CompressedImage] = LatestSlot()
        self._worker: threading.Thread | None = None
        self._io: list[Any] = []
        self._lock = threading.Lock()
        self.finish_init(autostart)

    def configure_node(self) -> None:
        self._params = NodeParameters(self, PARAMETERS, validate=_validate)
        self._params.add_listener(self._on_parameters)
        self._size: int = self._params["image_size"]
        self._detector = SceneChangeDetector(self._params["scene_thumbnail_size"])
        self._bridge = default_bridge()
        self._counts: Counter[str] = Counter()
        self._malformed: Counter[str] = Counter()
        self._last_error = ""
        self._reported = (0, 0)
        self._convert_ms = LatencyStats(window=300)
        self._frame_pub = self.own(self.create_publisher(Image, "vla/frame", LATEST_ONLY_QOS))
        self._scene_pub = self.own(
            self.create_publisher(Vector3Stamped, "vla/scene_change", LATEST_ONLY_QOS)
        )
        self._diag_pub = self.own(
            self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        )
        if self._params["compressed"]:
            self._input_topic, self._msg_type = self._params["compressed_topic"], CompressedImage
        else:
            self._input_topic, self._msg_type = self._params["image_topic"], Image

    def start_output(self) -> None:
        self._mailbox = LatestSlot()
        self._diag_period_s: float = self._params["diagnostics_period_s"]
        self._diag_timer = self.create_timer(self._diag_period_s, self._publish_diagnostics)
        self._io = [
            self.own(entity)
            for entity in (
                self.create_subscription(
                    self._msg_type, self._input_topic, self._on_image, SENSOR_QOS
                ),
                self.create_subscription(Header, "vla/keyframe", self._on_keyframe, COMMAND_QOS),
                self._diag_timer,
            )
        ]
        self._worker = threading.Thread(target=self._work, name="vla_camera_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self._input_topic} ({self._msg_type.__name__}) -> vla/frame "
            f"{self._size}x{self._size} rgb8{' via cv_bridge' if self._bridge is not None else ''}"
        )

    def stop_output(self) -> None:
        """Stop the worker before the publishers it uses are destroyed."""
        self.release_entities(self._io)
        self._io = []
        self._mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None

    def release_node(self) -> None:
        self.release_entities()
        if hasattr(self, "_params"):
            self._params.close()

    def _on_image(self, msg: Image | CompressedImage) -> None:
        replaced = self._mailbox.put(msg)
        with self._lock:
            self._counts["frames_in"] += 1
            if replaced:
                self._counts["dropped_stale"] += 1

    def _on_keyframe(self, header: Header) -> None:
        self._detector.set_reference(_stamp_ns(header))

    def _on_parameters(self, values: Mapping[str, Any]) -> None:
        if values["scene_thumbnail_size"] != self._detector.thumbnail_size:
            self._detector = SceneChangeDetector(values["scene_thumbnail_size"])
        if self._io and values["diagnostics_period_s"] != self._diag_period_s:
            self._diag_period_s = values["diagnostics_period_s"]
            self.release_entities([self._diag_timer])
            self._io.remove(self._diag_timer)
            self._diag_timer = self.own(
                self.create_timer(self._diag_period_s, self._publish_diagnostics)
            )
            self._io.append(self._diag_timer)

    def _work(self) -> None:
        while (msg := self._mailbox.take()) is not None:
            try:
                self._process(msg)
            except ImageFormatError as exc:
                self._count_malformed(exc.reason, str(exc))
            except Exception as exc:  # a bad frame must never kill the worker thread
                self._count_malformed("conversion_error", f"{type(exc).__name__}: {exc}")

    def _process(self, msg: Image | CompressedImage) -> None:
        start = time.perf_counter()
        if isinstance(msg, CompressedImage):
            frame = compressed_msg_to_frame(msg, self._size)
        else:
            frame = image_msg_to_frame(msg, self._size, self._bridge)
        score = self._detector.update(frame, _stamp_ns(msg.header))
        self._convert_ms.add((time.perf_counter() - start) * 1e3)

        scene = Vector3Stamped(header=msg.header)
        scene.vector.x = score
        reference = self._detector.reference_stamp_ns
        scene.vector.y = 0.0 if reference is None else reference * 1e-9
        out = Image(
            header=msg.header,
            height=self._size,
            width=self._size,
            encoding="rgb8",
            is_bigendian=0,
            step=self._size * 3,
        )
        # array.array skips the per-element checks rclpy (Humble) runs on other sequences.
        out.data = array.array("B", frame.tobytes())
        self._scene_pub.publish(scene)
        self._frame_pub.publish(out)
        with self._lock:
            self._counts["frames_out"] += 1

    def _count_malformed(self, reason: str, message: str) -> None:
        with self._lock:
            self._malformed[reason] += 1
            self._last_error = f"{reason}: {message}"
        self.get_logger().warning(
            f"dropped a frame from {self._input_topic}: {message}",
            throttle_duration_sec=self._params["log_throttle_s"],
        )

    def _publish_diagnostics(self) -> None:
        with self._lock:
            counts = dict(self._counts)
            malformed = dict(self._malformed)
            last_error = self._last_error
        frames_in = counts.get("frames_in", 0)
        malformed_total = sum(malformed.values())
        previous_in, previous_malformed = self._reported
        self._reported = (frames_in, malformed_total)
        if frames_in == previous_in:
            level, message = DiagnosticStatus.WARN, f"no images on {self._input_topic}"
        elif malformed_total > previous_malformed:
            level, message = DiagnosticStatus.WARN, f"malformed images ({last_error})"
        else:
            level, message = DiagnosticStatus.OK, "streaming"
        reference = self._detector.reference_stamp_ns
        values: dict[str, Any] = {
            "input_topic": self._input_topic,
            "frames_in": frames_in,
            "frames_out": counts.get("frames_out", 0),
            "dropped_stale": counts.get("dropped_stale", 0),
            "dropped_malformed": malformed_total,
            **{f"malformed.{reason}": n for reason, n in sorted(malformed.items())},
            "convert_p50_ms": self._convert_ms.percentile(50),
            "convert_p99_ms": self._convert_ms.percentile(99),
            "reference_stamp_ns": "" if reference is None else reference,
            "last_error": last_error,
        }
        self._diag_pub.publish(diagnostic_array(self, NODE_NAME, level, message, values))


def main(args: Sequence[str] | None = None) -> int:
    """Console script `camera_node`."""
    return run_node(CameraNode, args)

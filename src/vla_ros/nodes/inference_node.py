"""`vla_inference`: wiring of `InferenceCore` (vla_ros.core.inference) to ROS topics.

The core makes every decision (when to run, on which frame, whether a chunk may play, what to do
on failure); this node only converts messages, owns the worker thread that runs the policy and
publishes what the core returns. Lifecycle: configure loads the model and validates parameters,
activate subscribes and starts the control timer and worker, deactivate stops them after one
zero command.

Outputs: the raw command at `control_rate_hz` (zero without an instruction or chunk, so the
safety node never sees silence; the arm7 gripper holds its last commanded value and is silent
until a chunk commanded it); after each inference /vla/inference_event (JSON: cause, causes,
status ok|error|superseded, error, frame_stamp in s, frame_id, latency_ms trigger-to-publish,
model_ms, count, confidence) and, on success, /vla/keyframe, /vla/action_chunk, /vla/confidence
(published before the chunk's first command) and /vla/predicted_path; /vla/active (latched).
Instructions arrive over a transient-local and a volatile subscription (de-duplicated), so both
kinds of publisher connect; NULs, control characters and over-long text are refused.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped, Vector3Stamped
from nav_msgs.msg import Path
from rclpy.qos import DurabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image
from std_msgs.msg import (
    Bool,
    Float32,
    Float32MultiArray,
    Float64,
    Header,
    MultiArrayDimension,
    String,
)
from std_srvs.srv import Trigger

from vla_ros import action_space as action_spaces
from vla_ros.core.image import ImageFormatError, image_msg_to_rgb
from vla_ros.core.inference import CoreConfig, InferenceCore, Outcome, Receipt
from vla_ros.core.instruction import ReceiptDeduper, cdr_string, published_before
from vla_ros.core.path import planar_path, spatial_path
from vla_ros.core.trigger import TRIGGER_BOUNDS, TriggerConfig
from vla_ros.nodes.common import (
    NodeParameters,
    ParamSpec,
    diagnostic_array,
    run_node,
    topic_name_problem,
)
from vla_ros.nodes.lifecycle import ManagedNode
from vla_ros.params import ParameterError
from vla_ros.policy.backends import BACKENDS
from vla_ros.policy.codec import motion_to_twist_fields
from vla_ros.policy.types import ActionChunk, Policy
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, LATEST_ONLY_QOS, latched_twin_events

NODE_NAME = "vla_inference"
ACTION_SPACES = action_spaces.CHOICES
DTYPES = ("float32", "float16", "bfloat16")
TRIGGER_MODES = ("event", "every_frame")

TOPIC_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("frame_topic", "vla/frame", "preprocessed rgb8 frames from the camera node"),
    ("scene_change_topic", "vla/scene_change", "scene-change score per frame"),
    ("instruction_topic", "vla/instruction", "natural-language instruction (latched)"),
    ("keyframe_topic", "vla/keyframe", "header of the frame the last inference used"),
    ("cmd_topic", "vla/cmd_raw", "mobile3 raw Twist to the safety node"),
    ("arm_cmd_topic", "vla/arm_cmd_raw", "arm7 raw TwistStamped to the safety node"),
    ("gripper_topic", "vla/gripper_raw", "arm7 raw gripper command (1 open, 0 closed)"),
    ("confidence_topic", "vla/confidence", "self-agreement x gripper margin of the last chunk"),
    ("active_topic", "vla/active", "std_msgs/Bool (latched): an instruction is active"),
    ("path_topic", "vla/predicted_path", "nav_msgs/Path of the last chunk, for RViz/Foxglove"),
    ("action_chunk_topic", "vla/action_chunk", "full predicted chunk, for logging"),
    ("event_topic", "vla/inference_event", "one JSON line per inference, for logging"),
    ("busy_topic", "vla/busy", "std_msgs/Bool (latched): true while the model computes"),
    ("trigger_service", "vla/trigger", "std_srvs/Trigger: run an inference now"),
    ("reset_service", "vla/reset", "std_srvs/Trigger: clear policy history and chunk"),
    (
        "resume_service",
        "vla/resume",
        "std_srvs/Trigger: follow the instruction held since start-up (published before it)",
    ),
    ("diagnostics_topic", "/diagnostics", "diagnostic_msgs/DiagnosticArray at 1 Hz"),
)

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "action_space",
        "mobile3",
        "mobile3 (vx, vy, wz) or arm7 (6-DOF twist + gripper); must match the model",
        choices=ACTION_SPACES,
        read_only=True,
    ),
    ParamSpec(
        "model_dir",
        "",
        "vla_ros model directory (ignored when a policy is injected)",
        read_only=True,
    ),
    ParamSpec("device", "cpu", "torch device for the model, e.g. cpu or cuda:0", read_only=True),
    ParamSpec("dtype", "float32", "model weight dtype", choices=DTYPES, read_only=True),
    ParamSpec(
        "backend",
        "torch",
        "trunk backend: torch, onnxruntime or tensorrt (the last two need `vla-ros export`)",
        choices=BACKENDS,
        read_only=True,
    ),
    ParamSpec("control_rate_hz", 20.0, "raw command publish rate", min=1.0, max=200.0),
    ParamSpec(
        "scene_change_threshold",
        0.15,
        "scene-change score above which the model runs",
        *TRIGGER_BOUNDS["scene_change_threshold"],
    ),
    ParamSpec(
        "chunk_low_threshold",
        3,
        "run the model once per chunk when this many actions are left",
        *TRIGGER_BOUNDS["chunk_low_threshold"],
    ),
    ParamSpec(
        "trigger_mode",
        "event",
        "event: run on events; every_frame: every new frame is an event (baseline)",
        choices=TRIGGER_MODES,
    ),
    ParamSpec(
        "min_interval_s",
        0.2,
        "minimum time between inference starts",
        *TRIGGER_BOUNDS["min_interval_s"],
    ),
    ParamSpec(
        "max_interval_s",
        2.0,
        "heartbeat: longest time without inference",
        *TRIGGER_BOUNDS["max_interval_s"],
    ),
    ParamSpec(
        "max_frame_age_s",
        0.5,
        "frames older than this (header stamp vs node clock) are not used",
        min=0.001,
        max=60.0,
    ),
    ParamSpec(
        "max_frame_lead_s",
        0.05,
        "frames stamped further in the future than this are not used",
        min=0.0,
        max=1.0,
    ),
    ParamSpec(
        "identical_frames_stale",
        True,
        "a frame byte-identical to the previous one (a frozen driver) stays as old as the first",
    ),
    ParamSpec("blend", False, "temporal blending of overlapping chunks"),
    ParamSpec(
        "blend_weight",
        0.5,
        "weight of the newest chunk when blending (1 = newest only)",
        min=0.01,
        max=1.0,
    ),
    ParamSpec("command_frame_id", "base_link", "frame_id of the arm7 TwistStamped"),
    *(
        ParamSpec(name, default, description, read_only=True)
        for name, default, description in TOPIC_PARAMS
    ),
)


def _validate(values: Mapping[str, Any]) -> str | None:
    try:
        _core_config(values)
    except ValueError as exc:
        return str(exc)
    for name in ("device", "command_frame_id"):
        if not str(values[name]).strip():
            return f"{name} must not be empty"
    return topic_name_problem(values, [name for name, _, _ in TOPIC_PARAMS])


def _core_config(values: Mapping[str, Any]) -> CoreConfig:
    return CoreConfig(
        trigger=TriggerConfig(
            scene_change_threshold=float(values["scene_change_threshold"]),
            chunk_low_threshold=int(values["chunk_low_threshold"]),
            min_interval_s=float(values["min_interval_s"]),
            max_interval_s=float(values["max_interval_s"]),
            every_frame=values["trigger_mode"] == "every_frame",
        ),
        max_frame_age_s=float(values["max_frame_age_s"]),
        max_frame_lead_s=float(values["max_frame_lead_s"]),
        identical_frames_stale=bool(values["identical_frames_stale"]),
        blend=bool(values["blend"]),
        blend_weight=float(values["blend_weight"]),
    )


def _load_policy(model_dir: str, device: str, dtype: str, backend: str = "torch") -> Policy:
    """Imported here so nodes driven by an injected policy never import torch."""
    if not model_dir.strip():
        raise ParameterError("model_dir is required (a vla_ros model directory)")
    try:
        import torch

        from vla_ros.policy.model import VLAPolicy

        return VLAPolicy.from_pretrained(
            model_dir, device=device, dtype=getattr(torch, dtype), backend=backend
        )
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise ParameterError(
            f"cannot load model_dir {model_dir!r} with backend {backend}: {exc}"
        ) from exc


def _instruction_text(data: bytes) -> str | None:
    """The instruction in a serialized String; rclpy's reading (cut at a NUL) only for an
    encapsulation `cdr_string` does not know; None for bytes that are no String at all."""
    try:
        return cdr_string(data)
    except ValueError:
        pass
    try:
        return str(deserialize_message(data, String).data)
    except Exception:  # rclpy raises several types for undecodable bytes
        return None


def _shown(text: str) -> str:
    """An instruction for a log line: short, control characters escaped."""
    return text[:60].encode("unicode_escape").decode()


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class InferenceNode(ManagedNode):
    """Event-triggered VLA inference; `policy=None` loads `model_dir` with VLAPolicy."""

    def __init__(
        self, policy: Policy | None = None, autostart: bool | None = None, **node_kwargs: Any
    ) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._injected = policy
        self._core: InferenceCore | None = None
        self._worker: threading.Thread | None = None
        self._io: list[Any] = []
        self.runtime = ""  # what runs (model, device, backend, dtype): logged at start-up
        self.finish_init(autostart)

    @property
    def core(self) -> InferenceCore | None:
        return self._core

    # ---------------------------------------------------------------- lifecycle
    def configure_node(self) -> None:
        self._cfg = cfg = NodeParameters(self, PARAMS, _validate)
        policy = self._injected
        if policy is None:
            policy = _load_policy(cfg["model_dir"], cfg["device"], cfg["dtype"], cfg["backend"])
        spec = policy.spec
        if spec.action_space != action_spaces.canonical(cfg["action_space"], "action_space"):
            raise ParameterError(
                f"action_space is {cfg['action_space']!r} but the model is {spec.action_space!r}"
            )
        self._spec = spec
        self.runtime = (
            f"{spec.model_id} on {spec.device}, backend {cfg['backend']}, {cfg['dtype']}"
            if self._injected is None
            else f"{spec.model_id} ({type(policy).__name__}, injected) on {spec.device}"
        )
        self._core = InferenceCore(
            policy, _core_config(cfg.values), self._now_s, on_play=self._on_play
        )
        self._dedupe = ReceiptDeduper(self._now_s)
        self._listening_since_ns = 0
        pub = self.own_publisher
        self._keyframe_pub = pub(Header, "keyframe_topic")
        self._chunk_pub = pub(Float32MultiArray, "action_chunk_topic")
        self._confidence_pub = pub(Float32, "confidence_topic")
        self._event_pub = pub(String, "event_topic")
        self._path_pub = pub(Path, "path_topic")
        self._active_pub = pub(Bool, "active_topic", LATCHED_QOS)
        self._busy_pub = pub(Bool, "busy_topic", LATCHED_QOS)
        self._busy_pub.publish(Bool(data=False))
        self._diag_pub = pub(DiagnosticArray, "diagnostics_topic")
        self._space = action_spaces.get(spec.action_space)
        if self._space.gripper:
            self._gripper_pub = pub(Float64, "gripper_topic")
        if self._space.stamped:
            self._arm_pub = pub(TwistStamped, "arm_cmd_topic")
        else:
            self._twist_pub = pub(Twist, "cmd_topic")
        cfg.add_listener(self._on_params)
        self.get_logger().info(
            f"{spec.action_space} policy {self.runtime}, "
            f"chunk {spec.chunk} x {spec.action_period_s:.3f} s"
        )

    def own_publisher(self, msg_type: Any, topic_param: str, qos: Any = COMMAND_QOS) -> Any:
        return self.own(self.create_publisher(msg_type, self._cfg[topic_param], qos))

    def start_output(self) -> None:
        cfg, core = self._cfg, self._core
        assert core is not None
        core.open()
        self._listening_since_ns = time.time_ns()
        io = [
            self.create_subscription(Image, cfg["frame_topic"], self._on_frame, LATEST_ONLY_QOS),
            self.create_subscription(
                Vector3Stamped, cfg["scene_change_topic"], self._on_score, LATEST_ONLY_QOS
            ),
            # Latched for a late start, volatile because a transient-local subscription never
            # matches a volatile publisher. A latched publisher reaches both: its messages are
            # taken from the latched one only (and the deduper pairs copies when both kinds of
            # publisher are up at once).
            *(
                self.create_subscription(
                    String,
                    cfg["instruction_topic"],
                    functools.partial(self._on_instruction, source),
                    qos,
                    event_callbacks=latched_twin_events() if source == 0 else None,
                    raw=True,  # the text is read from the bytes: rclpy would cut it at a NUL
                )
                for source, qos in enumerate((LATCHED_QOS, COMMAND_QOS))
            ),
            self.create_service(Trigger, cfg["trigger_service"], self._on_trigger),
            self.create_service(Trigger, cfg["reset_service"], self._on_reset),
            self.create_service(Trigger, cfg["resume_service"], self._on_resume),
            self.create_timer(1.0 / cfg["control_rate_hz"], self._on_control),
            self.create_timer(1.0, self._on_diagnostics),
        ]
        self._control_timer = io[-2]
        self._io = [self.own(entity) for entity in io]
        self._worker = threading.Thread(target=self._work, name="vla_inference_worker", daemon=True)
        self._worker.start()
        self._publish_active()

    def stop_output(self) -> None:
        """Stop the worker before anything it publishes with goes away; end on a zero command."""
        self.release_entities(self._io)
        self._io = []
        if self._core is not None:
            self._core.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        self._publish_command(np.zeros(self._spec.motion_dof), None)
        self._active_pub.publish(Bool(data=False))

    def release_node(self) -> None:
        self.release_entities()
        if hasattr(self, "_cfg"):
            self._cfg.close()
        self._core = None

    # ---------------------------------------------------------------- executor side
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_frame(self, msg: Image) -> None:
        assert self._core is not None
        try:
            if msg.encoding != "rgb8":
                raise ImageFormatError(f"encoding {msg.encoding!r} (need rgb8)", "encoding")
            rgb = image_msg_to_rgb(msg)
        except ImageFormatError as exc:
            self._core.frame_refused("invalid")
            self.get_logger().warning(f"frame ignored: {exc}", throttle_duration_sec=5.0)
            return
        self._core.offer_frame(rgb, _stamp_ns(msg.header), msg.header.frame_id, msg.header)

    def _on_score(self, msg: Vector3Stamped) -> None:
        """vector.x = score; vector.y = stamp (s) of the keyframe scored against, 0 = none."""
        assert self._core is not None
        self._core.offer_score(
            msg.vector.x, _stamp_ns(msg.header), msg.header.frame_id, msg.vector.y
        )

    def _on_instruction(self, source: int, data: bytes, info: MessageInfo) -> None:
        assert self._core is not None
        if source == 1 and self._latched_publishers_only():
            return  # the transient-local subscription has this very message
        text = _instruction_text(data)
        if text is None:
            self.get_logger().error(
                f"instruction refused: {len(data)} bytes that are no std_msgs/String",
                throttle_duration_sec=5.0,
            )
            return
        if published_before(info["source_timestamp"], self._listening_since_ns, source == 0):
            self._core.hold_instruction(text)
            if text.strip():
                self.get_logger().warning(
                    f"instruction '{_shown(text)}' was published before this node started "
                    "(a restart?): not followed until `vla-ros resume` or a new instruction"
                )
            return
        if self._dedupe.is_duplicate(source, text):
            return
        self._follow(self._core.set_instruction(text), text)

    def _follow(self, receipt: Receipt, text: str) -> None:
        if receipt.refused is not None:
            self.get_logger().error(f"instruction refused ({receipt.refused}): '{_shown(text)}'")
            return
        if receipt.changed:
            instruction = receipt.instruction
            self.get_logger().info(
                f"instruction: {instruction!r}" if instruction else "instruction cleared: zero"
            )
            self._publish_active()

    def _latched_publishers_only(self) -> bool:
        infos = self.get_publishers_info_by_topic(self._cfg["instruction_topic"])
        return bool(infos) and all(
            info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for info in infos
        )

    def _publish_active(self) -> None:
        assert self._core is not None
        self._active_pub.publish(Bool(data=self._core.instruction is not None))

    def _on_trigger(
        self, _request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        assert self._core is not None
        response.success = self._core.request()
        response.message = "inference queued" if response.success else "no instruction yet"
        return response

    def _on_resume(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        assert self._core is not None
        held = self._core.held_instruction
        receipt = self._core.resume()
        response.success = receipt is not None and receipt.refused is None
        if receipt is None:
            response.message = "no instruction held; nothing to resume"
        elif receipt.refused is not None:
            response.message = f"instruction refused ({receipt.refused})"
        else:
            response.message = f"following {held!r}"
        if held is not None:
            self._follow(receipt, held)
        return response

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        assert self._core is not None
        self._core.reset()
        response.success = True
        response.message = "chunk cleared; policy history cleared before the next inference"
        return response

    def _on_params(self, values: Mapping[str, Any]) -> None:
        if self._core is not None:
            self._core.configure(_core_config(values))
        if self._io:
            self._control_timer.timer_period_ns = int(1e9 / values["control_rate_hz"])

    def _on_control(self) -> None:
        assert self._core is not None
        command = self._core.command()
        self._publish_command(command.motion, command.gripper)

    def _publish_command(self, motion: np.ndarray, gripper: float | None) -> None:
        twist = _twist(motion, self._spec.action_space)
        if not self._space.stamped:
            self._twist_pub.publish(twist)
            return
        arm = TwistStamped(twist=twist)
        arm.header.stamp = self.get_clock().now().to_msg()
        arm.header.frame_id = self._cfg["command_frame_id"]
        self._arm_pub.publish(arm)
        if self._space.gripper and gripper is not None:
            self._gripper_pub.publish(Float64(data=gripper))

    def _on_diagnostics(self) -> None:
        assert self._core is not None
        level, message, values = self._core.diagnostics()
        levels = (DiagnosticStatus.OK, DiagnosticStatus.WARN)
        self._diag_pub.publish(diagnostic_array(self, NODE_NAME, levels[level], message, values))

    # ---------------------------------------------------------------- worker side
    def _on_play(self, outcome: Outcome) -> None:
        """Under the core's lock: confidence goes out before any command of the new chunk."""
        self._confidence_pub.publish(Float32(data=float(outcome.confidence or 0.0)))

    def _work(self) -> None:
        core = self._core
        assert core is not None
        while core.wait_for_work():
            outcome = core.work_once(on_start=lambda: self._busy_pub.publish(Bool(data=True)))
            if outcome is None:
                continue
            try:
                self._publish_outcome(outcome)
            except Exception as exc:  # a transport failure must not end the worker
                self.get_logger().error(f"cannot publish an inference result: {exc!r}")
            finally:
                self._busy_pub.publish(Bool(data=False))

    def _publish_outcome(self, outcome: Outcome) -> None:
        if outcome.status == "error":
            self.get_logger().error(f"inference failed: {outcome.error}", throttle_duration_sec=2.0)
        if outcome.chunk is not None:
            job = outcome.job
            self._keyframe_pub.publish(job.frame.header)
            self._chunk_pub.publish(_chunk_message(outcome.chunk, self._spec.has_gripper))
            self._path_pub.publish(self._path(outcome.chunk, job.frame.header))
        assert self._core is not None
        latency_ms = self._core.published(outcome)
        self._event_pub.publish(String(data=json.dumps(outcome.event(latency_ms))))

    def _path(self, chunk: ActionChunk, frame_header: Header) -> Path:
        """The chunk integrated from the robot's pose now, in `command_frame_id`."""
        period = chunk.action_period_s
        if self._space.stamped:
            fields = [motion_to_twist_fields(row, self._spec.action_space) for row in chunk.motion]
            linear, angular = zip(*fields, strict=True)
            poses = spatial_path(np.array(linear), np.array(angular), period)
        else:
            poses = planar_path(chunk.motion, period)
        path = Path()
        path.header.stamp = frame_header.stamp
        path.header.frame_id = self._cfg["command_frame_id"]
        for (x, y, z), (qx, qy, qz, qw) in poses:
            pose = PoseStamped(header=path.header)
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
            o = pose.pose.orientation
            o.x, o.y, o.z, o.w = qx, qy, qz, qw
            path.poses.append(pose)
        return path


def _twist(motion: np.ndarray, action_space: str) -> Twist:
    twist = Twist()
    linear, angular = motion_to_twist_fields(motion, action_space)
    twist.linear.x, twist.linear.y, twist.linear.z = linear
    twist.angular.x, twist.angular.y, twist.angular.z = angular
    return twist


def _chunk_message(chunk: ActionChunk, with_gripper: bool) -> Float32MultiArray:
    columns = [chunk.motion.astype(np.float32)]
    if with_gripper and chunk.gripper is not None:
        columns.append(chunk.gripper.astype(np.float32)[:, None])
    table = np.hstack(columns)
    rows, cols = table.shape
    msg = Float32MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label="chunk", size=rows, stride=rows * cols),
        MultiArrayDimension(label="action", size=cols, stride=cols),
    ]
    msg.data = table.ravel()
    return msg


def main(args: Sequence[str] | None = None) -> int:
    """Console script `inference_node`."""
    return run_node(InferenceNode, args)

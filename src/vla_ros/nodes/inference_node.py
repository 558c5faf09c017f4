"""`vla_inference`: runs the VLA policy on events and streams its action chunks as raw commands.

Threads: the executor only stores inputs and publishes; the policy runs in one worker thread that
wakes on every input or control tick, asks `EventTrigger` whether an inference is due and, if so,
steps the policy on the newest fresh frame (a one-slot mailbox: a newer frame replaces an unused
one). A control timer publishes the `ChunkExecutor` command at `control_rate_hz`, zero when there
is no instruction or nothing left to execute, so the safety node never sees silence. The arm7
gripper holds its last commanded value (never a made-up open/close) and is silent until a chunk
has commanded it.

After each inference: /vla/keyframe (header of the frame used), /vla/action_chunk, /vla/confidence
and /vla/inference_event, whose `latency_ms` is trigger-to-publish time (worker wake-up, model,
chunk scheduling, publishing) and `model_ms` the `Policy.step` part; `frame_stamp` is in seconds.
A reset or a cleared instruction discards the result of an inference still running, and a new
instruction clears the policy's history (a new task) before the next step; the old chunk keeps
playing until the new one arrives. A policy exception, or a chunk that `chunk_problem` refuses
(wrong axes, NaN/Inf, a gripper or confidence outside [0, 1]), clears the chunk (zero command), is
counted and logged, and the trigger retries on the next event.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped, Vector3Stamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import (
    Float32,
    Float32MultiArray,
    Float64,
    Header,
    MultiArrayDimension,
    String,
)
from std_srvs.srv import Trigger

from vla_ros.core.chunk_executor import ChunkExecutor
from vla_ros.core.image import ImageFormatError, image_msg_to_rgb
from vla_ros.core.stats import LatencyStats
from vla_ros.core.trigger import Cause, EventTrigger, Firing, TriggerConfig
from vla_ros.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    LATEST_ONLY_QOS,
    NodeParameters,
    ParameterError,
    ParamSpec,
    diagnostic_array,
    run_node,
    topic_name_problem,
)
from vla_ros.policy.codec import motion_to_twist_fields
from vla_ros.policy.types import ActionChunk, Policy, chunk_problem

NODE_NAME = "vla_inference"
ACTION_SPACES = ("mobile3", "arm7")
DTYPES = ("float32", "float16", "bfloat16")
TRIGGER_MODES = ("event", "every_frame")
SCORE_MEMORY = 16
"""Scene-change scores waiting for their frame (matched by header stamp)."""

TOPIC_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("frame_topic", "vla/frame", "preprocessed rgb8 frames from the camera node"),
    ("scene_change_topic", "vla/scene_change", "scene-change score per frame"),
    ("instruction_topic", "vla/instruction", "natural-language instruction (latched)"),
    ("keyframe_topic", "vla/keyframe", "header of the frame the last inference used"),
    ("cmd_topic", "vla/cmd_raw", "mobile3 raw Twist to the safety node"),
    ("arm_cmd_topic", "vla/arm_cmd_raw", "arm7 raw TwistStamped to the safety node"),
    ("gripper_topic", "vla/gripper_raw", "arm7 raw gripper command (1 open, 0 closed)"),
    ("confidence_topic", "vla/confidence", "confidence of the last chunk"),
    ("action_chunk_topic", "vla/action_chunk", "full predicted chunk, for logging"),
    ("event_topic", "vla/inference_event", "one JSON line per inference, for logging"),
    ("trigger_service", "vla/trigger", "std_srvs/Trigger: run an inference now"),
    ("reset_service", "vla/reset", "std_srvs/Trigger: clear policy history and chunk"),
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
    ParamSpec("control_rate_hz", 20.0, "raw command publish rate", min=1.0, max=200.0),
    ParamSpec(
        "scene_change_threshold",
        0.15,
        "scene-change score above which the model runs",
        min=0.0,
        max=1.0,
    ),
    ParamSpec(
        "chunk_low_threshold",
        3,
        "run the model once per chunk when this many actions are left",
        min=0,
        max=1000,
    ),
    ParamSpec(
        "trigger_mode",
        "event",
        "event: run on events; every_frame: every new frame is an event (baseline)",
        choices=TRIGGER_MODES,
    ),
    ParamSpec("min_interval_s", 0.2, "minimum time between inference starts", min=0.0, max=60.0),
    ParamSpec(
        "max_interval_s", 2.0, "heartbeat: longest time without inference", min=0.01, max=3600.0
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
        _trigger_config(values)
    except ValueError as exc:
        return str(exc)
    for name in ("device", "command_frame_id"):
        if not str(values[name]).strip():
            return f"{name} must not be empty"
    return topic_name_problem(values, [name for name, _, _ in TOPIC_PARAMS])


def _trigger_config(values: Mapping[str, Any]) -> TriggerConfig:
    return TriggerConfig(
        scene_change_threshold=float(values["scene_change_threshold"]),
        chunk_low_threshold=int(values["chunk_low_threshold"]),
        min_interval_s=float(values["min_interval_s"]),
        max_interval_s=float(values["max_interval_s"]),
        every_frame=values["trigger_mode"] == "every_frame",
    )


def _load_policy(model_dir: str, device: str, dtype: str) -> Policy:
    """Imported here so nodes driven by an injected policy never import torch."""
    if not model_dir.strip():
        raise ParameterError("model_dir is required (a vla_ros model directory)")
    try:
        import torch

        from vla_ros.policy.model import VLAPolicy

        return VLAPolicy.from_pretrained(model_dir, device=device, dtype=getattr(torch, dtype))
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise ParameterError(f"cannot load model_dir {model_dir!r}: {exc}") from exc


def _stamp_s(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _stamp_key(header: Header) -> tuple[int, int]:
    return (header.stamp.sec, header.stamp.nanosec)


def _frame_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) view of an rgb8 frame's bytes; ImageFormatError says why a frame is unusable."""
    if msg.encoding != "rgb8":
        raise ImageFormatError(f"encoding {msg.encoding!r} (need rgb8)", "unsupported_encoding")
    return image_msg_to_rgb(msg)


@dataclass
class _Frame:
    header: Header
    rgb: np.ndarray
    stamp_s: float
    used: bool = False


@dataclass(frozen=True)
class _Job:
    firing: Firing
    frame: _Frame
    instruction: str
    generation: int
    origin_perf: float


class InferenceNode(Node):
    """Event-triggered VLA inference; `policy=None` loads `model_dir` with VLAPolicy."""

    def __init__(self, policy: Policy | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._worker: threading.Thread | None = None
        try:
            self._setup(policy)
        except Exception:
            self.destroy_node()
            raise

    def _setup(self, policy: Policy | None) -> None:
        self._cfg = NodeParameters(self, PARAMS, _validate)
        cfg = self._cfg
        self._policy: Policy = (
            policy
            if policy is not None
            else _load_policy(cfg["model_dir"], cfg["device"], cfg["dtype"])
        )
        self._spec = self._policy.spec
        if self._spec.action_space != cfg["action_space"]:
            raise ParameterError(
                f"action_space is {cfg['action_space']!r} but the model is "
                f"{self._spec.action_space!r}"
            )
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._trigger = EventTrigger(_trigger_config(cfg.values))
        self._plan = ChunkExecutor(
            self._spec.action_period_s, blend=cfg["blend"], blend_weight=cfg["blend_weight"]
        )
        self._frame: _Frame | None = None
        self._scores: OrderedDict[tuple[int, int], tuple[float, float]] = OrderedDict()
        self._generation = 0
        self._signalled = False
        self._signal_perf = 0.0
        self._stopping = False
        self._reset_policy = False
        self._gripper_hold: float | None = None
        self._counts: Counter[str] = Counter()
        self._causes: Counter[str] = Counter({cause.value: 0 for cause in Cause})
        self._model_ms = LatencyStats()
        self._latency_ms = LatencyStats()
        self._overhead_ms = LatencyStats()
        self._frame_age_ms = LatencyStats()
        self._last_error = ""

        self._keyframe_pub = self.create_publisher(Header, cfg["keyframe_topic"], COMMAND_QOS)
        self._chunk_pub = self.create_publisher(
            Float32MultiArray, cfg["action_chunk_topic"], COMMAND_QOS
        )
        self._confidence_pub = self.create_publisher(Float32, cfg["confidence_topic"], COMMAND_QOS)
        self._event_pub = self.create_publisher(String, cfg["event_topic"], COMMAND_QOS)
        self._diag_pub = self.create_publisher(
            DiagnosticArray, cfg["diagnostics_topic"], COMMAND_QOS
        )
        if self._spec.has_gripper:
            self._arm_pub = self.create_publisher(TwistStamped, cfg["arm_cmd_topic"], COMMAND_QOS)
            self._gripper_pub = self.create_publisher(Float64, cfg["gripper_topic"], COMMAND_QOS)
        else:
            self._twist_pub = self.create_publisher(Twist, cfg["cmd_topic"], COMMAND_QOS)

        self.create_subscription(Image, cfg["frame_topic"], self._on_frame, LATEST_ONLY_QOS)
        self.create_subscription(
            Vector3Stamped, cfg["scene_change_topic"], self._on_scene_change, LATEST_ONLY_QOS
        )
        self.create_subscription(
            String, cfg["instruction_topic"], self._on_instruction, LATCHED_QOS
        )
        self.create_service(Trigger, cfg["trigger_service"], self._on_trigger)
        self.create_service(Trigger, cfg["reset_service"], self._on_reset)
        self._control_timer = self.create_timer(1.0 / cfg["control_rate_hz"], self._on_control)
        self.create_timer(1.0, self._on_diagnostics)
        cfg.add_listener(self._on_params)

        self._worker = threading.Thread(target=self._work, name="vla_inference_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self._spec.action_space} policy {self._spec.model_id} on {self._spec.device}, "
            f"chunk {self._spec.chunk} x {self._spec.action_period_s:.3f} s"
        )

    def destroy_node(self) -> None:
        """Stop the worker before the publishers it uses are destroyed."""
        if self._worker is not None:
            with self._wake:
                self._stopping = True
                self._wake.notify_all()
            self._worker.join(timeout=10.0)
            self._worker = None
        super().destroy_node()

    # ---------------------------------------------------------------- executor side
    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _signal(self) -> None:
        """Wake the worker; call with the lock held."""
        if not self._signalled:
            self._signalled = True
            self._signal_perf = time.perf_counter()
        self._wake.notify()

    def _frame_age_problem(self, stamp_s: float, now_s: float) -> str | None:
        if now_s - stamp_s > self._cfg["max_frame_age_s"]:
            return "stale"
        if stamp_s - now_s > self._cfg["max_frame_lead_s"]:
            return "future"
        return None

    def _on_frame(self, msg: Image) -> None:
        try:
            rgb = _frame_rgb(msg)
        except ImageFormatError as exc:
            with self._lock:
                self._counts["frames_invalid"] += 1
            self.get_logger().warning(f"frame ignored: {exc}", throttle_duration_sec=5.0)
            return
        stamp_s = _stamp_s(msg.header)
        with self._lock:
            self._counts["frames_received"] += 1
            age_problem = self._frame_age_problem(stamp_s, self._now_s())
            if age_problem is not None:
                self._counts[f"frames_{age_problem}"] += 1
                self._scores.pop(_stamp_key(msg.header), None)
                return
            if self._frame is not None and not self._frame.used:
                self._counts["frames_replaced"] += 1
            self._frame = _Frame(msg.header, rgb, stamp_s)
            self._trigger.new_frame()
            scored = self._scores.pop(_stamp_key(msg.header), None)
            if scored is not None:
                self._trigger.scene_change(scored[0], stamp_s, scored[1])
            self._signal()

    def _on_scene_change(self, msg: Vector3Stamped) -> None:
        """vector.x = score; vector.y = stamp (s) of the keyframe scored against, 0 = none."""
        reference_s = msg.vector.y
        with self._lock:
            frame = self._frame
            if frame is not None and _stamp_key(frame.header) == _stamp_key(msg.header):
                self._trigger.scene_change(msg.vector.x, frame.stamp_s, reference_s)
                self._signal()
                return
            self._scores[_stamp_key(msg.header)] = (msg.vector.x, reference_s)
            while len(self._scores) > SCORE_MEMORY:
                self._scores.popitem(last=False)

    def _on_instruction(self, msg: String) -> None:
        with self._lock:
            if not self._trigger.set_instruction(msg.data):
                return
            instruction = self._trigger.instruction
            self._reset_policy = True
            if instruction is None:
                self._generation += 1
                self._plan.reset()
            self._signal()
        self.get_logger().info(
            f"instruction: {instruction!r}" if instruction else "instruction cleared: holding zero"
        )

    def _on_trigger(
        self, _request: Trigger.Request, response: Trigger.Response
    ) -> Trigger.Response:
        with self._lock:
            response.success = self._trigger.request()
            self._signal()
        response.message = "inference queued" if response.success else "no instruction yet"
        return response

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._generation += 1
            self._trigger.reset()
            self._plan.reset()
            self._reset_policy = True
            self._signal()
        response.success = True
        response.message = "chunk cleared; policy history cleared before the next inference"
        return response

    def _on_params(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._trigger.config = _trigger_config(values)
            self._plan.configure(values["blend"], values["blend_weight"])
        self._control_timer.timer_period_ns = int(1e9 / values["control_rate_hz"])

    def _on_control(self) -> None:
        with self._lock:
            now_s = self._now_s()
            command = None
            if self._trigger.instruction is not None:
                command = self._plan.command_at(now_s)
            self._signal()
        motion = np.zeros(self._spec.motion_dof) if command is None else command[0]
        twist = _twist(motion, self._spec.action_space)
        if not self._spec.has_gripper:
            self._twist_pub.publish(twist)
            return
        arm = TwistStamped(twist=twist)
        arm.header.stamp = self.get_clock().now().to_msg()
        arm.header.frame_id = self._cfg["command_frame_id"]
        self._arm_pub.publish(arm)
        if command is not None and command[1] is not None:
            self._gripper_hold = command[1]
        if self._gripper_hold is not None:
            self._gripper_pub.publish(Float64(data=self._gripper_hold))

    def _on_diagnostics(self) -> None:
        with self._lock:
            values: dict[str, Any] = {
                "model_id": self._spec.model_id,
                "device": self._spec.device,
                "action_space": self._spec.action_space,
                "instruction": self._trigger.instruction or "",
                "busy": self._trigger.busy,
                "pending": ",".join(sorted(c.value for c in self._trigger.pending)),
            }
            fresh = self._frame is not None and (
                self._frame_age_problem(self._frame.stamp_s, self._now_s()) is None
            )
            counts = dict(self._counts)
            causes = dict(self._causes)
            last_error = self._last_error
        for name, stats in (
            ("model", self._model_ms),
            ("latency", self._latency_ms),
            ("overhead", self._overhead_ms),
            ("frame_age", self._frame_age_ms),
        ):
            values[f"{name}_p50_ms"] = stats.percentile(50)
            values[f"{name}_p99_ms"] = stats.percentile(99)
        values["inferences"] = counts.get("inferences", 0)
        for cause, count in causes.items():
            values[f"events_{cause}"] = count
        for name in (
            "frames_received",
            "frames_replaced",
            "frames_stale",
            "frames_future",
            "frames_invalid",
            "actions_skipped",
            "policy_errors",
        ):
            values[name] = counts.get(name, 0)
        values["last_error"] = last_error
        level, message = DiagnosticStatus.OK, "ok"
        if values["instruction"] == "":
            message = "waiting for an instruction"
        elif last_error:
            level, message = DiagnosticStatus.WARN, f"policy error: {last_error}"
        elif not fresh:
            level, message = DiagnosticStatus.WARN, "no fresh frame"
        self._diag_pub.publish(diagnostic_array(self, NODE_NAME, level, message, values))

    # ---------------------------------------------------------------- worker side
    def _work(self) -> None:
        while True:
            loop_perf = time.perf_counter()
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._signalled)
                if self._stopping:
                    return
                self._signalled = False
                origin_perf = max(self._signal_perf, loop_perf)
                reset_policy, self._reset_policy = self._reset_policy, False
                job = self._next_job(origin_perf)
            # The worker must outlive any policy or transport failure, and a failed job must
            # still release the trigger or no inference would ever start again.
            if reset_policy:
                try:
                    self._policy.reset()
                except Exception as exc:
                    self._fail(None, f"reset: {type(exc).__name__}: {exc}")
            if job is not None:
                try:
                    self._run(job)
                except Exception as exc:
                    self._fail(job, f"{type(exc).__name__}: {exc}")

    def _next_job(self, origin_perf: float) -> _Job | None:
        """Called with the lock held: the job to run now, if the trigger says one is due."""
        frame = self._frame
        instruction = self._trigger.instruction
        now_s = self._now_s()
        if (
            frame is None
            or instruction is None
            or self._frame_age_problem(frame.stamp_s, now_s) is not None
        ):
            return None
        firing = self._trigger.poll(now_s, self._plan.remaining(now_s), fresh_frame=not frame.used)
        if firing is None:
            return None
        frame.used = True
        self._frame_age_ms.add((now_s - frame.stamp_s) * 1e3)
        return _Job(firing, frame, instruction, self._generation, origin_perf)

    def _run(self, job: _Job) -> None:
        started = time.perf_counter()
        try:
            chunk = self._policy.step(np.ascontiguousarray(job.frame.rgb), job.instruction)
            problem = chunk_problem(chunk, self._spec)
        except Exception as exc:  # a policy bug must become a zero command, never a crash
            chunk, problem = None, f"{type(exc).__name__}: {exc}"
        model_ms = (time.perf_counter() - started) * 1e3
        if chunk is None or problem is not None:
            self._fail(job, problem or "no chunk")
            return
        with self._lock:
            now_s = self._now_s()
            current = job.generation == self._generation and self._trigger.instruction is not None
            if current:
                # The safety node gates commands on the latest confidence: it must be there
                # before the first command of this chunk.
                self._confidence_pub.publish(Float32(data=float(chunk.confidence)))
                self._counts["actions_skipped"] += self._plan.set_chunk(
                    chunk, job.frame.stamp_s, now_s
                )
                self._counts["inferences"] += 1
                self._causes[job.firing.cause.value] += 1
                self._last_error = ""
                count = self._counts["inferences"]
            self._trigger.finish(now_s, success=current, keyframe_stamp_s=job.frame.stamp_s)
            self._signal()
        if not current:
            return
        self._keyframe_pub.publish(job.frame.header)
        self._chunk_pub.publish(_chunk_message(chunk, self._spec.has_gripper))
        latency_ms = (time.perf_counter() - job.origin_perf) * 1e3
        self._model_ms.add(model_ms)
        self._latency_ms.add(latency_ms)
        self._overhead_ms.add(max(0.0, latency_ms - model_ms))
        event = {
            "cause": job.firing.cause.value,
            "frame_stamp": job.frame.stamp_s,
            "latency_ms": round(latency_ms, 3),
            "model_ms": round(model_ms, 3),
            "count": count,
        }
        self._event_pub.publish(String(data=json.dumps(event)))

    def _fail(self, job: _Job | None, reason: str) -> None:
        """Policy failure: stop executing (zero command) and let the trigger retry later."""
        with self._lock:
            self._counts["policy_errors"] += 1
            self._last_error = reason
            if job is not None:
                if job.generation == self._generation:
                    self._plan.reset()
                self._trigger.finish(self._now_s(), success=False)
            self._signal()
        self.get_logger().error(f"inference failed: {reason}", throttle_duration_sec=2.0)


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

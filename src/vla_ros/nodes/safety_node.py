"""`vla_safety`: the only publisher of robot commands. Wiring only; the logic is vla_ros.safety.

Input callbacks hand each message to the core in O(1) (commands and sensors are stored, scans are
parsed lazily in the output tick) through depth-limited QoS, so a flood of inputs is dropped by
DDS instead of queueing. A timer at `output_rate_hz` publishes whatever the core decides. Inputs
and the output timer sit in separate callback groups, so under a multi-threaded executor a fast
timer cannot starve the inputs (one shared mutually exclusive group did, at 1 kHz); a re-entrant
lock keeps the core single-threaded either way.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool, Float32, Float64
from std_srvs.srv import Trigger

from vla_ros import action_space as action_spaces
from vla_ros.core.stats import LatencyStats
from vla_ros.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    NodeParameters,
    ParamSpec,
    diagnostic_array,
    run_node,
)
from vla_ros.nodes.lifecycle import ManagedNode
from vla_ros.safety.config import (
    GRIPPER_ON_ESTOP,
    MODES,
    PARAM_DOCS,
    SafetyConfig,
    param_names,
    twist_vector,
)
from vla_ros.safety.validator import Output, SafetyValidator, Verdict, status_report

NODE_NAME = "vla_safety"
_LEVELS = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


def parameter_specs(mode: str) -> list[ParamSpec]:
    """Declarations for every parameter of `mode` (besides `mode` itself), defaults per mode."""
    defaults = SafetyConfig.for_mode(mode)
    specs = []
    for name in param_names(mode):
        if name == "mode":
            continue
        description, low, high = PARAM_DOCS[name]
        default = getattr(defaults, name)
        is_list = isinstance(default, tuple)
        specs.append(
            ParamSpec(
                name,
                list(default) if is_list else default,
                description,
                min=low,
                max=high,
                choices=GRIPPER_ON_ESTOP if name == "gripper_on_estop" else None,
                type_=Parameter.Type.DOUBLE_ARRAY if is_list and not default else None,
            )
        )
    if not action_spaces.get(mode).stamped:
        specs.append(
            ParamSpec(
                "input_stamped",
                False,
                "Subscribe vla/cmd_raw as TwistStamped (stamp and frame checked) instead of Twist",
                read_only=True,
            )
        )
    return specs


def _stamp(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _yaw(q: Any) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _serialized(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a callback under the node's lock. An exception latches a stop instead of ending the
    executor's spin, which would leave the robot on its last command with nobody publishing."""

    @functools.wraps(method)
    def locked(self: SafetyNode, *args: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args)
            except Exception as exc:
                self._fail(method.__name__, exc)
                response = args[-1] if args else None
                if isinstance(response, Trigger.Response):
                    response.success = False
                    response.message = f"failed ({exc!r}); stop latched until ~/reset"
                    return response
                return None

    return locked


class SafetyNode(ManagedNode):
    """Raw commands + e-stop + sensors in, limited commands out at a fixed rate.

    Lifecycle (vla_ros.nodes.lifecycle): parameters are validated at construction, activate
    starts the output timer, deactivate/cleanup/shutdown command zero first and stop it.
    """

    def __init__(self, autostart: bool | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._lock = threading.RLock()
        inputs = MutuallyExclusiveCallbackGroup()
        self._output_group = MutuallyExclusiveCallbackGroup()
        mode_param = NodeParameters(
            self,
            [ParamSpec("mode", "mobile3", PARAM_DOCS["mode"][0], choices=MODES, read_only=True)],
        )
        self.mode: str = action_spaces.canonical(mode_param["mode"])
        space = action_spaces.get(self.mode)
        self._params = NodeParameters(self, parameter_specs(self.mode), validate=self._refusal)
        self.core = SafetyValidator(self._config(self._params.values))
        self._params.add_listener(self._on_params)
        self._last_state: tuple[Any, ...] | None = None
        self._tick_ms = LatencyStats()
        self._rejecting: str | None = None

        self._cmd_pub = self.create_publisher(
            TwistStamped if space.stamped else Twist, space.output_topic, COMMAND_QOS
        )
        if space.stamped or self._params["input_stamped"]:
            self.create_subscription(
                TwistStamped,
                space.raw_topic,
                self._on_twist_stamped,
                COMMAND_QOS,
                callback_group=inputs,
            )
        else:
            self.create_subscription(
                Twist, space.raw_topic, self._on_twist, COMMAND_QOS, callback_group=inputs
            )
        if space.platform == "base":
            self.create_subscription(
                Odometry, "odom", self._on_odom, SENSOR_QOS, callback_group=inputs
            )
            self.create_subscription(
                LaserScan, "scan", self._on_scan, SENSOR_QOS, callback_group=inputs
            )
        else:
            self.create_subscription(
                PoseStamped, "vla/ee_pose", self._on_pose, SENSOR_QOS, callback_group=inputs
            )
        self._gripper_pub = None
        if space.gripper:
            self._gripper_pub = self.create_publisher(
                Float64, action_spaces.GRIPPER_TOPIC, COMMAND_QOS
            )
            self.create_subscription(
                Float64,
                action_spaces.GRIPPER_RAW_TOPIC,
                self._on_gripper,
                COMMAND_QOS,
                callback_group=inputs,
            )
        # Latched to get the state on a late start; also volatile, because a subscription that
        # asks for transient-local never matches a plain (volatile) e-stop publisher.
        for qos in (LATCHED_QOS, COMMAND_QOS):
            self.create_subscription(Bool, "vla/estop", self._on_estop, qos, callback_group=inputs)
        self.create_subscription(
            Float32, "vla/confidence", self._on_confidence, COMMAND_QOS, callback_group=inputs
        )
        self._status_pub = self.create_publisher(DiagnosticStatus, "~/status", LATCHED_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_service(Trigger, "~/estop", self._srv_estop)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self._timer: Any = None
        self.create_timer(1.0, self._publish_status)
        self.finish_init(autostart)

    def start_output(self) -> None:
        self._timer = self._output_timer()
        self.get_logger().info(
            f"safety validator up: mode={self.mode}, {self.core.config.output_rate_hz:g} Hz"
        )

    def stop_output(self) -> None:
        """Zero first, then no more output."""
        with self._lock:
            self._publish_zero("deactivated")
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self._timer = None

    # ---------------------------------------------------------------------------- parameters

    def _output_timer(self) -> Any:
        period = 1.0 / self.core.config.output_rate_hz
        return self.create_timer(period, self._tick, callback_group=self._output_group)

    def _config(self, values: Mapping[str, Any]) -> SafetyConfig:
        return SafetyConfig.from_params({**values, "mode": self.mode})

    def _refusal(self, values: Mapping[str, Any]) -> str | None:
        try:
            self._config(values).validate()
        except ValueError as exc:
            return str(exc)
        return None

    @_serialized
    def _on_params(self, values: Mapping[str, Any]) -> None:
        old_rate = self.core.config.output_rate_hz
        self.core.configure(self._config(values))
        if self._timer is not None and self.core.config.output_rate_hz != old_rate:
            self.destroy_timer(self._timer)
            self._timer = self._output_timer()
        self.get_logger().info("safety parameters updated")

    # -------------------------------------------------------------------------------- inputs

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @_serialized
    def _on_twist(self, msg: Twist) -> None:
        self._note(self.core.submit_command(twist_vector(msg), None, None, self._now()), "command")

    @_serialized
    def _on_twist_stamped(self, msg: TwistStamped) -> None:
        verdict = self.core.submit_command(
            twist_vector(msg), _stamp(msg.header.stamp), msg.header.frame_id, self._now()
        )
        self._note(verdict, "command")

    @_serialized
    def _on_gripper(self, msg: Float64) -> None:
        self._note(self.core.submit_gripper(msg.data, self._now()), "gripper")

    @_serialized
    def _on_confidence(self, msg: Float32) -> None:
        self._note(self.core.update_confidence(msg.data, self._now()), "confidence")

    @_serialized
    def _on_estop(self, msg: Bool) -> None:
        engaged_before = self.core.estop_engaged
        self.core.submit_estop(msg.data)
        if msg.data and not engaged_before:
            self._tick()

    @_serialized
    def _on_scan(self, msg: LaserScan) -> None:
        verdict = self.core.update_scan(
            msg.ranges,
            msg.angle_min,
            msg.angle_increment,
            msg.range_min,
            msg.range_max,
            _stamp(msg.header.stamp),
            self._now(),
        )
        self._note(verdict, "scan")

    @_serialized
    def _on_odom(self, msg: Odometry) -> None:
        pose = msg.pose.pose
        verdict = self.core.update_odom(
            pose.position.x,
            pose.position.y,
            _yaw(pose.orientation),
            _stamp(msg.header.stamp),
            self._now(),
        )
        self._note(verdict, "odom")

    @_serialized
    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        verdict = self.core.update_pose(
            (p.x, p.y, p.z), _stamp(msg.header.stamp), msg.header.frame_id, self._now()
        )
        self._note(verdict, "pose")

    def _note(self, verdict: Verdict, source: str) -> None:
        """Log the start and end of a run of rejections once, not once per message."""
        key = None if verdict.accepted else f"{source}:{verdict.code}"
        if key == self._rejecting:
            return
        if key is not None:
            self.get_logger().warning(f"rejecting {source}: {verdict.reason}")
        elif self._rejecting is not None and self._rejecting.startswith(source + ":"):
            self.get_logger().info(f"{source} accepted again")
        else:
            return
        self._rejecting = key

    # ------------------------------------------------------------------------------ services

    @_serialized
    def _srv_estop(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        self.core.request_estop()
        self._tick()
        response.success = True
        response.message = "e-stop engaged; call ~/reset (with vla/estop false) to release"
        return response

    @_serialized
    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        ok, message = self.core.reset(self._now())
        if ok:
            self.get_logger().info(f"reset: {message}")
        self._publish_status()
        response.success = ok
        response.message = message
        return response

    # -------------------------------------------------------------------------------- output

    @_serialized
    def _tick(self) -> None:
        started = time.perf_counter()
        now = self.get_clock().now()
        output = self.core.step(now.nanoseconds * 1e-9)
        if output.publish:
            self._publish(output, now.to_msg())
        self._tick_ms.add((time.perf_counter() - started) * 1e3)
        status = self.core.status()
        rejection = status.last_rejection.split(":", 1)[0]
        key = (output.state, output.reasons, rejection, status.estop_input)
        if key != self._last_state:
            if self._last_state is None or self._last_state[:2] != key[:2]:
                # rclpy refuses two severities from one call site, hence two calls.
                if output.reasons:
                    self.get_logger().warning(
                        f"state -> {output.state.value} ({', '.join(output.reasons)})"
                    )
                else:
                    self.get_logger().info(f"state -> {output.state.value}")
            self._last_state = key
            self._publish_status()

    def _fail(self, where: str, exc: Exception) -> None:
        self.get_logger().error(f"{where} failed, latching a stop until ~/reset: {exc!r}")
        self.core.fail(f"{where}: {exc!r}")
        now = self.get_clock().now()
        self._publish(self.core.step(now.nanoseconds * 1e-9), now.to_msg())

    def _publish(self, output: Output, stamp: Any) -> None:
        """Arm outputs carry the decision time, the `t` that `check_trace` expects."""
        twist = Twist()
        linear, angular = self.core.config.space.to_twist(output.motion)
        twist.linear.x, twist.linear.y, twist.linear.z = linear
        twist.angular.x, twist.angular.y, twist.angular.z = angular
        if not self.core.config.space.stamped:
            self._cmd_pub.publish(twist)
            return
        stamped = TwistStamped(twist=twist)
        stamped.header.stamp = stamp
        stamped.header.frame_id = self.core.config.command_frame
        self._cmd_pub.publish(stamped)
        if output.gripper is not None and self._gripper_pub is not None:
            self._gripper_pub.publish(Float64(data=output.gripper))

    def destroy_node(self) -> None:
        """A validator going down commands zero once instead of leaving the last velocity to the
        robot's own timeout (going silent is the failure mode the brief warns about)."""
        try:
            self._publish_zero("shutdown")
        except Exception as exc:  # shutting down: never let this mask the real teardown
            self.get_logger().warning(f"could not publish the final zero command: {exc}")
        super().destroy_node()

    def _publish_zero(self, reason: str) -> None:
        zero = Output(
            motion=(0.0,) * len(self.core.config.max_velocity),
            gripper=None,
            state=self.core.status().state,
            reasons=(reason,),
            limits=(),
            publish=True,
        )
        self._publish(zero, self.get_clock().now().to_msg())

    @_serialized
    def _publish_status(self) -> None:
        level, message, values = status_report(self.core.status(), self.core.config)
        values["tick_p50_ms"] = f"{self._tick_ms.percentile(50):.4f}"
        values["tick_p99_ms"] = f"{self._tick_ms.percentile(99):.4f}"
        status = DiagnosticStatus(
            level=_LEVELS[level],
            name=self.get_fully_qualified_name(),
            message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        self._status_pub.publish(status)
        self._diag_pub.publish(
            diagnostic_array(self, self.get_fully_qualified_name(), _LEVELS[level], message, values)
        )


def main(args: Sequence[str] | None = None) -> int:
    """Console script `safety_node`."""
    return run_node(SafetyNode, args)

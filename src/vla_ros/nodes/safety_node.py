"""`vla_safety`: the only publisher of robot commands. Wiring only; the logic is vla_ros.safety.

Input callbacks hand each message to the core in O(1) (commands and sensors are stored, scans are
parsed lazily in the output step) through depth-limited QoS, so a flood of inputs is dropped by
DDS instead of queueing. An accepted command is validated and published as soon as it arrives
(token bucket at `output_rate_hz`); the output timer at the same rate fills every gap (watchdog,
ramps, the zero stream), and a guard timer on the *steady* clock takes over whenever that ROS-time
timer stalls, so neither a frozen /clock nor silence can stop the output.
Command inputs are named sources arbitrated twist_mux style (`input_names`, `inputs.<name>.*`,
`lock_names`, `locks.<name>.*`); the policy's `vla` source is enabled by /vla/active.
Inputs and the output timer sit in separate callback groups, so under a multi-threaded executor a
fast timer cannot starve the inputs; a re-entrant lock keeps the core single-threaded either way.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.parameter import Parameter
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool, Float32, Float64
from std_srvs.srv import Trigger

from vla_ros import action_space as action_spaces
from vla_ros.core.stats import LatencyStats
from vla_ros.nodes.common import (
    NodeParameters,
    ParamSpec,
    diagnostic_array,
    run_node,
    unknown_override_problem,
)
from vla_ros.nodes.lifecycle import ManagedNode
from vla_ros.params import ParameterError
from vla_ros.safety.arbiter import InputSpec, LockSpec, RateLimiter
from vla_ros.safety.config import (
    DEFAULT_INPUTS,
    DEFAULT_LOCKS,
    MODES,
    PARAMS,
    SafetyConfig,
    loosened,
    param_names,
    twist_vector,
)
from vla_ros.safety.validator import (
    Output,
    SafetyState,
    SafetyValidator,
    Verdict,
    status_report,
    steady_limit,
)
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, latched_twin_events

NODE_NAME = "vla_safety"
_LEVELS = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


def parameter_specs(mode: str) -> list[ParamSpec]:
    """Declarations for every parameter of `mode` (besides `mode` itself), defaults per mode."""
    defaults = SafetyConfig.for_mode(mode)
    specs = []
    for name in param_names(mode):
        if name == "mode":
            continue
        param = PARAMS[name]
        default = getattr(defaults, name)
        is_list = isinstance(default, tuple)
        specs.append(
            ParamSpec(
                name,
                list(default) if is_list else default,
                param.description,
                min=param.low,
                max=param.high,
                above=param.above,
                choices=param.choices,
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


def arbitration_specs(mode: str, names: Sequence[str], locks: Sequence[str]) -> list[ParamSpec]:
    """`inputs.<name>.*` and `locks.<name>.*`, read-only: topics are wired at start-up.

    Defaults: `vla` (the policy, priority 10, enabled by vla/active) and `teleop` (priority 100,
    always enabled, so a joystick publishing on it takes over and hands back when it goes
    quiet); lock `pause` (priority 50) stops the policy but not teleop. With a gripper, each
    input may also have a gripper topic, applied only while that input drives."""
    space = action_spaces.get(mode)
    defaults = {
        "vla": (space.raw_topic, 10, 0.0, "vla/active", action_spaces.GRIPPER_RAW_TOPIC),
        "teleop": (space.teleop_topic, 100, 0.5, "", action_spaces.TELEOP_GRIPPER_TOPIC),
    }
    specs = []
    for name in names:
        topic, priority, timeout, enable, gripper = defaults.get(
            name, (f"{name}/cmd_vel", 0, 0.0, "", "")
        )
        specs += [
            ParamSpec(
                f"inputs.{name}.topic", topic, f"Command topic of input {name}", read_only=True
            ),
            ParamSpec(
                f"inputs.{name}.priority",
                priority,
                "Higher wins while its command is fresh",
                read_only=True,
            ),
            ParamSpec(
                f"inputs.{name}.timeout",
                timeout,
                "Its command counts this long (s); 0 = command_timeout only",
                min=0.0,
                max=3600.0,
                read_only=True,
            ),
            ParamSpec(
                f"inputs.{name}.enable_topic",
                enable,
                "Bool topic that must be true for this input to count; '' = always enabled",
                read_only=True,
            ),
        ]
        if space.gripper:
            specs.append(
                ParamSpec(
                    f"inputs.{name}.gripper_topic",
                    gripper,
                    "Float64 gripper target of this input (1 open, 0 closed), applied only "
                    "while it drives; '' = none",
                    read_only=True,
                )
            )
    for name in locks:
        specs += [
            ParamSpec(
                f"locks.{name}.topic",
                "vla/pause" if name == "pause" else f"{name}/lock",
                f"Bool topic of lock {name}: true blocks inputs of priority <= its own",
                read_only=True,
            ),
            ParamSpec(
                f"locks.{name}.priority",
                50 if name == "pause" else 0,
                "Lock priority",
                read_only=True,
            ),
        ]
    return specs


def _stamp(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


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
        self._timer: Any = None
        self._guard: Any = None
        self._last_timer_steady = 0.0
        self._lock = threading.RLock()
        self._inputs = MutuallyExclusiveCallbackGroup()
        self._output_group = MutuallyExclusiveCallbackGroup()
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        static = NodeParameters(
            self,
            [
                ParamSpec(
                    "mode", "mobile3", PARAMS["mode"].description, choices=MODES, read_only=True
                ),
                ParamSpec(
                    "allow_runtime_loosening",
                    False,
                    "Accept run-time parameter changes that loosen a limit (default: refuse)",
                    read_only=True,
                ),
                ParamSpec(
                    "input_names",
                    list(DEFAULT_INPUTS),
                    "Command inputs (inputs.<name>.*)",
                    read_only=True,
                ),
                ParamSpec(
                    "lock_names",
                    list(DEFAULT_LOCKS),
                    "Lock inputs (locks.<name>.*)",
                    read_only=True,
                ),
            ],
        )
        self.mode: str = action_spaces.canonical(static["mode"])
        space = action_spaces.get(self.mode)
        self._allow_loosening: bool = static["allow_runtime_loosening"]
        wiring = NodeParameters(
            self, arbitration_specs(self.mode, static["input_names"], static["lock_names"])
        )
        self._params = NodeParameters(self, parameter_specs(self.mode), validate=self._refusal)
        # At construction, not only at configure: a misspelled limit must never run a moment.
        unknown = unknown_override_problem(self)
        if unknown is not None:
            raise ParameterError(unknown)
        inputs, locks = self._arbitration(static["input_names"], static["lock_names"], wiring)
        self.core = SafetyValidator(self._config(self._params.values), inputs, locks)
        self._params.add_listener(self._on_params)
        self._last_state: tuple[Any, ...] | None = None
        self._tick_ms = LatencyStats()
        self._rejecting: dict[str, str] = {}
        self._limiter = RateLimiter(self.core.config.output_rate_hz)

        if space.platform == "base":
            self._sensor(Odometry, "odom", self._on_odom)
            self._sensor(LaserScan, "scan", self._on_scan)
        else:
            self._sensor(PoseStamped, "vla/ee_pose", self._on_pose)
        self._cmd_pub = self.create_publisher(
            TwistStamped if space.stamped else Twist, space.output_topic, COMMAND_QOS
        )
        self._gripper_pub = None
        if space.gripper:
            self._gripper_pub = self.create_publisher(
                Float64, action_spaces.GRIPPER_TOPIC, COMMAND_QOS
            )
        stamped = space.stamped or self._params["input_stamped"]
        for name in static["input_names"]:
            if space.gripper and wiring[f"inputs.{name}.gripper_topic"]:
                self.create_subscription(
                    Float64,
                    wiring[f"inputs.{name}.gripper_topic"],
                    functools.partial(self._on_gripper, name),
                    COMMAND_QOS,
                    callback_group=self._inputs,
                )
            callback = functools.partial(
                self._on_command_stamped if stamped else self._on_command, name
            )
            self.create_subscription(
                TwistStamped if stamped else Twist,
                wiring[f"inputs.{name}.topic"],
                callback,
                COMMAND_QOS,
                callback_group=self._inputs,
            )
            if wiring[f"inputs.{name}.enable_topic"]:
                self._bools(
                    wiring[f"inputs.{name}.enable_topic"],
                    functools.partial(self._on_enable, name),
                )
        for name in static["lock_names"]:
            self._bools(wiring[f"locks.{name}.topic"], functools.partial(self._on_lock, name))
        self._bools("vla/estop", self._on_estop)
        self.create_subscription(
            Float32,
            "vla/confidence",
            self._on_confidence,
            COMMAND_QOS,
            callback_group=self._inputs,
        )
        self._status_pub = self.create_publisher(DiagnosticStatus, "~/status", LATCHED_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_service(Trigger, "~/estop", self._srv_estop)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_timer(1.0, self._publish_status)
        self.get_logger().info(
            f"safety validator up: mode={self.mode}, {self.core.config.output_rate_hz:g} Hz, "
            f"inputs {', '.join(static['input_names'])}"
        )
        self.finish_init(autostart)

    def _sensor(self, msg_type: Any, topic: str, callback: Callable[..., Any]) -> None:
        self.create_subscription(msg_type, topic, callback, SENSOR_QOS, callback_group=self._inputs)

    def _bools(self, topic: str, callback: Callable[..., Any]) -> None:
        """Latched to get the state on a late start; also volatile, because a subscription that
        asks for transient-local never matches a plain (volatile) publisher."""
        self.create_subscription(
            Bool,
            topic,
            callback,
            LATCHED_QOS,
            callback_group=self._inputs,
            event_callbacks=latched_twin_events(),
        )
        self.create_subscription(Bool, topic, callback, COMMAND_QOS, callback_group=self._inputs)

    def _arbitration(
        self, names: Sequence[str], lock_names: Sequence[str], wiring: NodeParameters
    ) -> tuple[list[InputSpec], list[LockSpec]]:
        inputs = [
            InputSpec(
                name,
                int(wiring[f"inputs.{name}.priority"]),
                float(wiring[f"inputs.{name}.timeout"]),
                gated=bool(wiring[f"inputs.{name}.enable_topic"]),
            )
            for name in names
        ]
        locks = [LockSpec(name, int(wiring[f"locks.{name}.priority"])) for name in lock_names]
        return inputs, locks

    # -------------------------------------------------------------------------------- output

    def start_output(self) -> None:
        """Start the output timer (ROS time, like every decision) and its guard on the steady
        clock, which steps the output whenever the ROS-time timer has stalled (a frozen /clock
        under use_sim_time), so the watchdog and the zero stream never stop."""
        if self._timer is None:
            self._timer = self._output_timer()
            period = 1.0 / self.core.config.output_rate_hz
            self._guard = self.create_timer(
                period, self._on_guard, callback_group=self._output_group, clock=self._steady_clock
            )
            self._last_timer_steady = self._steady_now()

    def stop_output(self) -> None:
        """Zero every motion output once and wait (bounded) until subscribers have it, then stop
        the output timer (lifecycle deactivate, shutdown, a signal). The gripper keeps its last
        command (0 would mean 'close'). Nothing to do when the output is not running."""
        with self._lock:
            if self._timer is None:
                return
            self.destroy_timer(self._timer)
            self.destroy_timer(self._guard)
            self._timer = None
            self._publish_zero("stopped")
            self.core.output_stopped()
        from rclpy.duration import Duration

        self._cmd_pub.wait_for_all_acked(Duration(seconds=0.5))

    # ---------------------------------------------------------------------------- parameters

    def _output_timer(self) -> Any:
        period = 1.0 / self.core.config.output_rate_hz
        return self.create_timer(period, self._on_timer, callback_group=self._output_group)

    @_serialized
    def _on_timer(self) -> None:
        self._last_timer_steady = self._steady_now()
        self._tick()

    @_serialized
    def _on_guard(self) -> None:
        """Step only once the ROS-time output has been silent for `steady_limit`: short sim
        stalls stay on ROS time (as stamps and bag checks expect), a frozen /clock does not."""
        stall = steady_limit(self.core.config.command_timeout)
        if self._steady_now() - self._last_timer_steady > stall:
            self._tick()

    def _config(self, values: Mapping[str, Any]) -> SafetyConfig:
        return SafetyConfig.from_params({**values, "mode": self.mode})

    def _refusal(self, values: Mapping[str, Any]) -> str | None:
        try:
            config = self._config(values)
            config.validate()
        except ValueError as exc:
            return str(exc)
        core = getattr(self, "core", None)
        if core is not None and not self._allow_loosening:
            looser = loosened(core.config, config)
            if looser:
                return (
                    f"refused: {', '.join(looser)} would loosen a limit at run time "
                    "(tightening is allowed; start with allow_runtime_loosening:=true to permit)"
                )
        return None

    @_serialized
    def _on_params(self, values: Mapping[str, Any]) -> None:
        old = self.core.config
        self.core.configure(self._config(values))
        new = self.core.config
        if new.output_rate_hz != old.output_rate_hz:
            self._limiter = RateLimiter(new.output_rate_hz)
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self.destroy_timer(self._guard)
                self._timer = None
                self.start_output()
        changed = [k for k in values if getattr(old, k, None) != getattr(new, k, None)]
        self.get_logger().info(f"safety parameters updated: {', '.join(changed) or 'none'}")

    # -------------------------------------------------------------------------------- inputs

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _steady_now(self) -> float:
        return self._steady_clock.now().nanoseconds * 1e-9

    @_serialized
    def _on_command(self, source: str, msg: Twist) -> None:
        verdict = self.core.submit_command(
            twist_vector(msg), None, None, self._now(), source=source, steady_s=self._steady_now()
        )
        self._arrived(verdict, source)

    @_serialized
    def _on_command_stamped(self, source: str, msg: TwistStamped) -> None:
        verdict = self.core.submit_command(
            twist_vector(msg),
            _stamp(msg.header.stamp),
            msg.header.frame_id,
            self._now(),
            source=source,
            steady_s=self._steady_now(),
        )
        self._arrived(verdict, source)

    def _arrived(self, verdict: Verdict, source: str) -> None:
        """Publish an accepted command at once (rate-limited), restarting the gap timer.

        Not under use_sim_time: there the outputs stay on the ROS-time timer, in step with the
        /clock updates, so a replayed bag sees the same output cadence as the recorded clock."""
        self._note(verdict, source)
        latched = self._last_state is not None and self._last_state[0] is SafetyState.ESTOP
        if not verdict.accepted and self.core.fault and not latched:
            self._tick()  # the fault latch this rejection engaged stops at once
        if (
            verdict.accepted
            and self._timer is not None
            and not self.get_clock().ros_time_is_active
            and self._limiter.allow(self._steady_now())
        ):
            self._tick()
            self._timer.reset()
            self._last_timer_steady = self._steady_now()

    @_serialized
    def _on_enable(self, source: str, msg: Bool) -> None:
        before = self.core.status().enabled_sources
        self.core.enable_source(source, msg.data)
        if self.core.status().enabled_sources != before:
            self._publish_status()

    @_serialized
    def _on_lock(self, name: str, msg: Bool) -> None:
        before = self.core.status().engaged_locks
        self.core.set_lock(name, msg.data)
        if self.core.status().engaged_locks != before:
            self._publish_status()

    @_serialized
    def _on_gripper(self, source: str, msg: Float64) -> None:
        verdict = self.core.submit_gripper(
            msg.data, self._now(), source=source, steady_s=self._steady_now()
        )
        self._note(verdict, f"{source} gripper")

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
        q = pose.orientation
        verdict = self.core.update_odom(
            pose.position.x,
            pose.position.y,
            (q.x, q.y, q.z, q.w),
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
        """Log the start of a run of rejections per source, throttled: a source alternating
        good and bad messages must not flood the log (the fault latch reports once)."""
        code = "" if verdict.accepted else verdict.code
        if code == self._rejecting.get(source, ""):
            return
        self._rejecting[source] = code
        if code:
            self.get_logger().warning(
                f"rejecting {source}: {verdict.reason}", throttle_duration_sec=2.0
            )

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
        output = self.core.step(now.nanoseconds * 1e-9, self._steady_now())
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
                    fault = f": {self.core.fault}" if "fault" in output.reasons else ""
                    self.get_logger().warning(
                        f"state -> {output.state.value} ({', '.join(output.reasons)}){fault}"
                    )
                else:
                    self.get_logger().info(f"state -> {output.state.value}")
            self._last_state = key
            self._publish_status()

    def _fail(self, where: str, exc: Exception) -> None:
        self.get_logger().error(f"{where} failed, latching a stop until ~/reset: {exc!r}")
        self.core.fail(f"{where}: {exc!r}")
        now = self.get_clock().now()
        self._publish(self.core.step(now.nanoseconds * 1e-9, self._steady_now()), now.to_msg())

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
        """A validator going down commands zero (once, if `stop_output` has not) instead of
        leaving the last velocity to the robot's own timeout."""
        if self.context.ok():
            try:
                self.stop_output()
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

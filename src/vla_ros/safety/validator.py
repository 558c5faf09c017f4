"""The safety validator core: everything between a raw command and the motors, with no ROS in it.

Time is always passed in (`now_s`, seconds on the node's clock, the same clock as message stamps),
so tests and bag replays drive it deterministically. A second, steady time (`steady_s`, optional)
runs the watchdog and the braking too, so a frozen /clock under use_sim_time cannot freeze a stop.
Commands come from named sources arbitrated twist_mux style (`safety/arbiter.py`).
One `step()` per output decides what to publish: input checks and sensor data only ever change
the *target*; the output then moves towards the target within the acceleration/deceleration
limits using the real time since the last step (speeding up counts at most two output periods of
it, so a stalled tick or a clock jump forward never becomes a step up). The single exception is
the e-stop, which zeroes the output at once.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from vla_ros.safety.arbiter import DEFAULT_INPUTS, Arbiter, InputSpec, LockSpec
from vla_ros.safety.config import ANGULAR_AXES, LINEAR_AXES, TWIST_INDEX, SafetyConfig
from vla_ros.safety.limiter import (
    Vector,
    apply_deadband,
    axes_scale,
    clamp_axes,
    clamp_norm,
    is_zero,
    norm_of,
    norm_scale,
    ramp,
    zero_blocked,
)
from vla_ros.safety.workspace import limit_box_and_sphere
from vla_ros.safety.zones import (
    Geofence,
    ObstacleZones,
    quaternion_yaw,
    scan_points,
    scan_problem,
)

FAULT_CODES = frozenset(
    {
        "wrong_size",
        "non_finite",
        "absurd_magnitude",
        "empty_frame",
        "wrong_frame",
        "bad_stamp",
        "zero_stamp",
        "future_stamp",
        "stale_stamp",
        "out_of_order",
    }
)
"""Rejections that count towards the fault latch: a source sending garbage. Commands refused
because the source is disabled or locked, or because the e-stop is engaged, do not."""


def steady_limit(timeout: float) -> float:
    """How long in steady time a timeout may take: a sim clock lagging wall time by less (a
    loaded machine, a slow replay) is ROS time's business, a longer lag is a frozen /clock."""
    return max(2.0 * timeout, 1.0)


class SafetyState(str, Enum):
    """What the validator is doing, in order of severity."""

    RUNNING = "running"
    LIMITED = "limited"
    STOPPED = "stopped"
    TIMEOUT = "timeout"
    ESTOP = "estop"


@dataclass(frozen=True)
class Verdict:
    """Outcome of handing one input to the validator; `code` is a stable counter key."""

    accepted: bool
    code: str = ""
    detail: str = ""

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


ACCEPTED = Verdict(True)


@dataclass(frozen=True)
class Output:
    """What to publish now. `publish` False means stay silent (only after the zero hold expired).

    `motion` follows the mode's axis order; `gripper` is None until a gripper command was passed
    (arm7 only). `reasons` say why the target is zero; `limits` which limiters shaped it.
    """

    motion: Vector
    gripper: float | None
    state: SafetyState
    reasons: tuple[str, ...]
    limits: tuple[str, ...]
    publish: bool


@dataclass
class SafetyStatus:
    """The report behind ~/status."""

    state: SafetyState
    reasons: tuple[str, ...]
    limits: tuple[str, ...]
    last_rejection: str
    rejections: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    estop_engaged: bool = False
    estop_input: bool = False
    publishing: bool = True
    fault: str = ""
    active_source: str = ""
    enabled_sources: tuple[str, ...] = ()
    engaged_locks: tuple[str, ...] = ()


@dataclass
class _Sensor:
    """A stored reading; `problem` ("bad", "stale") marks one that must stop the robot until a
    good reading replaces it (an expired reading stays expired whatever the timeout becomes)."""

    time: float
    data: object
    problem: str = ""
    steady: float = 0.0


@dataclass
class _Command:
    motion: Vector
    time: float
    steady: float
    unused: bool


@dataclass
class _Gripper:
    value: float
    time: float
    steady: float


class SafetyValidator:
    """Limits, ramps, watchdog, e-stop, zones and workspace for one robot."""

    def __init__(
        self,
        config: SafetyConfig,
        inputs: Sequence[InputSpec] = DEFAULT_INPUTS,
        locks: Sequence[LockSpec] = (),
    ) -> None:
        config.validate()
        self._config = config
        self._dof = config.dof
        self._arbiter = Arbiter(inputs, locks)
        self._velocity: Vector = (0.0,) * self._dof
        self._commands: dict[str, _Command] = {}
        self._stamps: dict[str, float] = {}
        self._active: str | None = None
        self._command_time: float | None = None
        self._confidence: tuple[float, float] | None = None
        self._fault = ""
        self._fault_times: deque[float] = deque()
        self._last_steady: float | None = None
        self._steady_now: float | None = None
        self._ros_seen: deque[tuple[float, float]] = deque()
        """(steady, ROS) time of the steps over the last `steady_limit` of steady time."""
        self._grippers: dict[str, _Gripper] = {}
        self._gripper_out: float | None = None
        self._estop_input = False
        self._estop = False
        self._last_step: float | None = None
        self._last_now: float | None = None
        self._zero_since: float | None = None
        self._scan: _Sensor | None = None
        self._scan_points: np.ndarray | None = None
        self._odom: _Sensor | None = None
        self._pose: _Sensor | None = None
        self._rejections: Counter[str] = Counter()
        self._accepted = 0
        self._last_rejection = ""
        self._last_output = Output(
            self._velocity, None, SafetyState.TIMEOUT, ("no_command",), (), True
        )
        self._build_geometry()

    @property
    def config(self) -> SafetyConfig:
        return self._config

    @property
    def last_valid_time(self) -> float | None:
        """Effective time of the newest accepted command: min(stamp, receipt), never later."""
        return self._command_time

    @property
    def estop_engaged(self) -> bool:
        return self._estop

    @property
    def fault(self) -> str:
        return self._fault

    def configure(self, config: SafetyConfig) -> None:
        """Swap limits at run time; the current velocity then ramps into the new limits.

        Whatever expired under the old timeouts stays expired: a longer command or sensor
        timeout must not revive a dead upstream."""
        config.validate()
        if config.mode != self._config.mode:
            raise ValueError("mode cannot change at run time")
        if self._last_now is not None:
            self._expire(self._last_now, self._steady(self._last_now, self._steady_now))
        self._config = config
        self._build_geometry()

    def _build_geometry(self) -> None:
        cfg = self._config
        self._zones = (
            ObstacleZones(
                cfg.stop_zone,
                cfg.slowdown_zone,
                cfg.slowdown_ratio,
                cfg.footprint,
                cfg.time_to_collision_s,
                cfg.lookahead_s,
            )
            if cfg.space.platform == "base" and cfg.scan_configured
            else None
        )
        self._geofence = (
            Geofence(cfg.geofence, cfg.geofence_margin, cfg.lookahead_s)
            if cfg.space.platform == "base" and cfg.geofence
            else None
        )
        self._scan_points = None

    # ----------------------------------------------------------------------------------- inputs

    def submit_command(
        self,
        motion: Sequence[float],
        stamp_s: float | None,
        frame_id: str | None,
        now_s: float,
        source: str = "vla",
        steady_s: float | None = None,
    ) -> Verdict:
        """A raw command from input `source`: `dof` values in axis order, or a 6-vector twist.

        `stamp_s`/`frame_id` are None for unstamped sources (plain Twist). A rejected command
        changes nothing, in particular not the watchdog; rejected garbage counts towards the
        fault latch.
        """
        self._check_clock(now_s, steady_s)
        cfg = self._config
        refusal = self._arbiter.refusal(source)
        if refusal is not None:
            return self._reject(*refusal)
        values = tuple(motion)
        if len(values) == 6 and self._dof != 6:
            picked = tuple(values[i] for i in TWIST_INDEX[cfg.mode])
            unused = any(values[i] != 0.0 for i in range(6) if i not in TWIST_INDEX[cfg.mode])
        elif len(values) == self._dof:
            picked, unused = values, False
        else:
            return self._reject("wrong_size", f"{len(values)} values, expected {self._dof} or 6")
        for i, value in enumerate(values):
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                return self._reject("non_finite", f"component {i} = {value}")
        for i, value in enumerate(values):
            if abs(value) > cfg.max_input_magnitude:
                return self._reject(
                    "absurd_magnitude", f"component {i} = {value:g} > {cfg.max_input_magnitude:g}"
                )
        if frame_id is not None and frame_id != cfg.command_frame:
            code = "empty_frame" if not frame_id else "wrong_frame"
            return self._reject(code, f"frame_id {frame_id!r}, expected {cfg.command_frame!r}")
        if frame_id is None and cfg.space.stamped:
            return self._reject(
                "empty_frame", f"unstamped arm command, expected {cfg.command_frame!r}"
            )
        verdict, effective = self._check_stamp(stamp_s, now_s, cfg.max_command_age)
        if not verdict.accepted:
            return self._reject(verdict.code, verdict.detail)
        last_stamp = self._stamps.get(source)
        if stamp_s is not None and last_stamp is not None and stamp_s < last_stamp:
            return self._reject("out_of_order", f"stamp {stamp_s:.6f} < {last_stamp:.6f}")
        if self._estop:
            return self._reject("estop_engaged", "commands are ignored until ~/reset")
        previous = self._commands.get(source)
        if previous is not None:
            effective = max(previous.time, effective)
        self._commands[source] = _Command(
            tuple(float(v) for v in picked), effective, self._steady(now_s, steady_s), unused
        )
        self._command_time = (
            effective if self._command_time is None else max(self._command_time, effective)
        )
        if stamp_s is not None and stamp_s != 0.0:
            self._stamps[source] = stamp_s
        else:
            self._stamps.pop(source, None)
        self._accepted += 1
        return ACCEPTED

    def enable_source(self, name: str, enabled: bool) -> None:
        """The enable input of a gated source (/vla/active for the policy). Disabling drops its
        command and gripper target at once: neither may outlive the instruction."""
        self._arbiter.set_enabled(name, enabled)
        if not self._arbiter.enabled(name):
            self._commands.pop(name, None)
            self._grippers.pop(name, None)

    def set_lock(self, name: str, engaged: bool) -> None:
        """A lock input; engaging it drops the commands and gripper targets of every source it
        blocks."""
        self._arbiter.set_lock(name, engaged)
        for held in (self._commands, self._grippers):
            for source in list(held):
                if self._arbiter.refusal(source) is not None:
                    del held[source]

    def submit_gripper(
        self, value: float, now_s: float, source: str = "vla", steady_s: float | None = None
    ) -> Verdict:
        """Gripper target of input `source` (1 open, 0 closed), clamped to [0, 1].

        The gripper is part of a source's command: a target is applied only while its source
        drives (the arbiter picks it and motion is allowed), and it is refused, not kept for
        later, while another source drives or the source is disabled, locked or e-stopped.
        Otherwise the gripper holds the last target applied.
        """
        self._check_clock(now_s, steady_s)
        refusal = self._arbiter.refusal(source)
        if refusal is not None:
            return self._reject(*refusal)
        if not self._config.space.gripper:
            return self._reject("no_gripper", f"mode {self._config.mode} has no gripper")
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return self._reject("non_finite", f"gripper = {value}")
        if self._estop:
            return self._reject("estop_engaged", "gripper commands are ignored until ~/reset")
        steady = self._steady(now_s, self._steady_now)
        self._expire(now_s, steady)
        driving = self._arbiter.pick(tuple(self._commands))
        if driving is not None and driving != source:
            return self._reject("source_overridden", f"{driving} drives; {source} may not grip")
        self._grippers[source] = _Gripper(min(max(float(value), 0.0), 1.0), now_s, steady)
        return ACCEPTED

    def update_confidence(self, value: float, now_s: float) -> Verdict:
        """Confidence of the current chunk: it holds for every command until the next value,
        because the policy publishes it once per inference but commands every control tick.
        Invalid values count as zero confidence. With the gate on, no confidence (or one older
        than max_confidence_age) is zero confidence too: the gate fails closed."""
        self._check_clock(now_s)
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 <= value <= 1:
            self._confidence = (0.0, now_s)
            return self._reject("bad_confidence", f"{value} is not in [0, 1]")
        self._confidence = (float(value), now_s)
        return ACCEPTED

    def submit_estop(self, engaged: bool) -> None:
        """The /vla/estop input: true engages the latch; false alone never releases it."""
        self._estop_input = bool(engaged)
        if engaged:
            self._engage()

    def request_estop(self) -> None:
        """The ~/estop service."""
        self._engage()

    def fail(self, detail: str) -> None:
        """An internal error: stop at once and latch like the e-stop, since no output computed
        after it can be trusted. Counted as rejection `internal_error`."""
        self._reject("internal_error", detail)
        self._engage()

    def reset(self, now_s: float) -> tuple[bool, str]:
        """The ~/reset service: release the e-stop / fault latch if the e-stop input is false.

        The previous commands and confidence are forgotten, so motion resumes only with fresh
        ones (with the gate on, a fresh confidence too).
        """
        self._check_clock(now_s)
        if self._estop_input:
            return False, "e-stop input (vla/estop) is still true; release it first"
        was = self._estop
        fault = self._fault
        self._estop = False
        self._fault = ""
        self._fault_times.clear()
        self._forget_commands()
        self._confidence = None
        self._zero_since = None
        if fault:
            return True, f"fault released ({fault})"
        return True, "e-stop released" if was else "not engaged; command state cleared"

    def output_stopped(self) -> None:
        """The node zeroed the robot itself (lifecycle deactivate): when the output starts
        again it ramps up from rest, not from the velocity it had before."""
        self._velocity = (0.0,) * self._dof

    def _forget_commands(self) -> None:
        self._commands.clear()
        self._grippers.clear()
        self._stamps.clear()
        self._active = None
        self._command_time = None

    def _engage(self) -> None:
        self._estop = True
        self._velocity = (0.0,) * self._dof
        self._forget_commands()

    def update_scan(
        self,
        ranges: Sequence[float] | np.ndarray,
        angle_min: float,
        angle_increment: float,
        range_min: float,
        range_max: float,
        stamp_s: float,
        now_s: float,
    ) -> Verdict:
        """Store a LaserScan (laser at `scan_pose` in the base frame); parsed lazily in step.

        A malformed scan is missing data: it replaces the stored one, so an obstacle that had
        stopped the robot cannot vanish behind a broken message."""
        self._check_clock(now_s)
        verdict, effective = self._check_stamp(stamp_s, now_s, None)
        if not verdict.accepted:
            return self._reject("scan_" + verdict.code, verdict.detail)
        problem = scan_problem(len(ranges), angle_min, angle_increment, range_min, range_max)
        if problem is not None:
            self._scan = _Sensor(now_s, None, "bad")
            self._scan_points = None
            return self._reject("scan_bad", problem)
        self._scan = _Sensor(effective, (ranges, angle_min, angle_increment, range_min, range_max))
        self._scan_points = None
        return ACCEPTED

    def update_odom(
        self,
        x: float,
        y: float,
        orientation: float | Sequence[float],
        stamp_s: float,
        now_s: float,
    ) -> Verdict:
        """Robot pose in the odometry frame (the geofence frame); `orientation` is a yaw or a
        quaternion (x, y, z, w) of any non-zero norm. Bad data replaces the stored pose."""
        self._check_clock(now_s)
        try:
            if isinstance(orientation, numbers.Real):
                yaw = float(orientation)
            else:
                qx, qy, qz, qw = orientation
                yaw = quaternion_yaw(qx, qy, qz, qw)
        except (TypeError, ValueError) as exc:
            self._odom = _Sensor(now_s, None, "bad")
            return self._reject("odom_bad", str(exc))
        if not all(math.isfinite(v) for v in (x, y, yaw)):
            self._odom = _Sensor(now_s, None, "bad")
            return self._reject("odom_bad", f"pose ({x}, {y}, {yaw})")
        verdict, effective = self._check_stamp(stamp_s, now_s, None)
        if not verdict.accepted:
            return self._reject("odom_" + verdict.code, verdict.detail)
        self._odom = _Sensor(effective, (x, y, yaw))
        return ACCEPTED

    def update_pose(
        self, position: Sequence[float], stamp_s: float, frame_id: str, now_s: float
    ) -> Verdict:
        """End-effector position, which must be in `command_frame` (no TF here)."""
        self._check_clock(now_s)
        values = tuple(position)
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            self._pose = _Sensor(now_s, None, "bad")
            return self._reject("pose_bad", f"position {values}")
        if frame_id != self._config.command_frame:
            return self._reject(
                "pose_wrong_frame", f"{frame_id!r}, expected {self._config.command_frame!r}"
            )
        verdict, effective = self._check_stamp(stamp_s, now_s, None)
        if not verdict.accepted:
            return self._reject("pose_" + verdict.code, verdict.detail)
        self._pose = _Sensor(effective, values)
        return ACCEPTED

    def _check_stamp(
        self, stamp_s: float | None, now_s: float, max_age: float | None
    ) -> tuple[Verdict, float]:
        """Verdict and effective time; the effective time is never later than `now_s`."""
        cfg = self._config
        if stamp_s is None:
            return ACCEPTED, now_s
        if not math.isfinite(stamp_s):
            return Verdict(False, "bad_stamp", f"{stamp_s}"), now_s
        if stamp_s == 0.0:
            if cfg.accept_zero_stamp:
                return ACCEPTED, now_s
            return Verdict(False, "zero_stamp", "stamp is 0 (accept_zero_stamp is false)"), now_s
        if stamp_s > now_s + cfg.future_tolerance:
            return Verdict(False, "future_stamp", f"{stamp_s - now_s:.3f} s ahead"), now_s
        if max_age is not None and now_s - stamp_s > max_age:
            return Verdict(False, "stale_stamp", f"{now_s - stamp_s:.3f} s old"), now_s
        return ACCEPTED, min(stamp_s, now_s)

    def _reject(self, code: str, detail: str) -> Verdict:
        verdict = Verdict(False, code, detail)
        self._rejections[code] += 1
        self._last_rejection = verdict.reason
        if code in FAULT_CODES and self._last_now is not None:
            self._count_fault(verdict, self._steady(self._last_now, self._steady_now))
        return verdict

    def _count_fault(self, verdict: Verdict, now: float) -> None:
        """More than fault_max_rejections within fault_window_s latch a stop until ~/reset: a
        source that alternates garbage and valid commands must not keep the robot moving."""
        cfg = self._config
        if cfg.fault_max_rejections <= 0 or self._fault:
            return
        times = self._fault_times
        times.append(now)
        while times and now - times[0] > cfg.fault_window_s:
            times.popleft()
        if len(times) > cfg.fault_max_rejections:
            self._fault = (
                f"more than {cfg.fault_max_rejections} rejected commands within "
                f"{cfg.fault_window_s:g} s (last: {verdict.reason})"
            )
            self._engage()

    def _steady(self, now_s: float, steady_s: float | None) -> float:
        return now_s if steady_s is None else steady_s

    def _check_clock(self, now_s: float, steady_s: float | None = None) -> None:
        """A clock that runs backwards (sim time restarted) would stretch every timeout: forget
        all time-based state instead."""
        if self._last_now is not None and now_s < self._last_now:
            self._forget_commands()
            self._scan = self._odom = self._pose = None
            self._scan_points = None
            self._confidence = None
            self._last_step = None
            self._ros_seen.clear()
            self._zero_since = None
        if steady_s is not None:
            # Only callers that read the steady clock move it: a sensor update carries ROS time
            # alone, and taking that for steady time would look like the steady clock jumping back.
            if self._steady_now is not None and steady_s < self._steady_now:
                self._commands.clear()
                self._grippers.clear()
                self._last_steady = None
            self._steady_now = steady_s
        self._last_now = now_s

    def _expire(self, now_s: float, steady_s: float) -> None:
        """Drop commands and mark readings that are past their timeouts, for good."""
        cfg = self._config
        for held in (self._commands, self._grippers):
            for name in list(held):
                entry = held[name]
                timeout = cfg.command_timeout
                own = self._arbiter.inputs[name].timeout
                if own > 0:
                    timeout = min(timeout, own)
                if now_s - entry.time > timeout or steady_s - entry.steady > steady_limit(timeout):
                    del held[name]
        for sensor, timeout in (
            (self._scan, cfg.scan_timeout),
            (self._odom, cfg.odom_timeout),
            (self._pose, cfg.pose_timeout),
        ):
            if sensor is not None and not sensor.problem and now_s - sensor.time > timeout:
                sensor.problem = "stale"

    # ------------------------------------------------------------------------------------- step

    def step(self, now_s: float, steady_s: float | None = None) -> Output:
        """Advance to `now_s` (ROS time) and `steady_s` (steady time, default `now_s`) and
        return what to publish."""
        self._check_clock(now_s, steady_s)
        cfg = self._config
        steady = self._steady(now_s, steady_s)
        dt = 0.0 if self._last_step is None else now_s - self._last_step
        steady_dt = 0.0 if self._last_steady is None else steady - self._last_steady
        self._last_step = now_s
        self._last_steady = steady
        zero = (0.0,) * self._dof
        if self._estop:
            self._velocity = zero
            self._zero_since = None
            self._active = None
            gripper = {"open": 1.0, "close": 0.0}.get(cfg.gripper_on_estop, self._gripper_out)
            if cfg.space.gripper and gripper is not None:
                self._gripper_out = gripper
            reason = "fault" if self._fault else "estop"
            return self._finish(
                Output(zero, self._gripper_out, SafetyState.ESTOP, (reason,), (), True)
            )
        self._expire(now_s, steady)
        reasons: list[str] = []
        limits: list[str] = []
        self._active = self._arbiter.pick(tuple(self._commands))
        timed_out = self._active is None
        if timed_out:
            target = zero
            state = SafetyState.TIMEOUT
            reasons.append("no_command" if self._command_time is None else "command_timeout")
        else:
            assert self._active is not None
            command = self._commands[self._active]
            target, reasons, limits = self._shape(command.motion, command.unused, now_s)
            state = (
                SafetyState.STOPPED
                if reasons
                else SafetyState.LIMITED
                if limits
                else SafetyState.RUNNING
            )
        target = apply_deadband(target, cfg.deadband)
        window = 2.0 / cfg.output_rate_hz
        brake_dt = max(dt, steady_dt) if self._ros_stalled(now_s, steady) else dt
        velocity = ramp(
            self._velocity,
            target,
            cfg.max_accel,
            cfg.max_decel,
            dt,
            cfg.scale_velocities,
            window,
            brake_dt,
        )
        if not self._within_norms(velocity):
            velocity = ramp(
                self._velocity, target, cfg.max_accel, cfg.max_decel, dt, True, window, brake_dt
            )
        if velocity != target:
            limits.append("accel")
        self._velocity = velocity
        motion = apply_deadband(velocity, cfg.deadband)
        moving = not (is_zero(motion) and is_zero(velocity))
        if moving or not timed_out:
            self._zero_since = None
            publish = True
        else:
            if self._zero_since is None:
                self._zero_since = now_s
            publish = cfg.hold_zero_s < 0 or now_s - self._zero_since <= cfg.hold_zero_s
        self._apply_gripper(state)
        return self._finish(
            Output(motion, self._gripper_out, state, tuple(reasons), tuple(limits), publish)
        )

    def _apply_gripper(self, state: SafetyState) -> None:
        """Only the driving source grips; the targets of the sources it overrides are dropped,
        so none of them acts later when it would drive again."""
        for source in list(self._grippers):
            if source != self._active:
                if self._active is not None:
                    del self._grippers[source]
            elif state in (SafetyState.RUNNING, SafetyState.LIMITED):
                self._gripper_out = self._grippers[source].value

    def _ros_stalled(self, now_s: float, steady: float) -> bool:
        """ROS time advanced by less than an output period over the last `steady_limit` of
        steady time (a frozen /clock): then braking runs on steady time. Measured over that
        whole window, not since some earlier step: a clock that stops a few milliseconds after
        an output tick, or after a tick that fired late (a timer fires on the first /clock
        update past its deadline), has moved less than a period in the window, and taking its
        last few milliseconds for a running clock left the robot on its last speed for another
        second. A merely slow sim clock (real-time factor 0.05: 50 ms of ROS time a second)
        moves more and keeps braking on ROS time, so its stamps still show the configured
        deceleration."""
        limit = steady_limit(self._config.command_timeout)
        seen = self._ros_seen
        if seen and steady < seen[-1][0]:
            seen.clear()  # the steady clock went back (another process's clock, a restart)
        seen.append((steady, now_s))
        while len(seen) > 1 and seen[1][0] <= steady - limit:
            seen.popleft()
        oldest_steady, oldest_ros = seen[0]
        if steady - oldest_steady < limit:
            return False  # not watched for a whole window yet
        return now_s - oldest_ros < 1.0 / self._config.output_rate_hz - 1e-9

    def _finish(self, output: Output) -> Output:
        self._last_output = output
        return output

    def _within_norms(self, motion: Vector) -> bool:
        cfg = self._config
        return (
            norm_of(motion, LINEAR_AXES[cfg.mode]) <= cfg.max_linear_speed + 1e-12
            and norm_of(motion, ANGULAR_AXES[cfg.mode]) <= cfg.max_angular_speed + 1e-12
        )

    def _shape(
        self, command: Vector, unused: bool, now_s: float
    ) -> tuple[Vector, list[str], list[str]]:
        """Target velocity for a valid command: confidence, limits, zones, workspace."""
        cfg = self._config
        zero = (0.0,) * self._dof
        limits: list[str] = []
        if unused:
            limits.append("unused_axes")
        gate = self._confidence_reason(now_s)
        if gate:
            return zero, [gate], limits
        if cfg.scale_velocities:
            target, acted = self._scale_limits(command)
            if acted:
                limits.append("velocity")
        else:
            target, clamped = clamp_axes(command, cfg.min_velocity, cfg.max_velocity, False)
            if clamped:
                limits.append("velocity")
            target, linear = clamp_norm(target, LINEAR_AXES[cfg.mode], cfg.max_linear_speed)
            target, angular = clamp_norm(target, ANGULAR_AXES[cfg.mode], cfg.max_angular_speed)
            if linear or angular:
                limits.append("speed_norm")
        if cfg.space.platform == "base":
            return self._shape_mobile(target, now_s, limits)
        return self._shape_arm(target, now_s, limits)

    def _scale_limits(self, command: Vector) -> tuple[Vector, bool]:
        """One factor for the whole vector from the per-axis and both norm limits, so the
        direction is kept (axes whose limit is 0 on that side are zeroed first)."""
        cfg = self._config
        kept = zero_blocked(command, cfg.min_velocity, cfg.max_velocity)
        scale = min(
            axes_scale(kept, cfg.min_velocity, cfg.max_velocity),
            norm_scale(kept, LINEAR_AXES[cfg.mode], cfg.max_linear_speed),
            norm_scale(kept, ANGULAR_AXES[cfg.mode], cfg.max_angular_speed),
        )
        if scale >= 1.0:
            return kept, kept != tuple(command)
        return tuple(v * scale for v in kept), True

    def _confidence_reason(self, now_s: float) -> str | None:
        cfg = self._config
        if cfg.min_confidence <= 0:
            return None
        if self._confidence is None:
            return "confidence_missing"
        value, time = self._confidence
        if now_s - time > cfg.max_confidence_age:
            return "confidence_stale"
        return "low_confidence" if value < cfg.min_confidence else None

    def _shape_mobile(
        self, target: Vector, now_s: float, limits: list[str]
    ) -> tuple[Vector, list[str], list[str]]:
        cfg = self._config
        zero = (0.0,) * self._dof
        reasons: list[str] = []
        if self._zones is not None:
            scan_reason = self._stale(self._scan, cfg.scan_timeout, now_s, "scan")
            if scan_reason:
                reasons.append(scan_reason)
            else:
                result = self._zones.evaluate(self._points(), target)
                if result.blocked:
                    reasons.extend(result.limits)
                elif result.scale < 1.0:
                    target = tuple(v * result.scale for v in target)
                    limits.extend(result.limits)
        if self._geofence is not None:
            odom_reason = self._stale(self._odom, cfg.odom_timeout, now_s, "odom")
            if odom_reason:
                reasons.append(odom_reason)
            elif self._odom is not None:
                x, y, yaw = self._odom.data  # type: ignore[misc]
                decel = min(cfg.max_decel[0], cfg.max_decel[1])
                scale, limit = self._geofence.linear_scale(x, y, yaw, target[0], target[1], decel)
                target = (target[0] * scale, target[1] * scale, target[2])
                if limit:
                    limits.append(limit)
        return (zero, reasons, limits) if reasons else (target, reasons, limits)

    def _shape_arm(
        self, target: Vector, now_s: float, limits: list[str]
    ) -> tuple[Vector, list[str], list[str]]:
        cfg = self._config
        if not cfg.workspace_configured:
            return target, [], limits
        pose_reason = self._stale(self._pose, cfg.pose_timeout, now_s, "pose")
        if pose_reason or self._pose is None:
            return (0.0,) * self._dof, [pose_reason or "pose_missing"], limits
        position = self._pose.data
        assert isinstance(position, tuple)
        linear, acted = limit_box_and_sphere(
            position,
            target[0:3],
            (cfg.workspace_min, cfg.workspace_max) if cfg.workspace_min else None,
            (cfg.workspace_sphere_center, cfg.workspace_sphere_radius)
            if cfg.workspace_sphere_radius > 0
            else None,
            cfg.max_decel[0:3],
            cfg.workspace_margin,
            cfg.lookahead_s,
        )
        if acted:
            limits.append("workspace")
        return (*linear, *target[3:6]), [], limits

    @staticmethod
    def _stale(sensor: _Sensor | None, timeout: float, now_s: float, name: str) -> str | None:
        if sensor is None:
            return f"{name}_missing"
        if sensor.problem:
            return f"{name}_{sensor.problem}"
        if now_s - sensor.time > timeout:
            sensor.problem = "stale"
            return f"{name}_stale"
        return None

    def _points(self) -> np.ndarray:
        if self._scan_points is None:
            assert self._scan is not None
            ranges, angle_min, increment, range_min, range_max = self._scan.data  # type: ignore[misc]
            self._scan_points = scan_points(
                ranges, angle_min, increment, range_min, range_max, self._config.scan_pose
            )
        return self._scan_points

    # ----------------------------------------------------------------------------------- status

    def status(self) -> SafetyStatus:
        """Current typed report (state and limits of the last step)."""
        last = self._last_output
        return SafetyStatus(
            state=last.state,
            reasons=last.reasons,
            limits=last.limits,
            last_rejection=self._last_rejection,
            rejections=dict(self._rejections),
            accepted=self._accepted,
            estop_engaged=self._estop,
            estop_input=self._estop_input,
            publishing=last.publish,
            fault=self._fault,
            active_source=self._active or "",
            enabled_sources=tuple(n for n in self._arbiter.inputs if self._arbiter.enabled(n)),
            engaged_locks=self._arbiter.engaged_locks(),
        )


SEVERITY = {
    SafetyState.RUNNING: 0,
    SafetyState.LIMITED: 0,
    SafetyState.STOPPED: 1,
    SafetyState.TIMEOUT: 1,
    SafetyState.ESTOP: 2,
}
"""Diagnostic level per state: 0 OK, 1 WARN, 2 ERROR."""


def status_report(status: SafetyStatus, config: SafetyConfig) -> tuple[int, str, dict[str, str]]:
    """Severity, one-line message and key/values for ~/status and /diagnostics."""
    message = status.state.value
    if status.reasons:
        message += ": " + ", ".join(status.reasons)
    values = {
        "state": status.state.value,
        "reasons": ",".join(status.reasons),
        "active_limits": ",".join(status.limits),
        "last_rejection": status.last_rejection,
        "rejected_total": str(sum(status.rejections.values())),
        "accepted": str(status.accepted),
        "estop_engaged": str(status.estop_engaged).lower(),
        "estop_input": str(status.estop_input).lower(),
        "publishing": str(status.publishing).lower(),
        "fault": status.fault,
        "active_source": status.active_source,
        "enabled_sources": ",".join(status.enabled_sources),
        "engaged_locks": ",".join(status.engaged_locks),
        "mode": config.mode,
        "axes": ",".join(config.axis_names),
        "max_velocity": _fmt(config.max_velocity),
        "min_velocity": _fmt(config.min_velocity),
        "max_linear_speed": f"{config.max_linear_speed:g}",
        "max_angular_speed": f"{config.max_angular_speed:g}",
        "max_accel": _fmt(config.max_accel),
        "max_decel": _fmt(config.max_decel),
        "command_timeout": f"{config.command_timeout:g}",
    }
    for code, count in sorted(status.rejections.items()):
        values[f"rejected.{code}"] = str(count)
    return SEVERITY[status.state], message, values


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"

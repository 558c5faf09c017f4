"""`vla-ros bag check`: a recorded run against the safety invariants of its parameter file.

This module only turns bag records into `vla_ros.safety.invariants.TraceSample`s; the rules
themselves (limits, accel with the actual dt, watchdog, e-stop, silence) live in
`check_trace`, the same code the safety tests use.

Plain `Twist` outputs carry no stamp, so their time is the recorder's receive time; receive jitter
is absorbed by `time_tolerance_s` (default one output period). Times are taken relative to the
bag start in integer nanoseconds first, so float rounding of epoch seconds cannot fake a
violation. E-stop inputs and `~/status` count from their receive time plus one output period
(or the tolerance, if larger): an output already in flight when the e-stop arrived is not a
violation, one published a period later is.

A recording that shows nothing fails instead of passing. Findings of their own: a bag without
the output topic or a `require`d topic (`missing_topic`), a `require`d topic that holds no
message (`empty_topic`: the recorder declares every topic it was asked for), fewer outputs than
`min_commands` (default one second of the output rate, `too_few_commands`), outputs spanning less
than `min_duration_s` by their times or by receive time (`too_short`), zero stamps or receive
times (`zero_stamp`), stamps outside the bag's time range (`stamp_out_of_range`: stack and
recorder on different clocks), and no output moving while `/vla/active` was true
(`nothing_moved`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_ros import action_space as action_spaces
from vla_ros.bag.io import BagError, BagReader, deserialize, stamp_ns
from vla_ros.params import ParamsFileError, load_node_params

STAMP_RESOLUTION_S = 1e-6
"""Nodes compute in float seconds since the epoch (about 0.24 us resolution today), so stamped
outputs get this much dt slack; it is far below any accel·dt a real violation needs."""
ESTOP_TOPIC = ("vla/estop", ("std_msgs/msg/Bool",))
ACTIVE_TOPIC = ("vla/active", ("std_msgs/msg/Bool",))
NOTHING_MOVED_S = 1.0
"""An instruction active this long without one moving output is a run in which nothing happened
(to check a run that holds still on purpose, leave /vla/active out of the recording)."""
STAMP_RANGE_SLACK_S = 1.0
"""An output stamp may precede its receipt (decision, then transport) but not by this much."""
STATUS_TOPIC = ("vla_safety/status", ("diagnostic_msgs/msg/DiagnosticStatus",))


@dataclass(frozen=True)
class Finding:
    """One violation, with the absolute time (s since epoch) and seconds from the bag start."""

    t: float
    t_rel: float
    kind: str
    message: str

    def __str__(self) -> str:
        return f"t={self.t:.6f} (+{self.t_rel:.3f} s) {self.kind}: {self.message}"


@dataclass
class CheckResult:
    bag: Path
    mode: str
    output_topic: str
    samples: int
    moving: int = 0
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def summary(self, limit: int = 50) -> str:
        lines = [
            f"{self.bag}: {self.samples} {self.mode} outputs on {self.output_topic} "
            f"({self.moving} moving), {len(self.findings)} violation(s)"
        ]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"  {finding}" for finding in self.findings[:limit]]
        if len(self.findings) > limit:
            lines.append(f"  ... {len(self.findings) - limit} more")
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bag": str(self.bag),
            "mode": self.mode,
            "output_topic": self.output_topic,
            "samples": self.samples,
            "moving": self.moving,
            "ok": self.ok,
            "notes": self.notes,
            "violations": [vars(f) for f in self.findings],
        }


def _find(info: Any, suffix: str, types: Sequence[str]) -> str | None:
    for topic in info.topics:
        if topic.name.rstrip("/").endswith(suffix) and topic.msgtype in types:
            return str(topic.name)
    return None


def _missing(info: Any, required: Sequence[str]) -> list[str]:
    """Required topics (matched by name suffix, any type) that the bag does not hold."""
    names = [str(t.name).rstrip("/") for t in info.topics]
    return [r for r in required if not any(n.endswith(r.strip("/")) for n in names)]


def _empty(info: Any, required: Sequence[str]) -> list[str]:
    """Required topics the bag declares but holds no message of."""
    return [
        r
        for r in required
        if (found := [t for t in info.topics if str(t.name).rstrip("/").endswith(r.strip("/"))])
        and not any(t.count for t in found)
    ]


def _detect_mode(info: Any) -> str:
    found = [
        space.name
        for space in map(action_spaces.get, action_spaces.names())
        if _find(info, space.output_topic, (space.command_type,))
    ]
    if len(found) != 1:
        raise BagError(
            f"{info.path}: cannot tell the mode from the topics (found outputs for {found}); "
            "pass --mode or set mode in the parameter file"
        )
    return found[0]


class _Switch:
    """A boolean signal over time (e-stop engaged), known at its receive times."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[bool] = []

    def add(self, t: float, value: bool) -> None:
        self.times.append(t)
        self.values.append(value)

    def at(self, t: float) -> bool:
        index = bisect.bisect_right(self.times, t) - 1
        return index >= 0 and self.values[index]


def _estop_flag(engaged: _Switch, t: float, zero: bool, reaction_s: float) -> bool:
    """Whether `check_trace` should treat the output at `t` as under e-stop.

    Within `reaction_s` of the e-stop arriving the node may still be moving (an output in
    flight, checked by the normal rules) or may already have stopped (an immediate stop is what
    the e-stop permits); after that it must be zero.
    """
    if engaged.at(t - reaction_s):
        return True
    return zero and engaged.at(t)


def check_bag(
    bag: str | Path,
    params: str | Path | Mapping[str, Any] | None = None,
    *,
    mode: str | None = None,
    node: str = "vla_safety",
    time_tolerance_s: float | None = None,
    max_gap_s: float | None = None,
    min_commands: int | None = None,
    min_duration_s: float | None = None,
    require: Sequence[str] = (),
) -> CheckResult:
    """Check every safety output in `bag` against the limits in `params`.

    `params` is a ROS parameter file (the `node` section is used), a flat mapping, or None for
    the validator's defaults of `mode`. `max_gap_s` is the longest silence allowed while moving
    (default five output periods, see `check_trace`). `min_commands` (default: one second of
    outputs at `output_rate_hz`), `min_duration_s` (default: the time `min_commands` outputs
    take) and `require` (topic names) make a thin recording fail.
    """
    from vla_ros.safety.config import SafetyConfig, twist_vector, unknown_keys
    from vla_ros.safety.invariants import TraceSample, check_trace

    if params is None:
        values: dict[str, Any] = {}
    elif isinstance(params, Mapping):
        values = dict(params)
    else:
        try:
            values = load_node_params(params, node)
        except ParamsFileError as exc:
            raise BagError(str(exc)) from exc
    with BagReader(bag) as reader:
        info = reader.info()
        try:
            mode = action_spaces.canonical(mode or values.get("mode") or _detect_mode(info))
            # The node refuses to start with a key it does not declare: so does the check.
            unknown = unknown_keys({**values, "mode": mode})
            if unknown:
                raise ValueError(f"unknown parameter(s) for {node}: {', '.join(unknown)}")
            config = SafetyConfig.from_params({**values, "mode": mode})
            config.validate()
        except ValueError as exc:
            raise BagError(f"safety parameters: {exc}") from exc
        space = config.space
        suffix, out_type = space.output_topic, space.command_type
        output = _find(info, suffix, (out_type,))
        missing = _missing(info, require)
        if output is None:
            result = CheckResult(Path(bag), mode, suffix, 0)
            missing.insert(0, f"{suffix} ({out_type}): nothing to check")
            result.findings += [_recording(info, "missing_topic", m) for m in missing]
            return result
        stamped = out_type.endswith("TwistStamped")
        period = 1.0 / config.output_rate_hz
        tolerance = (
            time_tolerance_s
            if time_tolerance_s is not None
            else (STAMP_RESOLUTION_S if stamped else period)
        )
        raw_suffix, raw_types = space.raw_topic, space.raw_types
        raw = _find(info, raw_suffix, raw_types)
        estop_topic = _find(info, *ESTOP_TOPIC)
        status_topic = _find(info, *STATUS_TOPIC)
        active_topic = _find(info, *ACTIVE_TOPIC)
        estop = _Switch()
        status = _Switch()
        active = _Switch()
        inputs: list[float] = []
        outputs: list[tuple[float, tuple[float, ...]]] = []
        received_at: list[float] = []
        zero_stamps = zero_receipts = 0
        out_of_range: list[float] = []
        wanted = [
            t for t in (output, raw, estop_topic, status_topic, active_topic) if t is not None
        ]
        origin = info.start_ns
        slack_ns = round(STAMP_RANGE_SLACK_S * 1e9)
        for message in reader.messages(wanted):
            received = (message.timestamp_ns - origin) / 1e9
            msg = deserialize(message.data, message.msgtype, message.topic)
            if message.topic == output:
                zero_receipts += message.timestamp_ns == 0
                stamp = stamp_ns(msg) if stamped else None
                if stamped and not stamp:
                    zero_stamps += 1
                elif stamp and not info.start_ns - slack_ns <= stamp <= info.end_ns + slack_ns:
                    out_of_range.append(stamp / 1e9)
                t = (stamp - origin) / 1e9 if stamp else received
                outputs.append((t, twist_vector(msg)))
                received_at.append(received)
            elif message.topic == active_topic:
                active.add(received, bool(msg.data))
            elif message.topic == raw:
                stamp = stamp_ns(msg)
                inputs.append((stamp - origin) / 1e9 if stamp else received)
            elif message.topic == estop_topic:
                estop.add(received, bool(msg.data))
            else:
                state = next((kv.value for kv in msg.values if kv.key == "state"), "")
                status.add(received, state == "estop")
    inputs.sort()
    outputs.sort(key=lambda sample: sample[0])
    result = CheckResult(Path(bag), mode, output, len(outputs))
    result.moving = sum(1 for _, motion in outputs if any(motion))
    result.findings += [_recording(info, "missing_topic", f"{m} not recorded") for m in missing]
    result.findings += [
        _recording(info, "empty_topic", f"{m} recorded but holds 0 messages")
        for m in _empty(info, require)
    ]
    needed = math.ceil(config.output_rate_hz) if min_commands is None else min_commands
    if len(outputs) < needed:
        result.findings.append(
            _recording(
                info,
                "too_few_commands",
                f"{len(outputs)} outputs on {output}, at least {needed} needed "
                "(a recording this thin shows nothing; see --min-commands)",
            )
        )
    result.findings += _time_findings(
        info,
        output,
        [t for t, _ in outputs],
        received_at,
        needed / config.output_rate_hz if min_duration_s is None else min_duration_s,
        period,
        (zero_stamps, zero_receipts, out_of_range),
    )
    if result.moving == 0 and outputs and active.times:
        engaged = _engaged_span(active, received_at[-1])
        if engaged >= NOTHING_MOVED_S:
            result.findings.append(
                _recording(
                    info,
                    "nothing_moved",
                    f"no output on {output} moved although {active_topic} was true for "
                    f"{engaged:.2f} s (an instruction was active: wrong camera topic? "
                    "no frames? see the inference node's log)",
                )
            )
    if raw is None:
        result.notes.append(f"no {raw_suffix} recorded: watchdog not checked")
    if estop_topic is None and status_topic is None:
        result.notes.append("no vla/estop or ~/status recorded: e-stop not checked")
    samples = []
    reaction = max(tolerance, period)
    for t, motion in outputs:
        zero = not any(motion)
        index = bisect.bisect_right(inputs, t) - 1
        last_input = (inputs[index] if index >= 0 else None) if raw is not None else t
        samples.append(
            TraceSample(
                t=t,
                motion=motion,
                estop=_estop_flag(estop, t, zero, reaction)
                or _estop_flag(status, t, zero, reaction),
                last_valid_input_t=last_input,
            )
        )
    for violation in check_trace(config, samples, time_tolerance_s=tolerance, max_gap_s=max_gap_s):
        result.findings.append(
            Finding(origin / 1e9 + violation.t, violation.t, violation.kind, violation.message)
        )
    return result


def _time_findings(
    info: Any,
    output: str,
    times: Sequence[float],
    received: Sequence[float],
    min_duration_s: float,
    period: float,
    stamps: tuple[int, int, Sequence[float]],
) -> list[Finding]:
    """Outputs must span `min_duration_s` by their own times and by receive time (a run whose
    outputs all carry one stamp lasted no time at all), with no zero or out-of-range stamps."""
    zero_stamps, zero_receipts, out_of_range = stamps
    found = []
    if zero_stamps or zero_receipts:
        found.append(
            _recording(
                info,
                "zero_stamp",
                f"{zero_stamps} outputs on {output} stamped 0, {zero_receipts} received at time 0 "
                "(recorded before the first /clock?)",
            )
        )
    if out_of_range:
        found.append(
            _recording(
                info,
                "stamp_out_of_range",
                f"{len(out_of_range)} outputs stamped outside the bag's time range (first "
                f"{out_of_range[0]:.3f}): stack and recorder on different clocks "
                "(--use-sim-time on one only?)",
            )
        )
    if times:
        by_stamp = max(times) - min(times) + period
        by_receipt = max(received) - min(received) + period
        if min(by_stamp, by_receipt) + 1e-9 < min_duration_s:
            found.append(
                _recording(
                    info,
                    "too_short",
                    f"outputs on {output} span {by_stamp - period:.2f} s by their times and "
                    f"{by_receipt - period:.2f} s by receive time, at least {min_duration_s:.2f} "
                    "s needed (see --min-duration)",
                )
            )
    return found


def _engaged_span(switch: _Switch, end: float) -> float:
    """Seconds `switch` was true up to `end` (the last output)."""
    total = 0.0
    for index, (t, value) in enumerate(zip(switch.times, switch.values, strict=True)):
        until = switch.times[index + 1] if index + 1 < len(switch.times) else end
        if value:
            total += max(0.0, min(until, end) - t)
    return total


def _recording(info: Any, kind: str, message: str) -> Finding:
    """A finding about the recording itself, placed at the bag start."""
    return Finding(info.start_ns / 1e9, 0.0, kind, message)

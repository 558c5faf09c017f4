"""Plumbing every vla_ros node shares: validated parameters, diagnostics, signals, main()."""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.context import Context
from rclpy.exceptions import InvalidTopicNameException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.validate_topic_name import validate_topic_name

from vla_ros.params import ParameterError, unknown_keys
from vla_ros.transport import make_executor

ParamValue = bool | int | float | str | list


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default (which fixes its type), documentation and bounds
    (`min`/`max` inclusive, `above` exclusive: the value must be greater)."""

    name: str
    default: ParamValue
    description: str
    min: float | None = None
    max: float | None = None
    above: float | None = None
    choices: Sequence[str] | None = None
    read_only: bool = False
    type_: Parameter.Type | None = None

    def check(self, value: Any) -> str | None:
        """Reason the value is unacceptable, or None."""
        is_list = isinstance(value, list | tuple)
        for index, number in enumerate(value if is_list else [value]):
            if isinstance(number, bool) or not isinstance(number, int | float):
                continue
            where = f"{self.name}[{index}]" if is_list else self.name
            if not math.isfinite(number):
                return f"{where} must be finite, got {number}"
            if self.above is not None and number <= self.above:
                return f"{where} must be > {self.above}, got {number}"
            if self.min is not None and number < self.min:
                return f"{where} must be >= {self.min}, got {number}"
            if self.max is not None and number > self.max:
                return f"{where} must be <= {self.max}, got {number}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name, description=self.description, read_only=self.read_only
        )
        if self.choices is not None:
            descriptor.additional_constraints = f"one of {list(self.choices)}"
        is_float = isinstance(self.default, float) and not isinstance(self.default, bool)
        is_int = isinstance(self.default, int) and not isinstance(self.default, bool)
        if self.min is not None and self.max is not None:
            if is_float:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(self.min), to_value=float(self.max))
                ]
            elif is_int:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(self.min), to_value=int(self.max))
                ]
        return descriptor


def unknown_override_problem(node: Node) -> str | None:
    """Keys of the node's parameter-file section (or `-p` overrides) that it never declared: a
    misspelling there would silently leave the default in force. Names the nearest real key."""
    overrides = getattr(node, "_parameter_overrides", None) or {}
    unknown = unknown_keys(overrides, node.get_parameters_by_prefix(""))
    if not unknown:
        return None
    return (
        f"unknown parameter(s) for {node.get_name()}: {', '.join(unknown)}; "
        "see `ros2 param list` or config/*.yaml"
    )


class NodeParameters:
    """Declares parameters, validates them at start-up and on every `set_parameters`.

    `validate` sees the full proposed value set and returns a refusal reason (or None), so
    cross-field rules (min <= max, sizes) are enforced at run time too. `on_change` runs after an
    accepted change so the node can push the new values into its ROS-free core.
    """

    def __init__(
        self,
        node: Node,
        specs: Sequence[ParamSpec],
        validate: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._validate = validate
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []
        values: dict[str, Any] = {}
        for spec in specs:
            if node.has_parameter(spec.name):  # a lifecycle node configured a second time
                values[spec.name] = _plain(node.get_parameter(spec.name).value)
                continue
            try:
                declared = node.declare_parameter(
                    spec.name,
                    spec.type_ if spec.type_ is not None else spec.default,
                    spec.descriptor(),
                )
            except Exception as exc:  # rclpy raises several unrelated types here
                raise ParameterError(f"parameter '{spec.name}': {exc}") from exc
            value = declared.value
            if value is None:
                value = spec.default
            values[spec.name] = _plain(value)
        self.values: dict[str, Any] = values
        reason = self._refusal(values)
        if reason is not None:
            raise ParameterError(reason)
        self._node = node
        node.add_on_set_parameters_callback(self._on_set)
        # Validate in the set callback, act once rclpy has applied the change: another callback
        # may still refuse the same set after ours accepted it. Humble has no post-set hook, so
        # there the change is applied when accepted, as before.
        self._post_set = hasattr(node, "add_post_set_parameters_callback")
        if self._post_set:
            node.add_post_set_parameters_callback(self._on_applied)

    def close(self) -> None:
        """Stop validating run-time changes (lifecycle cleanup); the declarations stay."""
        self._node.remove_on_set_parameters_callback(self._on_set)
        if self._post_set:
            self._node.remove_post_set_parameters_callback(self._on_applied)

    def add_listener(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Called with the full value set after each accepted change."""
        self._listeners.append(listener)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _refusal(self, values: Mapping[str, Any]) -> str | None:
        for name, value in values.items():
            spec = self._specs.get(name)
            if spec is not None and (reason := spec.check(value)) is not None:
                return reason
        return self._validate(values) if self._validate is not None else None

    def _on_set(self, parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is not None and spec.read_only:
                return SetParametersResult(
                    successful=False, reason=f"{parameter.name} is read-only at run time"
                )
        proposed = self._proposed(parameters)
        reason = self._refusal(proposed)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        if not self._post_set:
            self._apply(proposed)
        return SetParametersResult(successful=True)

    def _on_applied(self, parameters: list[Parameter]) -> None:
        if any(parameter.name in self._specs for parameter in parameters):
            self._apply(self._proposed(parameters))

    def _proposed(self, parameters: list[Parameter]) -> dict[str, Any]:
        proposed = dict(self.values)
        for parameter in parameters:
            if parameter.name in self._specs:
                proposed[parameter.name] = _plain(parameter.value)
        return proposed

    def _apply(self, values: dict[str, Any]) -> None:
        self.values = values
        for listener in self._listeners:
            listener(self.values)


def _plain(value: Any) -> Any:
    """rclpy hands arrays back as array.array or numpy; the core wants plain lists."""
    if isinstance(value, str | bytes | bool | int | float) or value is None:
        return value
    return list(value)


def topic_name_problem(values: Mapping[str, Any], names: Sequence[str]) -> str | None:
    """The first topic/service parameter whose value is not a valid ROS name, or None.

    Meant for a `NodeParameters` validator, so a typo is refused with its parameter's name at
    start-up instead of surfacing as an exception from `create_publisher`.
    """
    for name in names:
        try:
            validate_topic_name(values[name])
        except InvalidTopicNameException as exc:
            return f"{name}: {exc}"
    return None


def diagnostic_array(
    node: Node, name: str, level: bytes, message: str, values: Mapping[str, Any]
) -> DiagnosticArray:
    """One DiagnosticStatus stamped now; `level` is DiagnosticStatus.OK, WARN or ERROR. A managed
    node's lifecycle state rides along, so a monitor still knows it when DDS has not (yet)
    matched the node's get_state service."""
    state = getattr(node, "lifecycle_state", None)
    if state is not None:
        values = {**values, "lifecycle_state": state}
    status = DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=str(key), value=_format(value)) for key, value in values.items()],
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class StopSignals:
    """SIGINT/SIGTERM handling that lets a node command zero *before* the context goes down.

    rclpy's own handler shuts the context down on the signal, so a node's last publish (the zero
    command) fails with "publisher's context is invalid" and the robot keeps its last velocity.
    Initialise rclpy with `SignalHandlerOptions.NO` (see `init_without_signal_handlers`) and
    install this instead: the signal only sets a flag; `spin` returns and the caller stops the
    outputs, then destroys the nodes and shuts the context down. The executor waits at most
    `poll_s` (wall time), so a stop works even while no /clock arrives under use_sim_time.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, poll_s: float = 0.05) -> None:
        self.poll_s = poll_s
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _on_signal(self, number: int, _frame: Any) -> None:
        self.received = number

    def spin(self, executor: SingleThreadedExecutor, context: Context | None = None) -> None:
        """Spin until a signal arrives or the context is shut down from elsewhere."""
        while self.received is None and (context.ok() if context is not None else rclpy.ok()):
            executor.spin_once(timeout_sec=self.poll_s)


def init_without_signal_handlers(args: Sequence[str] | None, context: Context | None) -> None:
    """`rclpy.init` without rclpy's signal handlers (StopSignals takes over)."""
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)


def stop_nodes(nodes: Sequence[Node], context: Context | None = None) -> None:
    """Zero every output first (`stop_for_exit`: lifecycle deactivate + shutdown for managed
    nodes, else `stop_output`), then destroy nodes and context."""
    for node in nodes:
        stop = getattr(node, "stop_for_exit", None) or getattr(node, "stop_output", None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:  # keep stopping the others, and say why
                print(
                    f"[ERROR] {node.get_name()}: stopping the output failed: {exc}", file=sys.stderr
                )
    for node in nodes:
        node.destroy_node()
    if context is not None:
        if context.ok():
            rclpy.shutdown(context=context)
    elif rclpy.ok():
        rclpy.shutdown()


NODE_NAMES = ("vla_camera", "vla_inference", "vla_safety")


def misspelled_sections(args: Sequence[str], known: Sequence[str] = NODE_NAMES) -> list[str]:
    """Sections of every `--params-file` in `args` whose node name is close to one of ours but
    not equal (`vla_safty`): such a node would silently run on defaults."""
    from vla_ros.params import misspelled_sections as in_file

    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--params-file"]
    return [problem for path in files for problem in in_file(path, known)]


def run_node(node_factory: Callable[[], Node], args: Sequence[str] | None = None) -> int:
    """Console-script body: init, spin, and on Ctrl-C / SIGTERM zero the outputs, then shut down."""
    argv = list(args) if args is not None else sys.argv
    misspelled = misspelled_sections(argv)
    if misspelled:
        print(f"[FATAL] unknown parameter file section: {'; '.join(misspelled)}", file=sys.stderr)
        return 2
    signals = StopSignals().install()
    init_without_signal_handlers(argv, None)
    nodes: list[Node] = []
    try:
        nodes.append(node_factory())
        executor = make_executor()
        executor.add_node(nodes[0])
        signals.spin(executor)
    except ParameterError as exc:
        print(f"[FATAL] invalid parameters: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop_nodes(nodes)
        signals.restore()
    return 0

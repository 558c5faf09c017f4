"""Operator commands without the ros2 CLI: `vla-ros instruct | estop | reset | status`.

Each is a short-lived rclpy node in its own context. `instruct` waits until the inference node
reports the new instruction in its diagnostics, `estop` uses the safety node's services (and the
e-stop topic), `reset` calls the inference node's reset, and `status` gathers lifecycle states,
diagnostics, inference events and the safety status into one snapshot: a live rich view, or
`--once --json` for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

NODES = ("vla_camera", "vla_inference", "vla_safety")
DIAGNOSTIC_NAMES = {"vla_camera": "vla_camera", "vla_inference": "vla_inference"}
"""Safety reports under its fully qualified name (/ns/vla_safety); the others under these."""
DIAGNOSTICS_WAIT_S = 1.2
STATE_RETRY_S = 1.0
DISCOVERY_SETTLE_S = 2.5
"""A node is called absent only after this long without any node newly showing signs of
life: on a loaded host one node of a process can be discovered seconds after another."""


class Session:
    """One rclpy context + node + executor for the lifetime of a command."""

    def __init__(self, namespace: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.node import Node

        from vla_ros.transport import make_executor

        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.node = Node("vla_operator", namespace=namespace or "", context=self.context)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Spin until `predicate()`, the timeout, or Ctrl-C (rclpy shuts the context down)."""
        from rclpy.executors import ExternalShutdownException

        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except ExternalShutdownException:
                break
        return predicate()

    def call(self, service: str, timeout_s: float) -> tuple[bool, str]:
        """Call a std_srvs/Trigger service; (success, message)."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        if not self.spin_until(client.service_is_ready, timeout_s):
            return False, f"service {client.srv_name} not available"
        future = client.call_async(Trigger.Request())
        if not self.spin_until(future.done, timeout_s):
            return False, f"service {client.srv_name} did not answer"
        response = future.result()
        return bool(response.success), str(response.message)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def _diagnostics(session: Session, into: dict[str, dict[str, Any]]) -> None:
    """Keep the newest /diagnostics status of each vla_ros node in `into`."""
    from diagnostic_msgs.msg import DiagnosticArray

    from vla_ros.transport import COMMAND_QOS

    safety_name = session.node.get_namespace().rstrip("/") + "/vla_safety"
    names = {**{v: k for k, v in DIAGNOSTIC_NAMES.items()}, safety_name: "vla_safety"}

    def on_array(msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = names.get(status.name)
            if node is not None:
                into[node] = {
                    "level": int.from_bytes(status.level, "little")
                    if isinstance(status.level, bytes)
                    else int(status.level),
                    "message": status.message,
                    "values": {kv.key: kv.value for kv in status.values},
                }

    session.node.create_subscription(DiagnosticArray, "/diagnostics", on_array, COMMAND_QOS)


def instruct(text: str, namespace: str, timeout_s: float) -> int:
    """Publish an instruction (latched) and wait for the inference node to take it."""
    from std_msgs.msg import String

    from vla_ros.core.instruction import instruction_problem
    from vla_ros.transport import LATCHED_QOS

    problem = instruction_problem(text)
    if problem is not None:
        print(f"vla-ros instruct: refused: the instruction {problem}", file=sys.stderr)
        return 2
    session = Session(namespace)
    try:
        seen: dict[str, dict[str, Any]] = {}
        _diagnostics(session, seen)
        publisher = session.node.create_publisher(String, "vla/instruction", LATCHED_QOS)
        if not session.spin_until(lambda: publisher.get_subscription_count() > 0, timeout_s):
            print(f"vla-ros instruct: nobody subscribes to {publisher.topic_name}", file=sys.stderr)
            return 1
        publisher.publish(String(data=text))
        wanted = text.strip()

        def values() -> dict[str, str]:
            return seen.get("vla_inference", {}).get("values", {})

        def taken() -> bool:
            return values().get("instruction") == wanted

        def refused() -> bool:
            return bool(wanted) and values().get("refused_instruction") == wanted

        if not session.spin_until(lambda: taken() or refused(), timeout_s):
            print(
                "vla-ros instruct: published, but the inference node did not report it within "
                f"{timeout_s:g} s (see its log)",
                file=sys.stderr,
            )
            return 1
        if not taken():
            reason = values().get("refusal_reason", "")
            print(f"vla-ros instruct: the inference node refused it: {reason}", file=sys.stderr)
            return 1
        print(f"instruction active: {wanted!r}" if wanted else "instruction cleared")
        return 0
    finally:
        session.close()


def estop(release: bool, namespace: str, timeout_s: float) -> int:
    """Engage (service + latched topic) or release (topic false, then the safety reset)."""
    from std_msgs.msg import Bool

    from vla_ros.transport import LATCHED_QOS

    session = Session(namespace)
    try:
        publisher = session.node.create_publisher(Bool, "vla/estop", LATCHED_QOS)
        session.spin_until(lambda: publisher.get_subscription_count() > 0, min(timeout_s, 2.0))
        publisher.publish(Bool(data=not release))
        if not release:
            ok, message = session.call("vla_safety/estop", timeout_s)
        else:
            # The e-stop input must read false before the reset is accepted: retry until then.
            deadline = time.monotonic() + timeout_s
            ok, message = session.call("vla_safety/reset", timeout_s)
            while not ok and time.monotonic() < deadline and "not available" not in message:
                session.spin_until(lambda: False, 0.2)
                ok, message = session.call("vla_safety/reset", timeout_s)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    finally:
        session.close()


def call_trigger(service: str, namespace: str, timeout_s: float) -> int:
    """One of the inference node's Trigger services: `vla/reset` clears the chunk and policy
    history (a new episode); `vla/resume` follows the instruction it holds since start-up."""
    session = Session(namespace)
    try:
        ok, message = session.call(service, timeout_s)
        print(message, file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    finally:
        session.close()


class StatusCollector:
    """Subscriptions and lifecycle queries behind `vla-ros status`."""

    def __init__(self, session: Session) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus
        from lifecycle_msgs.srv import GetState
        from std_msgs.msg import Bool, Float32, String

        from vla_ros.transport import COMMAND_QOS, LATCHED_QOS

        self.session = session
        self.diagnostics: dict[str, dict[str, Any]] = {}
        self.states: dict[str, str] = {}
        self.safety: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.active: bool | None = None
        self.confidence: float | None = None
        node = session.node
        _diagnostics(session, self.diagnostics)
        node.create_subscription(String, "vla/inference_event", self._on_event, COMMAND_QOS)
        node.create_subscription(Bool, "vla/active", self._on_active, LATCHED_QOS)
        node.create_subscription(Float32, "vla/confidence", self._on_confidence, COMMAND_QOS)
        node.create_subscription(
            DiagnosticStatus, "vla_safety/status", self._on_safety, LATCHED_QOS
        )
        self._clients = {name: node.create_client(GetState, f"{name}/get_state") for name in NODES}
        self._pending: dict[str, tuple[Any, float]] = {}
        self.in_graph: set[str] = set()
        self.alive: set[str] = set()
        self.last_news = time.monotonic()

    def _on_event(self, msg: Any) -> None:
        with contextlib.suppress(ValueError):
            self.events = [*self.events[-19:], json.loads(msg.data)]

    def _on_active(self, msg: Any) -> None:
        self.active = bool(msg.data)

    def _on_confidence(self, msg: Any) -> None:
        self.confidence = float(msg.data)

    def _on_safety(self, msg: Any) -> None:
        self.safety = {kv.key: kv.value for kv in msg.values}
        self.safety["_message"] = msg.message

    def poll_states(self) -> None:
        """Ask each node's lifecycle state (non-blocking; answers land in `states`)."""
        from lifecycle_msgs.srv import GetState

        now = time.monotonic()
        namespace = self.session.node.get_namespace()
        # A node is often in the graph before its services are discovered: wait for those.
        self.in_graph = {
            name
            for name, node_namespace in self.session.node.get_node_names_and_namespaces()
            if node_namespace == namespace and name in NODES
        }
        for name, client in self._clients.items():
            future, sent = self._pending.get(name, (None, 0.0))
            if future is not None and future.done():
                result = future.result()
                if result is not None:
                    self.states[name] = result.current_state.label
                self._pending.pop(name)
            elif future is not None and now - sent > STATE_RETRY_S:
                # A server that went away (a restarted node) may still look ready: ask again.
                client.remove_pending_request(future)
                self._pending.pop(name)
            elif future is None:
                if client.service_is_ready():
                    self._pending[name] = (client.call_async(GetState.Request()), now)
                else:
                    self.states.setdefault(name, "absent")
        alive = self._alive()
        if not alive <= self.alive:
            self.alive |= alive
            self.last_news = now

    def settled(self, now: float) -> bool:
        """Every node is seen, or none newly appeared for DISCOVERY_SETTLE_S."""
        return self.alive == set(NODES) or now - self.last_news >= DISCOVERY_SETTLE_S

    def _alive(self) -> set[str]:
        """Nodes that show signs of life: in the graph, a lifecycle state or diagnostics."""
        return {
            name
            for name in NODES
            if self.states.get(name, "absent") != "absent"
            or name in self.diagnostics
            or name in self.in_graph
        }

    def state(self, name: str) -> str:
        """The get_state answer, else the state the node's diagnostics carry: Fast DDS can leave
        a service unmatched for long (ros2/rmw_fastrtps#792) while the node's topics flow."""
        answered = self.states.get(name, "absent")
        if answered != "absent":
            return answered
        carried = self.diagnostics.get(name, {}).get("values", {}).get("lifecycle_state")
        if carried:
            return carried
        return "no answer" if name in self.in_graph else "absent"

    def complete(self) -> bool:
        """Every node that shows signs of life (in the graph, a lifecycle state or diagnostics)
        answered both ways: its lifecycle state and, when active, its diagnostics."""
        up = self._alive()
        states = {name: self.state(name) for name in up}
        return bool(up) and all(
            state not in ("absent", "no answer") and (name in self.diagnostics or state != "active")
            for name, state in states.items()
        )

    def snapshot(self) -> dict[str, Any]:
        inference = self.diagnostics.get("vla_inference", {}).get("values", {})
        return {
            "nodes": {
                name: {
                    "state": self.state(name),
                    "level": self.diagnostics.get(name, {}).get("level"),
                    "message": self.diagnostics.get(name, {}).get("message", ""),
                }
                for name in NODES
            },
            "instruction": inference.get("instruction", ""),
            "active": self.active,
            "confidence": self.confidence,
            "inference": {
                key: inference.get(key) if key == "last_error" else typed(inference.get(key))
                for key in (
                    "inferences",
                    "latency_p50_ms",
                    "latency_p99_ms",
                    "model_p50_ms",
                    "policy_errors",
                    "superseded",
                    "instructions_refused",
                    "last_error",
                )
            },
            "events": {
                key.removeprefix("events_"): typed(value)
                for key, value in inference.items()
                if key.startswith("events_")
            },
            "last_event": self.events[-1] if self.events else None,
            "safety": {
                **{
                    key: self.safety.get(key)
                    for key in ("state", "reasons", "last_rejection", "_message")
                },
                "estop_engaged": typed(self.safety.get("estop_engaged")),
            },
        }


def typed(value: Any) -> Any:
    """A diagnostics string as the JSON value it stands for: booleans, numbers, and null for
    a missing value or a NaN/Inf (which JSON cannot carry). Other text stays text."""
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("", "none", "nan", "inf", "-inf"):
        return None
    try:
        return int(lowered)
    except ValueError:
        pass
    try:
        return float(lowered)
    except ValueError:
        return value


def json_safe(value: Any) -> Any:
    """NaN and Inf (a confidence, a field of an inference event) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def render(snapshot: dict[str, Any]) -> Any:
    """A rich renderable of one snapshot."""
    from rich.console import Group
    from rich.table import Table

    nodes = Table(title="vla_ros nodes", expand=True)
    for column in ("node", "lifecycle", "diagnostics"):
        nodes.add_column(column)
    for name, info in snapshot["nodes"].items():
        nodes.add_row(name, info["state"], info["message"])
    facts = Table(show_header=False, expand=True)
    facts.add_column("what")
    facts.add_column("value")
    inference = snapshot["inference"]
    safety = snapshot["safety"]
    event = snapshot["last_event"] or {}
    rows = [
        ("instruction", repr(snapshot["instruction"])),
        ("active", str(snapshot["active"])),
        ("confidence", str(snapshot["confidence"])),
        ("inferences", str(inference.get("inferences"))),
        (
            "events by cause",
            ", ".join(f"{k} {v}" for k, v in snapshot["events"].items() if v not in ("0", 0)),
        ),
        (
            "latency p50 / p99 ms",
            f"{inference.get('latency_p50_ms')} / {inference.get('latency_p99_ms')}",
        ),
        (
            "last event",
            f"{event.get('cause', '-')} {event.get('status', '')} {event.get('error', '')}",
        ),
        ("safety", f"{safety.get('state')} {safety.get('reasons') or ''}"),
        ("e-stop", str(safety.get("estop_engaged"))),
        ("last rejection", str(safety.get("last_rejection") or "-")),
    ]
    for row in rows:
        facts.add_row(*row)
    return Group(nodes, facts)


def status(namespace: str, once: bool, as_json: bool, timeout_s: float) -> int:
    session = Session(namespace)
    try:
        collector = StatusCollector(session)
        if once:
            started = time.monotonic()
            while time.monotonic() < started + timeout_s:
                collector.poll_states()
                session.spin_until(lambda: False, 0.1)
                # Diagnostics come at 1 Hz: listen a little over a period before trusting it.
                now = time.monotonic()
                if (
                    collector.complete()
                    and now > started + DIAGNOSTICS_WAIT_S
                    and collector.settled(now)
                ):
                    break
            snapshot = collector.snapshot()
            if as_json:
                print(json.dumps(json_safe(snapshot), indent=2, sort_keys=True, allow_nan=False))
            else:
                from rich.console import Console

                Console().print(render(snapshot))
            if all(node["state"] in ("absent", "no answer") for node in snapshot["nodes"].values()):
                print(
                    f"vla-ros status: no node of the stack answered (namespace "
                    f"{namespace or '/'!r}; is it running, on this ROS_DOMAIN_ID?)",
                    file=sys.stderr,
                )
                return 1
            return 0
        from rich.live import Live

        with Live(render(collector.snapshot()), refresh_per_second=4) as live:
            while session.context.ok():
                collector.poll_states()
                session.spin_until(lambda: False, 0.25)
                live.update(render(collector.snapshot()))
    except KeyboardInterrupt:
        return 0
    finally:
        session.close()


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default="", help="namespace of the vla_ros stack")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")

    parser = subparsers.add_parser(
        "instruct", parents=[common], help="give the robot an instruction (empty text stops it)"
    )
    parser.add_argument("text", help='natural-language instruction, e.g. "go to the kitchen"')
    parser.set_defaults(handler=lambda a: instruct(a.text, a.namespace, a.timeout))

    parser = subparsers.add_parser(
        "estop", parents=[common], help="engage the safety node's e-stop (--release to clear it)"
    )
    parser.add_argument("--release", action="store_true", help="release the e-stop")
    parser.set_defaults(handler=lambda a: estop(a.release, a.namespace, a.timeout))

    parser = subparsers.add_parser(
        "reset", parents=[common], help="clear the inference chunk and policy history"
    )
    parser.set_defaults(handler=lambda a: call_trigger("vla/reset", a.namespace, a.timeout))

    parser = subparsers.add_parser(
        "resume",
        parents=[common],
        help="follow the instruction a (re)started inference node holds: one published before "
        "it started is not followed on its own",
    )
    parser.set_defaults(handler=lambda a: call_trigger("vla/resume", a.namespace, a.timeout))

    parser = subparsers.add_parser(
        "status", parents=[common], help="node states, events, latency and safety state"
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="with --once: JSON for scripts")
    parser.set_defaults(handler=lambda a: status(a.namespace, a.once, a.json, min(a.timeout, 10)))

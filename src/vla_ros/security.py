"""SROS2 access control for a deployed stack: who may publish, subscribe, serve and call what.

The policy is read off the nodes themselves: the stack is built in-process (stub policy, no
discovery with other processes), and each node's publications, subscriptions, services and
clients come from the rclpy graph, with namespace, remaps and parameter files applied exactly
as `vla-ros bringup` / `vla.launch.py` apply them. Everything the stack exchanges with the
outside is granted to four external enclaves instead of to anyone on the domain:

- `operator`: the `vla-ros` operator commands (node `vla_operator`): instructions, locks, the
  stack's services, and reading everything the stack publishes;
- `teleop`: the higher-priority command inputs of the safety node (and their gripper/enable
  topics), so only a granted joystick can take over;
- `estop`: a hardware e-stop bridge: the e-stop topic and the safety node's e-stop service;
- `robot`: the drivers: the sensors the stack reads (camera, odometry, laser, pose, /clock)
  and the command outputs it writes.
"""

from __future__ import annotations

import argparse
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_ros import action_space as action_spaces

POLICY_VERSION = "0.2.0"
DEFAULT_ENCLAVE_ROOT = "/vla_ros"
OPERATOR_NODE = "vla_operator"
POLICY_INPUT = "vla"
"""The safety node's input the inference node drives; every other input is teleop."""
INFRASTRUCTURE_TOPICS = ("/rosout", "/parameter_events")
"""What every rclpy node publishes on its own, external nodes included."""
DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


@dataclass(frozen=True)
class Interfaces:
    """Fully qualified names one participant uses."""

    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()
    reply: frozenset[str] = frozenset()
    request: frozenset[str] = frozenset()

    def __or__(self, other: Interfaces) -> Interfaces:
        return Interfaces(
            self.publish | other.publish,
            self.subscribe | other.subscribe,
            self.reply | other.reply,
            self.request | other.request,
        )


@dataclass(frozen=True)
class Enclave:
    """One SROS2 enclave: a keystore identity and the one profile it is granted."""

    path: str
    node: str
    namespace: str
    interfaces: Interfaces


@dataclass(frozen=True)
class StackGraph:
    """What `derive_enclaves` needs: each stack node's live interfaces, and which of the
    topics they read belong to which outside party (from the nodes' own parameters)."""

    namespace: str
    nodes: dict[str, Interfaces]
    operator_node: Interfaces
    teleop_topics: frozenset[str]
    estop_topics: frozenset[str]
    estop_services: frozenset[str]
    operator_topics: frozenset[str]
    robot_outputs: frozenset[str]


def enclave_path(root: str, namespace: str, name: str) -> str:
    parts = [p for p in (*root.split("/"), *namespace.split("/"), name) if p]
    return "/" + "/".join(parts)


def derive_enclaves(graph: StackGraph, root: str = DEFAULT_ENCLAVE_ROOT) -> list[Enclave]:
    """One enclave per stack node with exactly its interfaces, and the four external ones with
    exactly what the stack exchanges with them (plus their own /rosout and parameter events)."""
    namespace = graph.namespace or "/"
    enclaves = [
        Enclave(enclave_path(root, namespace, name), name, namespace, interfaces)
        for name, interfaces in sorted(graph.nodes.items())
    ]
    stack = Interfaces()
    for interfaces in graph.nodes.values():
        stack = stack | interfaces
    produced_outside = stack.subscribe - stack.publish
    claimed = graph.teleop_topics | graph.estop_topics | graph.operator_topics
    own = frozenset(INFRASTRUCTURE_TOPICS)
    external = {
        "operator": (
            OPERATOR_NODE,
            graph.operator_node
            | Interfaces(
                publish=(graph.operator_topics | graph.estop_topics) & produced_outside,
                subscribe=stack.publish,
                request=stack.reply,
            ),
        ),
        "teleop": (
            "vla_teleop",
            Interfaces(publish=own | (graph.teleop_topics & produced_outside)),
        ),
        "estop": (
            "vla_estop",
            Interfaces(
                publish=own | (graph.estop_topics & produced_outside),
                request=graph.estop_services & stack.reply,
            ),
        ),
        "robot": (
            "vla_robot",
            Interfaces(
                publish=own | (produced_outside - claimed),
                subscribe=graph.robot_outputs & stack.publish,
            ),
        ),
    }
    for name, (node, interfaces) in external.items():
        enclaves.append(Enclave(enclave_path(root, namespace, name), node, namespace, interfaces))
    return enclaves


def policy_xml(enclaves: Sequence[Enclave]) -> str:
    """The sros2 policy format (version 0.2.0), absolute names only, sorted for stable diffs."""
    policy = ET.Element("policy", version=POLICY_VERSION)
    all_enclaves = ET.SubElement(policy, "enclaves")
    for enclave in enclaves:
        element = ET.SubElement(all_enclaves, "enclave", path=enclave.path)
        profiles = ET.SubElement(element, "profiles")
        profile = ET.SubElement(profiles, "profile", ns=enclave.namespace, node=enclave.node)
        groups = (
            ("topics", "topic", "publish", enclave.interfaces.publish),
            ("topics", "topic", "subscribe", enclave.interfaces.subscribe),
            ("services", "service", "reply", enclave.interfaces.reply),
            ("services", "service", "request", enclave.interfaces.request),
        )
        for tag, item, rule, names in groups:
            if not names:
                continue
            group = ET.SubElement(profile, tag, {rule: "ALLOW"})
            for name in sorted(names):
                ET.SubElement(group, item).text = name
    ET.indent(policy)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(policy, "unicode") + "\n"


def read_policy(text: str) -> dict[str, Interfaces]:
    """Enclave path -> what it is allowed, from a policy `policy_xml` wrote (or sros2's)."""
    root = ET.fromstring(text)
    if root.tag != "policy" or root.get("version") != POLICY_VERSION:
        raise ValueError(f"not an sros2 policy of version {POLICY_VERSION}")
    result: dict[str, Interfaces] = {}
    for enclave in root.iter("enclave"):
        sets: dict[str, set[str]] = {k: set() for k in ("publish", "subscribe", "reply", "request")}
        for group in enclave.iter():
            for rule, names in sets.items():
                if group.get(rule) == "ALLOW":
                    names.update((child.text or "").strip() for child in group)
        result[enclave.get("path", "")] = Interfaces(**{k: frozenset(v) for k, v in sets.items()})
    return result


def _names(pairs: Iterable[tuple[str, list[str]]]) -> frozenset[str]:
    return frozenset(name for name, _types in pairs)


def node_interfaces(observer: Any, name: str, namespace: str) -> Interfaces:
    """A node's interfaces as the ROS graph reports them to `observer` (an rclpy Node)."""
    return Interfaces(
        publish=_names(observer.get_publisher_names_and_types_by_node(name, namespace)),
        subscribe=_names(observer.get_subscriber_names_and_types_by_node(name, namespace)),
        reply=_names(observer.get_service_names_and_types_by_node(name, namespace)),
        request=_names(observer.get_client_names_and_types_by_node(name, namespace)),
    )


def read_stack_graph(options: Any) -> StackGraph:
    """Build the stack of `options` (a `bringup.StackOptions`) in a private, discovery-free
    context, and read its graph: nothing is published to, or heard from, a running robot."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from vla_ros.bringup import build_stack, ros_args_for
    from vla_ros.policy.stub import StubPolicy
    from vla_ros.policy.types import PolicySpec

    mode = action_spaces.canonical(options.mode)
    space = action_spaces.get(mode)
    context = Context()
    # No automatic discovery (Jazzy and later) and, for Humble, a domain of its own, so the graph
    # holds only the nodes built here. The variable is read once, while the context starts.
    saved = os.environ.get(DISCOVERY_RANGE)
    os.environ[DISCOVERY_RANGE] = "OFF"
    try:
        rclpy.init(
            args=ros_args_for(options),
            context=context,
            domain_id=random.SystemRandom().randint(201, 232),
        )
    finally:
        if saved is None:
            del os.environ[DISCOVERY_RANGE]
        else:
            os.environ[DISCOVERY_RANGE] = saved
    nodes = []
    operator = None
    try:
        spec = PolicySpec(
            action_space=mode, chunk=10, window=8, action_period_s=0.1, image_size=224
        )
        nodes = build_stack(context, options, policy=StubPolicy(spec))
        operator = Node(OPERATOR_NODE, namespace=options.namespace or "", context=context)
        namespace = nodes[0].get_namespace()
        interfaces = {
            node.get_name(): node_interfaces(operator, node.get_name(), namespace) for node in nodes
        }
        by_name = {n.get_name(): n for n in nodes}
        safety, inference = by_name["vla_safety"], by_name["vla_inference"]

        def topic(node: Any, parameter: str) -> set[str]:
            value = node.get_parameter(parameter).value
            return {node.resolve_topic_name(value)} if value else set()

        teleop: set[str] = set()
        for name in safety.get_parameter("input_names").value:
            if name == POLICY_INPUT:
                continue
            for key in ("topic", "gripper_topic", "enable_topic"):
                if safety.has_parameter(f"inputs.{name}.{key}"):
                    teleop |= topic(safety, f"inputs.{name}.{key}")
        locks: set[str] = set()
        for name in safety.get_parameter("lock_names").value:
            locks |= topic(safety, f"locks.{name}.topic")
        outputs = {safety.resolve_topic_name(space.output_topic)}
        if space.gripper:
            outputs.add(safety.resolve_topic_name(action_spaces.GRIPPER_TOPIC))
        return StackGraph(
            namespace=namespace,
            nodes=interfaces,
            operator_node=node_interfaces(operator, OPERATOR_NODE, operator.get_namespace()),
            teleop_topics=frozenset(teleop),
            estop_topics=frozenset({safety.resolve_topic_name("vla/estop")}),
            estop_services=frozenset({safety.resolve_service_name("~/estop")}),
            operator_topics=frozenset(locks | topic(inference, "instruction_topic")),
            robot_outputs=frozenset(outputs),
        )
    finally:
        if operator is not None:
            operator.destroy_node()
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from vla_ros.bringup import add_stack_arguments

    parser = subparsers.add_parser(
        "security", help="SROS2 access control for a deployed stack (docs/security.md)"
    )
    commands = parser.add_subparsers(dest="security_command", required=True, metavar="COMMAND")
    policy = commands.add_parser(
        "policy",
        help="write the sros2 access-control policy of the stack as these options start it",
    )
    add_stack_arguments(policy)
    policy.add_argument(
        "--enclave-root",
        default=DEFAULT_ENCLAVE_ROOT,
        help="enclave path prefix; each node's enclave is <root>/<namespace>/<node name>",
    )
    policy.add_argument("--out", default="-", help="policy file to write ('-': standard output)")
    policy.set_defaults(handler=_handle_policy)


def _handle_policy(args: argparse.Namespace) -> int:
    from vla_ros.bringup import check_ros_path, options_from_args

    root = args.enclave_root
    if not root.startswith("/"):
        raise ValueError(f"--enclave-root must be an absolute path, got {root!r}")
    check_ros_path("--enclave-root", root)
    graph = read_stack_graph(options_from_args(args, model_dir="unused-stub-policy"))
    text = policy_xml(derive_enclaves(graph, root))
    if args.out == "-":
        print(text, end="")
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: {len(graph.nodes) + 4} enclaves under {root}")
    return 0

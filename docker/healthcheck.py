#!/usr/bin/env python3
"""Container health check: are the expected ROS 2 nodes in the graph, and are the topics flowing?

    healthcheck.py --node vla_camera --node vla_inference --topic /diagnostics --timeout 10

Exit status 0 means healthy, 1 unhealthy (the reason goes to stdout, where `docker inspect` shows
it), 2 a usage error. It needs only rclpy and the message packages of the probed topics: no ros2cli
and no ROS daemon, and it joins the domain the container's environment names (ROS_DOMAIN_ID), so
what it sees is what the robot's other processes see.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

HEALTHY, UNHEALTHY, USAGE = 0, 1, 2

_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"/?{_TOKEN}(/{_TOKEN})*")
_NAMESPACE = re.compile(rf"(/?{_TOKEN}(/{_TOKEN})*)?/?")


def ros_name(text: str) -> str:
    """A node or topic name, relative (resolved against --namespace) or absolute."""
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a valid ROS name: {text!r}")
    return text


def ros_namespace(text: str) -> str:
    if not _NAMESPACE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a valid ROS namespace: {text!r}")
    return text


def timeout_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def resolve_name(name: str, namespace: str) -> str:
    """The fully qualified name a node in `namespace` would use for `name`."""
    if name.startswith("/"):
        return name
    prefix = namespace.strip("/")
    return f"/{prefix}/{name}" if prefix else f"/{name}"


def qualified_node_names(names_and_namespaces: Iterable[tuple[str, str]]) -> set[str]:
    """('vla_camera', '/robot1') -> '/robot1/vla_camera', as rclpy's graph API reports them."""
    return {resolve_name(name, namespace) for name, namespace in names_and_namespaces}


@dataclass
class Observation:
    """What the probe saw before it stopped."""

    nodes: set[str] = field(default_factory=set)
    topic_types: dict[str, list[str]] = field(default_factory=dict)
    received: set[str] = field(default_factory=set)
    import_errors: dict[str, str] = field(default_factory=dict)


def problems(nodes: Sequence[str], topics: Sequence[str], seen: Observation) -> list[str]:
    """Why the container is unhealthy (empty when healthy); names are fully qualified."""
    found = [f"node {node} is not in the ROS graph" for node in nodes if node not in seen.nodes]
    for topic in topics:
        if topic in seen.received:
            continue
        if topic in seen.import_errors:
            found.append(f"topic {topic}: {seen.import_errors[topic]}")
        elif topic in seen.topic_types:
            found.append(f"topic {topic} has no message flowing")
        else:
            found.append(f"topic {topic} has no publisher")
    return found


def message_class(type_name: str) -> Any:
    """'diagnostic_msgs/msg/DiagnosticArray' -> the generated Python class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def probe(nodes: Sequence[str], topics: Sequence[str], timeout_sec: float) -> Observation:
    """Watch the graph until every node is seen and every topic delivered a message, or timeout."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    # Best effort + volatile is compatible with every publisher (reliable or not, latched or not).
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
    seen = Observation()
    context = Context()
    rclpy.init(args=[], context=context)
    node = None
    try:
        node = rclpy.create_node(
            f"vla_healthcheck_{os.getpid()}",
            context=context,
            start_parameter_services=False,
            enable_rosout=False,
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        subscribed: set[str] = set()
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            seen.nodes = qualified_node_names(node.get_node_names_and_namespaces())
            seen.topic_types = {
                name: types
                for name, types in node.get_topic_names_and_types()
                if name in topics and node.count_publishers(name) > 0
            }
            for topic, types in seen.topic_types.items():
                if topic in subscribed or topic in seen.import_errors:
                    continue
                try:
                    msg_type = message_class(types[0])
                except (ImportError, AttributeError, ValueError) as exc:
                    seen.import_errors[topic] = f"cannot import {types[0]} ({exc})"
                    continue
                node.create_subscription(
                    msg_type, topic, lambda _msg, t=topic: seen.received.add(t), qos, raw=True
                )
                subscribed.add(topic)
            if not problems(nodes, topics, seen):
                break
            executor.spin_once(timeout_sec=0.05)
    finally:
        if node is not None:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return seen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--node", dest="nodes", action="append", type=ros_name, default=[], metavar="NAME"
    )
    parser.add_argument(
        "--topic", dest="topics", action="append", type=ros_name, default=[], metavar="NAME"
    )
    parser.add_argument(
        "--namespace",
        type=ros_namespace,
        default="",
        help="namespace that relative node and topic names are resolved against",
    )
    parser.add_argument("--timeout", type=timeout_seconds, default=10.0, metavar="SEC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.nodes and not args.topics:
        parser.error("give at least one --node or --topic")
    nodes = sorted({resolve_name(name, args.namespace) for name in args.nodes})
    topics = sorted({resolve_name(name, args.namespace) for name in args.topics})
    found = problems(nodes, topics, probe(nodes, topics, args.timeout))
    domain = os.environ.get("ROS_DOMAIN_ID", "0")
    if found:
        print(f"unhealthy (ROS_DOMAIN_ID={domain}): " + "; ".join(found))
        return UNHEALTHY
    print(f"healthy (ROS_DOMAIN_ID={domain}): " + ", ".join(nodes + topics))
    return HEALTHY


if __name__ == "__main__":
    sys.exit(main())

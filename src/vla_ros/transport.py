"""How vla_ros processes talk over DDS: the QoS profiles of every topic and the executor they spin.

Below the nodes, so tools that publish or spin without being a node (bag replay and synth, the
operator commands, the evaluation drivers) use the same profiles as the nodes they talk to.
"""

from __future__ import annotations

from rclpy.context import Context
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR_QOS = qos_profile_sensor_data
"""Camera and scan inputs: best effort, so a slow consumer drops frames instead of queueing them."""

LATEST_ONLY_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT
)
"""Internal frame hand-off: only the newest frame matters, older ones are dropped, never queued."""

COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
)
"""Velocity/gripper commands and small status messages."""

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""E-stop and instruction: a late joiner must still see the last value."""


def latched_twin_events() -> SubscriptionEventCallbacks:
    """Event callbacks for the transient-local half of a latched + volatile subscription pair.

    A volatile publisher (what `ros2 topic pub` creates) never matches a transient-local
    subscription, and rclpy's default handler then logs "offering incompatible QoS. No messages
    will be received" although the volatile twin receives every message. Any other mismatch
    (best effort, say) fails the twin too, whose default handler still reports it."""
    return SubscriptionEventCallbacks(incompatible_qos=lambda _status: None)


CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
"""`/clock` from a simulator or a fault drill: only the newest time matters."""


def make_executor(context: Context | None = None) -> SingleThreadedExecutor:
    """The executor every vla_ros process spins.

    Single-threaded on purpose: node callbacks only hand data to the core (microseconds) and the
    slow work runs on each node's own worker thread. rclpy's MultiThreadedExecutor measured 6-10 ms
    p99 input delay at 50 Hz and multi-second timer stalls at 1 kHz on a 2-core machine, against
    0.7 ms for the single-threaded one (test/bench/bench_safety.py).
    """
    return SingleThreadedExecutor(context=context)

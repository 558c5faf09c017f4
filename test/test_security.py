"""`vla-ros security policy`: the SROS2 policy covers exactly what each live node uses."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.cli import main
from vla_ros.security import (
    DISCOVERY_RANGE,
    Interfaces,
    StackGraph,
    derive_enclaves,
    enclave_path,
    node_interfaces,
    policy_xml,
    read_policy,
)

STACK_NODES = ("vla_camera", "vla_inference", "vla_safety")
CLI = "import sys; from vla_ros.cli import main; sys.exit(main())"

names = st.lists(
    st.from_regex(r"/[a-z][a-z0-9_]{0,8}(/[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True),
    max_size=6,
).map(frozenset)
interfaces = st.builds(Interfaces, names, names, names, names)


@given(nodes=st.dictionaries(st.sampled_from(STACK_NODES), interfaces, min_size=1), extra=names)
def test_every_node_gets_exactly_its_interfaces_and_the_xml_round_trips(nodes, extra):
    graph = StackGraph(
        namespace="/robot1",
        nodes=nodes,
        operator_node=Interfaces(publish=frozenset({"/rosout"})),
        teleop_topics=extra,
        estop_topics=frozenset({"/robot1/vla/estop"}),
        estop_services=frozenset({"/robot1/vla_safety/estop"}),
        operator_topics=frozenset({"/robot1/vla/instruction"}),
        robot_outputs=frozenset({"/robot1/cmd_vel"}),
    )
    enclaves = derive_enclaves(graph, "/fleet")
    parsed = read_policy(policy_xml(enclaves))
    assert parsed == {e.path: e.interfaces for e in enclaves}
    for name, expected in nodes.items():
        assert parsed[f"/fleet/robot1/{name}"] == expected
    stack_reads = set().union(*(i.subscribe for i in nodes.values()))
    stack_writes = set().union(*(i.publish for i in nodes.values()))
    teleop = parsed["/fleet/robot1/teleop"].publish
    robot = parsed["/fleet/robot1/robot"].publish
    # Outside parties may only write what the stack reads and does not write itself; a teleop
    # topic is granted to teleop alone, never to the drivers.
    outside = {"/rosout", "/parameter_events"}
    assert teleop - outside <= stack_reads - stack_writes
    assert not (robot - outside) & extra


def test_enclave_paths_join_root_namespace_and_name():
    assert enclave_path("/vla_ros", "/", "vla_safety") == "/vla_ros/vla_safety"
    assert enclave_path("/vla_ros/", "/a/b", "teleop") == "/vla_ros/a/b/teleop"


def test_a_foreign_or_older_policy_file_is_refused():
    with pytest.raises(ValueError, match=r"0\.2\.0"):
        read_policy('<policy version="0.1.0"><contexts/></policy>')
    assert main(["security", "policy", "--enclave-root", "relative"]) == 2
    assert main(["security", "policy", "--enclave-root", "/a b"]) == 2
    assert main(["security", "policy", "--namespace", "bad ns"]) == 2
    assert main(["bringup", "--model-dir", ".", "--namespace", "1robot"]) == 2


def _start_bringup(mode: str, namespace: str, model_dir: Path) -> tuple[subprocess.Popen, list]:
    argv = [sys.executable, "-c", CLI, "bringup", "--mode", mode, "--model-dir", str(model_dir)]
    if namespace:
        argv += ["--namespace", namespace]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    return process, lines


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "namespace"), [("mobile3", ""), ("arm", ""), ("mobile3", "robot1")]
)
def test_the_policy_covers_exactly_what_each_live_node_uses(
    mode, namespace, tiny_model_dir, tiny_arm_model_dir, tmp_path, ros_context, spin_until
):
    """The real stack in its own process, its graph read over DDS by another participant."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    out = tmp_path / "policy.xml"
    argv = ["security", "policy", "--mode", mode, "--out", str(out)]
    discovery = os.environ.get(DISCOVERY_RANGE)
    assert main([*argv, "--namespace", namespace] if namespace else argv) == 0
    assert os.environ.get(DISCOVERY_RANGE) == discovery, "the generator leaked its isolation"
    policy = read_policy(out.read_text(encoding="utf-8"))
    fq_namespace = f"/{namespace}" if namespace else "/"

    model_dir = tiny_arm_model_dir if mode == "arm" else tiny_model_dir
    process, lines = _start_bringup(mode, namespace, model_dir)
    observer = Node("security_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(observer)
    try:
        deadline = time.monotonic() + 120.0
        while not any("stack up" in line for line in lines) and time.monotonic() < deadline:
            assert process.poll() is None, "".join(lines)
            executor.spin_once(timeout_sec=0.1)
        assert any("stack up" in line for line in lines), "".join(lines)

        def live(name: str) -> Interfaces:
            if (name, fq_namespace) not in observer.get_node_names_and_namespaces():
                return Interfaces()  # not discovered yet
            return node_interfaces(observer, name, fq_namespace)

        def granted(name: str) -> Interfaces:
            return policy[enclave_path("/vla_ros", fq_namespace, name)]

        # Discovery is gradual: wait (bounded) until the graph matches, then compare for real.
        spin_until(executor, lambda: all(live(n) == granted(n) for n in STACK_NODES), 60.0)
        for name in STACK_NODES:
            have, allowed = live(name), granted(name)
            for kind in ("publish", "subscribe", "reply", "request"):
                used, grant = getattr(have, kind), getattr(allowed, kind)
                assert used == grant, (
                    f"{name} {kind}: missing {sorted(used - grant)}, extra {sorted(grant - used)}"
                )
        # Whatever a node reads that no stack node writes has exactly one outside writer.
        writers = {
            path.rsplit("/", 1)[-1]: grant.publish
            for path, grant in policy.items()
            if path.rsplit("/", 1)[-1] in {"operator", "teleop", "estop", "robot"}
        }
        stack_reads = set().union(*(live(n).subscribe for n in STACK_NODES))
        stack_writes = set().union(*(live(n).publish for n in STACK_NODES))
        for topic in stack_reads - stack_writes:
            owners = [who for who, topics in writers.items() if topic in topics]
            assert len(owners) == 1 or set(owners) == {"operator", "estop"}, (topic, owners)
    finally:
        observer.destroy_node()
        executor.shutdown()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

"""Import structure of `src/vla_ros`, read from the AST (function-level imports included): no
module imports itself through others or a layer above its own, and the ROS-free cores stay free
of rclpy. ARCHITECTURE.md ("Layers") explains the order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vla_ros"
ROS_FREE = ("core", "safety", "policy", "learn", "sim")

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "vla_ros",
        "vla_ros.files",
        "vla_ros.params",
        "vla_ros.action_space",
        "vla_ros.policy.types",
    ),
    ("vla_ros.transport",),
    ("vla_ros.safety", "vla_ros.core"),
    ("vla_ros.bag",),
    ("vla_ros.policy",),
    ("vla_ros.sim",),
    ("vla_ros.learn",),
    ("vla_ros.nodes",),
    (
        "vla_ros.bringup",
        "vla_ros.evaluate",
        "vla_ros.faults",
        "vla_ros.bench",
        "vla_ros.commands",
        "vla_ros.security",
        "vla_ros.demo",
        "vla_ros.cli",
        "*.cli",
    ),
)
"""Bottom first. A module belongs to the layer of its longest matching prefix; `*.cli` (every
package's command line) is the application layer. The contracts every layer speaks (action
spaces, the policy's spec and chunk types) sit at the bottom with the file and parameter readers."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module name `name` imports anywhere in its body, relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def internal_edges() -> dict[str, set[str]]:
    return {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def layer_of(name: str) -> int:
    if name.endswith(".cli"):
        return len(LAYERS) - 1
    best, depth = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = level, prefix.count(".")
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS")
    return best


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, targets in edges.items()
        for target in targets
        if layer_of(target) > layer_of(name)
    )


def test_the_cycle_finder_finds_a_planted_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    assert cycles(internal_edges()) == []


def test_the_layer_check_finds_a_planted_upward_import():
    planted = {"vla_ros.core.image": {"vla_ros.nodes.common"}, "vla_ros.sim.cli": {"vla_ros.bag"}}
    assert upward_imports(planted) == ["vla_ros.core.image -> vla_ros.nodes.common"]
    assert layer_of("vla_ros.policy.types") < layer_of("vla_ros.core.inference")


def test_every_module_has_a_layer():
    assert all(layer_of(name) >= 0 for name in MODULES)


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(internal_edges()) == []


@pytest.mark.parametrize("layer", ROS_FREE)
def test_the_ros_free_layers_import_no_rclpy(layer):
    users = sorted(
        name
        for name in MODULES
        if name.startswith(f"vla_ros.{layer}")
        and any(m == "rclpy" or m.startswith("rclpy.") for m in imports(name))
    )
    assert users == []

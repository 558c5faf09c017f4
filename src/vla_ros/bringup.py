"""`vla-ros bringup`: the nodes of vla.launch.py in one process, for hosts without ROS launch.

Reads the same parameter files as the launch file (each node takes its own section), so a stack
started here and one started with `ros2 launch` behave the same.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from vla_ros.policy.types import Policy

from vla_ros import action_space as action_spaces
from vla_ros.params import default_params_file
from vla_ros.policy.backends import BACKENDS


@dataclass(frozen=True)
class StackOptions:
    """What `vla.launch.py` takes as launch arguments."""

    mode: str = action_spaces.DEFAULT_MODE
    """An action space name or alias (`vla_ros.action_space`)."""
    model_dir: str = "models/tiny"
    params_file: str | None = None
    overlay_params_files: tuple[str, ...] = ()
    """Parameter files loaded after `params_file`; their values win (e.g. a lidar guard)."""
    camera_topic: str = "/camera/image_raw"
    compressed: bool = False
    namespace: str = ""
    use_sim_time: bool = False
    device: str = ""
    dtype: str = ""
    backend: str = ""
    """Empty device/dtype/backend keep the parameter file's values."""

    def resolved_params_file(self) -> Path:
        action_spaces.canonical(self.mode)
        path = Path(self.params_file) if self.params_file else default_params_file(self.mode)
        if not path.is_file():
            raise FileNotFoundError(f"parameter file {path} does not exist")
        return path


def ros_args_for(options: StackOptions) -> list[str]:
    """Arguments for `rclpy.init(args=...)` that load the parameter files for every node, in
    order, so an overlay's values replace the base file's."""
    from vla_ros.nodes.common import misspelled_sections

    base = options.resolved_params_file()
    args = ["--ros-args", "--params-file", str(base)]
    for overlay in options.overlay_params_files:
        if not Path(overlay).is_file():
            raise FileNotFoundError(f"parameter overlay {overlay} does not exist")
        args += ["--params-file", str(overlay)]
    misspelled = misspelled_sections(args)
    if misspelled:
        raise ValueError(f"unknown parameter file section: {'; '.join(misspelled)}")
    retyped = retyped_overrides(base, options.overlay_params_files)
    if retyped:
        raise ValueError(f"parameter overlay changes a type: {'; '.join(retyped)}")
    return args


def retyped_overrides(base: str | Path, overlays: Sequence[str | Path]) -> list[str]:
    """Overlay values of another type than the base file's for the same node and key: rcl keeps
    the first file's value without a word, so a limit written as `fast`, `"0.2"` or `1` (for
    1.0) would silently not apply."""
    from vla_ros.nodes.common import NODE_NAMES
    from vla_ros.params import ParamsFileError, load_node_params

    def parameters(path: str | Path, node: str) -> dict[str, Any]:
        try:
            return load_node_params(path, node)
        except (ParamsFileError, OSError):  # no section for the node; rcl reports bad files
            return {}

    problems = []
    for node in NODE_NAMES:
        known = parameters(base, node)
        for overlay in overlays:
            for key, value in parameters(overlay, node).items():
                if key in known and type(value) is not type(known[key]):
                    problems.append(
                        f"{overlay}: {node}.{key} is {value!r}, a {type(value).__name__}; "
                        f"{base} gives it as a {type(known[key]).__name__}"
                    )
    return problems


def build_stack(
    context: Context,
    options: StackOptions,
    policy: Policy | None = None,
    *,
    inference: bool = True,
    inference_params: Sequence[Parameter] = (),
) -> list[Node]:
    """Create camera, inference and safety nodes in `context` (initialised with `ros_args_for`)
    and drive each through configure and activate, safety first so zero goes out before
    anything can move; a node whose configure fails stops the bring-up (ParameterError naming
    it) and the nodes already up are taken down again.

    `inference=False` leaves the inference node out (a scripted driver stands in for it);
    `inference_params` are extra overrides for it (the sim evaluation's trigger mode).
    """
    from rclpy.parameter import Parameter

    from vla_ros.nodes.camera_node import CameraNode
    from vla_ros.nodes.inference_node import InferenceNode
    from vla_ros.nodes.lifecycle import start, stop
    from vla_ros.nodes.safety_node import SafetyNode
    from vla_ros.params import ParameterError

    action_space = action_spaces.canonical(options.mode)
    sim_time = Parameter("use_sim_time", value=options.use_sim_time)
    common: dict[str, Any] = {"context": context, "namespace": options.namespace}
    camera = CameraNode(
        parameter_overrides=[
            sim_time,
            Parameter("compressed", value=options.compressed),
            Parameter("image_topic", value=options.camera_topic),
            Parameter("compressed_topic", value=f"{options.camera_topic}/compressed"),
        ],
        autostart=False,
        **common,
    )
    model = [
        Parameter(name, value=value)
        for name, value in (
            ("device", options.device),
            ("dtype", options.dtype),
            ("backend", options.backend),
        )
        if value
    ]
    nodes: list[Node] = [camera]
    if inference:
        nodes.append(
            InferenceNode(
                policy=policy,
                parameter_overrides=[
                    sim_time,
                    Parameter("action_space", value=action_space),
                    Parameter("model_dir", value=options.model_dir),
                    *model,
                    *inference_params,
                ],
                autostart=False,
                **common,
            )
        )
    nodes.append(
        SafetyNode(
            parameter_overrides=[sim_time, Parameter("mode", value=action_space)],
            autostart=False,
            **common,
        )
    )
    started: list[Node] = []
    for node in reversed(nodes):
        try:
            start(node)
        except ParameterError as exc:
            name = node.get_name()
            for up in started:
                stop(up)
            for each in nodes:
                each.destroy_node()
            raise ParameterError(f"{name}: {exc}") from exc
        started.insert(0, node)
    return nodes


def run_bringup(options: StackOptions) -> int:
    """Spin the stack until Ctrl-C / SIGTERM; then the safety node commands zero before the
    context goes down (rclpy's own signal handler would shut it down first). The spin polls in
    wall time, so Ctrl-C works under --use-sim-time with no /clock."""
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException

    from vla_ros.nodes.common import StopSignals, init_without_signal_handlers, stop_nodes
    from vla_ros.params import ParameterError
    from vla_ros.transport import make_executor

    try:
        args = ros_args_for(options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"[FATAL] {exc}")
        return 2
    signals = StopSignals().install()
    context = Context()
    init_without_signal_handlers(args, context)
    nodes: list[Node] = []
    try:
        nodes = build_stack(context, options)
        executor = make_executor(context)
        for node in nodes:
            executor.add_node(node)
        runs = [getattr(node, "runtime", "") for node in nodes if getattr(node, "runtime", "")]
        nodes[0].get_logger().info(
            f"vla_ros stack up: mode={action_spaces.canonical(options.mode)} "
            f"model_dir={options.model_dir}, policy {runs[0] if runs else 'none'}"
        )
        signals.spin(executor, context)
    except ParameterError as exc:
        print(f"[FATAL] invalid parameters: {exc}")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop_nodes(nodes[::-1], context)
        signals.restore()
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bringup", help="start camera, inference and safety nodes in one process (no ros2 launch)"
    )
    parser.add_argument("--model-dir", required=True, help="vla_ros model directory")
    add_stack_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--backend",
        default=None,
        choices=BACKENDS,
        help="trunk backend; onnxruntime/tensorrt need `vla-ros export` (default: parameter file)",
    )
    parser.set_defaults(handler=_handle)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that decide which topics and services the nodes use, as every command that
    starts (or describes) the stack spells them."""
    action_spaces.add_mode_argument(parser)
    parser.add_argument(
        "--params",
        default=None,
        help="parameter file (default: the mode's config/mobile.yaml or config/arm.yaml)",
    )
    parser.add_argument(
        "--camera-topic",
        default="/camera/image_raw",
        help="raw image topic; <topic>/compressed with --compressed",
    )
    parser.add_argument(
        "--compressed",
        action="store_true",
        help="subscribe to sensor_msgs/CompressedImage on <camera-topic>/compressed",
    )
    parser.add_argument("--namespace", default="", help="node namespace (default: root)")
    parser.add_argument(
        "--use-sim-time", action="store_true", help="follow /clock (a bag replayed with --clock)"
    )


def options_from_args(args: argparse.Namespace, model_dir: str) -> StackOptions:
    """StackOptions from `add_stack_arguments` (and `add_model_arguments` where present); a
    namespace rclpy would refuse is a usage error here, not a traceback from the first node."""
    check_ros_path("--namespace", args.namespace)
    return StackOptions(
        mode=args.mode,
        model_dir=model_dir,
        params_file=args.params,
        camera_topic=args.camera_topic,
        compressed=args.compressed,
        namespace=args.namespace,
        use_sim_time=args.use_sim_time,
        device=getattr(args, "device", ""),
        dtype=getattr(args, "dtype", None) or "",
        backend=getattr(args, "backend", None) or "",
    )


def check_ros_path(option: str, value: str) -> None:
    """A namespace-like path (namespace, enclave root): '' and '/' mean the root."""
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace

    if value in ("", "/"):
        return
    try:
        validate_namespace(value if value.startswith("/") else f"/{value}")
    except InvalidNamespaceException as exc:
        detail = str(exc).splitlines()[0]
        raise ValueError(f"{option} {value!r} is not a valid ROS name: {detail}") from None


DTYPES = ("float32", "float16", "bfloat16")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device`/`--dtype` as every command that loads a model spells them."""
    parser.add_argument(
        "--device", default="", help="torch device, e.g. cpu or cuda:0 (default: parameter file)"
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=DTYPES,
        help="weight dtype (default: the parameter file's)",
    )


def _handle(args: argparse.Namespace) -> int:
    if not Path(args.model_dir).is_dir():
        raise FileNotFoundError(f"model directory {args.model_dir} does not exist")
    return run_bringup(options_from_args(args, args.model_dir))

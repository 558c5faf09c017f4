"""Managed-node plumbing shared by the camera, inference and safety nodes.

Each node is an rclpy lifecycle node: `configure` validates parameters and loads what it needs
(the model), `activate` starts its output, `deactivate`, `cleanup` and `shutdown` stop it (the
safety node commands zero first). A configure that fails leaves the node unconfigured with the
reason in `failure_reason` and in the log, and nothing of it running.

`autostart` (a constructor argument, else the read-only `autostart` parameter, default true)
runs configure + activate in the constructor, which is what a plain `ros2 run` or a test wants;
launch files and `vla-ros bringup` pass false and drive the transitions themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from vla_ros.nodes.common import unknown_override_problem
from vla_ros.params import ParameterError

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class ManagedNode(LifecycleNode):
    """Subclasses implement `configure_node`, `start_output`, `stop_output`, `release_node`."""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.failure_reason = ""
        self._entities: list[Any] = []
        self.declare_parameter(
            "autostart",
            True,
            ParameterDescriptor(
                description="configure and activate at start (false: a lifecycle manager does)",
                read_only=True,
            ),
        )

    # ---------------------------------------------------------------- subclass hooks
    def configure_node(self) -> None:
        """Validate parameters, load resources, create publishers; raise to refuse."""

    def start_output(self) -> None:
        """Start subscriptions, timers and workers."""

    def stop_output(self) -> None:
        """Stop everything `start_output` started (the safety node commands zero first)."""

    def release_node(self) -> None:
        """Undo `configure_node`, also after it failed half-way."""

    def stop_for_exit(self) -> None:
        """The orderly way down (`stop`), under the name `common.stop_nodes` looks for."""
        stop(self)

    # ---------------------------------------------------------------- plumbing
    def finish_init(self, autostart: bool | None) -> None:
        """End of a subclass constructor: configure + activate now when asked to.

        Raises ParameterError (after destroying the node) when configure fails, so direct
        construction keeps refusing bad parameters the way it always did.
        """
        if autostart is None:
            autostart = bool(self.get_parameter("autostart").value)
        if not autostart:
            return
        try:
            start(self)
        except ParameterError:
            self.destroy_node()
            raise

    def own(self, entity: Any) -> Any:
        """Remember a publisher, subscription, service or timer for `release_entities`."""
        self._entities.append(entity)
        return entity

    def release_entities(self, entities: Iterable[Any] | None = None) -> None:
        """Destroy owned entities (all of them by default)."""
        chosen = list(self._entities if entities is None else entities)
        for entity in chosen:
            for destroy in (
                self.destroy_timer,
                self.destroy_subscription,
                self.destroy_publisher,
                self.destroy_service,
                self.destroy_client,
            ):
                try:
                    if destroy(entity):
                        break
                except (TypeError, AttributeError):
                    continue
            if entity in self._entities:
                self._entities.remove(entity)

    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active, finalized (or a transition state's label)."""
        return str(self._state_machine.current_state[1])

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure_node()
            unknown = unknown_override_problem(self)
            if unknown is not None:
                raise ParameterError(unknown)
        except Exception as exc:  # any failure leaves the node unconfigured, never half-up
            self.failure_reason = str(exc) if isinstance(exc, ParameterError) else repr(exc)
            self.get_logger().error(f"configure failed: {self.failure_reason}")
            self._safe(self.release_node)
            return FAILURE
        self.failure_reason = ""
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.start_output()
        except Exception as exc:
            self.failure_reason = repr(exc)
            self.get_logger().error(f"activate failed: {self.failure_reason}")
            self._safe(self.stop_output)
            return FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe(self.stop_output)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe(self.release_node)
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if state.label == "active":
            self._safe(self.stop_output)
        if state.label in ("active", "inactive"):
            self._safe(self.release_node)
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._safe(self.stop_output)
        self._safe(self.release_node)
        return SUCCESS

    def destroy_node(self) -> None:
        """Going down from any state stops the output first (zero on the safety output)."""
        if self.lifecycle_state == "active":
            self._safe(self.stop_output)
        if self.lifecycle_state in ("active", "inactive"):
            self._safe(self.release_node)
        super().destroy_node()

    def _safe(self, hook: Any) -> None:
        try:
            hook()
        except Exception as exc:  # a teardown hook must never mask the transition
            self.get_logger().error(f"{hook.__name__} failed: {exc!r}")


def start(node: ManagedNode) -> None:
    """configure + activate; ParameterError with the node's reason when configure fails."""
    if node.trigger_configure() != SUCCESS:
        raise ParameterError(node.failure_reason or "configure failed")
    if node.trigger_activate() != SUCCESS:
        raise ParameterError(node.failure_reason or "activate failed")


def stop(node: ManagedNode) -> None:
    """deactivate (if active) then shutdown: the orderly way down used by bringup.

    Never raises: it runs on the way out (Ctrl-C, a failed bring-up), where `destroy_node`
    still stops the output if a transition could not run.
    """
    try:
        if node.lifecycle_state == "active":
            node.trigger_deactivate()
        if node.lifecycle_state in ("unconfigured", "inactive"):
            node.trigger_shutdown()
    except Exception as exc:  # a shut-down context refuses transitions
        node.get_logger().warning(f"lifecycle shutdown incomplete: {exc!r}")


def launch_actions(node: Any) -> list[Any]:
    """For launch files: a launch_ros LifecycleNode plus the events that configure it and, once
    it is inactive, activate it (what `autostart` does where launch_ros offers it; Humble does
    not). launch and launch_ros are imported here so this module stays importable without them.
    """
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition: int) -> Any:
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition)
        )

    return [
        node,
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                goal_state="inactive",
                entities=[change(Transition.TRANSITION_ACTIVATE)],
            )
        ),
        change(Transition.TRANSITION_CONFIGURE),
    ]

"""`InferenceCore`: every decision of the inference node, free of ROS and tested directly.

The node hands it frames, scene-change scores, instructions and service calls (executor thread),
asks it for the command to publish (control timer) and runs `work_once` on a worker thread. The
core decides when the policy runs (`EventTrigger`), on which frame, whether the result may play
and what the robot does meanwhile. The clock is injected (node time, so sim time works) like the
safety validator's, and so is the policy, so property tests drive it with arbitrary sequences.

Rules it keeps (each has a property test in test/test_inference_core.py):
- Generations: a new or cleared instruction and a reset start a new generation, drop the chunk
  being played (zero until the new one arrives) and clear the policy history before the next
  step. A chunk computed for an older generation is never played.
- A frame enters the policy history at most once: a frame the policy has seen is only used again
  right after the history was cleared; otherwise the inference waits for the next frame.
- Frames older than `max_frame_age_s` or stamped more than `max_frame_lead_s` ahead of the clock
  are not used, and once the newest frame is older than that (the camera stopped) the chunk
  being played stops: zero until a fresh frame arrives. A frame byte-identical to the current
  one (`identical_frames_stale`) is what a frozen driver sends with fresh stamps, never a live
  sensor: it is not taken, so the image ages from its first arrival and a frozen camera stops
  the robot like a stopped one. A scene-change score counts for the frame with the same stamp
  and frame_id.
- Every firing ends in exactly one `Outcome` (ok, error or superseded), which the node publishes
  as one inference event, so no event disappears without a trace.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.core.chunk_executor import ChunkExecutor
from vla_ros.core.confidence import chunk_agreement, combined, gripper_margin
from vla_ros.core.instruction import MAX_INSTRUCTION_CHARS, instruction_problem
from vla_ros.core.stats import LatencyStats
from vla_ros.core.trigger import Cause, EventTrigger, Firing, TriggerConfig
from vla_ros.policy.types import ActionChunk, Policy, chunk_problem

SCORE_MEMORY = 16
"""Scene-change scores waiting for their frame (matched by stamp and frame_id)."""

FrameKey = tuple[int, str]


@dataclass(frozen=True)
class CoreConfig:
    """Run-time settings; `trigger` is validated by `TriggerConfig` itself."""

    trigger: TriggerConfig = field(default_factory=TriggerConfig)
    max_frame_age_s: float = 0.5
    max_frame_lead_s: float = 0.05
    identical_frames_stale: bool = True
    blend: bool = False
    blend_weight: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_frame_age_s) and self.max_frame_age_s > 0):
            raise ValueError(f"max_frame_age_s must be > 0, got {self.max_frame_age_s}")
        if not (math.isfinite(self.max_frame_lead_s) and self.max_frame_lead_s >= 0):
            raise ValueError(f"max_frame_lead_s must be >= 0, got {self.max_frame_lead_s}")
        if not 0.0 < self.blend_weight <= 1.0:
            raise ValueError(f"blend_weight must be in (0, 1], got {self.blend_weight}")


@dataclass
class Frame:
    """One usable frame; `header` is the node's message header, kept to republish as keyframe."""

    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    header: Any = None
    used: bool = False

    @property
    def stamp_s(self) -> float:
        """sec + nanosec * 1e-9, the way every other node turns a header stamp into seconds."""
        sec, nanosec = divmod(self.stamp_ns, 1_000_000_000)
        return sec + nanosec * 1e-9

    @property
    def key(self) -> FrameKey:
        return (self.stamp_ns, self.frame_id)


@dataclass(frozen=True)
class Job:
    """One inference to run: the frame and instruction it uses and the generation it serves."""

    firing: Firing
    frame: Frame
    instruction: str
    generation: int
    reset_history: bool
    origin_perf: float


@dataclass(frozen=True)
class Outcome:
    """How one inference ended: `status` is ok, error or superseded (result discarded)."""

    job: Job
    status: str
    chunk: ActionChunk | None = None
    error: str = ""
    confidence: float | None = None
    agreement: float | None = None
    model_ms: float = 0.0
    latency_ms: float = 0.0
    count: int = 0
    skipped: int = 0

    def event(self, latency_ms: float | None = None) -> dict[str, Any]:
        """The JSON object of /vla/inference_event; `latency_ms` as measured by the publisher."""
        event: dict[str, Any] = {
            "cause": self.job.firing.cause.value,
            "causes": sorted(cause.value for cause in self.job.firing.causes),
            "status": self.status,
            "frame_stamp": self.job.frame.stamp_s,
            "frame_id": self.job.frame.frame_id,
            "latency_ms": round(self.latency_ms if latency_ms is None else latency_ms, 3),
            "model_ms": round(self.model_ms, 3),
            "count": self.count,
        }
        if self.confidence is not None:
            event["confidence"] = round(self.confidence, 4)
        if self.error:
            event["error"] = self.error
        return event


@dataclass(frozen=True)
class Command:
    """What the control timer publishes now; `gripper` None = say nothing (never commanded)."""

    motion: np.ndarray
    gripper: float | None
    moving: bool


@dataclass(frozen=True)
class Receipt:
    """What became of an instruction message."""

    changed: bool
    instruction: str | None
    refused: str | None = None


class InferenceCore:
    """Thread-safe: callbacks, the control timer and the worker may call it concurrently.

    `on_play(outcome)` runs under the core's lock right after a chunk is scheduled and before any
    command from it can be read, so the node publishes confidence (which the safety node gates
    on) ahead of the first command of the chunk.
    """

    def __init__(
        self,
        policy: Policy,
        config: CoreConfig,
        clock: Callable[[], float],
        perf: Callable[[], float] = time.perf_counter,
        on_play: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.policy = policy
        self.spec = policy.spec
        self._config = config
        self._clock = clock
        self._perf = perf
        self._on_play = on_play
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._trigger = EventTrigger(config.trigger)
        self._plan = ChunkExecutor(
            self.spec.action_period_s, blend=config.blend, blend_weight=config.blend_weight
        )
        self._frame: Frame | None = None
        self._repeating = False  # the newest frame offered repeated the current one
        self._scores: OrderedDict[FrameKey, tuple[float, float]] = OrderedDict()
        self._generation = 0
        self._reset_history = True
        self._signalled = False
        self._signal_perf = 0.0
        self._closed = False
        self._gripper_hold: float | None = None
        self._held: str | None = None
        self._refusal = ("", "")
        self._counts: Counter[str] = Counter()
        self._causes: Counter[str] = Counter({cause.value: 0 for cause in Cause})
        self._last_error = ""
        self.model_ms = LatencyStats()
        self.latency_ms = LatencyStats()
        self.overhead_ms = LatencyStats()
        self.frame_age_ms = LatencyStats()

    # ------------------------------------------------------------------ inputs (any thread)
    @property
    def instruction(self) -> str | None:
        with self._lock:
            return self._trigger.instruction

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def configure(self, config: CoreConfig) -> None:
        with self._lock:
            self._config = config
            self._trigger.config = config.trigger
            self._plan.configure(config.blend, config.blend_weight)

    def frame_refused(self, reason: str) -> None:
        """The node could not decode a frame (`reason` names why): counted, never used."""
        with self._lock:
            self._counts["frames_received"] += 1
            self._counts[f"frames_{reason}"] += 1

    def offer_frame(
        self, rgb: np.ndarray, stamp_ns: int, frame_id: str, header: Any = None
    ) -> str | None:
        """Store the newest frame; returns why it is not used (stale, future, identical) or None."""
        with self._lock:
            self._counts["frames_received"] += 1
            key = (stamp_ns, frame_id)
            frame = Frame(rgb, stamp_ns, frame_id, header)
            problem = self._age_problem(frame.stamp_s, self._clock())
            if problem is not None:
                self._counts[f"frames_{problem}"] += 1
                self._scores.pop(key, None)
                return problem
            current = self._frame
            if (
                self._config.identical_frames_stale
                and current is not None
                and current.frame_id == frame_id
                and np.array_equal(current.rgb, rgb)
            ):
                # A frozen driver repeats one image with fresh stamps; a live camera's noise
                # never does. The image stays as old as its first arrival.
                self._counts["frames_identical"] += 1
                self._repeating = True
                self._scores.pop(key, None)
                return "identical"
            self._repeating = False
            if current is not None and not current.used:
                self._counts["frames_replaced"] += 1
            self._frame = frame
            self._trigger.new_frame()
            scored = self._scores.pop(key, None)
            if scored is not None:
                self._trigger.scene_change(scored[0], self._frame.stamp_s, scored[1])
            self._signal()
            return None

    def offer_score(self, score: float, stamp_ns: int, frame_id: str, reference_s: float) -> bool:
        """A scene-change score for the frame (stamp_ns, frame_id); True when it is an event now.

        A score whose frame has not arrived yet waits for it (bounded memory).
        """
        with self._lock:
            frame = self._frame
            key = (stamp_ns, frame_id)
            if frame is not None and frame.key == key:
                accepted = self._trigger.scene_change(score, frame.stamp_s, reference_s)
                self._signal()
                return accepted
            self._scores[key] = (score, reference_s)
            while len(self._scores) > SCORE_MEMORY:
                self._scores.popitem(last=False)
            return False

    def set_instruction(self, text: str) -> Receipt:
        """Receive an instruction; a refused one leaves the current instruction in force."""
        problem = instruction_problem(text, MAX_INSTRUCTION_CHARS)
        check = getattr(self.policy, "instruction_problem", None)
        if problem is None and text.strip() and callable(check):
            problem = check(text.strip())
        with self._lock:
            if problem is not None:
                self._counts["instructions_refused"] += 1
                self._refusal = (text.strip(), problem)
                return Receipt(False, self._trigger.instruction, problem)
            self._held = None
            changed = self._trigger.set_instruction(text)
            if changed:
                self._new_generation()
                self._signal()
            return Receipt(changed, self._trigger.instruction)

    def hold_instruction(self, text: str) -> None:
        """An instruction published before this node listened (a latched one, found after a
        restart): kept but not followed until `resume` or a new instruction, so a node that
        crashed and came back does not drive again without an operator asking."""
        with self._lock:
            self._held = text.strip() or None

    @property
    def held_instruction(self) -> str | None:
        with self._lock:
            return self._held

    def resume(self) -> Receipt | None:
        """Follow the held instruction (the operator's explicit act); None if none is held."""
        held = self.held_instruction
        return None if held is None else self.set_instruction(held)

    def request(self) -> bool:
        """An explicit inference request; False without an instruction."""
        with self._lock:
            accepted = self._trigger.request()
            self._signal()
            return accepted

    def reset(self) -> None:
        """Start over: drop the chunk, clear the policy history, next inference is a start."""
        with self._lock:
            self._trigger.reset()
            self._new_generation()
            self._signal()

    def command(self) -> Command:
        """The command for now: the playing chunk's action, or zero."""
        with self._lock:
            now_s = self._clock()
            played = None
            if self._trigger.instruction is not None and not self._camera_lost(now_s):
                played = self._plan.command_at(now_s)
            self._signal()
            if played is not None and played[1] is not None:
                self._gripper_hold = played[1]
            gripper = self._gripper_hold if self.spec.has_gripper else None
        if played is None:
            return Command(np.zeros(self.spec.motion_dof), gripper, False)
        return Command(played[0], gripper, True)

    # ------------------------------------------------------------------ worker thread
    def wait_for_work(self, timeout_s: float | None = None) -> bool:
        """Block until an input arrives (True) or `close` was called (False)."""
        with self._wake:
            self._wake.wait_for(lambda: self._closed or self._signalled, timeout=timeout_s)
            return not self._closed

    def close(self) -> None:
        """Release the worker (node deactivation or shutdown); `open` lets one wait again."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def open(self) -> None:
        with self._wake:
            self._closed = False

    def work_once(self, on_start: Callable[[], None] | None = None) -> Outcome | None:
        """Clear the policy history if due and run the inference the trigger calls for, if any;
        `on_start` is called just before the policy runs (the node announces it is computing)."""
        loop_perf = self._perf()
        with self._lock:
            origin_perf = max(self._signal_perf, loop_perf) if self._signalled else loop_perf
            self._signalled = False
            reset_history = self._reset_history
            job = self._next_job(origin_perf)
            if reset_history:
                self._reset_history = False
        if reset_history:
            try:
                self.policy.reset()
            except Exception as exc:  # the history may not be clear: do not step on it
                with self._lock:
                    self._reset_history = True
                if job is None:
                    self._count_error(f"reset: {type(exc).__name__}: {exc}")
                    return None
                return self._finish(job, None, f"reset: {type(exc).__name__}: {exc}", 0.0)
        if job is None:
            return None
        if on_start is not None:
            on_start()
        started = self._perf()
        try:
            chunk: ActionChunk | None = self.policy.step(
                np.ascontiguousarray(job.frame.rgb), job.instruction
            )
            error = chunk_problem(chunk, self.spec)
        except Exception as exc:  # a policy bug must become a zero command, never a crash
            chunk, error = None, f"{type(exc).__name__}: {exc}"
        return self._finish(job, chunk, error, (self._perf() - started) * 1e3)

    # ------------------------------------------------------------------ reports
    def diagnostics(self) -> tuple[int, str, dict[str, Any]]:
        """(level 0 ok / 1 warn, message, key values) for /diagnostics."""
        with self._lock:
            frame = self._frame
            fresh = frame is not None and self._age_problem(frame.stamp_s, self._clock()) is None
            values: dict[str, Any] = {
                "model_id": self.spec.model_id,
                "device": self.spec.device,
                "action_space": self.spec.action_space,
                "instruction": self._trigger.instruction or "",
                "held_instruction": self._held or "",
                "refused_instruction": self._refusal[0],
                "refusal_reason": self._refusal[1],
                "generation": self._generation,
                "busy": self._trigger.busy,
                "pending": ",".join(sorted(c.value for c in self._trigger.pending)),
            }
            counts = dict(self._counts)
            causes = dict(self._causes)
            last_error = self._last_error
        for name, stats in (
            ("model", self.model_ms),
            ("latency", self.latency_ms),
            ("overhead", self.overhead_ms),
            ("frame_age", self.frame_age_ms),
        ):
            values[f"{name}_p50_ms"] = stats.percentile(50)
            values[f"{name}_p99_ms"] = stats.percentile(99)
        values["inferences"] = counts.get("inferences", 0)
        for cause, count in causes.items():
            values[f"events_{cause}"] = count
        for name in (
            "frames_received",
            "frames_replaced",
            "frames_stale",
            "frames_future",
            "frames_identical",
            "frames_invalid",
            "actions_skipped",
            "policy_errors",
            "superseded",
            "instructions_refused",
            "commands_zeroed_no_frame",
        ):
            values[name] = counts.get(name, 0)
        values["last_error"] = last_error
        if values["instruction"] == "":
            return 0, "waiting for an instruction", values
        if last_error:
            return 1, f"policy error: {last_error}", values
        if not fresh:
            frozen = self._repeating
            return 1, "no fresh frame (camera frozen?)" if frozen else "no fresh frame", values
        return 0, "ok", values

    # ------------------------------------------------------------------ internals (locked)
    def _signal(self) -> None:
        if not self._signalled:
            self._signalled = True
            self._signal_perf = self._perf()
        self._wake.notify()

    def _new_generation(self) -> None:
        self._generation += 1
        self._plan.reset()
        self._reset_history = True

    def _camera_lost(self, now_s: float) -> bool:
        """No usable frame for longer than `max_frame_age_s`: the chunk was planned on a view
        the robot no longer has, so it stops instead of playing the rest blind."""
        lost = self._frame is None or now_s - self._frame.stamp_s > self._config.max_frame_age_s
        if lost and self._plan.remaining(now_s) > 0:
            self._counts["commands_zeroed_no_frame"] += 1
        return lost

    def _age_problem(self, stamp_s: float, now_s: float) -> str | None:
        if now_s - stamp_s > self._config.max_frame_age_s:
            return "stale"
        if stamp_s - now_s > self._config.max_frame_lead_s:
            return "future"
        return None

    def _next_job(self, origin_perf: float) -> Job | None:
        frame = self._frame
        instruction = self._trigger.instruction
        now_s = self._clock()
        if frame is None or instruction is None or self._age_problem(frame.stamp_s, now_s):
            return None
        if frame.used and not self._reset_history:
            # The policy saw this frame in its current history: wait for the next one.
            return None
        firing = self._trigger.poll(now_s, self._plan.remaining(now_s), fresh_frame=not frame.used)
        if firing is None:
            return None
        frame.used = True
        self.frame_age_ms.add((now_s - frame.stamp_s) * 1e3)
        return Job(firing, frame, instruction, self._generation, self._reset_history, origin_perf)

    def _count_error(self, reason: str) -> None:
        with self._lock:
            self._counts["policy_errors"] += 1
            self._last_error = reason

    def _finish(
        self, job: Job, chunk: ActionChunk | None, error: str | None, model_ms: float
    ) -> Outcome:
        with self._lock:
            now_s = self._clock()
            latency_ms = (self._perf() - job.origin_perf) * 1e3
            current = job.generation == self._generation
            if not current:
                self._counts["superseded"] += 1
                self._trigger.finish(now_s, success=False)
                self._signal()
                return Outcome(job, "superseded", model_ms=model_ms, latency_ms=latency_ms)
            if chunk is None or error is not None:
                self._counts["policy_errors"] += 1
                self._last_error = error or "no chunk"
                self._plan.reset()
                self._trigger.finish(now_s, success=False)
                self._signal()
                return Outcome(
                    job, "error", error=self._last_error, model_ms=model_ms, latency_ms=latency_ms
                )
            previous = self._plan.upcoming(now_s)
            skipped = self._plan.set_chunk(chunk, job.frame.stamp_s, now_s)
            agreement = chunk_agreement(previous, chunk.motion[skipped:])
            confidence = combined(
                float(chunk.confidence), agreement, gripper_margin(chunk.gripper_prob)
            )
            self._counts["actions_skipped"] += skipped
            self._counts["inferences"] += 1
            self._causes[job.firing.cause.value] += 1
            self._last_error = ""
            outcome = Outcome(
                job,
                "ok",
                chunk=chunk,
                confidence=confidence,
                agreement=agreement,
                model_ms=model_ms,
                latency_ms=latency_ms,
                count=self._counts["inferences"],
                skipped=skipped,
            )
            if self._on_play is not None:
                self._on_play(outcome)
            self._trigger.finish(now_s, success=True, keyframe_stamp_s=job.frame.stamp_s)
            self._signal()
        self.model_ms.add(model_ms)
        return outcome

    def published(self, outcome: Outcome) -> float:
        """The node has published `outcome`'s chunk: its trigger-to-publish latency (ms),
        which also goes into the latency and overhead statistics."""
        latency_ms = (self._perf() - outcome.job.origin_perf) * 1e3
        if outcome.status == "ok":
            self.latency_ms.add(latency_ms)
            self.overhead_ms.add(max(0.0, latency_ms - outcome.model_ms))
        return latency_ms

"""`vla_sim`: the MuJoCo world as a ROS node. Wiring only; the world is vla_ros.sim.

A wall-clock timer steps the world by `step_dt` every `step_dt / real_time_factor` seconds and
publishes `/clock`, so every other node runs on sim time (`use_sim_time`). The scenario picks the
robot: mobile3 (odometry each step, lidar scan and egocentric camera at their own rates, commands
from `cmd_vel`) or arm7 (end-effector pose each step, wrist camera, commands from the Servo
TwistStamped and the gripper topic). Camera frames are rendered on a worker thread (its own
MjData and GL context, a one-slot mailbox that drops a frame the worker could not take), so
rendering never blocks the executor. Commands are the safety node's outputs; one older than
`command_timeout_s` counts as zero, as a base controller's own watchdog does. With `sync_lag_s`
> 0 the clock waits (up to `sync_timeout_s` wall) for the controller when its last command is
older than that, so a loaded machine slows the sim down instead of starving the
stack of sim time (the evaluation turns this on; a free-running sim is the default). With
`inference_latency_s` >= 0 the clock also holds while the inference node reports `vla/busy` for
longer than that many sim seconds: every inference then costs the same sim time whatever the
machine's load, so a closed-loop result measures the policy at a stated latency (the deployed
one), not this computer's speed.

Episodes: `~/reset` (std_srvs/Trigger) starts the scenario and seed in the `scenario`/`seed`
parameters (set them first to choose). The episode's states (`settling` -> `running` -> `done`)
are `vla_ros.sim.episode`'s; this node publishes the scenario's instruction on `vla/instruction`
(when `publish_instruction`) once it runs, clears it when it ends (success, collision, timeout,
wrong side), and reports the state, the layout and the result on `~/episode` (latched JSON).
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, LaserScan
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from vla_ros.nodes.common import NodeParameters, ParamSpec, run_node, topic_name_problem
from vla_ros.params import ParameterError
from vla_ros.safety.config import twist_vector
from vla_ros.sim import robots
from vla_ros.sim.clock_sync import ClockHold, PolicyLockstep
from vla_ros.sim.episode import Episode
from vla_ros.sim.scenario import LANGUAGES, Scenario, ScenarioError, resolve_scenarios
from vla_ros.sim.world import SENSOR_NOISE_STD, sensor_noise
from vla_ros.transport import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

NODE_NAME = "vla_sim"
TOPIC_PARAMS: tuple[tuple[str, str, str], ...] = (
    ("camera_topic", "camera/image_raw", "rendered rgb8 camera frames"),
    ("odom_topic", "odom", "nav_msgs/Odometry (ground truth)"),
    ("scan_topic", "scan", "sensor_msgs/LaserScan from the 2-D lidar"),
    ("cmd_topic", "cmd_vel", "mobile3: geometry_msgs/Twist commands (the safety node's output)"),
    ("servo_topic", "servo_node/delta_twist_cmds", "arm7: TwistStamped end-effector twist"),
    ("gripper_topic", "gripper/command", "arm7: std_msgs/Float64 gripper (1 open, 0 closed)"),
    ("ee_pose_topic", "vla/ee_pose", "arm7: geometry_msgs/PoseStamped of the end effector"),
    ("instruction_topic", "vla/instruction", "the scenario's instruction (latched)"),
    ("episode_topic", "~/episode", "episode state and result, JSON (latched)"),
    ("busy_topic", "vla/busy", "std_msgs/Bool: the inference node is computing"),
)

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("scenario", "1box_vert_left", "scenario name (config/scenarios) or file"),
    ParamSpec("seed", 0, "seed of the next episode (placements)", min=0, max=2**31 - 1),
    ParamSpec("language", "en", "instruction language", choices=LANGUAGES),
    ParamSpec("step_dt", 0.02, "sim seconds per step", min=0.005, max=0.1, read_only=True),
    ParamSpec("real_time_factor", 1.0, "sim seconds per wall second", min=0.05, max=50.0),
    ParamSpec("camera_rate_hz", 10.0, "camera frames per sim second", min=0.5, max=60.0),
    ParamSpec("scan_rate_hz", 10.0, "lidar scans per sim second", min=0.5, max=50.0),
    ParamSpec(
        "compressed",
        False,
        "publish JPEG CompressedImage on <camera_topic>/compressed",
        read_only=True,
    ),
    ParamSpec("image_size", 224, "square camera frame size (px)", min=16, max=1024, read_only=True),
    ParamSpec(
        "camera_noise_std",
        SENSOR_NOISE_STD,
        "sensor noise of the camera (grey levels, seeded by sim time); 0 renders byte-identical "
        "frames of a still scene, which the inference node takes for a frozen camera",
        min=0.0,
        max=16.0,
    ),
    ParamSpec(
        "time_limit_s", 0.0, "episode time limit; 0 keeps the scenario's", min=0.0, max=3600.0
    ),
    ParamSpec("settle_s", 0.5, "minimum hold after a reset", min=0.0, max=10.0),
    ParamSpec("command_timeout_s", 0.5, "older commands count as zero", min=0.01, max=10.0),
    ParamSpec(
        "sync_lag_s",
        0.0,
        "hold the clock while the last cmd_vel is older than this (sim s); 0 = free running",
        min=0.0,
        max=10.0,
    ),
    ParamSpec(
        "sync_timeout_s", 0.5, "longest wall-clock hold before stepping anyway", min=0.01, max=60.0
    ),
    ParamSpec(
        "inference_latency_s",
        -1.0,
        "sim seconds an inference may take before the clock holds for it; < 0 = free running",
        min=-1.0,
        max=10.0,
    ),
    ParamSpec(
        "inference_timeout_s",
        10.0,
        "longest wall-clock hold for one inference before stepping anyway",
        min=0.01,
        max=600.0,
    ),
    ParamSpec("publish_instruction", True, "publish the scenario instruction while running"),
    ParamSpec("autostart", True, "start an episode at start-up"),
    *(
        ParamSpec(name, default, description, read_only=True)
        for name, default, description in TOPIC_PARAMS
    ),
)


def _validate(values: Mapping[str, Any]) -> str | None:
    if abs(round(values["step_dt"] / 0.005) * 0.005 - values["step_dt"]) > 1e-9:
        return f"step_dt must be a multiple of 0.005 s, got {values['step_dt']}"
    return topic_name_problem(values, [name for name, _, _ in TOPIC_PARAMS])


def _stamp(t: float) -> Any:
    return Time(nanoseconds=round(t * 1e9)).to_msg()


class _FrameWorker:
    """Renders snapshots on its own thread and publishes them; the newest request wins."""

    def __init__(self, node: SimNode, publisher: Any, compressed: bool) -> None:
        self._node = node
        self._publisher = publisher
        self._compressed = compressed
        self._cond = threading.Condition()
        self._job: tuple[Any, Any, float, float] | None = None
        self._stopping = False
        self.dropped = 0
        self.error: str = ""
        self._thread = threading.Thread(target=self._run, name="vla_sim_render", daemon=True)
        self._thread.start()

    def submit(self, world: Any, snapshot: Any, t: float, noise_std: float) -> None:
        with self._cond:
            if self._job is not None:
                self.dropped += 1
            self._job = (world, snapshot, t, noise_std)
            self._cond.notify()

    def _run(self) -> None:
        from vla_ros.sim.world import Renderer

        renderer: Renderer | None = None
        model: Any = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or self._job is not None)
                    if self._stopping:
                        return
                    world, snapshot, t, noise_std = self._job  # type: ignore[misc]
                    self._job = None
                try:
                    if world.model is not model:
                        if renderer is not None:
                            renderer.close()
                        renderer = Renderer(world)
                        model = world.model
                    rgb = renderer.render(snapshot)
                    if noise_std > 0:
                        rgb = sensor_noise(rgb, round(t * 1e3), noise_std)
                except Exception as exc:  # no GL: report once, keep the node alive
                    if not self.error:
                        self.error = str(exc)
                        self._node.get_logger().error(f"rendering failed: {exc}")
                    continue
                self._publisher.publish(self._message(rgb, t))
        finally:
            if renderer is not None:
                renderer.close()

    def _message(self, rgb: Any, t: float) -> Image | CompressedImage:
        if self._compressed:
            import cv2

            ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            msg: Image | CompressedImage = CompressedImage(format="jpeg", data=jpeg.tobytes())
        else:
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8")
            msg.step = msg.width * 3
            msg.data = rgb.tobytes()
        msg.header.stamp = _stamp(t)
        msg.header.frame_id = "camera"
        return msg

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10.0)


class SimNode(Node):
    """The world, its sensors and its clock; `~/reset` starts an episode."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._frames: _FrameWorker | None = None
        try:
            self._setup()
        except Exception:
            self.destroy_node()
            raise

    def _setup(self) -> None:
        self._cfg = NodeParameters(self, PARAMS, _validate)
        cfg = self._cfg
        self._lock = threading.Lock()
        self._worlds: dict[str, Any] = {}
        self._episode: Episode | None = None
        self.time_s = 0.0
        self._steps = 0
        self._next_camera = 0.0
        self._next_scan = 0.0
        self.controller_hold = ClockHold()
        self.policy_lockstep = PolicyLockstep()
        self.episodes: list[dict[str, Any]] = []

        self._clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
        self._odom_pub = self.create_publisher(Odometry, cfg["odom_topic"], SENSOR_QOS)
        self._scan_pub = self.create_publisher(LaserScan, cfg["scan_topic"], SENSOR_QOS)
        if cfg["compressed"]:
            topic = f"{cfg['camera_topic']}/compressed"
            image_pub = self.create_publisher(CompressedImage, topic, SENSOR_QOS)
        else:
            image_pub = self.create_publisher(Image, cfg["camera_topic"], SENSOR_QOS)
        self._instruction_pub = self.create_publisher(String, cfg["instruction_topic"], LATCHED_QOS)
        self._episode_pub = self.create_publisher(String, cfg["episode_topic"], LATCHED_QOS)
        self._pose_pub = self.create_publisher(PoseStamped, cfg["ee_pose_topic"], SENSOR_QOS)
        for kind, topic, robot in (
            (Twist, "cmd_topic", "mobile3"),
            (TwistStamped, "servo_topic", "arm7"),
        ):
            self.create_subscription(
                kind, cfg[topic], functools.partial(self._on_command, robot), COMMAND_QOS
            )
        self.create_subscription(Float64, cfg["gripper_topic"], self._on_gripper, COMMAND_QOS)
        self.create_subscription(Bool, cfg["busy_topic"], self._on_busy, LATCHED_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._frames = _FrameWorker(self, image_pub, cfg["compressed"])
        self._timer = self.create_timer(self._period(cfg.values), self._on_step)
        cfg.add_listener(self._on_params)
        if cfg["autostart"]:
            ok, message = self.reset_episode()
            if not ok:
                raise ParameterError(message)

    def _period(self, values: Mapping[str, Any]) -> float:
        return values["step_dt"] / values["real_time_factor"]

    def _on_params(self, values: Mapping[str, Any]) -> None:
        self._timer.timer_period_ns = int(self._period(values) * 1e9)

    # ------------------------------------------------------------------ episodes
    def _world_for(self, scenario: Scenario) -> Any:
        key = scenario.source
        if key not in self._worlds:
            self._worlds[key] = robots.get(scenario.robot).world(
                scenario, dt=self._cfg["step_dt"], image_size=self._cfg["image_size"]
            )
        return self._worlds[key]

    def reset_episode(self) -> tuple[bool, str]:
        """Start the episode named by the `scenario`/`seed` parameters (aborting a running one)."""
        try:
            scenarios = resolve_scenarios(self._cfg["scenario"])
            if len(scenarios) != 1:
                raise ScenarioError(f"scenario {self._cfg['scenario']!r} names {len(scenarios)}")
            scenario = scenarios[0]
            if self._cfg["time_limit_s"] > 0:
                scenario = replace(scenario, time_limit_s=float(self._cfg["time_limit_s"]))
            text = scenario.text(self._cfg["language"])
            world = self._world_for(scenario)
        except (ScenarioError, FileNotFoundError, ValueError) as exc:
            return False, str(exc)
        with self._lock:
            if self._episode is not None and self._episode.abort():
                self._publish_episode()
            world.scenario = scenario
            world.reset(int(self._cfg["seed"]))
            robot = robots.get(scenario.robot)
            self._episode = Episode(robot, world, scenario, text, self.time_s)
            self._publish_episode()
            self._set_instruction("")
        return True, f"{scenario.name} seed {self._cfg['seed']}: settling"

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Any:
        response.success, response.message = self.reset_episode()
        return response

    def _set_instruction(self, text: str) -> None:
        if self._cfg["publish_instruction"]:
            self._instruction_pub.publish(String(data=text))

    def _publish_episode(self) -> None:
        episode = self._episode
        if episode is None:
            return
        status = episode.status(self.time_s)
        status["sync_holds"] = self.controller_hold.holds
        status["sync_timeouts"] = self.controller_hold.timeouts
        if episode.state == "done":
            self.episodes.append({**status, "trajectory": list(episode.world.trajectory)})
        self._episode_pub.publish(String(data=json.dumps(status, allow_nan=False, default=str)))

    # ------------------------------------------------------------------ stepping
    def _on_command(self, robot: str, msg: Twist | TwistStamped) -> None:
        """The safety node's output for `robot`, in its action space's axes; the other robot's
        topic is ignored while this one is simulated."""
        with self._lock:
            episode = self._episode
            if episode is not None and episode.robot.name == robot:
                episode.take_command(episode.robot.space.from_twist(twist_vector(msg)), self.time_s)

    def _on_gripper(self, msg: Float64) -> None:
        with self._lock:
            if self._episode is not None:
                self._episode.take_gripper(msg.data)

    def _waiting_for_controller(self) -> bool:
        """Co-simulation sync: on a loaded machine the executor can fall behind the wall timer;
        instead of letting sim time run away from the controller (which would look like the
        safety node going silent), hold the clock until its next command, for a bounded time."""
        lag = self._cfg["sync_lag_s"]
        command_t = self._episode.command_t if self._episode is not None else -math.inf
        if lag <= 0.0 or self.time_s - command_t <= lag or command_t == -math.inf:
            self.controller_hold.release()
            return False
        return self.controller_hold.holding(self._cfg["sync_timeout_s"])

    def _on_busy(self, msg: Bool) -> None:
        with self._lock:
            self.policy_lockstep.busy(msg.data, self.time_s)

    def _on_step(self) -> None:
        with self._lock:
            cfg = self._cfg
            if (
                self.policy_lockstep.waiting(
                    self.time_s, cfg["inference_latency_s"], cfg["inference_timeout_s"]
                )
                or self._waiting_for_controller()
            ):
                return
            dt = self._cfg["step_dt"]
            self._steps += 1
            self.time_s = self._steps * dt
            self._clock_pub.publish(Clock(clock=_stamp(self.time_s)))
            episode = self._episode
            if episode is None:
                return
            entered = episode.advance(self.time_s, cfg["settle_s"], cfg["command_timeout_s"])
            if entered is not None:
                self._publish_episode()
                self._set_instruction(episode.instruction if entered == "running" else "")
            self._publish_sensors(episode)

    def _publish_sensors(self, episode: Episode) -> None:
        t, world = self.time_s, episode.world
        if episode.robot.space.platform == "arm":
            self._publish_pose(world, t)
        else:
            self._publish_mobile(world, t)
        if t + 1e-9 >= self._next_camera and self._frames is not None:
            self._next_camera = t + 1.0 / self._cfg["camera_rate_hz"]
            self._frames.submit(world, world.snapshot(), t, self._cfg["camera_noise_std"])
            episode.count_frame()

    def _publish_pose(self, world: Any, t: float) -> None:
        (x, y, z), (qw, qx, qy, qz) = world.ee_pose()
        msg = PoseStamped()
        msg.header.stamp = _stamp(t)
        msg.header.frame_id = "base_link"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = x, y, z
        q = msg.pose.orientation
        q.w, q.x, q.y, q.z = qw, qx, qy, qz
        self._pose_pub.publish(msg)

    def _publish_mobile(self, world: Any, t: float) -> None:
        odom = world.odom()
        msg = Odometry()
        msg.header.stamp = _stamp(t)
        msg.header.frame_id = "odom"
        msg.child_frame_id = "base_link"
        x, y, yaw = odom.pose
        msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
        msg.pose.pose.orientation.z = math.sin(yaw / 2)
        msg.pose.pose.orientation.w = math.cos(yaw / 2)
        msg.twist.twist.linear.x, msg.twist.twist.linear.y = odom.twist[:2]
        msg.twist.twist.angular.z = odom.twist[2]
        self._odom_pub.publish(msg)
        if t + 1e-9 >= self._next_scan:
            self._next_scan = t + 1.0 / self._cfg["scan_rate_hz"]
            scan = world.scan()
            laser = LaserScan()
            laser.header.stamp = msg.header.stamp
            laser.header.frame_id = "base_link"
            laser.angle_min = scan.angle_min
            laser.angle_increment = scan.angle_increment
            laser.angle_max = scan.angle_min + scan.angle_increment * (len(scan.ranges) - 1)
            laser.scan_time = 1.0 / self._cfg["scan_rate_hz"]
            laser.range_min, laser.range_max = scan.range_min, scan.range_max
            laser.ranges = scan.ranges.tolist()
            self._scan_pub.publish(laser)

    @property
    def episode(self) -> Episode | None:
        """The episode the last reset started (None before the first)."""
        return self._episode

    @property
    def state(self) -> str:
        return self._episode.state if self._episode is not None else "idle"

    def destroy_node(self) -> None:
        """Stop the render worker (it closes its GL context) before the publishers go."""
        if self._frames is not None:
            self._frames.stop()
            self._frames = None
        super().destroy_node()


def main(args: Sequence[str] | None = None) -> int:
    """Console script `sim_node`."""
    return run_node(SimNode, args)

"""The arm7 MuJoCo world: our own 7-joint arm with a parallel gripper over a table with 2-3
coloured blocks, a wrist camera, reach and pick tasks. No ROS imports.

The policy sees through a camera on the hand, looking down past the fingers (the eye-in-hand
view of RoboVLMs' CALVIN gripper camera): reaching becomes centring the block between the
fingers, the block grows as the hand descends, and at 64 px it is 4 px at the start and ~12 px
at the goal. A fixed scene camera (still in the model: `Renderer(world, camera="scene")`)
made the policy find two small things, the hand and the block, and act on their difference;
it never learnt to (5 % reach).

Control is what MoveIt Servo does with a TwistStamped: each step the end-effector twist
(vx, vy, vz, wx, wy, wz in the base frame) becomes joint velocities through a damped
least-squares Jacobian step, dq = J^T (J J^T + lambda^2 I)^-1 twist, integrated and clamped to
the joint limits. The arm is kinematic (joint positions are set, MuJoCo computes the geometry and
the contacts). Grasping is kinematic too, on purpose: when the gripper closes with the target
between its fingers, the block is attached to the hand until the gripper opens (no friction
tuning, deterministic). Blocks are mocap bodies, so a new episode only moves them.

Success rules: reach = the pinch point within `goal_tolerance_m` of the point just above the
target block; pick = the target block held and lifted 8 cm. Collision = any contact of the arm
with the table or with a block that is not the target. Compliance = the block reached or grasped
is the instructed one (a wrong block ends the episode as `wrong_block`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_ros.sim.rules import EpisodeOutcome
from vla_ros.sim.scenario import BLOCK_COLOURS, BLOCK_SIZE_M, Layout, Scenario, sample_layout
from vla_ros.sim.world import load_mujoco

ARM_PHYSICS_DT_S = 0.01
JOINTS = 7
LIFT_M = 0.08
REACH_ABOVE_M = 0.03
"""Reach target: this far above the block's top face (the pinch point hovering over it)."""
FINGER_OPEN_M = 0.035
GRASP_RADIUS_M = 0.018
HOME_EE = (0.35, 0.0, 0.3)
APPROACH_HEIGHT_M = 0.1
APPROACH_SLOPE = 3.0
"""The expert's approach is a funnel: the goal height over the final point is this times the
hand's horizontal distance from the block (at most APPROACH_HEIGHT_M), so it descends only as
it centres and its command is a function of the pose alone, with no hidden phase to guess."""
NOISE_OFF_AXIS_M = 0.03
"""Demonstration noise stops this close (horizontally) to the block: the last cm stay clean."""


def down_error(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector turning the hand's z axis onto world -z and its y axis onto world y."""
    z_err = np.cross(rotation[:, 2], np.array([0.0, 0.0, -1.0]))
    y_err = np.cross(rotation[:, 1], np.array([0.0, 1.0, 0.0]))
    return z_err + 0.5 * y_err


def _arm_mjcf(scenario: Scenario, image_size: int) -> str:
    half = BLOCK_SIZE_M / 2
    blocks = "\n".join(
        f'<body name="block_{c}" mocap="true" pos="0 0 {half}"><geom name="block_{c}" '
        f'type="box" size="{half} {half} {half}" contype="2" conaffinity="1" '
        f'rgba="{" ".join(str(v) for v in BLOCK_COLOURS[c])} 1"/></body>'
        for c in scenario.blocks
    )
    link = 'contype="1" conaffinity="2" rgba="0.8 0.8 0.82 1"'
    return f"""
<mujoco model="vla_ros_arm7">
  <compiler angle="radian" boundmass="0.01" boundinertia="0.0001"/>
  <option timestep="{ARM_PHYSICS_DT_S}" gravity="0 0 0"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{max(image_size, 64)}" offheight="{max(image_size, 64)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light directional="true" castshadow="false" pos="0 0 3" dir="0.2 0.1 -1"
           diffuse="0.6 0.6 0.6" specular="0 0 0"/>
    <geom name="table" type="box" pos="0.4 0 -0.02" size="0.5 0.6 0.02" contype="2"
          conaffinity="1" rgba="0.55 0.42 0.3 1"/>
    <camera name="scene" pos="0.9 0 0.75" xyaxes="0 1 0 -0.759 0 0.651" fovy="38"/>
    <body name="link0">
      <geom type="cylinder" size="0.06 0.05" pos="0 0 0.05" contype="0" conaffinity="0"
            rgba="0.3 0.3 0.35 1"/>
      <body name="link1" pos="0 0 0.1">
        <joint name="j1" axis="0 0 1" range="-2.9 2.9"/>
        <body name="link2" pos="0 0 0.08">
          <joint name="j2" axis="0 1 0" range="-1.9 1.9"/>
          <geom type="capsule" fromto="0 0 0.04 0 0 0.3" size="0.035" {link}/>
          <body name="link3" pos="0 0 0.3">
            <joint name="j3" axis="0 0 1" range="-2.9 2.9"/>
            <body name="link4">
              <joint name="j4" axis="0 1 0" range="-2.6 2.6"/>
              <geom type="capsule" fromto="0 0 0.04 0 0 0.28" size="0.03" {link}/>
              <body name="link5" pos="0 0 0.28">
                <joint name="j5" axis="0 0 1" range="-2.9 2.9"/>
                <body name="link6">
                  <joint name="j6" axis="0 1 0" range="-2.2 2.2"/>
                  <body name="link7" pos="0 0 0.04">
                    <joint name="j7" axis="0 0 1" range="-2.9 2.9"/>
                    <geom name="palm" type="box" size="0.02 0.05 0.015" pos="0 0 0.03" {link}/>
                    <site name="ee" pos="0 0 0.1" size="0.006"/>
                    <camera name="wrist" pos="0.06 0 0.03" xyaxes="0 1 0 0.866 0 0.5" fovy="75"/>
                    <body name="finger_l" pos="0 {FINGER_OPEN_M} 0.08">
                      <joint name="finger_l" type="slide" axis="0 1 0" range="-0.04 0.01"/>
                      <geom name="finger_l" type="box" size="0.008 0.004 0.035" {link}/>
                    </body>
                    <body name="finger_r" pos="0 -{FINGER_OPEN_M} 0.08">
                      <joint name="finger_r" type="slide" axis="0 -1 0" range="-0.04 0.01"/>
                      <geom name="finger_r" type="box" size="0.008 0.004 0.035" {link}/>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    {blocks}
  </worldbody>
</mujoco>"""


@dataclass
class ArmResult(EpisodeOutcome):
    """One arm episode; `outcome`: running | success | collision | timeout | wrong_block."""

    compliant: bool = True
    grasped: str | None = None


@dataclass(frozen=True)
class ArmLimits:
    """What the arm does with a twist: DLS damping, per-step joint speed bound (rad/s)."""

    damping: float = 0.05
    max_joint_speed: float = 2.0
    finger_speed: float = 0.1


@dataclass
class _Hold:
    colour: str
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))


class ArmWorld:
    """One arm scenario; `reset(seed)`, `step((twist6, gripper))`, sensors, `result`."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        dt: float = 0.02,
        image_size: int = 224,
        limits: ArmLimits | None = None,
    ) -> None:
        mujoco = load_mujoco()
        if scenario.robot != "arm7":
            raise ValueError(f"{scenario.source}: robot {scenario.robot!r} is not arm7")
        self.scenario = scenario
        self.dt = dt
        self.image_size = image_size
        self.cheap_lighting = True
        self.camera = "wrist"
        self.limits = limits or ArmLimits()
        self.model = mujoco.MjModel.from_xml_string(_arm_mjcf(scenario, image_size))
        self.data = mujoco.MjData(self.model)
        self._ee = self.model.site("ee").id
        self._arm_dofs = np.arange(JOINTS)
        self._low = self.model.jnt_range[:JOINTS, 0].copy()
        self._high = self.model.jnt_range[:JOINTS, 1].copy()
        self._fingers = [
            self.model.joint("finger_l").qposadr[0],
            self.model.joint("finger_r").qposadr[0],
        ]
        self._mocap = {
            c: self.model.body_mocapid[self.model.body(f"block_{c}").id] for c in scenario.blocks
        }
        self._robot_geoms = {g for g in range(self.model.ngeom) if self.model.geom_contype[g] == 1}
        self._table = self.model.geom("table").id
        self._block_geoms = {self.model.geom(f"block_{c}").id: c for c in scenario.blocks}
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._gripper = 1.0
        self._hold: _Hold | None = None
        self.layout: Layout | None = None
        self._result: ArmResult | None = None
        self._last_ee: np.ndarray | None = None
        self._lifted_from = 0.0
        self.time_s = 0.0
        self.trajectory: list[tuple[float, float]] = []

    # ------------------------------------------------------------------ geometry
    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._ee].copy()

    def ee_pose(self) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
        """Pinch point position and orientation (w, x, y, z) in the base frame."""
        mujoco = load_mujoco()
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._ee])
        return tuple(self.ee_position()), tuple(quat)  # type: ignore[return-value]

    def ee_rotation(self) -> np.ndarray:
        return self.data.site_xmat[self._ee].reshape(3, 3).copy()

    def block_position(self, colour: str) -> np.ndarray:
        return self.data.mocap_pos[self._mocap[colour]].copy()

    def target_point(self) -> np.ndarray:
        """Where the pinch point has to be: over the target (reach) or at its centre (pick)."""
        block = self.block_position(self.scenario.target)
        if self.scenario.task == "reach":
            return block + np.array([0.0, 0.0, BLOCK_SIZE_M / 2 + REACH_ABOVE_M])
        return block

    def _jacobian(self) -> np.ndarray:
        mujoco = load_mujoco()
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._ee)
        return np.vstack([self._jacp[:, :JOINTS], self._jacr[:, :JOINTS]])

    def _servo(self, twist: np.ndarray) -> None:
        """One damped least-squares step of the joints towards `twist` for dt."""
        jac = self._jacobian()
        lam2 = self.limits.damping**2
        dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), twist)
        dq = np.clip(dq, -self.limits.max_joint_speed, self.limits.max_joint_speed)
        q = self.data.qpos[:JOINTS] + dq * self.dt
        self.data.qpos[:JOINTS] = np.clip(q, self._low, self._high)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> Layout:
        """Blocks for `seed`, the arm at its home pose (pointing down over the table), open."""
        mujoco = load_mujoco()
        layout = sample_layout(self.scenario, seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:JOINTS] = (0.0, 0.5, 0.0, 1.7, 0.0, 0.95, 0.0)
        for colour, x, y in layout.blocks:
            self.data.mocap_pos[self._mocap[colour]] = (x, y, BLOCK_SIZE_M / 2)
        mujoco.mj_forward(self.model, self.data)
        home = np.array(HOME_EE)
        for _ in range(200):
            error = np.concatenate(
                [(home - self.ee_position()) * 5.0, down_error(self.ee_rotation()) * 5.0]
            )
            self._servo(error)
            mujoco.mj_forward(self.model, self.data)
        self._gripper = 1.0
        self._set_fingers(FINGER_OPEN_M)
        mujoco.mj_forward(self.model, self.data)
        self._hold = None
        self.layout = layout
        self.time_s = 0.0
        start = self.ee_position()
        target = self.target_point()
        shortest = float(np.linalg.norm(target - start))
        if self.scenario.task == "pick":
            shortest += LIFT_M
        self._result = ArmResult(self.scenario.name, seed, shortest_m=shortest)
        self._last_ee = start
        self.trajectory = [(float(start[0]), float(start[1]))]
        self._result.final_distance_m = float(np.linalg.norm(target - start))
        return layout

    @property
    def result(self) -> ArmResult:
        if self._result is None:
            raise RuntimeError("reset the world before reading the episode result")
        return self._result

    def _set_fingers(self, opening: float) -> None:
        for address in self._fingers:
            self.data.qpos[address] = opening - FINGER_OPEN_M

    def _opening(self) -> float:
        return float(self.data.qpos[self._fingers[0]]) + FINGER_OPEN_M

    def step(self, command: tuple[Any, float | None]) -> ArmResult:
        """Apply (twist6, gripper) for dt; gripper 1 = open, 0 = closed, None = keep."""
        mujoco = load_mujoco()
        result = self.result
        twist = np.asarray(command[0], dtype=float).reshape(6)
        gripper = command[1]
        if not np.all(np.isfinite(twist)) or result.done:
            twist = np.zeros(6)
        if gripper is not None and math.isfinite(gripper) and not result.done:
            self._gripper = float(np.clip(gripper, 0.0, 1.0))
        self._servo(twist)
        wanted = FINGER_OPEN_M if self._gripper >= 0.5 else 0.0
        if self._hold is not None and self._gripper < 0.5:
            wanted = BLOCK_SIZE_M / 2
        change = np.clip(
            wanted - self._opening(),
            -self.limits.finger_speed * self.dt,
            self.limits.finger_speed * self.dt,
        )
        self._set_fingers(self._opening() + change)
        mujoco.mj_forward(self.model, self.data)
        self._update_grasp()
        mujoco.mj_forward(self.model, self.data)
        self.time_s += self.dt
        self._score()
        return result

    def _update_grasp(self) -> None:
        ee = self.ee_position()
        if self._hold is not None:
            if self._gripper >= 0.5:
                position = self.block_position(self._hold.colour)
                position[2] = BLOCK_SIZE_M / 2
                self.data.mocap_pos[self._mocap[self._hold.colour]] = position
                self._hold = None
            else:
                self.data.mocap_pos[self._mocap[self._hold.colour]] = ee + self._hold.offset
            return
        if self._gripper >= 0.5 or self._opening() > BLOCK_SIZE_M / 2 + 0.004:
            return
        for colour in self.scenario.blocks:
            offset = self.block_position(colour) - ee
            if np.linalg.norm(offset[:2]) < GRASP_RADIUS_M and abs(offset[2]) < GRASP_RADIUS_M:
                self._hold = _Hold(colour, offset)
                self._lifted_from = float(self.block_position(colour)[2])
                self.result.grasped = colour
                return

    def in_contact(self) -> bool:
        """Arm against the table, or against a block other than the target."""
        contacts = self.data.contact[: self.data.ncon]
        for g1, g2 in zip(contacts.geom1, contacts.geom2, strict=True):
            for robot, other in ((g1, g2), (g2, g1)):
                if robot not in self._robot_geoms:
                    continue
                if other == self._table:
                    return True
                colour = self._block_geoms.get(int(other))
                if colour is not None and colour != self.scenario.target:
                    return True
        return False

    def _score(self) -> None:
        result = self.result
        ee = self.ee_position()
        assert self._last_ee is not None
        result.path_length_m += float(np.linalg.norm(ee - self._last_ee))
        self._last_ee = ee
        self.trajectory.append((float(ee[0]), float(ee[1])))
        result.time_s = self.time_s
        target = self.target_point()
        result.final_distance_m = float(np.linalg.norm(target - ee))
        wrong = None
        if self.scenario.task == "reach":
            for colour in self.scenario.blocks:
                point = self.block_position(colour) + np.array(
                    [0, 0, BLOCK_SIZE_M / 2 + REACH_ABOVE_M]
                )
                if (
                    colour != self.scenario.target
                    and np.linalg.norm(point - ee) <= self.scenario.goal_tolerance_m
                ):
                    wrong = colour
            result.reached = bool(result.final_distance_m <= self.scenario.goal_tolerance_m)
        else:
            if result.grasped is not None and result.grasped != self.scenario.target:
                wrong = result.grasped
            held = self._hold is not None and self._hold.colour == self.scenario.target
            lifted = self.block_position(self.scenario.target)[2] - self._lifted_from
            result.reached = bool(held and lifted >= LIFT_M)
        if self.in_contact():
            result.collision = True
            result.finish("collision")
        elif wrong is not None:
            result.compliant = False
            result.finish("wrong_block")
        elif result.reached:
            result.finish("success")
        elif self.time_s >= self.scenario.time_limit_s:
            result.timeout = True
            result.finish("timeout")

    def abort(self) -> None:
        """End a running episode early (a reset mid-episode)."""
        if self._result is not None and not self._result.done:
            self.result.finish("aborted")

    def snapshot(self) -> np.ndarray:
        return np.concatenate(
            [self.data.qpos, self.data.mocap_pos.ravel(), self.data.mocap_quat.ravel()]
        )


class ArmExpert:
    """Scripted pick/reach: down a funnel onto the block (close, lift), the hand pointing down.

    Works from what a robot observes (the end-effector pose) plus the block placement of the
    episode, so the same script drives the world in process and the ROS expert node. A
    proportional controller on the pinch point (speed-limited inside config/arm.yaml's safety
    limits) and on the hand orientation; with `noise` the twist gets smooth random noise so
    demonstrations contain corrections, and `label` keeps the clean command for the same pose
    (what a policy should learn: the correction, not the noise). `target` overrides the
    instructed block (tests of the wrong-block rule).
    """

    def __init__(
        self,
        scenario: Scenario,
        layout: Layout,
        seed: int = 0,
        noise: float = 0.0,
        target: str | None = None,
    ) -> None:
        self.task = scenario.task
        self.target = target or scenario.target
        x, y = next((bx, by) for colour, bx, by in layout.blocks if colour == self.target)
        self.block = np.array([x, y, BLOCK_SIZE_M / 2])
        self.phase = "approach"
        self._wait_s = 0.0
        self._noise = noise
        self._rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xA27])
        self._ou = np.zeros(3)
        self.label: tuple[np.ndarray, float] = (np.zeros(6), 1.0)
        """The clean (twist6, gripper) for the latest pose: the training label under noise."""

    def command(self, ee: np.ndarray, rotation: np.ndarray, dt: float) -> tuple[np.ndarray, float]:
        """(twist6, gripper) for the hand at `ee` with orientation matrix `rotation` (3x3)."""
        block = self.block
        top = block[2] + BLOCK_SIZE_M / 2
        gripper = 1.0
        depth = REACH_ABOVE_M if self.task == "reach" else -BLOCK_SIZE_M / 2
        final = np.array([block[0], block[1], top + depth])
        off_axis = float(np.linalg.norm(block[:2] - ee[:2]))
        goal = final + np.array([0.0, 0.0, min(APPROACH_HEIGHT_M, APPROACH_SLOPE * off_axis)])
        if self.phase == "approach" and self.task == "pick" and np.linalg.norm(final - ee) < 0.004:
            self.phase = "close"
        if self.phase == "close":
            goal, gripper = ee, 0.0
            self._wait_s += dt
            if self._wait_s > 0.5:
                self.phase = "lift"
        if self.phase == "lift":
            goal, gripper = np.array([block[0], block[1], block[2] + 0.15]), 0.0
        linear = (goal - ee) * 3.0
        speed = float(np.linalg.norm(linear))
        if speed > 0.2:
            linear *= 0.2 / speed
        angular = np.clip(down_error(rotation) * 3.0, -0.7, 0.7)
        self.label = (np.concatenate([linear, angular]), gripper)
        if self._noise > 0.0 and self.phase == "approach" and off_axis > NOISE_OFF_AXIS_M:
            self._ou = 0.9 * self._ou + 0.1 * self._rng.standard_normal(3) * self._noise
            linear = linear + self._ou
        return np.concatenate([linear, angular]), gripper

"""The mobile3 MuJoCo world: a planar base among box obstacles, a cup, an egocentric camera and a
2-D lidar. No ROS imports; the sim node and the evaluation drive it.

The base has three joints (slide x, slide y, hinge yaw) with velocity actuators, so contact with
a box stops it physically; commands are body-frame (vx, vy, wz), clamped to the base's own limits
and rate-limited by its acceleration, as a real motor controller would. Boxes and the cup are
mocap bodies, so a new episode only moves them (no recompiling, the renderer is kept). Rendering
is the cheap kind on purpose: no shadows, no reflections, one directional light.
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_ros.sim.rules import EpisodeResult, MobileEpisode
from vla_ros.sim.scenario import CUP_RADIUS_M, ROBOT_RADIUS_M, Layout, Scenario, sample_layout

PHYSICS_DT_S = 0.005


@dataclass(frozen=True)
class BaseLimits:
    """What the base itself can do (the safety node's limits are tighter)."""

    max_velocity: tuple[float, float, float] = (0.8, 0.5, 2.0)
    max_accel: tuple[float, float, float] = (1.5, 1.5, 4.0)


@dataclass(frozen=True)
class Scan:
    """One lidar sweep: ranges (inf = no return) from angle_min in steps of angle_increment."""

    ranges: np.ndarray
    angle_min: float
    angle_increment: float
    range_min: float
    range_max: float


@dataclass(frozen=True)
class Odom:
    """Ground-truth pose (x, y, yaw) in the world and body-frame velocity (vx, vy, wz)."""

    pose: tuple[float, float, float]
    twist: tuple[float, float, float]


class RenderUnavailableError(RuntimeError):
    """Offscreen OpenGL could not start; the message says which MUJOCO_GL to try."""


GL_ADVICE = (
    "set MUJOCO_GL=egl (Mesa software EGL, headless) or MUJOCO_GL=osmesa "
    "(apt-get install libosmesa6)"
)


def default_gl_backend(environ: MutableMapping[str, str] = os.environ) -> None:
    """Headless machines get MUJOCO_GL=egl unless the user chose one: MuJoCo's own default
    (GLFW) needs a display, and without one it aborted the process (libc++abi, exit 134) instead
    of raising. Read by MuJoCo at import, so this runs before it."""
    if "MUJOCO_GL" not in environ and not (
        environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")
    ):
        environ["MUJOCO_GL"] = "egl"


def load_mujoco() -> Any:
    """`import mujoco`, turning its GL back-end failure (raised at import) into a clear error."""
    default_gl_backend()
    try:
        import mujoco
    except (ImportError, RuntimeError) as exc:
        backend = os.environ.get("MUJOCO_GL", "<unset>")
        raise RenderUnavailableError(
            f"cannot load MuJoCo with MUJOCO_GL={backend}: {exc}; {GL_ADVICE}"
        ) from exc
    return mujoco


def _mobile_mjcf(scenario: Scenario, image_size: int, cheap: bool = True) -> str:
    boxes = "\n".join(
        f'<body name="box{i}" mocap="true" pos="0 0 {b.size[2] / 2}">'
        f'<geom name="box{i}" type="box" size="{b.size[0] / 2} {b.size[1] / 2} {b.size[2] / 2}" '
        f'contype="2" conaffinity="1" group="1" rgba="0.72 0.52 0.3 1"/></body>'
        for i, b in enumerate(scenario.boxes)
    )
    return f"""
<mujoco model="vla_ros_mobile3">
  <option timestep="{PHYSICS_DT_S}" gravity="0 0 0" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="{0 if cheap else 4096}"/>
    <global offwidth="{max(image_size, 64)}" offheight="{max(image_size, 64)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" width="64" height="64"
             rgb1="0.62 0.62 0.6" rgb2="0.5 0.5 0.48"/>
    <material name="floor" texture="floor" texrepeat="12 12" reflectance="{0 if cheap else 0.2}"/>
  </asset>
  <worldbody>
    <light directional="true" castshadow="{str(not cheap).lower()}" pos="0 0 4" dir="0.3 0.2 -1"
           diffuse="0.6 0.6 0.6" specular="0 0 0"/>
    <geom name="floor" type="plane" size="8 8 0.1" material="floor" contype="0" conaffinity="0"/>
    <body name="base" pos="0 0 0.1">
      <joint name="x" type="slide" axis="1 0 0"/>
      <joint name="y" type="slide" axis="0 1 0"/>
      <joint name="yaw" type="hinge" axis="0 0 1"/>
      <geom name="chassis" type="cylinder" size="{ROBOT_RADIUS_M} 0.08" mass="12"
            contype="1" conaffinity="2" rgba="0.2 0.3 0.75 1"/>
      <geom name="nose" type="box" size="0.03 0.05 0.02" pos="0.15 0 0.09" mass="0.1"
            contype="0" conaffinity="0" rgba="0.9 0.9 0.9 1"/>
      <camera name="ego" pos="0.17 0 0.22" xyaxes="0 -1 0 0.35 0 1" fovy="75"/>
      <site name="lidar" pos="0 0 0.15" size="0.02"/>
    </body>
    {boxes}
    <body name="cup" mocap="true" pos="0 0 0.06">
      <geom name="cup" type="cylinder" size="{CUP_RADIUS_M} 0.06" contype="0" conaffinity="0"
            group="2" rgba="0.85 0.1 0.1 1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="x" kv="600" forcelimited="true" forcerange="-300 300"/>
    <velocity name="vy" joint="y" kv="600" forcelimited="true" forcerange="-300 300"/>
    <velocity name="wz" joint="yaw" kv="12" forcelimited="true" forcerange="-40 40"/>
  </actuator>
</mujoco>"""


class MobileWorld:
    """One scenario's world; `reset(seed)` starts an episode, `step(command)` advances `dt`.

    Not thread-safe: one thread steps; `snapshot()` hands (qpos) to a renderer elsewhere.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        dt: float = 0.02,
        image_size: int = 224,
        lidar_rays: int = 360,
        lidar_range: float = 8.0,
        limits: BaseLimits | None = None,
        cheap_lighting: bool = True,
    ) -> None:
        mujoco = load_mujoco()

        if scenario.robot != "mobile3":
            raise ValueError(f"{scenario.source}: robot {scenario.robot!r} is not mobile3")
        substeps = round(dt / PHYSICS_DT_S)
        if substeps < 1 or abs(substeps * PHYSICS_DT_S - dt) > 1e-9:
            raise ValueError(f"dt must be a multiple of {PHYSICS_DT_S} s, got {dt}")
        self.scenario = scenario
        self.dt = dt
        self.image_size = image_size
        self.cheap_lighting = cheap_lighting
        self.camera = "ego"
        self.limits = limits or BaseLimits()
        self._substeps = substeps
        self.model = mujoco.MjModel.from_xml_string(
            _mobile_mjcf(scenario, image_size, cheap_lighting)
        )
        self.data = mujoco.MjData(self.model)
        self._base = self.model.body("base").id
        self._chassis = self.model.geom("chassis").id
        self._boxes = {self.model.geom(f"box{i}").id for i in range(len(scenario.boxes))}
        self._box_mocap = [
            self.model.body_mocapid[self.model.body(f"box{i}").id]
            for i in range(len(scenario.boxes))
        ]
        self._cup_mocap = self.model.body_mocapid[self.model.body("cup").id]
        self._lidar_site = self.model.site("lidar").id
        angles = np.linspace(-math.pi, math.pi, lidar_rays, endpoint=False)
        self._ray_angles = angles
        self._lidar_range = lidar_range
        self._ray_geom = np.zeros(lidar_rays, dtype=np.int32)
        self._ray_dist = np.zeros(lidar_rays, dtype=np.float64)
        self._geomgroup = np.array([0, 1, 0, 0, 0, 0], dtype=np.uint8)
        self._target = np.zeros(3)
        self.layout: Layout | None = None
        self.episode: MobileEpisode | None = None
        self.time_s = 0.0

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> Layout:
        """Place the robot, boxes and cup for `seed`; the robot is at rest."""
        mujoco = load_mujoco()

        layout = sample_layout(self.scenario, seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:3] = layout.start
        for mocap, box in zip(self._box_mocap, layout.boxes, strict=True):
            self.data.mocap_pos[mocap] = (box.x, box.y, box.size[2] / 2)
            self.data.mocap_quat[mocap] = (math.cos(box.yaw / 2), 0, 0, math.sin(box.yaw / 2))
        self.data.mocap_pos[self._cup_mocap] = (*layout.cup, 0.06)
        mujoco.mj_forward(self.model, self.data)
        self._target[:] = 0.0
        self.layout = layout
        self.episode = MobileEpisode(self.scenario, layout)
        self.time_s = 0.0
        self.episode.update(0.0, *layout.start[:2], self.in_contact())
        return layout

    def abort(self) -> None:
        """End a running episode early (a reset mid-episode)."""
        if self.episode is not None:
            self.episode.abort()

    @property
    def trajectory(self) -> list[tuple[float, float]]:
        return self.episode.trajectory if self.episode is not None else []

    @property
    def result(self) -> EpisodeResult:
        if self.episode is None:
            raise RuntimeError("reset the world before reading the episode result")
        return self.episode.result

    # ------------------------------------------------------------------ stepping
    def step(self, command: tuple[float, float, float] | np.ndarray) -> EpisodeResult:
        """Apply a body-frame (vx, vy, wz) command for `dt`; returns the episode result so far.

        Non-finite commands count as zero. After the episode ended the robot is held still.
        """
        mujoco = load_mujoco()

        if self.episode is None:
            raise RuntimeError("reset the world before stepping it")
        wanted = np.asarray(command, dtype=float).reshape(3)
        if not np.all(np.isfinite(wanted)) or self.episode.result.done:
            wanted = np.zeros(3)
        limit = np.array(self.limits.max_velocity)
        wanted = np.clip(wanted, -limit, limit)
        max_change = np.array(self.limits.max_accel) * self.dt
        self._target += np.clip(wanted - self._target, -max_change, max_change)
        contact = False
        for _ in range(self._substeps):
            yaw = self.data.qpos[2]
            c, s = math.cos(yaw), math.sin(yaw)
            vx, vy, wz = self._target
            self.data.ctrl[:] = (c * vx - s * vy, s * vx + c * vy, wz)
            mujoco.mj_step(self.model, self.data)
            contact = contact or self.in_contact()
        self.time_s += self.dt
        x, y = self.data.qpos[:2]
        return self.episode.update(self.time_s, float(x), float(y), contact)

    def in_contact(self) -> bool:
        """Any contact between the chassis and a box right now."""
        contacts = self.data.contact[: self.data.ncon]
        for g1, g2 in zip(contacts.geom1, contacts.geom2, strict=True):
            if (g1 == self._chassis and g2 in self._boxes) or (
                g2 == self._chassis and g1 in self._boxes
            ):
                return True
        return False

    # ------------------------------------------------------------------ sensors
    def odom(self) -> Odom:
        x, y, yaw = (float(v) for v in self.data.qpos[:3])
        wx, wy, wz = (float(v) for v in self.data.qvel[:3])
        c, s = math.cos(yaw), math.sin(yaw)
        return Odom((x, y, yaw), (c * wx + s * wy, -s * wx + c * wy, wz))

    def scan(self) -> Scan:
        """A horizontal ray fan from the lidar site over boxes (mj_multiRay), base frame angles."""
        mujoco = load_mujoco()

        yaw = float(self.data.qpos[2])
        world = self._ray_angles + yaw
        vec = np.stack([np.cos(world), np.sin(world), np.zeros_like(world)], axis=1).ravel()
        origin = self.data.site_xpos[self._lidar_site].copy()
        mujoco.mj_multiRay(
            self.model,
            self.data,
            origin,
            vec,
            self._geomgroup,
            1,
            self._base,
            self._ray_geom,
            self._ray_dist,
            None,
            len(self._ray_angles),
            self._lidar_range,
        )
        ranges = np.where(self._ray_geom >= 0, self._ray_dist, np.inf).astype(np.float32)
        increment = float(self._ray_angles[1] - self._ray_angles[0])
        return Scan(ranges, float(self._ray_angles[0]), increment, 0.05, self._lidar_range)

    def snapshot(self) -> np.ndarray:
        """What a renderer needs to draw the current state (copied, safe to hand to a thread)."""
        return np.concatenate(
            [self.data.qpos, self.data.mocap_pos.ravel(), self.data.mocap_quat.ravel()]
        )


class Renderer:
    """RGB frames of a world's camera (mobile: egocentric, arm: wrist) from `snapshot()`s, on
    its own MjData, so a worker thread can render while the owner keeps stepping. Close it
    explicitly (MuJoCo's GL context otherwise fails at interpreter exit)."""

    def __init__(self, world: Any, camera: str | None = None) -> None:
        mujoco = load_mujoco()

        self._model = world.model
        self._data = mujoco.MjData(world.model)
        self._camera = camera or world.camera
        try:
            self._renderer = mujoco.Renderer(world.model, world.image_size, world.image_size)
        except Exception as exc:  # MuJoCo raises several types when no GL context can be made
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise RenderUnavailableError(
                f"offscreen rendering failed with MUJOCO_GL={backend}: {exc}; {GL_ADVICE}"
            ) from exc
        if world.cheap_lighting:
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0

    def render(self, snapshot: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the state in `snapshot`."""
        mujoco = load_mujoco()

        nq, nmocap = self._model.nq, self._model.nmocap
        self._data.qpos[:] = snapshot[:nq]
        self._data.mocap_pos[:] = snapshot[nq : nq + 3 * nmocap].reshape(nmocap, 3)
        self._data.mocap_quat[:] = snapshot[nq + 3 * nmocap :].reshape(nmocap, 4)
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)
        self._renderer.update_scene(self._data, camera=self._camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None  # type: ignore[assignment]

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SENSOR_NOISE_STD = 1.0
"""Grey levels; a live camera's noise is of this order."""


def sensor_noise(rgb: np.ndarray, seed: int, std: float = SENSOR_NOISE_STD) -> np.ndarray:
    """`rgb` with a live camera's Gaussian noise, seeded so that a lockstep run repeats. A
    renderer gives a still robot byte-identical frames, which the inference node rightly takes
    for a frozen camera; a real sensor never does."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(rgb.shape, dtype=np.float32) * std
    return np.clip(rgb + np.rint(noise), 0, 255).astype(np.uint8)

"""The demo's camera-view animation: the path lands where the camera sees it, stays on the floor
while the robot drives, and the GIF keeps under its size limit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.sim import animation

os.environ.setdefault("MUJOCO_GL", "egl")

finite = st.floats(-5.0, 5.0, allow_nan=False)
angles = st.floats(-math.pi, math.pi, allow_nan=False)


def mobile_camera() -> tuple[animation.PinholeCamera, float]:
    from vla_ros.sim.scenario import resolve_scenarios

    return animation.mobile_camera(resolve_scenarios("1box_vert_left")[0], 224)


def test_a_point_on_the_optical_axis_lands_in_the_middle_and_one_behind_is_hidden():
    camera, floor_z = mobile_camera()
    assert floor_z < 0
    ahead = camera.position - 2.0 * camera.rotation[:, 2]
    behind = camera.position + 2.0 * camera.rotation[:, 2]
    pixels, in_front = camera.project(np.stack([ahead, behind]))
    np.testing.assert_allclose(pixels[0], [112.0, 112.0], atol=1e-6)
    assert in_front.tolist() == [True, False]


def test_nearer_floor_is_lower_in_the_image_and_left_is_left():
    camera, floor_z = mobile_camera()
    pixels, in_front = camera.project(
        animation.floor_points(np.array([[3.0, 0.0], [3.0, 0.5], [3.0, -0.5], [1.5, 0.0]]), floor_z)
    )
    assert in_front.all()
    assert pixels[3, 1] > pixels[0, 1]
    assert pixels[1, 0] < pixels[0, 0] < pixels[2, 0]


@given(finite, finite, angles, finite, finite, angles)
def test_rebase_keeps_a_path_fixed_on_the_floor(x0, y0, yaw0, x1, y1, yaw1):
    path = np.array([[0.0, 0.0], [0.5, 0.1], [1.0, -0.3]])
    then, now = (x0, y0, yaw0), (x1, y1, yaw1)
    np.testing.assert_allclose(animation.rebase(path, then, then), path, atol=1e-9)
    there_and_back = animation.rebase(animation.rebase(path, then, now), now, then)
    np.testing.assert_allclose(there_and_back, path, atol=1e-9)


def test_rebase_after_driving_forward_moves_the_path_back():
    path = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(animation.rebase(path, (0, 0, 0), (0.4, 0, 0)), [[0.6, 0.0]])
    np.testing.assert_allclose(
        animation.rebase(path, (0, 0, 0), (0, 0, math.pi / 2)), [[0.0, -1.0]], atol=1e-12
    )


def test_pose_at_takes_the_newest_pose_not_after_the_time():
    poses = [(10, (0.0, 0.0, 0.0)), (20, (1.0, 0.0, 0.0))]
    assert animation.pose_at(poses, 5) is None
    assert animation.pose_at(poses, 10) == (0.0, 0.0, 0.0)
    assert animation.pose_at(poses, 19) == (0.0, 0.0, 0.0)
    assert animation.pose_at(poses, 25) == (1.0, 0.0, 0.0)


def test_the_gif_drops_frames_until_it_fits(tmp_path: Path):
    camera, floor_z = mobile_camera()
    rng = np.random.default_rng(0)
    path = np.array([[0.0, 0.0], [1.0, 0.1], [2.0, 0.3]])
    frames = [
        animation.draw_frame(
            rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "go left", path, camera, floor_z
        )
        for _ in range(8)
    ]
    whole = animation.write_gif(frames, tmp_path / "whole.gif", fps=10.0)
    limit = whole.stat().st_size // 2
    small = animation.write_gif(frames, tmp_path / "small.gif", fps=10.0, max_bytes=limit)
    assert small.stat().st_size <= limit
    from PIL import Image

    assert Image.open(small).n_frames < Image.open(whole).n_frames == 8
    assert animation.wrap("word " * 40, 20).count("\n") == 1

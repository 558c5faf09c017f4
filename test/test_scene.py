"""Scene-change score: 0 for the same view, bounded, monotone, robust to noise, keyframe ring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.core.scene import SceneChangeDetector

SETTINGS = settings(max_examples=60, deadline=None)

frames = st.builds(
    lambda seed, h, w: np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8),
    st.integers(0, 2**32 - 1),
    st.integers(1, 80),
    st.integers(1, 80),
)


def scored_against(reference: np.ndarray, frame: np.ndarray, **kwargs) -> float:
    detector = SceneChangeDetector(**kwargs)
    detector.update(reference, 1)
    assert detector.set_reference(1)
    return detector.update(frame, 2)


def blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return np.rint(a * (1.0 - t) + b.astype(np.float64) * t).astype(np.uint8)


@SETTINGS
@given(frame=frames, thumbnail=st.integers(2, 48))
def test_identical_frame_scores_zero(frame, thumbnail):
    assert scored_against(frame, frame.copy(), thumbnail_size=thumbnail) == 0.0


@SETTINGS
@given(a=frames, seed=st.integers(0, 2**32 - 1), floor=st.floats(0.0, 50.0))
def test_score_is_always_in_unit_interval(a, seed, floor):
    b = np.random.default_rng(seed).integers(0, 256, a.shape, dtype=np.uint8)
    assert 0.0 <= scored_against(a, b, noise_floor=floor) <= 1.0


def test_full_inversion_scores_one():
    black = np.zeros((40, 40, 3), np.uint8)
    assert scored_against(black, np.full_like(black, 255)) == pytest.approx(1.0)


@SETTINGS
@given(
    seeds=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    t1=st.floats(0.0, 0.9),
    gap=st.floats(0.1, 1.0),
)
def test_larger_change_gives_larger_score(seeds, t1, gap):
    """Moving further along a blend towards a different view never lowers the score."""
    a, b = (np.random.default_rng(s).integers(0, 256, (48, 64, 3), dtype=np.uint8) for s in seeds)
    t2 = min(1.0, t1 + gap)
    near, far = scored_against(a, blend(a, b, t1)), scored_against(a, blend(a, b, t2))
    assert far >= near - 1e-3


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(8, 56))
def test_larger_changed_region_gives_larger_score(seed, side):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small, large = base.copy(), base.copy()
    small[:side, :side] = 255 - base[:side, :side]
    large[: side + 8, : side + 8] = 255 - base[: side + 8, : side + 8]
    assert scored_against(base, large) >= scored_against(base, small)


def test_sensor_noise_is_ignored_but_a_moved_object_is_not():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224]
    scene = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.float64)
    noisy = np.clip(scene + rng.normal(0.0, 4.0, scene.shape), 0, 255).astype(np.uint8)
    clean = scene.astype(np.uint8)

    moved = clean.copy()
    moved[60:120, 60:120] = (200, 30, 30)  # a red object covering 7 % of the view

    noise_score = scored_against(clean, noisy)
    change_score = scored_against(clean, moved)
    assert noise_score < 0.002
    assert change_score > 0.01
    assert change_score > 10 * noise_score


def test_no_reference_scores_one_until_a_keyframe_is_set():
    detector = SceneChangeDetector()
    frame = np.zeros((16, 16, 3), np.uint8)
    assert detector.reference_stamp_ns is None
    assert detector.update(frame, 10) == 1.0
    assert detector.update(frame, 11) == 1.0
    assert detector.set_reference(10)
    assert detector.reference_stamp_ns == 10
    assert detector.update(frame, 12) == 0.0


def test_reference_is_the_frame_with_that_stamp_not_the_newest():
    detector = SceneChangeDetector()
    dark, bright = np.full((16, 16, 3), 20, np.uint8), np.full((16, 16, 3), 220, np.uint8)
    detector.update(dark, 100)
    detector.update(bright, 200)
    assert detector.set_reference(100)
    assert detector.update(dark, 300) == 0.0
    assert detector.update(bright, 400) > 0.5


def test_forgotten_stamp_falls_back_to_the_newest_frame():
    detector = SceneChangeDetector(history=3)
    frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)]
    for stamp, frame in enumerate(frames):
        detector.update(frame, stamp)
    assert not detector.set_reference(0), "stamp 0 left the 3-frame ring"
    assert detector.reference_stamp_ns == 4
    assert detector.update(frames[4], 5) == 0.0


def test_set_reference_without_frames_keeps_scoring_one():
    detector = SceneChangeDetector()
    assert not detector.set_reference(5)
    assert detector.reference_stamp_ns is None
    assert detector.update(np.zeros((4, 4, 3), np.uint8), 6) == 1.0


def test_repeated_stamp_replaces_the_remembered_frame():
    detector = SceneChangeDetector()
    detector.update(np.zeros((8, 8, 3), np.uint8), 7)
    detector.update(np.full((8, 8, 3), 255, np.uint8), 7)
    detector.set_reference(7)
    assert detector.update(np.full((8, 8, 3), 255, np.uint8), 8) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thumbnail_size": 1},
        {"thumbnail_size": True},
        {"history": 0},
        {"noise_floor": 255.0},
        {"noise_floor": -1.0},
    ],
)
def test_bad_construction_is_refused(kwargs):
    with pytest.raises(ValueError):
        SceneChangeDetector(**kwargs)


@pytest.mark.parametrize(
    "frame",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_bad_frames_are_refused(frame):
    with pytest.raises(ValueError):
        SceneChangeDetector().update(frame, 0)

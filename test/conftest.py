"""Shared fixtures. DDS traffic is isolated per test session so parallel runs never cross-talk."""

from __future__ import annotations

import faulthandler
import gc
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Before rclpy is imported anywhere: a private DDS domain on loopback only.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Timing-free property tests: a loaded 2-core CI machine must not turn a slow example into a
# failure. CI replays a fixed set of examples so a red run is reproducible; developers explore.
settings.register_profile(
    "vla_ros",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
    print_blob=True,
)
settings.load_profile("vla_ros")

# A deadlock inside native code (Fast DDS, rcl) holds the GIL, so pytest-timeout's alarm never
# runs and the whole CI job would stall. faulthandler's C watchdog needs no GIL: it prints every
# thread's stack and ends the run well before CI's own limit.
NATIVE_HANG_S = 480


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Each test's rclpy graph (nodes, clocks, the context and its DDS participant) sits in
    reference cycles; collect it here, at the end of the test that built it, rather than inside
    whatever later test happens to trigger the collector (ros2/rclpy#456: Fast DDS is sensitive
    to entities finalized at arbitrary moments)."""
    faulthandler.dump_traceback_later(NATIVE_HANG_S, exit=True)
    try:
        yield
        gc.collect()
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A fresh rclpy context per test; nodes and executors must be created with `context=`."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@pytest.fixture
def spin_until() -> Callable[..., bool]:
    """Spin until `predicate()` holds or `timeout_sec` passes; returns the predicate."""
    import time

    def _spin(executor: object, predicate: Callable[[], bool], timeout_sec: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_sec
        while not predicate() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        return predicate()

    return _spin


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Model tests run on one torch thread: steadier on 2-core CI and leaves a core for DDS."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated tiny PaliGemma policy (mobile3), shared by the whole session."""
    from vla_ros.policy.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny_mobile3", "mobile3", seed=0)


@pytest.fixture(scope="session")
def tiny_arm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated tiny PaliGemma policy (arm7), shared by the whole session."""
    from vla_ros.policy.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny_arm7", "arm7", seed=1)

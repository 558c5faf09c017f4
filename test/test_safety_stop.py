"""Issue 9 item 1: Ctrl-C (SIGINT) and SIGTERM to a real `safety_node` / `vla-ros bringup` process
while commands flow leave zero as the last message on the robot output. A few repetitions here;
`test/bench/bench_stop.py --reps 20` is the long run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

_SPEC = importlib.util.spec_from_file_location(
    "bench_stop", Path(__file__).parent / "bench" / "bench_stop.py"
)
bench_stop = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("bench_stop", bench_stop)  # dataclasses look their module up
_SPEC.loader.exec_module(bench_stop)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("mode", ["mobile", "arm"])
def test_signalled_safety_node_leaves_zero_on_its_output(sig, mode):
    for _ in range(2 if mode == "mobile" else 1):
        outcome = bench_stop.trial("safety_node", sig, mode)
        assert outcome.moving_before_signal, outcome.detail
        assert outcome.last_zero, outcome.detail
        assert outcome.exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signalled_bringup_leaves_zero_on_cmd_vel(sig, tiny_model_dir):
    outcome = bench_stop.trial("bringup", sig, "mobile", str(tiny_model_dir))
    assert outcome.moving_before_signal, outcome.detail
    assert outcome.last_zero, outcome.detail
    assert outcome.exit_code == 0


@pytest.mark.slow
def test_bringup_with_sim_time_and_no_clock_still_stops_on_ctrl_c(tiny_model_dir):
    """No /clock at all: ROS-time timers never fire, the wall-time spin still sees the signal."""
    import signal
    import subprocess
    import threading
    import time

    argv = [*bench_stop._command("bringup", "mobile", str(tiny_model_dir)), "--use-sim-time"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120.0
        while not any("stack up" in line for line in lines) and time.monotonic() < deadline:
            assert process.poll() is None, "".join(lines)
            time.sleep(0.1)
        assert any("stack up" in line for line in lines), "".join(lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

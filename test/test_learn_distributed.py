"""Two trainer processes on CPU (gloo) through `accelerate launch`: one model, trained together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from learn_support import write_toy_bag
from vla_ros.learn.build import build_dataset
from vla_ros.learn.spec import DatasetSpec

pytestmark = pytest.mark.slow

ACCELERATE = Path(sys.executable).with_name("accelerate")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not ACCELERATE.is_file(), reason="accelerate launcher not installed")
def test_two_gloo_ranks_hold_identical_weights_and_reduce_the_loss(tmp_path):
    from vla_ros.policy.tiny import make_tiny_model

    init = make_tiny_model(tmp_path / "init", preset="learnable")
    episodes = [(side, 0.3, "en") for side in ("left", "right")] * 4
    bag = write_toy_bag(tmp_path / "bag", episodes=episodes, seconds=2.0, size=64)
    build_dataset([bag], tmp_path / "ds", DatasetSpec(image_size=64, val_fraction=0.25))
    out = tmp_path / "model"
    command = [
        str(ACCELERATE),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "vla_ros.cli",
        "train",
        "--dataset",
        str(tmp_path / "ds"),
        "--init",
        str(init),
        "--out",
        str(out),
        "--recipe",
        "head",
        "--max-steps",
        "12",
        "--max-minutes",  # never reached: the ranks still vote on the deadline at every step
        "30",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "training" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["rank_checksums"]) == 2
    assert summary["ranks_identical"]
    assert summary["samples"] == 12 * 8 * 2, "each step consumed one batch per rank"
    assert summary["final_train_loss"] < summary["initial_train_loss"]

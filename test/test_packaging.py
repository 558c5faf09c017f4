"""The package installs the way users get it: colcon (ament_python) and the `vla-ros` CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vla_ros.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ("camera_node", "inference_node", "safety_node", "vla-ros")


@pytest.mark.slow
def test_colcon_build_installs_executables_launch_and_config(tmp_path: Path):
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        colcon = Path(shutil.which("colcon") or "colcon")
    result = subprocess.run(
        [
            str(colcon),
            "build",
            "--base-paths",
            str(ROOT),
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(tmp_path / "install"),
            "--event-handlers",
            "console_direct-",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "install" / "vla_ros"
    for executable in EXECUTABLES:
        assert (prefix / "lib" / "vla_ros" / executable).is_file(), executable
    share = prefix / "share" / "vla_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "vla.launch.py").is_file()
    assert {p.name for p in (share / "config").glob("*.yaml")} >= {"mobile.yaml", "arm.yaml"}
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "vla_ros").is_file()


def test_cli_lists_every_command():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands >= {
        "make-tiny-model",
        "fetch-model",
        "import-robovlms",
        "policy-info",
        "bringup",
        "demo",
        "replay",
        "record",
        "bag",
    }


def test_cli_reports_a_missing_model_dir_as_an_error(tmp_path: Path, capsys):
    assert main(["bringup", "--model-dir", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_refuses_a_directory_without_a_model(tmp_path: Path, capsys):
    code = main(["demo", "--model-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "make-tiny-model" in capsys.readouterr().err


def test_pip_installs_executables_launch_and_config_into_the_prefix(tmp_path: Path):
    """A throwaway venv, so the project's own (editable) install is never touched."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (venv / "share" / "vla_ros" / "config" / "mobile.yaml").is_file()
    assert (venv / "share" / "vla_ros" / "launch" / "vla.launch.py").is_file()
    assert (venv / "bin" / "safety_node").is_file()


def test_default_parameter_files_resolve_without_a_ros_workspace(monkeypatch):
    from vla_ros.params import default_params_file

    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    for mode in ("mobile", "arm"):
        assert default_params_file(mode) == ROOT / "config" / f"{mode}.yaml"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_rerunning_setup_keeps_an_existing_model(tmp_path: Path):
    """A changed lock file or setup.py re-runs set-up; the generated model must not be made
    again (make-tiny-model refuses an existing directory, so `make demo` failed)."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "policy.yaml").write_text("generated: before set-up ran again\n")
    plan = subprocess.run(
        ["make", "-n", "-W", ".venv/.installed", f"MODEL_DIR={model}", f"{model}/policy.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "make-tiny-model" not in plan.stdout
    missing = tmp_path / "absent"
    plan = subprocess.run(
        ["make", "-n", f"MODEL_DIR={missing}", f"{missing}/policy.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"make-tiny-model {missing}" in plan.stdout

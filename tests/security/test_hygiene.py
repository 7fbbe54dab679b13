"""No secret, token or customer identity on a command line: any local user reads every process's argv
(/proc/<pid>/cmdline, `ps`), shells keep it in their history.

`tokenservice dev` starts OpenBao and the service and prints the commands a developer pastes; every process
it starts, and every command it tells the developer to run, must keep the root token and the signing
secret off argv. `verify`, `mint` and `fingerprint` take tokens and identities from stdin or a file.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.support import TOKENSERVICE, DevProcess, command_line, hs256_open, is_running, process_tree, wait_until

pytestmark = pytest.mark.integration

DEV_SECRET_PATH = "kustomer/chat"


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
    return subprocess.run([TOKENSERVICE, *args], capture_output=True, text=True, input=stdin, timeout=30, env=env)


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[DevProcess]:
    started = DevProcess.start(tmp_path_factory.mktemp("dev"))
    tree = process_tree(started.process.pid)
    try:
        run_directory = root_token_file(started).parent
        yield started
    finally:
        assert started.stop() == 0
    assert not any(is_running(pid) for pid in tree), "Ctrl-C left processes of dev running"
    assert not run_directory.exists(), "dev left its root token file behind"


def root_token_file(dev: DevProcess) -> Path:
    line = next((line for line in dev.banner() if "root token in" in line), None)
    assert line is not None, "the banner names no root token file:\n" + "\n".join(dev.banner())
    return Path(line.split("root token in", 1)[1].split()[0])


def vault(dev: DevProcess) -> hvac.Client:
    return hvac.Client(url=dev.banner_value("Vault:"), token=root_token_file(dev).read_text().strip(), timeout=5)


def signing_secret(dev: DevProcess) -> str:
    return vault(dev).secrets.kv.v2.read_secret_version(
        path=DEV_SECRET_PATH, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["secret"]


def test_no_process_dev_starts_has_the_root_token_or_the_secret_in_its_command_line(dev):
    token, secret = root_token_file(dev).read_text().strip(), signing_secret(dev)
    command_lines = [command_line(pid) for pid in process_tree(dev.process.pid)]
    assert any(" server -dev" in line for line in command_lines), command_lines
    assert any(" serve " in line for line in command_lines), command_lines
    for line in [command_line(dev.process.pid), *command_lines]:
        assert token not in line and secret not in line, f"a secret in the command line {line[:60]}…"


def test_the_banner_prints_neither_the_root_token_nor_the_secret_and_the_token_file_is_private(dev):
    token_file = root_token_file(dev)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    output = dev.output()
    assert token_file.read_text().strip() not in output and signing_secret(dev) not in output


def test_the_banner_prints_the_bound_ports_from_the_ports_file(dev):
    ports_file = Path(dev.banner_value("ports:"))
    announced = json.loads(ports_file.read_text())
    assert dev.banner_value("gRPC:") == f"127.0.0.1:{announced['grpc_port']}"
    assert dev.banner_value("metrics:") == f"http://127.0.0.1:{announced['metrics_port']}/metrics"
    assert announced["pid"] in process_tree(dev.process.pid)


def test_the_printed_rotation_keeps_the_secret_off_argv_and_rotates_it(dev):
    banner = dev.banner()
    start = next(n for n, line in enumerate(banner) if line.startswith("Rotate the secret"))
    commands = [line.strip() for line in banner[start + 1 : -1]]
    pipeline = commands[-1]
    assert pipeline.endswith(" secret=-") and "secret=$(" not in pipeline, pipeline
    token = root_token_file(dev).read_text().strip()
    assert not any(token in command for command in commands)
    before = signing_secret(dev)
    rotated = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(commands)], capture_output=True, text=True, timeout=30
    )
    assert rotated.returncode == 0, rotated.stderr
    secret = signing_secret(dev)
    assert secret != before and len(secret) >= 32 and secret.strip() == secret
    grpc_addr = dev.banner_value("gRPC:")

    def claims_signed_with_the_rotated_secret() -> dict | None:
        minted = run_cli("mint", "--addr", grpc_addr, "--email", "-", stdin="rotated@example.com\n")
        assert minted.returncode == 0, minted.stderr
        try:
            return hs256_open(minted.stdout.strip(), secret)[1]
        except AssertionError:  # still the old secret
            return None

    # The service picks the new version up within its 5 s refresh.
    claims = wait_until(
        claims_signed_with_the_rotated_secret,
        timeout=15,
        interval=0.5,
        message="the service picking up the rotated secret",
    )
    assert claims["email"] == "rotated@example.com"


def test_mint_and_verify_take_the_identity_and_the_token_from_stdin_or_a_file(dev, tmp_path):
    grpc_addr = dev.banner_value("gRPC:")
    email_file = tmp_path / "email"
    email_file.write_text("filed@example.com\n")
    by_stdin = run_cli("mint", "--addr", grpc_addr, "--email", "-", stdin="piped@example.com\n")
    by_file = run_cli("mint", "--addr", grpc_addr, "--email-file", str(email_file))
    by_id = run_cli("mint", "--addr", grpc_addr, "--external-id", "-", stdin="cust-42\n")
    for minted, claim, expected in (
        (by_stdin, "email", "piped@example.com"),
        (by_file, "email", "filed@example.com"),
        (by_id, "externalId", "cust-42"),
    ):
        assert minted.returncode == 0, minted.stderr
        assert hs256_open(minted.stdout.strip(), signing_secret(dev))[1][claim] == expected
    token_file = tmp_path / "token"
    token_file.write_text(by_file.stdout)
    from_file = run_cli("verify", "--addr", grpc_addr, "--token-file", str(token_file))
    from_stdin = run_cli("verify", "--addr", grpc_addr, "-", stdin=by_stdin.stdout)
    assert from_file.returncode == 0 and from_file.stdout.startswith("valid: Kustomer will use the email")
    assert from_stdin.returncode == 0 and from_stdin.stdout.startswith("valid: Kustomer will use the email")
    missing = run_cli("verify", "--addr", grpc_addr, "--token-file", str(tmp_path / "absent"))
    assert missing.returncode == 2 and f"--token-file {tmp_path / 'absent'}: cannot read" in missing.stderr
    neither = run_cli("verify", "--addr", grpc_addr)
    assert neither.returncode == 2 and "--token-file" in neither.stderr


def test_fingerprint_takes_the_identity_from_stdin_or_a_file(tmp_path):
    key_file = tmp_path / "fingerprint.key"
    # As the docs make one: base64 text and a newline (raw random bytes could begin or end with whitespace,
    # which is not part of the key).
    key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[audit]\nfingerprint_key_file = "{key_file}"\n[vault]\ntoken_file = "{key_file}"\n')
    identity_file = tmp_path / "identity"
    identity_file.write_text("who@example.com\n")
    in_argv = run_cli("fingerprint", "--config", str(config), "--email", "who@example.com")
    by_stdin = run_cli("fingerprint", "--config", str(config), "--email", "-", stdin="who@example.com\n")
    by_file = run_cli("fingerprint", "--config", str(config), "--email-file", str(identity_file))
    assert in_argv.returncode == 0, in_argv.stderr
    assert in_argv.stdout.startswith("email_fingerprint ") and by_stdin.stdout == by_file.stdout == in_argv.stdout
    external = run_cli("fingerprint", "--config", str(config), "--external-id-file", str(identity_file))
    assert (
        external.stdout.startswith("external_id_fingerprint ")
        and external.stdout.split()[1] != in_argv.stdout.split()[1]
    )
    empty = run_cli("fingerprint", "--config", str(config), "--email", "-", stdin="\n")
    assert empty.returncode == 2 and "--email: empty" in empty.stderr


def test_the_cli_refuses_endless_or_huge_input_by_name_without_reading_it_all(tmp_path):
    # No server is needed: each is refused before any call (the address is never dialled).
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)
    for args, stdin, problem in (
        (("verify", "--token-file", "/dev/zero"), None, "--token-file /dev/zero: cannot read (not a regular file)"),
        (("verify", "--token-file", str(fifo)), None, f"--token-file {fifo}: cannot read (not a regular file)"),
        (("verify", "-"), "x" * (2 << 20), "--token -: cannot read stdin (larger than 1,048,576 bytes)"),
        (("mint", "--email-file", "/dev/zero"), None, "--email-file /dev/zero: cannot read (not a regular file)"),
    ):
        refused = run_cli(*args, "--addr", "127.0.0.1:1", stdin=stdin)
        assert (refused.returncode, problem in refused.stderr) == (2, True), refused.stderr
        assert "Traceback" not in refused.stderr

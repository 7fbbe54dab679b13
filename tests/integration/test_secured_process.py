"""The real `tokenservice serve` with caller authentication, as production runs it:
the refusal to start without callers, TLS ports with two worker processes,
the CLI as a caller, and the audit trail and metrics across workers."""

from __future__ import annotations

import os
import subprocess
import urllib.request

import pytest

from tests.secured import start_secured_service
from tests.support import TOKENSERVICE, ServiceProcess, hs256_open, metric_value

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENSERVICE_", "VAULT_"))}
    return subprocess.run(
        [TOKENSERVICE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_to_start_without_callers_unless_told_so(openbao):
    env = {
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "TOKENSERVICE_GRPC_ADDR": "127.0.0.1:0",
        "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:0",
    }
    refused = run_cli("serve", env=env)
    assert refused.returncode == 2
    assert "no [callers.<name>] are configured" in refused.stderr and "--insecure-no-caller-auth" in refused.stderr


def test_serve_with_the_flag_warns_that_anyone_can_mint(openbao, secret_path):
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": secret_path,
            "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "",
        },
        ["--insecure-no-caller-auth"],
    )
    try:
        warnings = [r for r in service.log_records() if r.get("level") == "warning"]
        assert any("caller authentication is OFF" in r["message"] for r in warnings)
    finally:
        assert service.terminate() == 0


def test_two_workers_serve_mtls_and_api_key_callers_and_audit_and_count_them(openbao, tmp_path):
    service, files = start_secured_service(openbao, tmp_path, workers=2)
    try:
        by_certificate = [
            run_cli("mint", "--email", f"w{n}@example.com", env=files.client_env(service)) for n in range(6)
        ]
        by_key = [run_cli("mint", "--external-id", f"cust-{n}", env=files.api_key_env(service)) for n in range(5)]
        key_file = tmp_path / "api-key"
        key_file.write_text(files.api_key + "\n")
        by_key.append(
            run_cli(
                "mint",
                "--external-id",
                "cust-5",
                "--api-key-file",
                str(key_file),
                env={**files.api_key_env(service), "TOKENSERVICE_API_KEY": ""},
            )
        )
        key_without_tls = run_cli(
            "mint",
            "--external-id",
            "cust-6",
            env={"TOKENSERVICE_ADDR": service.grpc_target, "TOKENSERVICE_API_KEY": files.api_key},
        )
        missing_ca = run_cli(
            "mint",
            "--external-id",
            "cust-6",
            env={**files.api_key_env(service), "TOKENSERVICE_CA_FILE": str(tmp_path / "absent.pem")},
        )
        no_key = run_cli(
            "mint", "--email", "x@example.com", env={**files.api_key_env(service), "TOKENSERVICE_API_KEY": ""}
        )
        denied = run_cli("mint", "--external-id", "cust-1", env=files.client_env(service))
        metrics = urllib.request.urlopen(service.metrics_url, timeout=5).read().decode()
    finally:
        assert service.terminate() == 0
    for result in by_certificate + by_key:
        assert result.returncode == 0, result.stderr
        hs256_open(result.stdout.strip(), files.secret)
    assert no_key.returncode == 1 and "UNAUTHENTICATED [CREDENTIALS_MISSING]" in no_key.stderr
    assert key_without_tls.returncode == 2 and "api_key needs TLS" in key_without_tls.stderr
    assert files.api_key not in key_without_tls.stderr
    assert missing_ca.returncode == 2 and f"--ca-file {tmp_path / 'absent.pem'}: cannot read" in missing_ca.stderr
    assert denied.returncode == 1 and "PERMISSION_DENIED [IDENTITY_NOT_ALLOWED]" in denied.stderr
    assert (
        metric_value(metrics, "tokenservice_tokens_issued_total", org="acme", identity="email", caller="checkout") == 6
    )
    assert (
        metric_value(metrics, "tokenservice_tokens_issued_total", org="acme", identity="external_id", caller="reports")
        == 6
    )
    assert metric_value(metrics, "tokenservice_auth_failures_total", reason="CREDENTIALS_MISSING") == 1
    records = service.audit_records()
    fingerprint = run_cli(
        "fingerprint", "--config", str(files.config_file), "--email", "w0@example.com", env={"VAULT_TOKEN": "unused"}
    )
    assert fingerprint.returncode == 0, fingerprint.stderr
    assert sum(r["email_fingerprint"] == fingerprint.stdout.split()[1] for r in records) == 1
    assert [r["status"] for r in records].count("OK") == 12 and len(records) == 14
    assert {r["caller"] for r in records} == {"checkout", "reports", "unknown"}
    workers = [r for r in service.log_records() if r.get("message") == "worker listening"]
    assert len(workers) == 2 and all(w["tls"] == "mtls" for w in workers)

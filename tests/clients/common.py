"""Helpers for the client end-to-end tests: build a client program once,
run it against the live `tokenservice serve` process, show its output."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support import hs256_open

REPO = Path(__file__).resolve().parents[2]
# Build outputs of the client tests (.gitignored with the rest of .cache/).
BUILD_DIR = REPO / ".cache" / "clients-e2e"


def run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a build or test step; fail with its output if it exits non-zero."""
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} (in {cwd}) exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


LANGUAGES = ("go", "java", "python", "rust", "typescript")
CLIENTS = REPO / "clients"


@functools.cache
def e2e_program(lang: str) -> tuple[tuple[str, ...], Path]:
    """The command and working directory of `lang`'s client e2e program, built first (once per test run,
    with the client's examples). Cold builds download and compile grpc: minutes on 2 cores."""
    if lang == "go":
        binary = BUILD_DIR / "go-e2e"
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        run(["go", "build", "-o", str(binary), "."], cwd=REPO / "tests" / "clients" / "go", timeout=300)
        return (str(binary),), REPO
    if lang == "java":
        run([str(CLIENTS / "java" / "build.sh")], cwd=CLIENTS / "java", timeout=600)
        classpath = (CLIENTS / "java" / "target" / "classpath.txt").read_text().strip()
        return ("java", "-cp", classpath, "com.tokenservice.example.EndToEnd"), REPO
    if lang == "python":
        return (sys.executable, str(REPO / "tests" / "clients" / "python" / "e2e.py")), REPO
    if lang == "rust":
        rust = CLIENTS / "rust"
        run(["cargo", "build", "--locked", "--example", "e2e", "--example", "mint"], cwd=rust, timeout=840)
        return ("cargo", "run", "--locked", "--quiet", "--example", "e2e"), rust
    if lang == "typescript":
        typescript = CLIENTS / "typescript"
        if not (typescript / "node_modules").is_dir():
            run(["npm", "ci", "--no-audit", "--no-fund"], cwd=typescript, timeout=300)
        run(["npx", "--no-install", "tsc", "-p", "tsconfig.json"], cwd=typescript, timeout=300)
        return ("node", "dist/test/e2e.js"), typescript
    raise ValueError(f"no client e2e program for {lang!r}; the languages are {', '.join(LANGUAGES)}")


def run_e2e(lang: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `lang`'s e2e program (built if need be) with `env`; fail with its output if it exits non-zero."""
    command, cwd = e2e_program(lang)
    return run(list(command), cwd=cwd, env=env, timeout=timeout)


def client_env(live_service) -> dict[str, str]:
    """The environment a client program gets: where the server is, and the
    secret to verify tokens with. No OTEL_* variable: with them the e2e
    programs run their traced login instead (test_tracing_propagation.py)."""
    return {
        **without_otel(os.environ),
        "TOKENSERVICE_ADDR": live_service.grpc_target,
        "TOKENSERVICE_TEST_SECRET": live_service.secret,
    }


def without_otel(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` less the OpenTelemetry SDK's variables."""
    return {name: value for name, value in environ.items() if not name.startswith("OTEL_")}


def example(lang: str) -> str:
    """The path of a client's example.sh."""
    return str(REPO / "clients" / lang / "example.sh")


def assert_example_prints_a_verified_token(lang: str, live_service, email: str, timeout: float = 300) -> None:
    """example.sh prints one line, a token for `email` that verifies against the secret (stdlib HMAC)."""
    env = {**client_env(live_service), "PYTHON": sys.executable}
    result = run([example(lang), email], cwd=REPO, env=env, timeout=timeout)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2, result.stdout
    header, claims = hs256_open(token, live_service.secret)
    assert header == b'{"alg":"HS256","typ":"JWT"}'
    assert set(claims) == {"email", "iat"} and claims["email"] == email


def run_failing_example(
    lang: str, email: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """example.sh `email`, which must fail: a non-zero exit and nothing on stdout. Returns it for its stderr."""
    result = subprocess.run(
        [example(lang), email],
        cwd=REPO,
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0 and result.stdout == "", result
    return result


def assert_example_does_not_retry_invalid_argument(lang: str, live_service, timeout: float = 300) -> None:
    """example.sh with a bad email fails at once with EMAIL_INVALID on stderr and nothing on stdout."""
    result = run_failing_example(lang, "not-an-email", client_env(live_service), timeout)
    assert "EMAIL_INVALID" in result.stderr and "retrying" not in result.stderr, result.stderr


def assert_example_mints_over_mtls_and_with_an_api_key(lang: str, secured_live_service, timeout: float = 300) -> None:
    """example.sh with a client certificate (mTLS), then with server-only TLS and an API key: each prints a
    token that verifies; the audit trail names the caller each time."""
    service, files = secured_live_service
    for env, email, caller in [
        (files.client_env(service), f"{lang}-mtls@example.com", "checkout"),
        (files.api_key_env(service), f"{lang}-key@example.com", "reports"),
    ]:
        result = run(
            [example(lang), email], cwd=REPO, env={**os.environ, **env, "PYTHON": sys.executable}, timeout=timeout
        )
        _, claims = hs256_open(result.stdout.strip(), files.secret)
        assert claims["email"] == email
        assert files.api_key not in result.stdout + result.stderr
        callers = [r["caller"] for r in service.audit_records() if r["status"] == "OK"]
        assert callers[-1] == caller

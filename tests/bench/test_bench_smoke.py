"""Smoke test of tests/bench/run: the benchmark runs end to end and prints its
table. It checks that the benchmark works, not the figures it measures.

About 30 s once h2load, node_modules and the Go build are in place; the first
run on a fresh machine also installs them (apt-get, npm ci, go build).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "run"
ROWS = [
    "tokenservice MintToken",
    "tokenservice MintToken, tracing 100 %",
    "tokenservice MintToken, tracing 1 %",
    "tokenservice MintToken, TLS + API key",
    "tokenservice MintTokens x100",
    "tokenservice MintToken, 16 in flight",
    "tokenservice transit MintToken, 16 in flight",
    "tokenservice transit MintToken",
    "tokenservice transit MintTokens x100",
    "reference Express+jsonwebtoken",
    "reference Go grpc-go+golang-jwt",
    "tokenservice MintToken @~50% peak",
]


def table_rows(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells, strict=True))
        for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:])
    }


def number(cell: str) -> float:
    """The median of a 'median [min-max]' cell."""
    median = re.match(r"[\d,.]+", cell)
    assert median, f"no number at the start of {cell!r}"
    return float(median.group(0).replace(",", ""))


@pytest.mark.bench
@pytest.mark.timeout(900)  # a fresh machine installs h2load, Express and the Go modules first
def test_benchmark_prints_every_row_with_verified_tokens(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [
            str(RUN),
            "--duration",
            "1",
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--mints",
            "2000",
            "--startup-runs",
            "1",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=840,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"benchmark failed:\n{result.stdout}\n{result.stderr[-4000:]}"

    rows = table_rows(result.stdout)
    assert list(rows) == ROWS, result.stdout
    for name, row in rows.items():
        assert number(row["req/s"]) > 0, f"{name}: no rate\n{result.stdout}"
        assert number(row["tokens/s"]) > 0, f"{name}: no rate\n{result.stdout}"
        assert number(row["p99 ms"]) > 0, f"{name}: no latency\n{result.stdout}"
        assert row["failed"] == "0", f"{name}: failures\n{result.stdout}"
        assert row["token verified"] == "yes", f"{name}: token not verified\n{result.stdout}"
    for batch in ("tokenservice MintTokens x100", "tokenservice transit MintTokens x100"):
        assert number(rows[batch]["tokens/s"]) == pytest.approx(100 * number(rows[batch]["req/s"]), abs=51)
    assert "to health SERVING" in result.stdout and "after 2,000 mints" in result.stdout

    figures = json.loads(report.read_text())
    assert figures["problems"] == []
    assert [count for count, _ in figures["memory_kib"]] == [0, 200, 2000]
    assert 0 < figures["largest_process_kib"] <= figures["memory_kib"][-1][1]
    assert len(figures["ratios"]) == 5
    assert all(len(values) == 1 and values[0] > 0 for values in figures["ratios"].values())
    assert "req/s ratios, run by run: tokenservice MintToken / reference Express+jsonwebtoken: " in result.stdout
    assert all(0 < value[0] < 1 for value in figures["transit_hmac_requests_per_token"].values())

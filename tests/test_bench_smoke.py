"""The benchmark harness in its quick mode: it runs to the end and writes every row.

Only the shape of ``bench.json`` is checked; timings are the benchmark's business, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_KINDS = (
    "check_valid_{}",
    "check_unknown_{}",
    "check_last_use_{}",
    "issue_{}",
    "check_valid_{}_1m",
    "list_page_{}",
    "list_apps_page_{}",
    "list_installations_page_{}",
    "purge_{}",
)
ROW_FIELDS = {"name", "ours_per_s", "baseline_per_s", "ratio", "target", "met", "note"}


def run_quick(tmp_path: Path, *options: str) -> dict[str, Any]:
    """``python -m benchmarks --quick`` with ``options``; the JSON it wrote."""
    output = tmp_path / "bench.json"
    finished = subprocess.run(  # noqa: S603 - our own harness, arguments from the tests
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--output",
            str(output),
            "--workdir",
            str(tmp_path / "data"),
            "--let-cpus-idle",  # a test leaves the machine's settings alone
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert 0 == finished.returncode, finished.stderr
    document: dict[str, Any] = json.loads(output.read_text())
    return document


#: Rows of one backend only, after the row they follow.
EXTRA_ROWS = {
    "check_unknown_memory": ["check_asgi_memory"],
    "check_unknown_sqlite": ["check_cached_sqlite", "revocation_latency_sqlite"],
    "check_unknown_postgres": [
        "check_cached_postgres",
        "check_cached_postgres_mixed",
        "revocation_latency_postgres",
    ],
    "purge_postgres": ["purge_while_checking_postgres"],
}


def expected_rows(*backends: str) -> list[str]:
    names = [kind.format(backend) for backend in backends for kind in ROW_KINDS]
    return [extra for name in names for extra in [name, *EXTRA_ROWS.get(name, [])]]


def assert_well_formed(document: dict[str, Any], *backends: str) -> None:
    assert expected_rows(*backends) == [row["name"] for row in document["rows"]]
    for row in document["rows"]:
        assert ROW_FIELDS <= set(row), row["name"]
        assert row["ours_per_s"] > 0, row["name"]
        assert row["baseline_per_s"] > 0, row["name"]
        # The ratio is the quotient of the two rates, whatever they are. The rates are written
        # rounded to 0.1 and the ratio to 0.001, so allow what that rounding can move it by.
        ours, baseline = row["ours_per_s"], row["baseline_per_s"]
        expected = ours / baseline
        slack = 5e-4 + expected * (0.05 / ours + 0.05 / baseline)
        assert expected == pytest.approx(row["ratio"], abs=slack), row["name"]
        assert isinstance(row["met"], bool), row["name"]
    assert [] == document["failed"]
    assert document["quick"] is True
    assert document["cpus_kept_awake"] is False
    assert document["machine"]["nproc"] >= 1


class TestQuickRun:
    """``--quick`` finishes on every backend and writes a well-formed ``bench.json``."""

    def test_memory_and_sqlite(self, tmp_path: Path) -> None:
        document = run_quick(tmp_path, "--backends", "memory,sqlite")
        assert_well_formed(document, "memory", "sqlite")
        assert document["memory_bytes_per_token"] > 0
        assert document["sqlite_bytes_per_token"] > 0
        assert not (tmp_path / "data").exists()  # the SQLite file is removed

    def test_postgres(self, tmp_path: Path, postgres_url: str) -> None:
        document = run_quick(tmp_path, "--backends", "postgres", "--postgres-url", postgres_url)
        assert_well_formed(document, "postgres")
        assert [] == document["skipped"]

    def test_postgres_leaves_no_schema(self, tmp_path: Path, postgres_url: str) -> None:
        import psycopg

        def bench_schemas() -> set[str]:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT nspname FROM pg_catalog.pg_namespace "
                    "WHERE starts_with(nspname, 'appregistry_bench_')"
                ).fetchall()
            return {row[0] for row in rows}

        before = bench_schemas()
        run_quick(tmp_path, "--backends", "postgres", "--postgres-url", postgres_url)
        assert set() == bench_schemas() - before

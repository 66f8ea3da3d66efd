"""The HTTP rows of the benchmark, quickly: both servers come up, answer, and are cleaned up.

Only the shape of the rows is checked (timings are the benchmark's business), and that each
side really served: a row is made only after a grant and a protected GET succeeded by hand,
and wrk saw no failed request. Needs wrk, gunicorn and django-oauth-toolkit (``make
pytest`` installs them); skipped without them, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_FIELDS = {"name", "ours_per_s", "baseline_per_s", "ratio", "target", "met", "note"}
GRANT_EXTRAS = {
    "dot_hashed_per_s",
    "vs_dot_hashed",
    "dot_plain_per_s",
    "vs_dot_plain",
    "per_core",
    "keycloak_per_vcpu",
    "vs_keycloak",
}


def _problem() -> str | None:
    # What benchmarks._http.http_problem checks, without importing the harness here.
    if shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install wrk, or make wrk)"
    for module in ("gunicorn", "oauth2_provider", "django"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[bench]')"
    return None


@pytest.fixture(autouse=True)
def _tools() -> None:
    problem = _problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"{problem}; under CI=true the HTTP rows must run", pytrace=False)
    pytest.skip(problem)


def run_http(tmp_path: Path, *options: str) -> dict[str, Any]:
    """``python -m benchmarks --quick --http`` with ``options``; the JSON it wrote."""
    output = tmp_path / "bench.json"
    finished = subprocess.run(  # noqa: S603 - our own harness, arguments from the tests
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--http",
            "--let-cpus-idle",
            "--output",
            str(output),
            "--workdir",
            str(tmp_path / "data"),
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
    assert [] == document["failed"]
    assert [] == document["skipped"]
    return document


def check_rows(document: dict[str, Any], db: str) -> None:
    rows = [row for row in document["rows"] if row["name"].startswith("http_")]
    assert [f"http_check_{db}", f"http_client_credentials_{db}"] == [r["name"] for r in rows]
    for row in rows:
        assert ROW_FIELDS <= set(row)
        assert row["ours_per_s"] > 0
        assert row["baseline_per_s"] > 0
        assert row["http_ceiling_per_s"] > 0
    grant = rows[1]
    assert GRANT_EXTRAS <= set(grant)
    cores = document["machine"]["nproc"]
    assert grant["per_core"] == pytest.approx(grant["ours_per_s"] / cores, rel=1e-2, abs=0.1)
    assert 120 == grant["keycloak_per_vcpu"]
    # The grant row's baseline is DOT with plain secrets (the target's); the hashed DOT beside.
    assert grant["dot_plain_per_s"] == pytest.approx(grant["baseline_per_s"], rel=1e-2, abs=0.1)
    assert grant["dot_hashed_per_s"] > 0
    assert [10.0, 2.0] == [row["target"] for row in rows]


def test_sqlite(tmp_path: Path) -> None:
    document = run_http(tmp_path, "--backends", "sqlite")
    check_rows(document, "sqlite")
    assert not (tmp_path / "data").exists()  # both databases removed


def test_postgres(tmp_path: Path, postgres_url: str) -> None:
    import psycopg

    def bench_schemas() -> set[str]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT nspname FROM pg_catalog.pg_namespace "
                "WHERE starts_with(nspname, 'appregistry_bench_http_') "
                "OR starts_with(nspname, 'appregistry_bench_dot_')"
            ).fetchall()
        return {row[0] for row in found}

    before = bench_schemas()
    document = run_http(tmp_path, "--backends", "postgres", "--postgres-url", postgres_url)
    check_rows(document, "postgres")
    assert set() == bench_schemas() - before

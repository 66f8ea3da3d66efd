"""`appregistry tokens purge` and the purge on real databases: kills, retention, output.

Rows are made in bulk with SQL (one real token, copied tens of thousands of times with
fresh ids and digests), then purged by the library in a subprocess that is killed midway;
a second run must leave no expired row and every live one.
"""

from __future__ import annotations

import fcntl
import os
import pty
import secrets
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import psycopg
import pytest

from _support import run_cli
from appregistry import PurgeCounts, open_registry
from appregistry.storage.sqlite import _purge
from appregistry.testing import ManualClock

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@attrs.frozen
class Database:
    """A database the tests fill: its URL, and where to connect to it with SQL."""

    url: str
    sqlite_path: Path | None = None
    postgres: tuple[str, str] | None = None  # (server URL, schema)

    def copy_token(self, token_id: str, copies: int, step: timedelta) -> None:
        """Store ``copies`` of the token, the n-th expiring ``n * step`` after it."""
        if copies < 1:
            return
        micros = step // timedelta(microseconds=1)
        if self.sqlite_path is not None:
            with sqlite3.connect(self.sqlite_path) as conn:
                conn.execute(
                    """INSERT INTO tokens (token_id, digest, app_key, account, grant_type,
                           issued_at, expires_at, user_agent, search_text)
                       WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?)
                       SELECT t.token_id || '-' || s.n, randomblob(32), t.app_key, t.account,
                           t.grant_type, t.issued_at, t.expires_at + ? * s.n, t.user_agent,
                           t.search_text
                       FROM tokens AS t, s WHERE t.token_id = ?""",
                    (copies, micros, token_id),
                )
            return
        assert self.postgres is not None
        server, schema = self.postgres
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(
                """INSERT INTO appregistry_tokens (token_id, digest, app_key, account,
                       grant_type, issued_at, expires_at, user_agent, search_text)
                   SELECT t.token_id || '-' || g,
                       sha256(convert_to(t.token_id || '-' || g, 'UTF8')), t.app_key,
                       t.account, t.grant_type, t.issued_at,
                       t.expires_at + g * %s * interval '1 microsecond', t.user_agent,
                       t.search_text
                   FROM appregistry_tokens AS t, generate_series(1, %s) AS g
                   WHERE t.token_id = %s""",
                (micros, copies, token_id),
            )
            conn.execute("ANALYZE appregistry_tokens")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        path = tmp_path / "purge.sqlite3"
        return Database(f"sqlite:///{path}", sqlite_path=path)
    server: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("postgres_schema")
    return Database(request.getfixturevalue("postgres_schema_url"), postgres=(server, schema))


@attrs.frozen
class Filled:
    key: str
    expired: int  # tokens
    live: int
    live_tokens: tuple[str, ...]  # a few, as presented


def _fill(db: Database, *, expired: int, live: int, expired_ago: timedelta = 90 * DAY) -> Filled:
    """``expired`` tokens that expired ``expired_ago`` and before, and ``live`` live ones."""
    now = datetime.now(UTC)
    with open_registry(db.url, clock=ManualClock(now - expired_ago - HOUR)) as past:
        app = past.register_app(
            "acme",
            name=f"App {secrets.token_hex(4)}",
            homepage="https://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/cb",
            trusted=True,
        )
        past.permit_account("acme", by="admin")
        first = past.issue_token(app.app.key, app.secret)
    db.copy_token(first.record.token_id, expired - 1, -timedelta(milliseconds=1))
    with open_registry(db.url) as registry:
        fresh = [registry.issue_token(app.app.key, app.secret) for _ in range(3)]
    db.copy_token(fresh[0].record.token_id, live - 3, timedelta(milliseconds=1))
    return Filled(app.app.key, expired, live, tuple(t.token for t in fresh))


def _state(db: Database, filled: Filled) -> tuple[int, int, list[str]]:
    """Expired tokens left, live tokens listed, and the reasons of the sample's checks."""
    with open_registry(db.url) as registry:
        return (
            registry.count_expired().tokens,
            registry.list_tokens(filled.key, "acme").total,
            [str(registry.check_token(t).reason) for t in filled.live_tokens],
        )


# -- killed midway, run again ---------------------------------------------------------------------

_PURGER = """
import sys
from appregistry import open_registry

with open_registry(sys.argv[1]) as registry:
    registry.purge_expired_tokens(
        batch_size=int(sys.argv[2]), rest=0, progress=lambda rows: print(rows, flush=True)
    )
"""


def _wait_for_sessions_to_end(server: str, name: str) -> None:
    """Until the server has noticed the killed client and rolled its transaction back."""
    with psycopg.connect(server, autocommit=True) as conn:
        for _ in range(600):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.05)
    pytest.fail(f"the killed purge's sessions ({name}) did not end")


def test_a_purge_killed_midway_is_finished_by_the_next(database: Database, tmp_path: Path) -> None:
    filled = _fill(database, expired=40_000, live=5_000)
    assert (40_000, 5_000, ["allowed"] * 3) == _state(database, filled)
    name = f"purge-kill-{secrets.token_hex(4)}"
    child = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, "-c", _PURGER, database.url, "200"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGAPPNAME": name},
    )
    assert child.stdout is not None
    batches = [int(child.stdout.readline()) for _ in range(5)]
    child.kill()
    child.wait()
    child.stdout.close()
    if database.postgres is not None:
        _wait_for_sessions_to_end(database.postgres[0], name)
    left, live, reasons = _state(database, filled)
    assert [200] * 5 == batches
    assert 0 < left <= 40_000 - 5 * 200, "killed midway: some batches done, some not"
    assert (5_000, ["allowed"] * 3) == (live, reasons)

    again = run_cli("--database", database.url, "--json", "tokens", "purge", cwd=tmp_path)
    assert 0 == again.returncode, again.stderr
    assert f'"tokens": {left},' in again.stdout
    assert (0, 5_000, ["allowed"] * 3) == _state(database, filled)


# -- the command: dry run, retention, progress ----------------------------------------------------


def test_a_dry_run_counts_and_deletes_nothing(database: Database, tmp_path: Path) -> None:
    filled = _fill(database, expired=300, live=10)
    result = run_cli("--database", database.url, "tokens", "purge", "--dry-run", cwd=tmp_path)
    as_json = run_cli(
        "--database", database.url, "--json", "tokens", "purge", "--dry-run", cwd=tmp_path
    )
    assert 0 == result.returncode == as_json.returncode
    assert result.stdout.startswith("would purge 300 rows: 300 access tokens, 0 refresh")
    assert '"dry_run": true' in as_json.stdout
    assert '"total": 300' in as_json.stdout
    assert (300, 10, ["allowed"] * 3) == _state(database, filled)


def test_retention_keeps_recent_rows_refused_and_unlisted(
    database: Database, tmp_path: Path
) -> None:
    old = _fill(database, expired=50, live=3, expired_ago=60 * DAY)
    recent = _fill(database, expired=20, live=3, expired_ago=2 * DAY)
    with open_registry(database.url) as registry:
        assert PurgeCounts(tokens=50) == registry.count_expired(retention=30 * DAY)
    result = run_cli(
        "--database", database.url, "tokens", "purge", "--retention", "30d", cwd=tmp_path
    )
    assert 0 == result.returncode, result.stderr
    assert result.stdout.startswith("purged 50 rows: 50 access tokens")
    assert (20, 3) == _state(database, recent)[:2]
    assert 3 == _state(database, old)[1]
    with open_registry(database.url) as registry:
        assert 20 == registry.count_expired().total
        assert PurgeCounts() == registry.count_expired(retention=30 * DAY)


def test_no_bar_when_not_a_terminal_unless_asked(database: Database, tmp_path: Path) -> None:
    _fill(database, expired=300, live=3)
    quiet = run_cli("--database", database.url, "tokens", "purge", cwd=tmp_path)
    assert (0, "") == (quiet.returncode, quiet.stderr)
    assert quiet.stdout.startswith("purged 300 rows: 300 access tokens, 0 refresh tokens")
    _fill(database, expired=300, live=3)
    forced = run_cli(
        "--database", database.url, "tokens", "purge", "--progress", "--batch-size", "100",
        cwd=tmp_path,
    )  # fmt: skip
    assert 0 == forced.returncode
    assert "purging: 100%" in forced.stderr
    assert "rows/s" in forced.stderr
    assert forced.stdout.startswith("purged 300 rows")


def _run_on_a_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the CLI with standard error on a pseudo-terminal: status, stdout, the terminal."""
    controller, terminal = pty.openpty()
    # A terminal of 100 columns and 24 rows (a new pseudo-terminal has none).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        child = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "appregistry", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            cwd=cwd,
            text=True,
        )
    finally:
        os.close(terminal)
    shown = b"".join(_read_all(controller))
    stdout, _ = child.communicate(timeout=120)
    return child.returncode, stdout, shown.decode()


def _read_all(fd: int) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, 4096):
            yield chunk
    except OSError:  # EIO: every writer of the terminal has closed it
        pass
    finally:
        os.close(fd)


def test_a_terminal_gets_a_bar_with_rows_per_second(database: Database, tmp_path: Path) -> None:
    _fill(database, expired=1_000, live=3)
    status, stdout, shown = _run_on_a_terminal(
        "--database", database.url, "tokens", "purge", "--batch-size", "100", cwd=tmp_path
    )
    assert 0 == status
    assert "purging: 100%" in shown
    assert "1.00k/1.00k" in shown
    assert "rows/s" in shown
    assert stdout.startswith("purged 1000 rows")
    quiet = run_cli("--database", database.url, "tokens", "purge", "--no-progress", cwd=tmp_path)
    assert ("", "purged 0 rows") == (quiet.stderr, quiet.stdout[:13])


def test_bad_rest_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("tokens", "purge", "--rest", "-1", cwd=tmp_path)
    assert 2 == result.returncode
    assert "--rest" in result.stderr


# -- the statements read the expiry indexes ------------------------------------------------------


def test_sqlite_counts_and_grace_purge_read_their_indexes(tmp_path: Path) -> None:
    path = tmp_path / "plans.sqlite3"
    with open_registry(f"sqlite:///{path}"):
        pass
    plans: dict[str, str] = {}
    with sqlite3.connect(path) as conn:
        for name, statement, params in [
            ("tokens", _purge._COUNT["tokens"], (0,)),
            ("codes", _purge._COUNT["codes"], (0,)),
            ("refresh_tokens", _purge._COUNT["refresh_tokens"], (0,)),
            ("grace count", _purge._COUNT_GRACE, (0,)),
            ("grace purge", _purge._PURGE_GRACE, (0, 10)),
        ]:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            plans[name] = " / ".join(str(row[-1]) for row in rows)
    assert "USING COVERING INDEX tokens_by_expiry" in plans["tokens"]
    assert "USING COVERING INDEX codes_by_expiry" in plans["codes"]
    assert "USING COVERING INDEX refresh_tokens_by_expiry" in plans["refresh_tokens"]
    assert "apps_by_grace_deadline" in plans["grace count"]
    assert "apps_by_grace_deadline" in plans["grace purge"]


@pytest.mark.postgres
def test_postgres_counts_and_batches_read_the_expiry_index(
    postgres_url: str, postgres_schema: str, postgres_schema_url: str
) -> None:
    """With many live rows, a batch and a count read the index, never the whole table."""
    db = Database(postgres_schema_url, postgres=(postgres_url, postgres_schema))
    _fill(db, expired=2_000, live=60_000)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{postgres_schema}"')
        cutoff = datetime.now(UTC)
        plans = {
            name: "\n".join(
                str(row[0]) for row in conn.execute(f"EXPLAIN {statement}", params).fetchall()
            )
            for name, statement, params in [
                (
                    "batch",
                    "SELECT ctid FROM appregistry_tokens WHERE expires_at <= %s LIMIT 100",
                    (cutoff,),
                ),
                (
                    "count",
                    "SELECT count(*) FROM appregistry_tokens WHERE expires_at <= %s",
                    (cutoff,),
                ),
            ]
        }
    for plan in plans.values():
        assert "appregistry_tokens_by_expiry" in plan, plan
        assert "Seq Scan" not in plan, plan


def test_purge_counts_are_plain_values() -> None:
    counts = PurgeCounts(tokens=1, refresh_tokens=2, codes=3, grace_secrets=4)
    assert 10 == counts.total
    assert counts == PurgeCounts() + counts
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        counts.tokens = 5  # type: ignore[misc]

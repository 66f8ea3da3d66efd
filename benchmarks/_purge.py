"""``purge_while_checking_postgres``: token checks while another process purges.

A schema of its own holds 2,000,000 expired tokens and 300,000 live ones, made by SQL
(``generate_series``) from tokens the library issued. This process checks live tokens in a
loop for a few seconds alone (the baseline), then while another process (``spawn``) purges
every expired row with `Registry.purge_expired_tokens` at its default pace; the row's
"rate" is the check rate during the purge, its ratio that over the rate alone (target 0.7).
The extras hold the purge's rows per second and its ``rest``; ``APPREGISTRY_BENCH_PURGE_REST``
sets another (``0``: flat out), which is how the default pace was chosen. The schema is
dropped afterwards.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import psycopg
from psycopg import sql

from appregistry import Registry
from appregistry._registry import DEFAULT_PURGE_REST
from appregistry.storage.postgres import PostgresStorage
from appregistry.testing import ManualClock

from ._harness import QUICK, Row, Sizes

TARGET = 0.7
#: (expired, live, issued samples, seconds of checks alone) in the full and the quick run.
_FULL = (2_000_000, 300_000, 2_000, 5.0)
_QUICK = (3_000, 500, 50, 0.3)


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _copy(
    conn: psycopg.Connection[Any], schema: str, token_id: str, copies: int, step: str
) -> None:
    """``copies`` of the token, fresh ids and digests, the n-th expiring n ``step`` later."""
    conn.execute(
        sql.SQL(
            """INSERT INTO {t} (token_id, digest, app_key, account, grant_type, issued_at,
                   expires_at, user_agent, search_text)
               SELECT t.token_id || '-' || g, sha256(convert_to(t.token_id || '-' || g, 'UTF8')),
                   t.app_key, t.account, t.grant_type, t.issued_at,
                   t.expires_at + g * {step}::interval, t.user_agent, t.search_text
               FROM {t} AS t, generate_series(1, %s) AS g WHERE t.token_id = %s"""
        ).format(t=sql.Identifier(schema, "appregistry_tokens"), step=sql.Literal(step)),
        (copies, token_id),
    )


def _fill(url: str, schema: str, expired: int, live: int, samples: int) -> tuple[str, list[str]]:
    """Make the schema's rows; return the app's key and the live tokens to check."""
    clock = ManualClock(datetime.now(UTC) - timedelta(days=2))
    with Registry(storage=PostgresStorage.from_url(url, schema=schema), clock=clock) as past:
        app = past.register_app(
            "acme",
            name="Purge bench",
            homepage="https://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/cb",
            trusted=True,
        )
        past.permit_account("acme", by="admin")
        old = past.issue_token(app.app.key, app.secret)
    with Registry(storage=PostgresStorage.from_url(url, schema=schema)) as registry:
        fresh = [registry.issue_token(app.app.key, app.secret) for _ in range(samples)]
    with psycopg.connect(url, autocommit=True) as conn:
        _copy(conn, schema, old.record.token_id, expired - 1, "-1 millisecond")
        _copy(conn, schema, fresh[0].record.token_id, live - samples, "1 millisecond")
        conn.execute(
            sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, "appregistry_tokens"))
        )
        # The load's WAL would otherwise be flushed by a checkpoint in the middle of the checks
        # alone, and slow them (seen: alone slower than during the purge).
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
    return app.app.key, [t.token for t in fresh]


def _purger(url: str, schema: str, rest: float | None, done: Connection) -> None:
    """In another process: purge everything expired; send (rows, seconds)."""
    with Registry(storage=PostgresStorage.from_url(url, schema=schema)) as registry:
        options = {} if rest is None else {"rest": rest}
        started = time.perf_counter()
        purged = registry.purge_expired_tokens(**options)
        done.send((purged.total, time.perf_counter() - started))
    done.close()


def _check_rate(
    registry: Registry, tokens: Sequence[str], seconds: float | None, done: Connection | None
) -> float:
    """Checks per second, for ``seconds`` or until ``done`` has a message."""
    checks = 0
    started = time.perf_counter()
    while True:
        for token in tokens[:50]:
            if not registry.check_token(token).allowed:
                raise AssertionError("purge_while_checking: a live token was refused")
        checks += 50
        tokens = [*tokens[50:], *tokens[:50]]
        elapsed = time.perf_counter() - started
        if seconds is not None and elapsed >= seconds:
            return checks / elapsed
        if done is not None and done.poll():
            return checks / elapsed


def _while_purging(
    url: str, schema: str, registry: Registry, tokens: Sequence[str], rest: float | None
) -> tuple[float, int, float]:
    """(check rate during the purge, rows purged, the purge's seconds)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_purger, args=(url, schema, rest, send))
    child.start()
    send.close()
    rate = _check_rate(registry, tokens, None, receive)
    rows, seconds = receive.recv()
    child.join()
    return rate, rows, seconds


def purge_while_checking_row(url: str, sizes: Sizes) -> Row:
    """The row, on a schema made for it and dropped after."""
    expired, live, samples, alone = _QUICK if sizes == QUICK else _FULL
    schema = f"appregistry_bench_{secrets.token_hex(4)}"
    _log(f"purge_while_checking: {expired:,} expired and {live:,} live tokens")
    try:
        key, tokens = _fill(url, schema, expired, live, samples)
        chosen = os.environ.get("APPREGISTRY_BENCH_PURGE_REST")
        rest = None if chosen is None else float(chosen)
        with Registry(storage=PostgresStorage.from_url(url, schema=schema)) as registry:
            # Each token's first use is written before anything is measured (as in the check
            # rows), so that neither side pays for it.
            for token in tokens:
                registry.check_token(token)
            registry.list_tokens(key, "acme", per_page=1)
            before = _check_rate(registry, tokens, alone, None)
            during, rows, seconds = _while_purging(url, schema, registry, tokens, rest)
            if rows != expired:
                raise AssertionError(f"purge_while_checking: purged {rows:,}, not {expired:,}")
            if registry.count_expired().total or registry.list_tokens(key, "acme").total != live:
                raise AssertionError("purge_while_checking: an expired row stayed, a live one went")
        extra = {
            "purge_rows_per_s": rows / seconds,
            "purge_seconds": seconds,
            "rest": DEFAULT_PURGE_REST if rest is None else rest,
        }
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return Row(
        "purge_while_checking_postgres",
        during,
        before,
        TARGET,
        note=f"checks while {expired:,} expired rows (of {expired + live:,}) are purged / alone",
        extra=extra,
    )

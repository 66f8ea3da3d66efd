"""The PostgreSQL backend behind PgBouncer in transaction mode, and its ``prepare=off`` option.

A pooler in transaction mode hands each transaction whichever server connection is free, so
nothing may rely on a server session outliving a transaction: prepared statements, ``SET``,
session advisory locks, temporary tables, ``LISTEN``, cursors ``WITH HOLD``. The tests start
a real PgBouncer (`appregistry.testing._pgbouncer`) and run the whole storage contract through
it, with ``prepare=off``. Without the ``pgbouncer`` binary they skip, except under ``CI=true``,
where they fail (``make pytest`` installs it).

Whether a pooler sits between cannot be detected (PgBouncer does not announce itself), so the
option is the host's to set; the error without it names the option.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import given
from psycopg import sql

from _support import APP_FIELDS
from appregistry import Reason, Registry, StorageError
from appregistry.ports import Storage
from appregistry.storage.postgres import PostgresStorage
from appregistry.storage.postgres._storage import _split_options
from appregistry.testing import ManualClock
from appregistry.testing._pgbouncer import PgBouncer, find_pgbouncer, running_pgbouncer
from appregistry.testing.contract import (
    StorageContents,
    StorageContract,
    StorageFactory,
    StorageReopener,
)
from test_postgres import _table_bytes

#: PgBouncer's database names: the server's database with the default server pool of 20,
#: and the same database over one server connection, which every client then shares.
SHARED = "appregistry_pooled"
ONE = "appregistry_one_server_connection"
#: Server pool for the thread test: fewer server connections than threads.
FEW = "appregistry_two_server_connections"
#: One server connection that only the session-state test uses: the others leave state on
#: theirs on purpose (prepare=on), and a server session outlives every client's.
AUDIT = "appregistry_audited_server_connection"


class PooledFactory(Protocol):
    """Makes a `PostgresStorage` through PgBouncer, on a fresh schema unless told one."""

    def __call__(
        self,
        *,
        schema: str | None = None,
        database: str = SHARED,
        prepare: str = "off",
        **options: Any,
    ) -> PostgresStorage: ...


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def pgbouncer(postgres_url: str) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test server, for the whole run."""
    if find_pgbouncer() is None:
        reason = "pgbouncer is not installed (make pytest installs it: apt-get install pgbouncer)"
        if _in_ci():
            pytest.fail(f"{reason}; under CI=true the PgBouncer tests must run", pytrace=False)
        pytest.skip(reason)
    with running_pgbouncer(postgres_url, pools={SHARED: None, ONE: 1, FEW: 2, AUDIT: 1}) as bouncer:
        yield bouncer


def _drop(url: str, schemas: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for name in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pooled_storage_factory(
    pgbouncer: PgBouncer, postgres_url: str, _postgres_schema_names: Iterator[str]
) -> Iterator[PooledFactory]:
    """`PostgresStorage` instances through PgBouncer; closed, and their schemas dropped, after."""
    opened: list[PostgresStorage] = []
    made: list[str] = []

    def make(
        *,
        schema: str | None = None,
        database: str = SHARED,
        prepare: str = "off",
        **options: Any,
    ) -> PostgresStorage:
        if schema is None:
            schema = next(_postgres_schema_names)
            made.append(schema)
        options.setdefault("min_size", 0)
        url = pgbouncer.url(database, prepare=prepare, schema=schema)
        storage = PostgresStorage.from_url(url, **options)
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        storage.close()
    _drop(postgres_url, made)  # directly: DROP ... CASCADE needs no pooler


class TestPostgresContractThroughPgBouncer(StorageContract):
    """The whole storage contract, through PgBouncer in transaction mode, with prepare=off."""

    @pytest.fixture
    def storage_factory(self, pooled_storage_factory: PooledFactory) -> StorageFactory:
        return cast(StorageFactory, pooled_storage_factory)

    @pytest.fixture
    def storage_reopener(self, pooled_storage_factory: PooledFactory) -> StorageReopener:
        def reopen(storage: Storage) -> Storage:
            assert isinstance(storage, PostgresStorage)
            return cast(Storage, pooled_storage_factory(schema=storage.schema))

        return reopen

    @pytest.fixture
    def storage_contents(self, postgres_url: str) -> Iterator[StorageContents]:
        with psycopg.connect(postgres_url, autocommit=True) as admin:

            def contents(storage: Storage) -> bytes:
                assert isinstance(storage, PostgresStorage)
                return _table_bytes(admin, storage.schema)

            yield contents

    @pytest.fixture
    def race_rounds(self) -> int:
        return 5


class TestPrepareOption:
    """``?prepare=off`` is taken out of the URL, spelt like libpq's booleans, checked."""

    @given(
        before=st.lists(st.sampled_from(["sslmode=require", "application_name=a%20b", "x="])),
        after=st.lists(st.sampled_from(["connect_timeout=3", "target_session_attrs=any"])),
        value=st.sampled_from(["on", "off", "OFF", "true", "0"]),
    )
    def test_the_parameter_goes_and_the_others_stay_byte_for_byte(
        self, before: list[str], after: list[str], value: str
    ) -> None:
        url = "postgresql://u@db.example/apps?" + "&".join([*before, f"prepare={value}", *after])
        kept = "&".join([*before, *after])
        assert (
            "postgresql://u@db.example/apps" + (f"?{kept}" if kept else ""),
            {"prepare": value},
        ) == _split_options(url)

    @given(
        st.text(max_size=30).filter(
            lambda v: v.strip().lower() not in {"on", "off", "true", "false", "yes", "no", "1", "0"}
        )
    )
    def test_any_other_value_is_refused_before_connecting(self, value: str) -> None:
        # db.invalid cannot be reached: the ValueError comes before any connection is tried.
        quoted = "".join(f"%{b:02X}" for b in value.encode())
        with pytest.raises(ValueError, match="prepare= must be on or off"):
            PostgresStorage.from_url(f"postgresql://db.invalid/apps?prepare={quoted}")

    def test_given_twice_or_contradicted_it_is_refused(self) -> None:
        with pytest.raises(ValueError, match="twice"):
            PostgresStorage.from_url("postgresql://db.invalid/a?prepare=off&prepare=on")
        with pytest.raises(ValueError, match="contradicts"):
            PostgresStorage.from_url("postgresql://db.invalid/a?prepare=off", prepare=True)

    @pytest.mark.parametrize(("prepare", "none_prepared"), [("off", True), ("on", False)])
    def test_off_leaves_no_prepared_statement_on_the_server(
        self,
        postgres_url: str,
        postgres_schema: str,
        prepare: str,
        none_prepared: bool,
    ) -> None:
        # One connection, used more often than psycopg's threshold (5) for automatic
        # preparation, by checks and transactions; with prepare=on both kinds are prepared.
        storage = PostgresStorage.from_url(
            f"{postgres_url}?prepare={prepare}&schema={postgres_schema}", min_size=1, max_size=1
        )
        try:
            registry, token = _issued(storage)
            for _ in range(8):
                assert Reason.ALLOWED == registry.check_token(token).reason
                registry.list_tokens(*_pair(registry))
            with storage._pool.connection() as conn:
                found = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        finally:
            storage.close()
        assert found is not None
        assert none_prepared == (found[0] == 0)

    def test_a_pool_of_the_hosts_own_is_kept_from_preparing(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        from psycopg_pool import ConnectionPool

        pool: ConnectionPool[Any] = ConnectionPool(
            f"{postgres_url}", kwargs={"autocommit": True}, min_size=1, max_size=1, open=False
        )
        storage = PostgresStorage(pool, schema=postgres_schema, prepare=False)
        try:
            registry, token = _issued(storage)
            for _ in range(8):
                assert Reason.ALLOWED == registry.check_token(token).reason
                registry.list_tokens(*_pair(registry))
            with pool.connection() as conn:
                found = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        finally:
            storage.close()
        assert (0,) == found


def _issued(storage: PostgresStorage, *, account: str = "org-1") -> tuple[Registry, str]:
    """A registry on ``storage`` with one installed, trusted app, and a token it issued."""
    registry = Registry(storage=storage)
    new = registry.register_app("acme", trusted=True, **APP_FIELDS)
    registry.permit_account(account, by="admin")
    registry.install_app(new.app.key, account, by="alice")
    token = registry.issue_token(new.app.key, new.secret, account=account, approved_by="alice")
    return registry, token.token


def _pair(registry: Registry) -> tuple[str, str]:
    """The key and account of the one installation `_issued` made."""
    key = registry.list_apps().items[0].app.key
    return key, registry.list_app_installations(key).items[0].account


class TestThroughPgBouncer:
    """What transaction pooling changes, on a PgBouncer of our own."""

    def test_without_prepare_off_the_error_says_to_set_it(
        self, pooled_storage_factory: PooledFactory
    ) -> None:
        # Two clients over one server connection: each prepares its check under psycopg's
        # first name, _pg3_0, and the second finds the first's there. (With more server
        # connections the failure is the same, only less predictable: a statement prepared on
        # one connection is missing on the next.)
        first = pooled_storage_factory(database=ONE, prepare="on")
        second = pooled_storage_factory(database=ONE, prepare="on", schema=first.schema)
        registry, token = _issued(first)
        assert Reason.ALLOWED == registry.check_token(token).reason
        with pytest.raises(StorageError) as caught:
            Registry(storage=second).check_token(token)
        message = str(caught.value)
        assert "[42P05]" in message
        assert "prepare=off" in message

    def test_with_prepare_off_clients_share_server_connections(
        self, pooled_storage_factory: PooledFactory
    ) -> None:
        first = pooled_storage_factory(database=ONE)
        second = pooled_storage_factory(database=ONE, schema=first.schema)
        registry, token = _issued(first)
        other = Registry(storage=second)
        for _ in range(8):  # past psycopg's threshold for automatic preparation
            assert Reason.ALLOWED == registry.check_token(token).reason
            assert Reason.ALLOWED == other.check_token(token).reason
            assert 1 == other.list_tokens(*_pair(other)).total

    def test_schemas_are_named_in_each_statement_not_set_per_session(
        self, pooled_storage_factory: PooledFactory
    ) -> None:
        # Two schemas over one server connection: were the schema a session's search_path,
        # one storage would read the other's tables.
        ours = pooled_storage_factory(database=ONE)
        theirs = pooled_storage_factory(database=ONE)
        registry, token = _issued(ours)
        other, other_token = _issued(theirs)
        assert Reason.ALLOWED == registry.check_token(token).reason
        assert Reason.TOKEN_UNKNOWN == registry.check_token(other_token).reason
        assert Reason.TOKEN_UNKNOWN == other.check_token(token).reason
        assert 1 == len(registry.list_apps().items) == len(other.list_apps().items)

    def test_no_session_state_is_left_on_the_server_connection(
        self, pooled_storage_factory: PooledFactory, pgbouncer: PgBouncer, postgres_url: str
    ) -> None:
        # The whole story through the one server connection, then a look at that session:
        # nothing set, prepared, locked, listened to, created or held open there.
        storage = pooled_storage_factory(database=AUDIT)
        clock = ManualClock()
        registry = Registry(storage=storage, clock=clock)
        new = registry.register_app("acme", trusted=True, **APP_FIELDS)
        key, redirect = new.app.key, APP_FIELDS["redirect_url"]
        registry.permit_account("org-1", by="admin")
        registry.install_app(key, "org-1", by="alice")
        code = registry.authorize(key, "org-1", redirect_url=redirect, approved_by="alice")
        issued = registry.exchange_code(key, code.code, redirect_url=redirect)
        rotated = registry.refresh(key, issued.refresh_token or "")
        assert Reason.ALLOWED == registry.check_token(rotated.token).reason
        registry.regenerate_secret(key)
        registry.suspend_installation(key, "org-1")
        registry.list_tokens(key, "org-1")
        registry.purge_expired_tokens()
        registry.remove_app(key)
        with psycopg.connect(postgres_url) as direct:
            default_path = direct.execute("SHOW search_path").fetchone()
        with psycopg.connect(pgbouncer.url(AUDIT), autocommit=True) as conn:
            state = conn.execute(
                """SELECT current_setting('search_path'),
                          (SELECT count(*) FROM pg_prepared_statements),
                          (SELECT count(*) FROM pg_locks
                           WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
                          (SELECT count(*) FROM pg_listening_channels()),
                          (SELECT count(*) FROM pg_cursors),
                          pg_my_temp_schema() = 0,
                          (SELECT coalesce(array_agg(name ORDER BY name), '{}')
                           FROM pg_settings WHERE source = 'session'
                           -- PgBouncer itself sets these to match each client
                           AND name NOT IN ('client_encoding', 'DateStyle', 'TimeZone',
                                            'standard_conforming_strings',
                                            'application_name'))"""
            ).fetchone()
        assert default_path is not None
        assert (default_path[0], 0, 0, 0, 0, True, []) == state

    def test_threads_check_tokens_at_once_through_few_server_connections(
        self, pooled_storage_factory: PooledFactory
    ) -> None:
        # Eight threads over a pool of eight client connections and two server connections,
        # while another thread issues and revokes tokens: every check gets its right answer.
        storage = pooled_storage_factory(database=FEW, max_size=8)
        registry, _ = _issued(storage)
        key, account = _pair(registry)
        secret = registry.regenerate_secret(key).secret  # (which revokes the app's tokens)
        token = registry.issue_token(key, secret, account=account, approved_by="alice").token
        unknown = secrets.token_urlsafe(32)
        stop = threading.Event()
        answers: list[tuple[str, str]] = []
        errors: list[BaseException] = []

        def check() -> None:
            try:
                answers.extend(
                    (registry.check_token(token).reason, registry.check_token(unknown).reason)
                    for _ in range(150)
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        def churn() -> None:
            try:
                while not stop.is_set():
                    extra = registry.issue_token(key, secret, account=account, approved_by="bob")
                    registry.remove_tokens([extra.record.token_id])
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        writer = threading.Thread(target=churn)
        checkers = [threading.Thread(target=check) for _ in range(8)]
        writer.start()
        for thread in checkers:
            thread.start()
        for thread in checkers:
            thread.join(timeout=120)
        stop.set()
        writer.join(timeout=30)
        assert [] == errors
        assert [(Reason.ALLOWED, Reason.TOKEN_UNKNOWN)] * (8 * 150) == answers


class TestBenchmarkRow:
    """``python -m benchmarks --backends pgbouncer`` writes its check rows (quick sizes)."""

    def test_quick_run(self, tmp_path: Path, pgbouncer: PgBouncer, postgres_url: str) -> None:
        from test_bench_smoke import run_quick

        document = run_quick(tmp_path, "--backends", "pgbouncer", "--postgres-url", postgres_url)
        names = [row["name"] for row in document["rows"]]
        assert ["check_valid_postgres_pgbouncer", "check_unknown_postgres_pgbouncer"] == names
        assert all(row["ours_per_s"] > 0 and row["baseline_per_s"] > 0 for row in document["rows"])
        assert [] == document["failed"]

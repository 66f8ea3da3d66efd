"""The PostgreSQL backend: the contract suite, and what only a real server can show.

Every test here needs the server of ``tests/conftest.py``; each gets fresh schemas of its own.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import timedelta
from typing import Any, ClassVar, Final, LiteralString, cast

import attrs
import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from _support import APP_FIELDS, counting_postgres_storage
from appregistry import (
    AppNotFound,
    AppsPermission,
    Denied,
    ImportedCredentials,
    InstallationNotFound,
    Reason,
    Registry,
    SchemaError,
    StorageError,
    StorageUnavailable,
    StoredSecret,
)
from appregistry.ports import Storage
from appregistry.storage import open_storage
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.postgres import SCHEMA_VERSION, PostgresStorage, _Unit
from appregistry.testing import ManualClock
from appregistry.testing.contract import (
    T0,
    StorageContents,
    StorageContract,
    StorageFactory,
    StorageReopener,
    make_app,
    make_token,
    new_digest,
    new_key,
)

pytestmark = pytest.mark.postgres

PASSWORD = "Pa55-w0rd-n0t-t0-be-seen"


def _with_password(url: str, password: str = PASSWORD, *, user: str | None = None) -> str:
    """``url`` as a URL with ``password`` (and ``user``, if given) put in."""
    info = conninfo_to_dict(url)
    user = user or str(info.get("user", "postgres"))
    host, port = info.get("host", "127.0.0.1"), info.get("port", "5432")
    return f"postgresql://{user}:{password}@{host}:{port}/{info.get('dbname', 'postgres')}"


def _everything_said(exc: BaseException) -> str:
    """The error as a log would show it: message, repr and the whole chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the server, to look at and tamper with tables directly."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def _table(schema: str | None, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _setup(registry: Registry, *, account: str = "org-1") -> tuple[str, str]:
    """A trusted app of ``acme`` installed on a permitted ``account``: (key, secret)."""
    new = registry.register_app("acme", trusted=True, **APP_FIELDS)
    registry.permit_account("acme", by="admin")
    registry.permit_account(account, by="admin")
    registry.install_app(new.app.key, account, by="alice")
    return new.app.key, new.secret


class _ReadsTablesAtRest:
    """The contract's ``storage_contents``: every table's bytes, read by an admin session."""

    @pytest.fixture
    def storage_contents(self, admin: psycopg.Connection[Any]) -> StorageContents:
        def contents(storage: Storage) -> bytes:
            assert isinstance(storage, PostgresStorage)
            return _table_bytes(admin, storage.schema)

        return contents


class TestPostgresContract(_ReadsTablesAtRest, StorageContract):
    """PostgreSQL honours the whole storage contract, across instances and at rest."""

    @pytest.fixture
    def storage_factory(self, postgres_storage_factory: Any) -> StorageFactory:
        return cast(StorageFactory, postgres_storage_factory)

    @pytest.fixture
    def storage_reopener(self, postgres_storage_factory: Any) -> StorageReopener:
        def reopen(storage: Storage) -> Storage:
            assert isinstance(storage, PostgresStorage)
            return cast(Storage, postgres_storage_factory(schema=storage.schema))

        return reopen

    @pytest.fixture
    def race_rounds(self) -> int:
        return 5


def _table_bytes(conn: psycopg.Connection[Any], schema: str | None) -> bytes:
    """Every value of every table in ``schema``: text as UTF-8, ``bytea`` as its raw bytes."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,)
        )
    ]
    values: list[bytes] = []
    for name in tables:
        for row in conn.execute(sql.SQL("SELECT * FROM {}").format(_table(schema, name))):
            values.extend(
                value if isinstance(value, bytes) else str(value).encode() for value in row
            )
    return b"\n".join(values)


class TestSchema:
    """Opening creates the versioned schema, keeps data, and refuses what it does not know."""

    def test_fresh_schema_is_at_the_current_version(
        self, postgres_storage: PostgresStorage, admin: psycopg.Connection[Any]
    ) -> None:
        version = admin.execute(
            sql.SQL("SELECT version FROM {}").format(
                _table(postgres_storage.schema, "appregistry_schema_version")
            )
        ).fetchall()
        assert [(SCHEMA_VERSION,)] == version

    def test_reopening_keeps_the_data(self, postgres_storage_factory: Any) -> None:
        first = postgres_storage_factory()
        app = Registry(storage=first).register_app("acme", **APP_FIELDS).app
        first.close()
        again = postgres_storage_factory(schema=first.schema)
        assert app == Registry(storage=again).get_app(app.key)

    def test_a_version_1_schema_with_tokens_is_migrated_forward(
        self,
        postgres_storage_factory: Any,
        postgres_schema: str,
        admin: psycopg.Connection[Any],
    ) -> None:
        # The first schema, as released, holding a token of a trusted app: after the migration
        # the token still acts (with no grant family), and the new grants work there.
        from appregistry._credentials import Credentials
        from appregistry.storage.postgres import _MIGRATIONS, _TABLES

        names = {key: _table(postgres_schema, table) for key, table in _TABLES.items()}
        token, now = "a-token-issued-before-the-oauth-grants", ManualClock()()
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
        admin.execute(sql.SQL(_MIGRATIONS[0]).format(**names))
        admin.execute(
            sql.SQL(
                "CREATE TABLE {} (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), "
                "version integer NOT NULL); INSERT INTO {} (version) VALUES (1)"
            ).format(names["version"], names["version"])
        )
        admin.execute(
            sql.SQL(
                "INSERT INTO {} (app_key, owner, name, homepage, admin_email, redirect_url, "
                "created_at, trusted, enabled, name_folded, search_text, secret_digest) "
                "VALUES (%s, 'acme', 'MyApp', 'http://example.com/', 'a@example.com', %s, %s, "
                "true, true, 'myapp', 'myapp', '\\x00')"
            ).format(names["apps"]),
            ("K" * 32, APP_FIELDS["redirect_url"], now),
        )
        admin.execute(
            sql.SQL("INSERT INTO {} VALUES ('acme', 'admin', %s)").format(names["permissions"]),
            (now,),
        )
        admin.execute(
            sql.SQL(
                "INSERT INTO {} (token_id, digest, app_key, account, grant_type, issued_at, "
                "expires_at, search_text) VALUES ('t1', %s, %s, 'acme', 'client_credentials', "
                "%s, %s, '')"
            ).format(names["tokens"]),
            (Credentials().token_digest(token), "K" * 32, now, now + timedelta(hours=1)),
        )

        storage = postgres_storage_factory(schema=postgres_schema)
        registry = Registry(storage=storage, clock=ManualClock(now))
        check = registry.check_token(token)
        redirect = APP_FIELDS["redirect_url"]
        code = registry.authorize("K" * 32, "acme", redirect_url=redirect, approved_by="alice")
        issued = registry.exchange_code("K" * 32, code.code, redirect_url=redirect)
        rotated = registry.refresh("K" * 32, issued.refresh_token or "")
        assert check.token is not None
        assert ("allowed", "t1", None) == (
            check.reason,
            check.token.token_id,
            check.token.family_id,
        )
        assert ["allowed"] * 2 == [registry.check_token(t.token).reason for t in (issued, rotated)]
        version = admin.execute(sql.SQL("SELECT version FROM {}").format(names["version"]))
        assert [(SCHEMA_VERSION,)] == version.fetchall()

    def test_newer_schema_is_refused_and_left_alone(
        self, postgres_storage_factory: Any, admin: psycopg.Connection[Any]
    ) -> None:
        storage = postgres_storage_factory()
        key = Registry(storage=storage).register_app("acme", **APP_FIELDS).app.key
        storage.close()
        version = _table(storage.schema, "appregistry_schema_version")
        admin.execute(sql.SQL("UPDATE {} SET version = %s").format(version), (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaError) as caught:
            postgres_storage_factory(schema=storage.schema)
        assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)
        assert [(SCHEMA_VERSION + 1,)] == admin.execute(
            sql.SQL("SELECT version FROM {}").format(version)
        ).fetchall()
        apps = _table(storage.schema, "appregistry_apps")
        assert [(key,)] == admin.execute(sql.SQL("SELECT app_key FROM {}").format(apps)).fetchall()

    def test_foreign_tables_with_our_names_are_refused_and_left_alone(
        self,
        postgres_storage_factory: Any,
        postgres_schema: str,
        admin: psycopg.Connection[Any],
    ) -> None:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
        apps = _table(postgres_schema, "appregistry_apps")
        admin.execute(sql.SQL("CREATE TABLE {} (note text)").format(apps))
        admin.execute(sql.SQL("INSERT INTO {} VALUES ('theirs')").format(apps))
        with pytest.raises(SchemaError) as caught:
            postgres_storage_factory(schema=postgres_schema)
        assert "not an appregistry database" in str(caught.value)
        tables = admin.execute(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s",
            (postgres_schema,),
        ).fetchall()
        assert [("appregistry_apps",)] == tables
        assert [("theirs",)] == admin.execute(
            sql.SQL("SELECT note FROM {}").format(apps)
        ).fetchall()

    def test_servers_opening_together_migrate_once(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        opened: list[PostgresStorage] = []
        failures: list[BaseException] = []

        def open_one() -> None:
            try:
                opened.append(PostgresStorage.from_url(postgres_url, schema=postgres_schema))
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                failures.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert [] == failures
            key = Registry(storage=opened[0]).register_app("acme", **APP_FIELDS).app.key
            assert {key} == {Registry(storage=s).get_app(key).key for s in opened}
        finally:
            for storage in opened:
                storage.close()

    @pytest.mark.parametrize("name", ["", "x" * 64, "a\x00b"])
    def test_bad_schema_names_are_refused(self, postgres_url: str, name: str) -> None:
        with pytest.raises(ValueError, match="schema"):
            PostgresStorage.from_url(postgres_url, schema=name)

    def test_quoted_schema_names_are_safe(
        self, postgres_storage_factory: Any, postgres_schema: str, admin: psycopg.Connection[Any]
    ) -> None:
        odd = f'{postgres_schema}"; DROP TABLE x; --'
        try:
            storage = postgres_storage_factory(schema=odd)
            key = Registry(storage=storage).register_app("acme", **APP_FIELDS).app.key
            assert key == Registry(storage=storage).get_app(key).key
            assert [(odd,)] == admin.execute(
                "SELECT schemaname FROM pg_catalog.pg_tables WHERE tablename = %s "
                "AND schemaname = %s",
                ("appregistry_apps", odd),
            ).fetchall()
        finally:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(odd)))


class TestOpening:
    """URLs open the backend; the driver loads only then; bad servers fail fast and clearly."""

    def test_open_storage_takes_postgres_urls_with_a_schema(
        self, postgres_schema_url: str, postgres_schema: str
    ) -> None:
        storage = open_storage(postgres_schema_url)
        try:
            assert isinstance(storage, PostgresStorage)
            assert postgres_schema == storage.schema
        finally:
            storage.close()

    def test_postgres_scheme_is_accepted_too(
        self, postgres_schema_url: str, postgres_schema: str
    ) -> None:
        storage = open_storage("postgres" + postgres_schema_url.removeprefix("postgresql"))
        try:
            assert isinstance(storage, PostgresStorage)
            assert postgres_schema == storage.schema
        finally:
            storage.close()

    def test_two_different_schemas_are_refused(self, postgres_schema_url: str) -> None:
        with pytest.raises(ValueError, match="two schemas"):
            PostgresStorage.from_url(postgres_schema_url, schema="another")

    def test_import_appregistry_does_not_import_psycopg(self) -> None:
        code = (
            "import sys, appregistry, appregistry.storage, appregistry.testing\n"
            "appregistry.storage.open_storage('memory:')\n"
            "print(sorted(m for m in sys.modules if m.startswith('psycopg')))\n"
        )
        result = subprocess.run(  # noqa: S603 - this interpreter, our own code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == result.stdout.strip()

    def test_unreachable_server_names_host_and_port_never_the_password(self) -> None:
        url = f"postgresql://app:{PASSWORD}@127.0.0.1:1/apps"
        with pytest.raises(StorageUnavailable) as caught:
            PostgresStorage.from_url(url, connect_timeout=2)
        assert "127.0.0.1:1" in str(caught.value)
        assert PASSWORD not in _everything_said(caught.value)

    def test_unroutable_server_gives_up_instead_of_hanging(self) -> None:
        # 10.255.255.1 is reserved and normally unroutable: the connection attempt either
        # fails at once or waits for connect_timeout. A generous join bound tells a hang apart.
        caught: list[BaseException] = []

        def attempt() -> None:
            try:
                PostgresStorage.from_url(
                    f"postgresql://app:{PASSWORD}@10.255.255.1:5432/apps", connect_timeout=2
                )
            except BaseException as exc:  # noqa: BLE001 - inspected below
                caught.append(exc)

        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), "opening an unroutable server hung"
        assert [StorageUnavailable] == [type(exc) for exc in caught]
        assert "10.255.255.1:5432" in str(caught[0])
        assert PASSWORD not in _everything_said(caught[0])

    def test_refused_login_names_the_host_never_the_password(self, postgres_url: str) -> None:
        # The test server trusts local users whatever their password, so a wrong password
        # cannot be refused there; a role that does not exist is refused the same way.
        role = f"nobody_{secrets.token_hex(4)}"
        url = _with_password(postgres_url, user=role)
        with pytest.raises(StorageUnavailable) as caught:
            PostgresStorage.from_url(url, connect_timeout=2)
        host = conninfo_to_dict(postgres_url).get("host", "127.0.0.1")
        assert str(host) in str(caught.value)
        assert role in str(caught.value)
        assert PASSWORD not in _everything_said(caught.value)

    def test_password_stays_out_of_repr_and_errors(
        self,
        postgres_url: str,
        postgres_schema: str,
        admin: psycopg.Connection[Any],
    ) -> None:
        url = _with_password(postgres_url)
        storage = PostgresStorage.from_url(url, schema=postgres_schema)
        storage.close()
        assert PASSWORD not in repr(storage)
        version = _table(postgres_schema, "appregistry_schema_version")
        admin.execute(sql.SQL("UPDATE {} SET version = %s").format(version), (SCHEMA_VERSION + 1,))
        with pytest.raises(SchemaError) as caught:
            PostgresStorage.from_url(url, schema=postgres_schema)
        assert PASSWORD not in _everything_said(caught.value)

    def test_a_closed_storage_refuses_work(self, postgres_storage: PostgresStorage) -> None:
        postgres_storage.close()
        with pytest.raises(StorageError, match="closed"), postgres_storage.transaction():
            pass
        with pytest.raises(StorageError, match="closed"):
            postgres_storage.token_context(b"x" * 32)

    def test_a_given_pool_is_used_and_closed(self, postgres_url: str, postgres_schema: str) -> None:
        pool: ConnectionPool[Any] = ConnectionPool(postgres_url, min_size=0, max_size=2, open=False)
        storage = PostgresStorage(pool, schema=postgres_schema)
        key = Registry(storage=storage).register_app("acme", **APP_FIELDS).app.key
        assert key == Registry(storage=storage).get_app(key).key
        storage.close()
        assert pool.closed


class TestServerGoesAway:
    """A connection the server dropped costs one failed operation; then the pool reconnects."""

    def test_terminated_connections_fail_once_then_work(
        self, postgres_url: str, postgres_schema: str, admin: psycopg.Connection[Any]
    ) -> None:
        name = f"appregistry_victim_{secrets.token_hex(4)}"
        url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name={name}"
        storage = PostgresStorage.from_url(url, schema=postgres_schema, min_size=1, max_size=1)
        try:
            registry = Registry(storage=storage)
            key, secret = _setup(registry)
            token = registry.issue_token(key, secret).token
            # Wait (up to 5 s) until the backend is gone, so the next query meets a dead end.
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            ).fetchall()
            assert [(True,)] == terminated
            with pytest.raises(StorageUnavailable) as caught:
                registry.check_token(token)
            host = conninfo_to_dict(postgres_url).get("host", "localhost")
            assert str(host) in str(caught.value)
            assert Reason.ALLOWED == registry.check_token(token).reason
            assert key == registry.get_app(key).key
        finally:
            storage.close()


class TestTransactions:
    """All or nothing; no nesting; a token check is one prepared query (S2, S3)."""

    def test_a_raising_block_writes_nothing(self, postgres_storage: PostgresStorage) -> None:
        registry = Registry(storage=postgres_storage)
        acme = registry.permit_account("acme", by="admin")

        def fail_midway() -> None:
            with postgres_storage.transaction() as tx:
                tx.permissions.remove("acme")
                tx.permissions.put(attrs.evolve(acme, account="globex"))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            fail_midway()
        assert acme == registry.get_permission("acme")
        assert registry.get_permission("globex") is None

    def test_transactions_do_not_nest(self, postgres_storage: PostgresStorage) -> None:
        with (
            postgres_storage.transaction(),
            pytest.raises(StorageError, match="nest"),
            postgres_storage.transaction(),
        ):
            pass

    def test_lookups_of_unstorable_ids_find_nothing(
        self, postgres_storage: PostgresStorage
    ) -> None:
        registry = Registry(storage=postgres_storage)
        for key in ("a\x00b", "\udc80" * 32):
            with pytest.raises(AppNotFound):
                registry.get_app(key)
            with pytest.raises(InstallationNotFound):
                registry.uninstall_app(key, "org-1")
            with pytest.raises(Denied):
                registry.issue_token(key, "s" * 32)

    def test_token_check_is_one_prepared_query(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        storage, pool, executed = counting_postgres_storage(postgres_url, postgres_schema)
        try:
            registry = Registry(storage=storage)
            key, secret = _setup(registry)
            token = registry.issue_token(key, secret).token
            executed.clear()
            assert Reason.ALLOWED == registry.check_token(token).reason
            assert 1 == len(executed)
            with pool.connection() as conn:
                prepared = conn.execute(
                    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                    ("%LEFT JOIN%WHERE%digest = $1%",),
                ).fetchone()
            assert (1,) == prepared
        finally:
            storage.close()


class TestPostgresContractWithoutPipelineMode(_ReadsTablesAtRest, StorageContract):
    """The whole contract again, as with a libpq older than 14: no pipeline mode.

    Each statement then waits for its answer, inside BEGIN and COMMIT; the storage must keep
    every promise all the same.
    """

    @pytest.fixture
    def storage_factory(self, postgres_storage_factory: Any) -> StorageFactory:
        def make() -> Storage:
            storage = postgres_storage_factory()
            storage._pipelined = False
            return cast(Storage, storage)

        return make

    @pytest.fixture
    def storage_reopener(self, postgres_storage_factory: Any) -> StorageReopener:
        def reopen(storage: Storage) -> Storage:
            assert isinstance(storage, PostgresStorage)
            other = postgres_storage_factory(schema=storage.schema)
            other._pipelined = False
            return cast(Storage, other)

        return reopen


class _Recording(psycopg.Cursor[Any]):
    """A cursor that notes each statement it sends, and whether the pipeline was on."""

    sent: ClassVar[list[tuple[bytes | str, bool]]] = []

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        piped = self.connection.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
        self.sent.append((query, piped))
        return super().execute(query, *args, **kwargs)


@pytest.fixture
def lone_storage(postgres_url: str, postgres_schema: str) -> Iterator[PostgresStorage]:
    """A storage on a one-connection pool whose cursors record what they send."""
    _Recording.sent = []
    pool: ConnectionPool[Any] = ConnectionPool(
        postgres_url,
        kwargs={"autocommit": True, "cursor_factory": _Recording},
        min_size=1,
        max_size=1,
        open=False,
    )
    storage = PostgresStorage(pool, schema=postgres_schema)
    yield storage
    storage.close()


@pytest.fixture(params=[True, False], ids=["pipelined", "plain"])
def both_modes(request: pytest.FixtureRequest, lone_storage: PostgresStorage) -> PostgresStorage:
    """``lone_storage``, with and without pipeline mode."""
    lone_storage._pipelined = request.param
    return lone_storage


def _idle(storage: PostgresStorage) -> bool:
    """Whether the storage's one connection is back in the pool, idle and out of pipeline mode."""
    with storage._pool.connection() as conn:
        return (
            conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
            and conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        )


class TestPipelinedTransactions:
    """Writes go out without waiting; their errors still undo the whole transaction (S2)."""

    def test_issuing_a_token_sends_one_read_and_one_insert_in_a_pipeline(
        self, lone_storage: PostgresStorage
    ) -> None:
        # Two round trips: no BEGIN nor COMMIT; the Sync that ends the pipeline commits.
        registry = Registry(storage=lone_storage)
        key, secret = _setup(registry)
        registry.issue_token(key, secret, account="org-1", approved_by="alice")
        _Recording.sent.clear()
        token = registry.issue_token(key, secret, account="org-1", approved_by="alice").token
        queries = lone_storage._queries
        assert [(queries.app_context, True), (queries.token_add, True)] == _Recording.sent
        assert Reason.ALLOWED == registry.check_token(token).reason

    def test_without_pipeline_mode_begin_and_commit_are_sent(
        self, lone_storage: PostgresStorage
    ) -> None:
        lone_storage._pipelined = False
        registry = Registry(storage=lone_storage)
        key, secret = _setup(registry)
        _Recording.sent.clear()
        token = registry.issue_token(key, secret, account="org-1", approved_by="alice").token
        queries = lone_storage._queries
        assert [
            (b"BEGIN", False),
            (queries.app_context, False),
            (queries.token_add, False),
            (b"COMMIT", False),
        ] == _Recording.sent
        assert Reason.ALLOWED == registry.check_token(token).reason

    def test_a_failed_write_is_raised_at_the_end_and_undoes_the_block(
        self, both_modes: PostgresStorage, caplog: pytest.LogCaptureFixture
    ) -> None:
        storage = both_modes

        def refused_in_the_middle(tx: Any) -> None:
            tx.permissions.put(AppsPermission("beta", "root", T0))
            tx.tokens.add(make_token(new_key()), new_digest())  # no such app: refused
            tx.permissions.put(AppsPermission("gamma", "root", T0))

        with pytest.raises(StorageError, match="23503"):
            _in(storage, refused_in_the_middle)
        with storage.transaction() as tx:
            assert (None, None) == (tx.permissions.get("beta"), tx.permissions.get("gamma"))
        assert _idle(storage)
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]

    def test_a_failed_write_then_an_exception_undoes_the_block(
        self, both_modes: PostgresStorage, caplog: pytest.LogCaptureFixture
    ) -> None:
        storage = both_modes

        def refused_then_boom(tx: Any) -> None:
            tx.permissions.put(AppsPermission("beta", "root", T0))
            with suppress(StorageError):  # raised here without pipeline mode
                tx.tokens.add(make_token(new_key()), new_digest())
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            _in(storage, refused_then_boom)
        with storage.transaction() as tx:
            assert tx.permissions.get("beta") is None
        assert _idle(storage)
        assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]

    def test_an_exception_undoes_writes_never_answered(self, both_modes: PostgresStorage) -> None:
        # Nothing failed in the database: the Sync that ends the pipeline must not commit.
        storage = both_modes
        app = make_app()
        with storage.transaction() as tx:
            tx.apps.add(app, StoredSecret(new_digest()))

        def writes_then_boom(tx: Any) -> None:
            tx.permissions.put(AppsPermission("beta", "root", T0))
            tx.tokens.add(make_token(app.key), new_digest())
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            _in(storage, writes_then_boom)
        with storage.transaction() as tx:
            assert tx.permissions.get("beta") is None
            assert 0 == tx.tokens.count_live(app.key, "acme", now=T0)
        assert _idle(storage)

    def test_a_read_after_a_failed_write_raises_that_write_s_error(
        self, lone_storage: PostgresStorage
    ) -> None:
        reads: list[object] = []

        def refused_then_read(tx: Any) -> None:
            tx.tokens.add(make_token(new_key()), new_digest())
            reads.append(tx.permissions.get("acme"))

        with pytest.raises(StorageError, match="23503") as raised:
            _in(lone_storage, refused_then_read)
        assert [] == reads  # the read raised the INSERT's error, not "unavailable"
        assert "unavailable" not in str(raised.value)
        assert _idle(lone_storage)

    def test_counts_and_the_writes_after_them_commit_together(
        self, both_modes: PostgresStorage
    ) -> None:
        # A count comes back as a row, without a Sync that would commit the writes before it.
        storage = both_modes
        app = make_app()
        with storage.transaction() as tx:
            tx.apps.add(app, StoredSecret(new_digest()))
            for _ in range(3):
                tx.tokens.add(make_token(app.key), new_digest())
        counted: list[int] = []

        def count_write_boom(tx: Any) -> None:
            counted.append(tx.tokens.remove_for(app.key, "acme"))
            tx.permissions.put(AppsPermission("beta", "root", T0))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            _in(storage, count_write_boom)
        with storage.transaction() as tx:
            live = tx.tokens.count_live(app.key, "acme", now=T0)
            assert (3, None) == (live, tx.permissions.get("beta"))
            counted.append(tx.tokens.remove_for(app.key, "acme"))
            tx.permissions.put(AppsPermission("beta", "root", T0))
        with storage.transaction() as tx:
            assert 0 == tx.tokens.count_live(app.key, "acme", now=T0)
            assert tx.permissions.get("beta") is not None
        assert [3, 3] == counted

    def test_a_block_that_only_read_keeps_the_prepared_statements_and_unlocks(
        self, both_modes: PostgresStorage, admin: psycopg.Connection[Any]
    ) -> None:
        # Nothing to undo: it ends as a commit, which spares the prepared statements that a
        # ROLLBACK makes psycopg deallocate. The app's row, locked by the read, is free again.
        storage = both_modes
        registry = Registry(storage=storage)
        key, secret = _setup(registry)
        token = registry.issue_token(key, secret, account="org-1", approved_by="alice").token
        assert Reason.ALLOWED == registry.check_token(token).reason  # prepares the check
        with pytest.raises(InstallationNotFound):
            registry.suspend_installation(key, "nobody")  # locks the app, finds nothing
        assert _idle(storage)
        with storage._pool.connection() as conn:
            names = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
        assert names  # the check's, at least
        with admin.transaction():
            admin.execute("SET LOCAL lock_timeout = '2s'")
            apps = _table(storage.schema, "appregistry_apps")
            query = sql.SQL("SELECT 1 FROM {} WHERE app_key = %s FOR UPDATE").format(apps)
            assert (1,) == admin.execute(query, (key,)).fetchone()

    def test_checks_work_after_a_block_that_wrote_is_rolled_back(
        self, both_modes: PostgresStorage
    ) -> None:
        # The rollback deallocates the prepared statements; checks prepare theirs again.
        storage = both_modes
        registry = Registry(storage=storage)
        key, secret = _setup(registry)
        token = registry.issue_token(key, secret, account="org-1", approved_by="alice").token
        assert Reason.ALLOWED == registry.check_token(token).reason

        def write_then_boom(tx: Any) -> None:
            tx.permissions.put(AppsPermission("beta", "root", T0))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            _in(storage, write_then_boom)
        assert [Reason.ALLOWED] * 3 == [registry.check_token(token).reason for _ in range(3)]
        assert registry.get_permission("beta") is None

    def test_an_interrupted_rollback_commits_nothing(
        self, lone_storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Left in pipeline mode by an interrupt, the transaction is dropped with its
        # connection: a Sync would have committed it.
        def interrupted(unit: Any) -> None:
            raise KeyboardInterrupt

        def write_then_boom(tx: Any) -> None:
            tx.permissions.put(AppsPermission("beta", "root", T0))
            raise RuntimeError("boom")

        monkeypatch.setattr(_Unit, "roll_back", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _in(lone_storage, write_then_boom)
        monkeypatch.undo()
        assert Registry(storage=lone_storage).get_permission("beta") is None
        assert _idle(lone_storage)


def _in(storage: PostgresStorage, work: Callable[[Any], None]) -> None:
    """Run ``work`` in a transaction of ``storage``."""
    with storage.transaction() as tx:
        work(tx)


# Revocations held open in another session, each as the Registry runs it, and the reason an
# issue waiting for it must give once it commits.
_HELD_REVOCATIONS: dict[str, tuple[tuple[LiteralString, ...], Reason]] = {
    "disable": (
        ("UPDATE {apps} SET enabled = false WHERE app_key = %(key)s",),
        Reason.APP_DISABLED,
    ),
    "suspend": (
        (
            "SELECT 1 FROM {apps} WHERE app_key = %(key)s FOR NO KEY UPDATE",
            (
                "UPDATE {installations} SET suspended = true "
                "WHERE app_key = %(key)s AND account = 'org-1'"
            ),
        ),
        Reason.INSTALLATION_SUSPENDED,
    ),
    "uninstall": (
        (
            "SELECT 1 FROM {apps} WHERE app_key = %(key)s FOR NO KEY UPDATE",
            "DELETE FROM {installations} WHERE app_key = %(key)s AND account = 'org-1'",
        ),
        Reason.INSTALLATION_MISSING,
    ),
    "forbid": (
        (
            "SELECT 1 FROM {permissions} WHERE account = 'org-1' FOR NO KEY UPDATE",
            "DELETE FROM {permissions} WHERE account = 'org-1'",
        ),
        Reason.APPS_NOT_PERMITTED,
    ),
}


class TestAnIssueSeesTheRevocationItWaitedFor:
    """An issue blocked by a revocation's locks sees the revocation once it commits (S2).

    The issue reads the app, installation and permission in one statement, whose snapshot
    predates the locks it waits for; locking each row is what makes it read their latest
    committed versions. Without the installation's lock, an issue that waited for a suspend
    would still see the installation active.
    """

    @pytest.mark.parametrize("revocation", sorted(_HELD_REVOCATIONS))
    def test_revocation(
        self,
        postgres_url: str,
        postgres_schema: str,
        admin: psycopg.Connection[Any],
        revocation: str,
    ) -> None:
        name = f"appregistry_issuer_{secrets.token_hex(4)}"
        url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name={name}"
        storage = PostgresStorage.from_url(url, schema=postgres_schema, min_size=1, max_size=1)
        try:
            registry = Registry(storage=storage)
            key, secret = _setup(registry)
            tables = {t: _table(postgres_schema, f"appregistry_{t}") for t in _TABLE_NAMES}
            outcome: list[object] = []
            issuer = threading.Thread(
                target=lambda: outcome.append(
                    _outcome(
                        lambda: registry.issue_token(
                            key, secret, account="org-1", approved_by="alice"
                        )
                    )
                )
            )
            statements, reason = _HELD_REVOCATIONS[revocation]
            with (
                psycopg.connect(postgres_url, autocommit=True) as revoker,
                revoker.transaction(),
            ):
                for statement in statements:
                    revoker.execute(sql.SQL(statement).format(**tables), {"key": key})
                issuer.start()
                _wait_until_blocked(admin, name)
            issuer.join(timeout=30)
            assert [reason] == outcome
        finally:
            storage.close()


_TABLE_NAMES: Final = ("apps", "installations", "permissions")


def _outcome(issue: Callable[[], object]) -> object:
    """``Reason.ALLOWED`` when the issue succeeds, else the reason it was denied for."""
    try:
        issue()
    except Denied as denied:
        return denied.decision.reason
    return Reason.ALLOWED


def _wait_until_blocked(admin: psycopg.Connection[Any], application_name: str) -> None:
    """Wait (up to 10 s) until the session named ``application_name`` waits on a lock."""
    for _ in range(1000):
        waiting = admin.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
        if waiting == (1,):
            return
        threading.Event().wait(0.01)
    pytest.fail(f"{application_name} never waited on a lock")


class TestSeveralServers:
    """Several storages on one database, like several app servers, see each other's changes."""

    def test_changes_on_one_are_seen_by_the_others(self, postgres_storage_factory: Any) -> None:
        first = postgres_storage_factory()
        second = postgres_storage_factory(schema=first.schema)
        third = postgres_storage_factory(schema=first.schema)
        one, two, three = (Registry(storage=s) for s in (first, second, third))
        key, secret = _setup(one)
        token = two.issue_token(key, secret, account="org-1", approved_by="alice").token
        assert Reason.ALLOWED == three.check_token(token).reason
        three.suspend_installation(key, "org-1")
        assert Reason.INSTALLATION_SUSPENDED == one.check_token(token).reason
        two.resume_installation(key, "org-1")
        one.disable_app(key)
        assert Reason.APP_DISABLED == two.check_token(token).reason
        three.enable_app(key)
        assert Reason.ALLOWED == one.check_token(token).reason
        assert 1 == two.list_installations("org-1").items[0].access_tokens
        one.remove_app(key)
        assert Reason.TOKEN_UNKNOWN == three.check_token(token).reason
        with pytest.raises(AppNotFound):
            two.get_app(key)

    def test_registrations_racing_respect_the_owner_limit(
        self, postgres_storage_factory: Any
    ) -> None:
        first = postgres_storage_factory(max_size=8)
        registries = [
            Registry(storage=s, max_apps_per_owner=5)
            for s in (first, postgres_storage_factory(schema=first.schema, max_size=8))
        ]
        outcomes: list[str] = []
        lock = threading.Lock()

        def register(registry: Registry) -> None:
            try:
                registry.register_app("acme", **APP_FIELDS)
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001 - counted below
                outcome = type(exc).__name__
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=register, args=(registries[n % 2],)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {"ok": 5, "LimitExceeded": 7} == {o: outcomes.count(o) for o in set(outcomes)}
        assert 5 == registries[0].list_apps(owner="acme").total

    def test_purges_on_several_servers_share_the_work(self, postgres_storage_factory: Any) -> None:
        clock = ManualClock()
        first = postgres_storage_factory()
        registries = [
            Registry(storage=s, clock=clock)
            for s in (first, postgres_storage_factory(schema=first.schema))
        ]
        key, secret = _setup(registries[0])
        for _ in range(60):
            registries[0].issue_token(key, secret, account="org-1", approved_by="alice")
        clock.advance(timedelta(hours=2))
        purged: list[int] = []

        def purge(registry: Registry) -> None:
            purged.append(registry.purge_expired_tokens(batch_size=7).total)

        threads = [threading.Thread(target=purge, args=(r,)) for r in registries * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert 60 == sum(purged)
        assert 0 == registries[1].purge_expired_tokens().total


# -- races (S2) ------------------------------------------------------------------------------

# A stopper is an operation after which the tokens it affects must never act again, and no new
# one may be issued for them: (registry, app key, account) -> anything.
Stopper = Callable[[Registry, str, str], object]
STOPPERS: dict[str, tuple[Stopper, bool]] = {
    # name: (the operation, whether the owner's client-credentials tokens are affected too)
    "disable": (lambda r, key, account: r.disable_app(key), True),
    "remove": (lambda r, key, account: r.remove_app(key), True),
    "regenerate": (lambda r, key, account: r.regenerate_secret(key), True),
    "uninstall": (lambda r, key, account: r.uninstall_app(key, account), False),
    "suspend": (lambda r, key, account: r.suspend_installation(key, account), False),
    "forbid": (lambda r, key, account: r.forbid_account(account), False),
}


class TestRacesKeepTheInvariant:
    """Issue and check race a disable, remove, uninstall, suspend, forbid or regenerate.

    Once the stopping operation has returned, no check of an affected token succeeds, and no
    issue that started afterwards succeeds; every token issued at any time is dead at the end.
    The racers use one storage, the stopper another, as on separate app servers.
    """

    ROUNDS = 8
    ISSUERS = 4

    @pytest.mark.parametrize("stopper", sorted(STOPPERS))
    def test_race(self, postgres_storage_factory: Any, stopper: str) -> None:
        stop, owner_affected = STOPPERS[stopper]
        racing = postgres_storage_factory(max_size=self.ISSUERS + 2)
        stopping = postgres_storage_factory(schema=racing.schema)
        racers, stopper_registry = Registry(storage=racing), Registry(storage=stopping)
        for round_number in range(self.ROUNDS):
            account = f"org-{round_number}"
            key, secret = _setup(racers, account=account)
            violations = self._race(
                racers,
                stopper_registry,
                stop=stop,
                key=key,
                secret=secret,
                account=account,
                owner_affected=owner_affected,
            )
            assert [] == violations

    def _race(
        self,
        racers: Registry,
        stopper: Registry,
        *,
        stop: Stopper,
        key: str,
        secret: str,
        account: str,
        owner_affected: bool,
    ) -> list[str]:
        stopped = threading.Event()
        enough_issued = threading.Semaphore(0)
        lock = threading.Lock()
        violations: list[str] = []
        issued: list[str] = []
        accounts = [account, None] if owner_affected else [account]

        def issuer(seed: int) -> None:
            after_stop = 0
            for attempt in itertools.count(seed):
                if after_stop >= 15:
                    break
                started_after_stop = stopped.is_set()
                after_stop += started_after_stop
                try:
                    acting_for = accounts[attempt % len(accounts)]
                    token = racers.issue_token(
                        key,
                        secret,
                        account=acting_for,
                        approved_by=None if acting_for is None else "alice",
                    ).token
                except Denied:
                    continue
                with lock:
                    issued.append(token)
                    if started_after_stop:
                        violations.append("a token was issued after the stop returned")
                enough_issued.release()
                check_started_after_stop = stopped.is_set()
                if racers.check_token(token).allowed and check_started_after_stop:
                    with lock:
                        violations.append("a token acted after the stop returned")

        threads = [threading.Thread(target=issuer, args=(seed,)) for seed in range(self.ISSUERS)]
        for thread in threads:
            thread.start()
        # Let a few tokens through first, a different number each round.
        for _ in range(1 + secrets.randbelow(10)):
            enough_issued.acquire(timeout=30)
        stop(stopper, key, account)
        stopped.set()
        for thread in threads:
            thread.join()
        violations.extend(
            "a token acts after the race" for token in issued if racers.check_token(token).allowed
        )
        return violations


# -- plaintext (S6) --------------------------------------------------------------------------


class TestNoPlaintextInTheTables:
    """Every row of every table, dumped as text, holds no secret or token in plaintext."""

    @pytest.mark.parametrize("encrypted", [False, True], ids=["digest-only", "encrypted"])
    def test_dump_holds_no_secret_or_token(
        self, postgres_storage: PostgresStorage, admin: psycopg.Connection[Any], encrypted: bool
    ) -> None:
        from cryptography.fernet import Fernet

        registry = Registry(
            storage=postgres_storage,
            secret_encryption_key=Fernet.generate_key() if encrypted else None,
        )
        key, secret = _setup(registry)
        secrets_seen = [secret]
        imported = ImportedCredentials("k" * 16 + "K" * 16, "PVui7jiATDKcWhPOpAUkXAliGahUvEdf")
        registry.register_app("acme", credentials=imported, trusted=True, **APP_FIELDS)
        secrets_seen.append(imported.secret)
        tokens = [registry.issue_token(key, secret, user_agent="curl/8").token for _ in range(3)]
        tokens.append(registry.issue_token(key, secret, account="org-1", approved_by="alice").token)
        tokens.append(registry.issue_token(imported.key, imported.secret).token)
        regenerated = registry.regenerate_secret(imported.key).secret
        secrets_seen.append(regenerated)
        tokens.append(registry.issue_token(imported.key, regenerated).token)
        redirect = APP_FIELDS["redirect_url"]
        codes = [
            registry.authorize(key, "org-1", redirect_url=redirect, approved_by="alice").code
            for _ in range(2)
        ]
        pair = registry.exchange_code(key, codes[0], redirect_url=redirect)
        rotated = registry.refresh(key, pair.refresh_token or "")
        tokens += [
            *codes,
            pair.token,
            rotated.token,
            pair.refresh_token or "",
            rotated.refresh_token or "",
        ]

        dump = self._dump(admin, postgres_storage.schema)
        assert key in dump  # the dump does hold the rows
        assert "curl/8" in dump
        for plaintext in [*secrets_seen, *tokens]:
            for spelling in (plaintext, plaintext.encode().hex(), plaintext.encode().hex().upper()):
                assert spelling not in dump

    @staticmethod
    def _dump(conn: psycopg.Connection[Any], schema: str | None) -> str:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s", (schema,)
            )
        ]
        assert 9 == len(tables)  # every table of ours, the settings too
        lines: list[str] = []
        for name in tables:
            query = sql.SQL("SELECT t::text FROM {} AS t").format(_table(schema, name))
            lines.extend(row[0] for row in conn.execute(query))
        return "\n".join(lines)


# -- order and search agree with the memory backend -------------------------------------------

NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=12,
).filter(lambda name: name.strip() == name and bool(name))


class TestOrderAndSearchAgreeWithMemory:
    """Lists of any Unicode names come in the same order, and search finds the same entries."""

    _examples = itertools.count()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(names=st.lists(NAMES, min_size=1, max_size=8), data=st.data())
    def test_apps(
        self, postgres_storage: PostgresStorage, names: list[str], data: st.DataObject
    ) -> None:
        # One schema for all examples: each example registers under an owner of its own, with
        # the same keys on both backends, so ties in the folded name break the same way.
        example = next(self._examples)
        owner = f"owner-{example}"
        search = data.draw(
            st.sampled_from(names).flatmap(
                lambda name: st.integers(0, len(name) - 1).map(lambda i: name[i:])
            )
        )
        listings = []
        for storage in (postgres_storage, MemoryStorage()):
            registry = Registry(storage=storage)
            for n, name in enumerate(names):
                credentials = ImportedCredentials(f"{example:016d}{n:016d}", "s" * 32)
                fields = {**APP_FIELDS, "name": name, "description": f"about {name}"}
                registry.register_app(owner, credentials=credentials, **fields)
            listings.append(
                [
                    [item.app.key for item in registry.list_apps(owner=owner, **query).items]
                    for query in ({"per_page": 1000}, {"per_page": 1000, "search": search})
                ]
            )
        memory, postgres = listings[1], listings[0]
        assert memory == postgres

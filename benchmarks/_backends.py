"""One class per backend: the library's registry on it, bulk setup, and the raw baselines.

Each baseline is the least work that answers the same question as the library's operation,
on the same rows:

- **check**: digest the token, find its row, and compare its expiry, its app's status, the
  installation's status and the account's permission with what the rules demand (memory: a
  plain SHA-256 and dict look-ups; SQLite: one SELECT of just the columns the answer needs;
  PostgreSQL: the library's own query, prepared, on one connection and one cursor).
- **issue**: make a random token, digest it, and INSERT its row, committed (memory: a dict
  insert).
- **purge**: one DELETE of every expired row, committed (memory: one pass over a dict).

A little over 600 lines, kept whole: each backend's baselines sit beside its bulk loading,
so that a baseline and the rows it is measured on are read in one place.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from appregistry import (
    AccessToken,
    App,
    AppsPermission,
    Grant,
    ImportedCredentials,
    Installation,
    Registry,
    StoredSecret,
    search_text,
)
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import _TOKEN_CONTEXT_SQL, SQLiteStorage

from ._world import (
    LIST_ACCOUNT,
    LIST_OWNER,
    PEPPER,
    TOKEN_LIFETIME,
    USER_AGENT,
    TokenDigest,
    Tokens,
    World,
)

#: What a raw issue is given: an app key and the account the token acts for.
Pair = tuple[str, str]


def _new_token() -> tuple[str, str]:
    """A fresh token and token id from the OS CSPRNG, the cheapest way CPython makes them."""
    raw = base64.urlsafe_b64encode(os.urandom(45)).decode()
    return raw[:44], raw[44:60]


class Backend(ABC):
    """The library on one backend, plus what its baselines need."""

    name: ClassVar[str]
    #: Whether the raw purge needs the expired rows loaded again (ours deleted them).
    reload_for_raw_purge: ClassVar[bool] = True
    registry: Registry

    def register_apps(self, world: World) -> None:
        """Register the world's apps through the library, keeping their keys and secrets."""
        for i, app in enumerate(world.apps):
            self.registry.register_app(
                app.owner,
                name=f"Benchmark app {i}",
                homepage=f"https://app{i}.example/",
                admin_email=f"admin@app{i}.example",
                redirect_url=f"https://app{i}.example/callback",
                trusted=app.trusted,
                credentials=ImportedCredentials(app.key, app.secret),
            )

    @abstractmethod
    def load_accounts(self, world: World) -> None:
        """Bulk-load every account's permission and the installations."""

    def load_list_apps(self, world: World) -> None:
        """Load the app-list rows' apps, each installed on `LIST_ACCOUNT`.

        Through the storage port, in one transaction: the rows the library writes, without
        a registration's checks and key generation per app (nothing measured authenticates
        these apps, so their stored secret is a stand-in).
        """
        storage: Any = self.registry._storage  # private, on purpose: a bulk load
        secret = StoredSecret(bytes(32))
        now = world.now
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission(LIST_ACCOUNT, "admin", now))
            for n, key in enumerate(world.list_apps):
                app = App(
                    key,
                    LIST_OWNER,
                    f"Listed app {n:06d}",
                    f"https://listed{n}.example/",
                    f"admin@listed{n}.example",
                    f"https://listed{n}.example/callback",
                    now,
                    description="one of many",
                )
                tx.apps.add(app, secret)
                tx.installations.put(Installation(key, LIST_ACCOUNT, "admin", now))

    @abstractmethod
    def load_tokens(self, tokens: Tokens) -> None:
        """Bulk-load token rows as the library would have stored them."""

    @abstractmethod
    def raw_check(self) -> Callable[[str], bool]:
        """The baseline check: may this token act now?"""

    @abstractmethod
    def raw_issue(self, pair: Pair) -> None:
        """The baseline issue: a new token row for ``pair``, durable."""

    @abstractmethod
    def raw_purge(self) -> int:
        """The baseline purge: delete every expired token at once; how many were deleted."""

    def raw_query(self) -> Callable[[bytes], object] | None:
        """The library's token check query alone, through the driver; ``None`` for memory."""
        return None

    def raw_batch(self, fn: Callable[[Any], object]) -> Callable[[Sequence[Any]], None]:
        """Run a baseline over a batch of items: one call per item, nothing else timed."""

        def run(batch: Sequence[Any]) -> None:
            for item in batch:
                fn(item)

        return run

    def after_purge(self) -> None:  # noqa: B027 - a hook that most backends leave empty
        """Tidy up after the library's purge, before the rows are loaded again."""

    def storage_bytes(self) -> int | None:
        """Bytes the data takes at rest, when the backend keeps a file."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Close everything and remove what the run created."""


# -- memory ------------------------------------------------------------------------------------


class MemoryBackend(Backend):
    """`MemoryStorage`, against plain dicts keyed by the SHA-256 of each token."""

    name = "memory"
    reload_for_raw_purge = False  # the dicts kept their own copy of the expired rows

    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.registry = Registry(storage=self.storage, pepper=PEPPER)
        # digest -> (app key, account, expiry as a POSIX timestamp, client credentials?)
        self._tokens: dict[bytes, tuple[str, str, float, bool]] = {}
        self._apps: dict[str, tuple[bool, bool]] = {}  # key -> (enabled, trusted)
        self._installations: dict[Pair, bool] = {}  # -> suspended
        self._permitted: set[str] = set()

    def register_apps(self, world: World) -> None:
        super().register_apps(world)
        self._apps = {app.key: (True, app.trusted) for app in world.apps}

    def load_accounts(self, world: World) -> None:
        now = world.now
        with self.storage.transaction() as tx:
            for account in world.accounts:
                tx.permissions.put(AppsPermission(account, "admin", now))
            for key, account in world.installations:
                tx.installations.put(Installation(key, account, "admin", now))
        self._permitted = set(world.accounts)
        self._installations = dict.fromkeys(world.installations, False)

    def load_tokens(self, tokens: Tokens) -> None:
        with self.storage.transaction() as tx:
            for row in tokens.rows:
                record = AccessToken(
                    row.token_id,
                    row.app_key,
                    row.account,
                    row.grant,
                    row.issued_at,
                    row.expires_at,
                    row.user_agent,
                )
                tx.tokens.add(record, row.digest)
        sha256 = hashlib.sha256
        for row, token in zip(tokens.rows, tokens.plaintext, strict=True):
            self._tokens[sha256(token.encode()).digest()] = (
                row.app_key,
                row.account,
                row.expires_at.timestamp(),
                row.grant is Grant.CLIENT_CREDENTIALS,
            )

    def raw_check(self) -> Callable[[str], bool]:
        tokens_get = self._tokens.get
        apps_get = self._apps.get
        installations_get = self._installations.get
        permitted = self._permitted
        sha256 = hashlib.sha256
        clock = time.time

        def check(token: str) -> bool:
            row = tokens_get(sha256(token.encode()).digest())
            if row is None:
                return False
            key, account, expires, client_credentials = row
            if expires <= clock():
                return False
            app = apps_get(key)
            if app is None or not app[0]:
                return False
            suspended = installations_get((key, account))
            if suspended is None:
                if not client_credentials:
                    return False
            elif suspended:
                return False
            return account in permitted and (app[1] or not client_credentials)

        return check

    def raw_issue(self, pair: Pair) -> None:
        token, _ = _new_token()
        expires = time.time() + TOKEN_LIFETIME.total_seconds()
        self._tokens[hashlib.sha256(token.encode()).digest()] = (*pair, expires, False)

    def raw_purge(self) -> int:
        now = time.time()
        expired = [digest for digest, row in self._tokens.items() if row[2] <= now]
        for digest in expired:
            del self._tokens[digest]
        return len(expired)

    def close(self) -> None:
        self.registry.close()
        self._tokens.clear()


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_TOKEN_INSERT = (
    "INSERT INTO tokens (token_id, digest, app_key, account, grant_type, issued_at, "
    "expires_at, user_agent, search_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The columns the answer needs, joined as the library joins them.
_SQLITE_CHECK = """
    SELECT t.expires_at, t.grant_type, a.enabled, a.trusted, i.suspended, p.account
    FROM tokens AS t
    LEFT JOIN apps AS a ON a.app_key = t.app_key
    LEFT JOIN installations AS i ON i.app_key = t.app_key AND i.account = t.account
    LEFT JOIN permissions AS p ON p.account = t.account
    WHERE t.digest = ?
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _us(when: datetime) -> int:
    return (when - _EPOCH) // _US


class SQLiteBackend(Backend):
    """`SQLiteStorage` on a file, against raw ``sqlite3`` on the same file.

    Both use the library's defaults: WAL, ``synchronous = FULL`` (every commit durable).
    """

    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.registry = Registry(storage=SQLiteStorage(self.path), pepper=PEPPER)
        self._raw = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._raw.execute("PRAGMA foreign_keys = ON")
        self._raw.execute("PRAGMA synchronous = FULL")
        self._digest = TokenDigest()

    def load_accounts(self, world: World) -> None:
        now = _us(world.now)
        with self._bulk() as db:
            db.executemany(
                "INSERT INTO permissions (account, granted_by, granted_at) VALUES (?, ?, ?)",
                ((account, "admin", now) for account in world.accounts),
            )
            db.executemany(
                "INSERT INTO installations (app_key, account, installed_by, installed_at, "
                "suspended) VALUES (?, ?, ?, ?, 0)",
                ((key, account, "admin", now) for key, account in world.installations),
            )

    def load_tokens(self, tokens: Tokens) -> None:
        folded = {USER_AGENT: search_text(USER_AGENT), None: ""}
        with self._bulk() as db:
            db.executemany(
                _SQLITE_TOKEN_INSERT,
                (
                    (
                        row.token_id,
                        row.digest,
                        row.app_key,
                        row.account,
                        str(row.grant),
                        _us(row.issued_at),
                        _us(row.expires_at),
                        row.user_agent,
                        folded[row.user_agent],
                    )
                    for row in tokens.rows
                ),
            )

    def _bulk(self) -> _SQLiteBulk:
        return _SQLiteBulk(self._raw)

    def raw_check(self) -> Callable[[str], bool]:
        execute = self._raw.execute
        digest = self._digest
        clock = time.time_ns

        def check(token: str) -> bool:
            row = execute(_SQLITE_CHECK, (digest(token),)).fetchone()
            if row is None:
                return False
            expires, grant, enabled, trusted, suspended, permitted = row
            client_credentials = grant == "client_credentials"
            return (
                expires > clock() // 1000
                and enabled == 1
                and (suspended == 0 or (suspended is None and client_credentials))
                and permitted is not None
                and (trusted == 1 or not client_credentials)
            )

        return check

    def raw_query(self) -> Callable[[bytes], object] | None:
        execute = self._raw.execute
        return lambda digest: execute(_TOKEN_CONTEXT_SQL, (digest,)).fetchone()

    def raw_issue(self, pair: Pair) -> None:
        token, token_id = _new_token()
        now = time.time_ns() // 1000
        lifetime = TOKEN_LIFETIME // _US
        self._raw.execute(
            _SQLITE_TOKEN_INSERT,
            (
                token_id,
                self._digest(token),
                *pair,
                "authorization_code",
                now,
                now + lifetime,
                USER_AGENT,
                search_text(USER_AGENT),
            ),
        )

    def raw_purge(self) -> int:
        now = time.time_ns() // 1000
        return self._raw.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,)).rowcount

    def storage_bytes(self) -> int:
        pages = self._raw.execute("PRAGMA page_count").fetchone()[0]
        free = self._raw.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._raw.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        self.registry.close()
        self._raw.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class _SQLiteBulk:
    """One transaction for a bulk load (setup only)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self._connection.execute("BEGIN")
        return self._connection

    def __exit__(self, kind: object, *_: object) -> None:
        self._connection.execute("COMMIT" if kind is None else "ROLLBACK")


# -- PostgreSQL --------------------------------------------------------------------------------

_PG_TOKEN_COLUMNS = (
    "token_id, app_key, account, grant_type, issued_at, expires_at, user_agent, digest, search_text"
)


class PostgresBackend(Backend):
    """`PostgresStorage` in a schema of its own, against raw ``psycopg`` in the same schema."""

    name = "postgres"
    #: Whether the baselines prepare their statements, as the library's storage does.
    prepare: ClassVar[bool] = True

    def __init__(self, url: str, *, storage_url: str | None = None) -> None:
        import psycopg  # noqa: PLC0415 - only when PostgreSQL is benchmarked
        from psycopg import sql  # noqa: PLC0415

        from appregistry.storage.postgres import PostgresStorage  # noqa: PLC0415

        self._url = url
        self.schema = f"appregistry_bench_{secrets.token_hex(4)}"
        self._raw = psycopg.connect(url, autocommit=True)
        try:
            self.registry = Registry(
                storage=PostgresStorage.from_url(storage_url or url, schema=self.schema),
                pepper=PEPPER,
            )
        except BaseException:
            self._drop()
            raise
        self._sql = sql
        self._names = {
            name: sql.Identifier(self.schema, f"appregistry_{name}").as_string(self._raw)
            for name in ("apps", "permissions", "installations", "tokens")
        }
        self._digest = TokenDigest()
        n = self._names
        # The library's own token check query, byte for byte (the issue asks for the same
        # query); where each column the answer needs sits is read from its description.
        storage: Any = self.registry._storage  # private, on purpose: the very same query
        self._check: bytes = storage._queries.token_context
        self._pool = storage._pool
        # The baselines run on the connection the library's pool hands out, checked out for
        # a whole round: the same server process answers both, so where the scheduler puts
        # that process on this machine's few cores favours neither.
        self._cursors: dict[object, Any] = {}
        self._cursor: Any = self._raw.cursor()
        self._cursor.execute(self._check, (b"",))
        names = [column.name for column in self._cursor.description or ()]
        self._at = {
            name: names.index(name)
            for name in (
                "expires_at",
                "grant_type",
                "enabled",
                "trusted",
                "suspended",
                "granted_by",
            )
        }
        self._insert = (
            f"INSERT INTO {n['tokens']} ({_PG_TOKEN_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )

    def _copy(self, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._raw.cursor().copy(f"COPY {self._names[table]} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _vacuum(self, table: str) -> None:
        # What autovacuum would soon do anyway; done now so it does not run mid-measurement.
        self._raw.execute(f"VACUUM ANALYZE {self._names[table]}")

    def load_accounts(self, world: World) -> None:
        self._copy(
            "permissions",
            "account, granted_by, granted_at",
            ((account, "admin", world.now) for account in world.accounts),
        )
        self._copy(
            "installations",
            "app_key, account, installed_by, installed_at, suspended",
            ((key, account, "admin", world.now, False) for key, account in world.installations),
        )
        self._vacuum("permissions")
        self._vacuum("installations")

    def load_list_apps(self, world: World) -> None:
        super().load_list_apps(world)
        self._vacuum("apps")
        self._vacuum("installations")

    def load_tokens(self, tokens: Tokens) -> None:
        folded = {USER_AGENT: search_text(USER_AGENT), None: ""}
        self._copy(
            "tokens",
            _PG_TOKEN_COLUMNS,
            (
                (
                    row.token_id,
                    row.app_key,
                    row.account,
                    str(row.grant),
                    row.issued_at,
                    row.expires_at,
                    row.user_agent,
                    row.digest,
                    folded[row.user_agent],
                )
                for row in tokens.rows
            ),
        )
        self._vacuum("tokens")

    def raw_batch(self, fn: Callable[[Any], object]) -> Callable[[Sequence[Any]], None]:
        pool = self._pool

        def run(batch: Sequence[Any]) -> None:
            conn = pool.getconn()
            try:
                cursor = self._cursors.get(conn) or self._cursors.setdefault(conn, conn.cursor())
                self._cursor = cursor
                for item in batch:
                    fn(item)
            finally:
                self._cursor = self._raw.cursor()
                pool.putconn(conn)

        return run

    def raw_check(self) -> Callable[[str], bool]:
        query = self._check
        digest = self._digest
        clock = datetime.now
        at = self._at
        expires, grant, enabled, trusted = (
            at["expires_at"],
            at["grant_type"],
            at["enabled"],
            at["trusted"],
        )
        suspended_at, permitted_at = at["suspended"], at["granted_by"]
        prepare = self.prepare

        def check(token: str) -> bool:
            row = self._cursor.execute(query, (digest(token),), prepare=prepare).fetchone()
            if row is None:
                return False
            client_credentials = row[grant] == "client_credentials"
            suspended = row[suspended_at]
            return (
                row[expires] > clock(UTC)
                and row[enabled] is True
                and (suspended is False or (suspended is None and client_credentials))
                and row[permitted_at] is not None
                and (row[trusted] is True or not client_credentials)
            )

        return check

    def raw_query(self) -> Callable[[bytes], object] | None:
        query, prepare = self._check, self.prepare
        return lambda digest: self._cursor.execute(query, (digest,), prepare=prepare).fetchone()

    def raw_issue(self, pair: Pair) -> None:
        token, token_id = _new_token()
        now = datetime.now(UTC)
        self._cursor.execute(
            self._insert,
            (
                token_id,
                *pair,
                "authorization_code",
                now,
                now + TOKEN_LIFETIME,
                USER_AGENT,
                self._digest(token),
                search_text(USER_AGENT),
            ),
            prepare=self.prepare,
        )

    def raw_purge(self) -> int:
        return self._raw.execute(
            f"DELETE FROM {self._names['tokens']} WHERE expires_at <= %s", (datetime.now(UTC),)
        ).rowcount

    def after_purge(self) -> None:
        """Vacuum the emptied pages, as autovacuum would, before the next load."""
        self._vacuum("tokens")

    def close(self) -> None:
        try:
            self.registry.close()
        finally:
            self._drop()

    def _drop(self) -> None:
        from psycopg import sql  # noqa: PLC0415

        self._raw.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
        )
        self._raw.close()


class PgBouncerBackend(PostgresBackend):
    """`PostgresBackend` with the storage and the baselines behind PgBouncer (transaction mode).

    Only the check rows run here (`benchmarks._suite.run_check_rows`). The storage is opened
    with ``prepare=off``, as a pooler in transaction mode needs, and the baseline sends the
    same query through the same pooler, unprepared too: the ratio is the library's cost over
    a round trip through the pooler. Bulk loads go to the server directly.
    """

    name = "postgres_pgbouncer"
    prepare = False

    def __init__(self, url: str) -> None:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        from appregistry.testing._pgbouncer import running_pgbouncer  # noqa: PLC0415

        database = str(conninfo_to_dict(url).get("dbname") or "postgres")
        self._pooler = ExitStack()
        bouncer = self._pooler.enter_context(running_pgbouncer(url, pools={database: None}))
        try:
            super().__init__(url, storage_url=bouncer.url(database, prepare="off"))
        except BaseException:
            self._pooler.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._pooler.close()

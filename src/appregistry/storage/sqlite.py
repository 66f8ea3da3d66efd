"""The SQLite backend: the embedded default, stdlib `sqlite3` only.

One file holds the registry. Many threads may share one `SQLiteStorage`; several processes may
open the same file.

- **Transactions** (S2): every `SQLiteStorage.transaction` starts with ``BEGIN IMMEDIATE``, so
  transactions take the database's write lock up front and run one after another: a disable
  and an issue racing can never both see the app enabled. The lock is waited for up to
  ``timeout`` seconds (SQLite's busy timeout).
- **Token checks** (S3): `SQLiteStorage.token_context` is one ``SELECT`` joining the token to
  its app, installation and permission, outside any transaction. The file is in WAL mode, so
  checks read the last committed state without waiting for writers. The app comes as one
  JSON text (``apps.record``), and the records built from it are shared between checks.
- **Purges**: each batch is its own short transaction, but while batches follow each other
  the connection keeps a larger page cache and lets the write-ahead log grow to the size of
  the database (at most 1 GiB) before checkpointing it (see ``_Session.tune_for_purge``); the
  last batch checkpoints.
- **Connections**: a small pool (``pool_size``) of connections shared by the threads; foreign
  keys are on in every connection.
- **Schema** (S4): versioned with ``PRAGMA user_version`` and marked as an appregistry
  database with ``PRAGMA application_id``. Forward migrations are applied **when the storage
  is opened**, in one transaction. A file that is not an appregistry database (another
  SQLite database, or not SQLite at all) is refused with `appregistry.errors.SchemaError` and
  is not written to; so is a database whose schema is newer than this code.
- **Values**: datetimes are stored as whole microseconds since the Unix epoch (UTC), so they
  round-trip exactly and compare in SQL; they come back as aware UTC datetimes. Names are
  stored beside their case-folded form and their `appregistry.search_text`, so order and
  search agree with the other backends for any Unicode text.
- **Secrets** (S6): only digests and ciphertext are stored. Tokens, authorization codes and
  refresh tokens are stored by digest.
- **Integrity**: installations, tokens, codes and refresh tokens reference their app; removing
  an app removes them too (``ON DELETE CASCADE``), so a token can never outlive its app. The
  keys of removed apps are kept in ``retired_keys`` (R13).

``:memory:`` opens a private in-memory database, for tests and demos. It has one connection,
so its operations run one at a time.

>>> storage = SQLiteStorage(":memory:")
>>> with storage.transaction() as tx:
...     tx.apps.count_owned("acme")
0
>>> storage.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NoReturn

from .._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Grant,
    Installation,
    InstallationListing,
    Page,
    RefreshToken,
    StoredSecret,
    TokenContext,
)
from .._validation import search_text
from ..errors import SchemaError, StorageError, StorageUnavailable
from ..ports import ListQuery

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

#: Marks a file as an appregistry database (``PRAGMA application_id``): "APRG" in ASCII.
APPLICATION_ID: Final = 0x41505247

# _MIGRATIONS[n] takes a database from schema version n to n + 1. Append, never edit: a
# released migration may already have run on someone's file.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE apps (
            app_key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            name_folded TEXT NOT NULL,
            search_text TEXT NOT NULL,
            homepage TEXT NOT NULL,
            admin_email TEXT NOT NULL,
            redirect_url TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            description TEXT,
            image_url TEXT,
            admin_phone TEXT,
            trusted INTEGER NOT NULL CHECK (trusted IN (0, 1)),
            enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
            secret_digest BLOB NOT NULL,
            secret_ciphertext BLOB
        )
        """,
        "CREATE INDEX apps_by_name ON apps (name_folded, app_key)",
        "CREATE INDEX apps_by_owner ON apps (owner, name_folded, app_key)",
        """
        CREATE TABLE permissions (
            account TEXT PRIMARY KEY,
            granted_by TEXT NOT NULL,
            granted_at INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE installations (
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            installed_by TEXT NOT NULL,
            installed_at INTEGER NOT NULL,
            suspended INTEGER NOT NULL CHECK (suspended IN (0, 1)),
            PRIMARY KEY (app_key, account)
        )
        """,
        "CREATE INDEX installations_by_account ON installations (account, app_key)",
        """
        CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            grant_type TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            user_agent TEXT,
            search_text TEXT NOT NULL
        )
        """,
        # Counts, lists (ordered by expiry) and removals of one app on one account.
        "CREATE INDEX tokens_by_pair ON tokens (app_key, account, expires_at, token_id)",
        "CREATE INDEX tokens_by_expiry ON tokens (expires_at)",
    ),
    (
        # R13: keys of removed apps, so that they never authenticate again.
        "CREATE TABLE retired_keys (app_key TEXT PRIMARY KEY)",
        "ALTER TABLE tokens ADD COLUMN family_id TEXT",
        "CREATE INDEX tokens_by_family ON tokens (family_id) WHERE family_id IS NOT NULL",
        """
        CREATE TABLE codes (
            digest BLOB PRIMARY KEY,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            redirect_url TEXT NOT NULL,
            approved_by TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            code_challenge TEXT,
            code_challenge_method TEXT
        )
        """,
        "CREATE INDEX codes_by_pair ON codes (app_key, account)",
        "CREATE INDEX codes_by_expiry ON codes (expires_at)",
        """
        CREATE TABLE refresh_tokens (
            token_id TEXT PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            family_id TEXT NOT NULL,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            grant_type TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            rotated_at INTEGER
        )
        """,
        "CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id)",
        "CREATE INDEX refresh_tokens_by_pair ON refresh_tokens (app_key, account)",
        "CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at)",
    ),
    (
        # Secret rotation with a grace window: the replaced secret's digest, and until when
        # it still authenticates.
        "ALTER TABLE apps ADD COLUMN previous_secret_digest BLOB",
        "ALTER TABLE apps ADD COLUMN previous_secret_valid_until INTEGER",
    ),
    (
        # Token checks read the app as one value, ``record`` (see _app_record), rather than
        # a dozen columns: it is a fraction of the cost to fetch and to look up in
        # SQLiteStorage's shared app records. _FILLS[3] writes it for the apps already there.
        "ALTER TABLE apps ADD COLUMN record TEXT",
        # ... from this index alone: one B-tree search, not one in the key's index and one in
        # the table (the check names it, as SQLite prefers the key's own unique index).
        "CREATE INDEX apps_records ON apps (app_key, record)",
        # Permissions and installations become clustered on their keys (WITHOUT ROWID): a
        # token check then finds each row in one B-tree search instead of an index search and
        # a table search.
        """
        CREATE TABLE permissions_v4 (
            account TEXT PRIMARY KEY,
            granted_by TEXT NOT NULL,
            granted_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO permissions_v4 (account, granted_by, granted_at)
        SELECT account, granted_by, granted_at FROM permissions
        """,
        "DROP TABLE permissions",
        "ALTER TABLE permissions_v4 RENAME TO permissions",
        """
        CREATE TABLE installations_v4 (
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            installed_by TEXT NOT NULL,
            installed_at INTEGER NOT NULL,
            suspended INTEGER NOT NULL CHECK (suspended IN (0, 1)),
            PRIMARY KEY (app_key, account)
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO installations_v4 (app_key, account, installed_by, installed_at, suspended)
        SELECT app_key, account, installed_by, installed_at, suspended FROM installations
        """,
        # Nothing references installations, so dropping it cascades nowhere.
        "DROP TABLE installations",
        "ALTER TABLE installations_v4 RENAME TO installations",
        "CREATE INDEX installations_by_account ON installations (account, app_key)",
    ),
)

#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
# SQLite's default limit on bound parameters is 999 in older builds; stay well below it.
_CHUNK: Final = 500
# Grant(value) goes through the enum's lookup machinery; a dict is ten times faster.
_GRANTS: Final = {grant.value: grant for grant in Grant}
# How many distinct app records token checks keep to share (see SQLiteStorage.token_context).
_SHARED_APPS: Final = 4096
_SYNCHRONOUS: Final = ("FULL", "NORMAL", "EXTRA")
# While purging (see _Session.tune_for_purge): the page cache, in KiB (a batch of 10,000
# tokens dirties some 24,000 pages of 4 KiB); and how far the write-ahead log may grow before
# it is checkpointed: as many pages as the database has, up to _PURGE_LOG_PAGES (1 GiB).
_PURGE_CACHE_KIB: Final = 128 * 1024
_PURGE_LOG_PAGES: Final = 262_144
_JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
# Primary result codes that mean "the database cannot be reached right now", not "a bug".
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
    }
)

_APP_COLUMNS: Final = (
    "app_key, owner, name, homepage, admin_email, redirect_url, created_at, description, "
    "image_url, admin_phone, trusted, enabled"
)
_APP_WIDTH: Final = 12
_TOKEN_COLUMNS: Final = (
    "token_id, app_key, account, grant_type, issued_at, expires_at, user_agent, family_id"
)
_SECRET_COLUMNS: Final = (
    "secret_digest, secret_ciphertext, previous_secret_digest, previous_secret_valid_until"
)
_SECRET_WIDTH: Final = 4
_CODE_COLUMNS: Final = (
    "app_key, account, redirect_url, approved_by, issued_at, expires_at, code_challenge, "
    "code_challenge_method"
)
_REFRESH_COLUMNS: Final = (
    "token_id, family_id, app_key, account, grant_type, issued_at, expires_at, rotated_at"
)


def _fill_app_records(connection: sqlite3.Connection) -> None:
    """Write ``apps.record`` for the apps a schema older than version 4 holds."""
    rows = connection.execute(f"SELECT {_APP_COLUMNS} FROM apps").fetchall()  # noqa: S608
    connection.executemany(
        "UPDATE apps SET record = ? WHERE app_key = ?",
        [(_app_record(_app(row)), row[0]) for row in rows],
    )


# _FILLS[n] runs after the statements of _MIGRATIONS[n], in the same transaction: the values a
# migration needs that SQL alone cannot compute.
_FILLS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {3: _fill_app_records}


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


# One query answers a token check (S3): the token, its app (as its record), installation and
# permission. The columns come in the order SQLiteStorage.token_context unpacks them.
_TOKEN_CONTEXT_SQL: Final = f"""
    SELECT {_prefixed(_TOKEN_COLUMNS, "t")}, a.record,
           i.installed_by, i.installed_at, i.suspended, p.granted_by, p.granted_at
    FROM tokens AS t
    LEFT JOIN apps AS a INDEXED BY apps_records ON a.app_key = t.app_key
    LEFT JOIN installations AS i ON i.app_key = t.app_key AND i.account = t.account
    LEFT JOIN permissions AS p ON p.account = t.account
    WHERE t.digest = ?
"""  # noqa: S608 - the interpolated parts are constant column lists, not input


# One query reads what issuing a token needs: the app, its secret, and the installation and
# permission of the account it would act for; ?1 is that account, or NULL for the app's owner.
_APP_CONTEXT_SQL: Final = f"""
    SELECT {_prefixed(_APP_COLUMNS, "a")}, {_prefixed(_SECRET_COLUMNS, "a")},
           COALESCE(?1, a.owner), i.installed_by, i.installed_at, i.suspended,
           p.granted_by, p.granted_at
    FROM apps AS a
    LEFT JOIN installations AS i ON i.app_key = a.app_key AND i.account = COALESCE(?1, a.owner)
    LEFT JOIN permissions AS p ON p.account = COALESCE(?1, a.owner)
    WHERE a.app_key = ?2
"""  # noqa: S608 - the interpolated parts are constant column lists, not input


def _digest_in(count: int) -> str:
    """The condition of a token check over ``count`` digests, one per configured pepper.

    >>> _digest_in(2)
    't.digest IN (?, ?)'
    """
    return f"t.digest IN ({', '.join('?' * count)})"


def _to_db(when: datetime) -> int:
    if when.utcoffset() is None:
        raise StorageError("datetimes must be aware (have a tzinfo) to be stored")
    return (when - _EPOCH) // _MICROSECOND


def _from_db(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _app(row: Sequence[Any]) -> App:
    return App(
        key=row[0],
        owner=row[1],
        name=row[2],
        homepage=row[3],
        admin_email=row[4],
        redirect_url=row[5],
        created_at=_from_db(row[6]),
        description=row[7],
        image_url=row[8],
        admin_phone=row[9],
        trusted=bool(row[10]),
        enabled=bool(row[11]),
    )


def _app_record(app: App) -> str:
    """The app as one JSON text: what ``apps.record`` holds, and what token checks read.

    ASCII only (``json``'s default): the cheapest text for the driver to make a string of.

    >>> app = App("K" * 32, "acme", "Café", "http://example.com/", "a@example.com",
    ...           "https://example.com/cb", _EPOCH, trusted=True)
    >>> _app_record(app).isascii(), _app_of_record(_app_record(app)) == app
    (True, True)
    """
    return json.dumps(
        [
            app.key,
            app.owner,
            app.name,
            app.homepage,
            app.admin_email,
            app.redirect_url,
            _to_db(app.created_at),
            app.description,
            app.image_url,
            app.admin_phone,
            app.trusted,
            app.enabled,
        ],
        separators=(",", ":"),
    )


def _app_of_record(record: str) -> App:
    fields = json.loads(record)
    fields[6] = _from_db(fields[6])
    return App(*fields)


def _token(row: Sequence[Any]) -> AccessToken:
    return AccessToken(
        token_id=row[0],
        app_key=row[1],
        account=row[2],
        grant=_GRANTS[row[3]],
        issued_at=_from_db(row[4]),
        expires_at=_from_db(row[5]),
        user_agent=row[6],
        family_id=row[7],
    )


def _code(row: Sequence[Any]) -> AuthorizationCode:
    return AuthorizationCode(
        app_key=row[0],
        account=row[1],
        redirect_url=row[2],
        approved_by=row[3],
        issued_at=_from_db(row[4]),
        expires_at=_from_db(row[5]),
        code_challenge=row[6],
        code_challenge_method=row[7],
    )


def _refresh(row: Sequence[Any]) -> RefreshToken:
    return RefreshToken(
        token_id=row[0],
        family_id=row[1],
        app_key=row[2],
        account=row[3],
        grant=Grant(row[4]),
        issued_at=_from_db(row[5]),
        expires_at=_from_db(row[6]),
        rotated_at=None if row[7] is None else _from_db(row[7]),
    )


def _stored_secret(row: Sequence[Any]) -> StoredSecret:
    return StoredSecret(
        bytes(row[0]),
        None if row[1] is None else bytes(row[1]),
        None if row[2] is None else bytes(row[2]),
        None if row[3] is None else _from_db(row[3]),
    )


def _secret_values(secret: StoredSecret) -> tuple[object, ...]:
    until = secret.previous_valid_until
    return (
        secret.digest,
        secret.ciphertext,
        secret.previous_digest,
        None if until is None else _to_db(until),
    )


def _app_values(app: App) -> tuple[object, ...]:
    return (
        _app_record(app),
        app.owner,
        app.name,
        app.name.casefold(),
        search_text(app.name, app.description),
        app.homepage,
        app.admin_email,
        app.redirect_url,
        _to_db(app.created_at),
        app.description,
        app.image_url,
        app.admin_phone,
        int(app.trusted),
        int(app.enabled),
    )


def _search_clause(query: ListQuery, column: str, params: list[object]) -> str:
    # instr() matches substrings code point by code point, like Python's ``in``; LIKE would
    # treat % and _ as wildcards and fold only ASCII case.
    if query.search is None:
        return ""
    params.append(query.search)
    return f" AND instr({column}, ?) > 0"


def _nearer_end(total: int, query: ListQuery) -> tuple[int, int, bool]:
    """LIMIT and OFFSET that read the page from the nearer end of a list of ``total`` rows.

    Returns ``(limit, offset, backward)``; backward, the rows come in reverse order.

    >>> _nearer_end(1000, ListQuery(page=2, per_page=100))
    (100, 100, False)
    >>> _nearer_end(1000, ListQuery(page=9, per_page=100))
    (100, 100, True)
    >>> _nearer_end(950, ListQuery(page=10, per_page=100))  # the last, partial page
    (50, 0, True)
    """
    if 2 * query.offset + query.per_page <= total:
        return query.per_page, query.offset, False
    remaining = max(0, total - query.offset)
    return min(query.per_page, remaining), max(0, remaining - query.per_page), True


def _page_of(items: list[Any], total: int, query: ListQuery) -> Page[Any]:
    return Page(tuple(items), total, query.page, query.per_page)


class _Session:
    """One connection inside one transaction; every statement's errors are mapped."""

    def __init__(self, storage: SQLiteStorage, connection: sqlite3.Connection) -> None:
        self._storage = storage
        self._connection: sqlite3.Connection | None = connection
        #: The connection's settings before `tune_for_purge`, to restore when the
        #: transaction has ended; ``None`` while untouched.
        self.untuned: tuple[int, int] | None = None

    def end(self) -> None:
        self._connection = None

    def tune_for_purge(self, *, last: bool) -> None:
        """Set this connection up for a run of purge batches, until the transaction ends.

        Each expired row deleted touches a leaf page of every index in random order (digest,
        token id, app and account): about three pages per row, few shared with the rest of a
        batch. Committing writes those pages to the write-ahead log, and SQLite's automatic
        checkpoint (past 1000 pages by default) then copies them into the database file and
        waits for them to reach the disk, at every commit. So while purging, the page cache
        holds a whole batch, and the log may grow to the size of the database (at most
        `_PURGE_LOG_PAGES`) before it is checkpointed: a page that several batches touched
        is copied once, and the random writes reach the disk in far fewer waits. (One
        ``DELETE`` of the same backlog would grow the log about as much.) The batch that
        finds the last rows (``last``) puts the usual threshold back, so its commit
        checkpoints the log: the purge pays for its own writes rather than leaving them to
        the next writer.
        """
        if self.untuned is None:
            self.untuned = (
                self.scalar("PRAGMA cache_size"),
                self.scalar("PRAGMA wal_autocheckpoint"),
            )
            self.execute(f"PRAGMA cache_size = {-_PURGE_CACHE_KIB}")
        usual = self.untuned[1]
        if last:
            threshold = usual
        else:
            pages = self.scalar("PRAGMA page_count")
            threshold = max(usual, min(pages, _PURGE_LOG_PAGES))
        self.execute(f"PRAGMA wal_autocheckpoint = {threshold}")

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        if self._connection is None:
            raise StorageError("this transaction has ended; open a new one")
        with self._storage._mapped_errors():
            return self._connection.execute(sql, params)

    def one(self, sql: str, params: Sequence[object] = ()) -> Any:
        with self._storage._mapped_errors():
            return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._storage._mapped_errors():
            return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self.one(sql, params)
        return int(row[0])


class _Apps:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def get(self, key: str) -> App | None:
        row = self._s.one(f"SELECT {_APP_COLUMNS} FROM apps WHERE app_key = ?", (key,))  # noqa: S608
        return None if row is None else _app(row)

    def get_secret(self, key: str) -> StoredSecret | None:
        row = self._s.one(f"SELECT {_SECRET_COLUMNS} FROM apps WHERE app_key = ?", (key,))  # noqa: S608
        return None if row is None else _stored_secret(row)

    def get_context(self, key: str, account: str | None) -> AppContext | None:
        # The transaction already holds the write lock (BEGIN IMMEDIATE), so the row stays as
        # read until it ends: nothing more to lock.
        row = self._s.one(_APP_CONTEXT_SQL, (account, key))
        if row is None:
            return None
        app = _app(row)
        rest = row[_APP_WIDTH + _SECRET_WIDTH :]
        acting_for = rest[0]
        return AppContext(
            app,
            _stored_secret(row[_APP_WIDTH : _APP_WIDTH + _SECRET_WIDTH]),
            acting_for,
            None
            if rest[1] is None
            else Installation(key, acting_for, rest[1], _from_db(rest[2]), bool(rest[3])),
            None if rest[4] is None else AppsPermission(acting_for, rest[4], _from_db(rest[5])),
        )

    def add(self, app: App, secret: StoredSecret) -> None:
        self._s.execute(
            "INSERT INTO apps (record, owner, name, name_folded, search_text, homepage, "  # noqa: S608 - constant columns
            "admin_email, redirect_url, created_at, description, image_url, admin_phone, "
            f"trusted, enabled, app_key, {_SECRET_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_app_values(app), app.key, *_secret_values(secret)),
        )

    def update(self, app: App) -> None:
        self._s.execute(
            "UPDATE apps SET record = ?, owner = ?, name = ?, name_folded = ?, search_text = ?, "
            "homepage = ?, admin_email = ?, redirect_url = ?, created_at = ?, description = ?, "
            "image_url = ?, admin_phone = ?, trusted = ?, enabled = ? WHERE app_key = ?",
            (*_app_values(app), app.key),
        )

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        self._s.execute(
            "UPDATE apps SET secret_digest = ?, secret_ciphertext = ?, "
            "previous_secret_digest = ?, previous_secret_valid_until = ? WHERE app_key = ?",
            (*_secret_values(secret), key),
        )

    def list_secrets(self, *, after: str | None, limit: int) -> list[tuple[str, StoredSecret]]:
        # The transaction holds the write lock (BEGIN IMMEDIATE): the rows stay as read. A
        # batch starts where the last ended, on the primary key: no batch costs more than
        # its own rows.
        select = f"SELECT app_key, {_SECRET_COLUMNS} FROM apps "  # noqa: S608 - constant
        if after is None:
            rows = self._s.all(select + "ORDER BY app_key LIMIT ?", (limit,))
        else:
            rows = self._s.all(
                select + "WHERE app_key > ? ORDER BY app_key LIMIT ?", (after, limit)
            )
        return [(row[0], _stored_secret(row[1:])) for row in rows]

    def remove(self, key: str) -> None:
        # Its installations, tokens, codes and refresh tokens go with it (ON DELETE CASCADE).
        if self._s.execute("DELETE FROM apps WHERE app_key = ?", (key,)).rowcount:
            self._s.execute("INSERT OR IGNORE INTO retired_keys (app_key) VALUES (?)", (key,))

    def key_retired(self, key: str) -> bool:
        return self._s.one("SELECT 1 FROM retired_keys WHERE app_key = ?", (key,)) is not None

    def count_owned(self, owner: str) -> int:
        return self._s.scalar("SELECT count(*) FROM apps WHERE owner = ?", (owner,))

    def list(self, query: ListQuery, *, owner: str | None = None) -> Page[AppListing]:
        params: list[object] = []
        where = "1 = 1"
        if owner is not None:
            where += " AND owner = ?"
            params.append(owner)
        where += _search_clause(query, "search_text", params)
        total = self._s.scalar(f"SELECT count(*) FROM apps WHERE {where}", params)  # noqa: S608
        rows = self._s.all(
            f"SELECT {_APP_COLUMNS}, "  # noqa: S608 - constant SQL; values are bound
            "(SELECT count(*) FROM installations AS i WHERE i.app_key = apps.app_key) "
            f"FROM apps WHERE {where} ORDER BY name_folded, app_key LIMIT ? OFFSET ?",
            [*params, query.per_page, query.offset],
        )
        items = [AppListing(_app(row), row[_APP_WIDTH]) for row in rows]
        return _page_of(items, total, query)


class _Permissions:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def get(self, account: str) -> AppsPermission | None:
        row = self._s.one(
            "SELECT granted_by, granted_at FROM permissions WHERE account = ?", (account,)
        )
        return None if row is None else AppsPermission(account, row[0], _from_db(row[1]))

    def put(self, permission: AppsPermission) -> None:
        self._s.execute(
            "INSERT INTO permissions (account, granted_by, granted_at) VALUES (?, ?, ?) "
            "ON CONFLICT (account) DO UPDATE SET "
            "granted_by = excluded.granted_by, granted_at = excluded.granted_at",
            (permission.account, permission.granted_by, _to_db(permission.granted_at)),
        )

    def remove(self, account: str) -> None:
        self._s.execute("DELETE FROM permissions WHERE account = ?", (account,))


def _installation(row: Sequence[Any]) -> Installation:
    return Installation(row[0], row[1], row[2], _from_db(row[3]), bool(row[4]))


class _Installations:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def get(self, app_key: str, account: str) -> Installation | None:
        row = self._s.one(
            "SELECT app_key, account, installed_by, installed_at, suspended FROM installations "
            "WHERE app_key = ? AND account = ?",
            (app_key, account),
        )
        return None if row is None else _installation(row)

    def put(self, installation: Installation) -> None:
        self._s.execute(
            "INSERT INTO installations (app_key, account, installed_by, installed_at, suspended) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_key, account) DO UPDATE SET "
            "installed_by = excluded.installed_by, installed_at = excluded.installed_at, "
            "suspended = excluded.suspended",
            (
                installation.app_key,
                installation.account,
                installation.installed_by,
                _to_db(installation.installed_at),
                int(installation.suspended),
            ),
        )

    def remove(self, app_key: str, account: str) -> None:
        self._s.execute(
            "DELETE FROM installations WHERE app_key = ? AND account = ?", (app_key, account)
        )

    def remove_all_of_app(self, app_key: str) -> int:
        return self._s.execute("DELETE FROM installations WHERE app_key = ?", (app_key,)).rowcount

    def list(self, account: str, query: ListQuery, *, now: datetime) -> Page[InstallationListing]:
        params: list[object] = [account]
        where = "i.account = ?" + _search_clause(query, "a.search_text", params)
        joined = "FROM installations AS i JOIN apps AS a ON a.app_key = i.app_key"
        total = self._s.scalar(f"SELECT count(*) {joined} WHERE {where}", params)
        rows = self._s.all(
            "SELECT i.app_key, i.account, i.installed_by, i.installed_at, i.suspended, "  # noqa: S608
            f"{_prefixed(_APP_COLUMNS, 'a')}, "
            "(SELECT count(*) FROM tokens AS t WHERE t.app_key = i.app_key "
            "AND t.account = i.account AND t.expires_at > ?) "
            f"{joined} WHERE {where} ORDER BY a.name_folded, a.app_key LIMIT ? OFFSET ?",
            [_to_db(now), *params, query.per_page, query.offset],
        )
        items = [
            InstallationListing(_installation(row), _app(row[5:]), row[5 + _APP_WIDTH])
            for row in rows
        ]
        return _page_of(items, total, query)


class _Tokens:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, token: AccessToken, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}, digest, search_text) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id,
                token.app_key,
                token.account,
                str(token.grant),
                _to_db(token.issued_at),
                _to_db(token.expires_at),
                token.user_agent,
                token.family_id,
                digest,
                search_text(token.user_agent),
            ),
        )

    def get(self, token_id: str) -> AccessToken | None:
        row = self._s.one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))  # noqa: S608
        return None if row is None else _token(row)

    def get_by_digest(self, digest: bytes) -> AccessToken | None:
        row = self._s.one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE digest = ?", (digest,))  # noqa: S608
        return None if row is None else _token(row)

    def remove_family(self, family_id: str) -> int:
        return self._s.execute("DELETE FROM tokens WHERE family_id = ?", (family_id,)).rowcount

    def remove(self, token_ids: Collection[str]) -> int:
        ids = list(set(token_ids))
        removed = 0
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            cursor = self._s.execute(f"DELETE FROM tokens WHERE token_id IN ({marks})", chunk)  # noqa: S608
            removed += cursor.rowcount
        return removed

    def remove_for(self, app_key: str, account: str) -> int:
        return self._s.execute(
            "DELETE FROM tokens WHERE app_key = ? AND account = ?", (app_key, account)
        ).rowcount

    def remove_all_of_app(self, app_key: str) -> int:
        return self._s.execute("DELETE FROM tokens WHERE app_key = ?", (app_key,)).rowcount

    def count_live(self, app_key: str, account: str, *, now: datetime) -> int:
        return self._s.scalar(
            "SELECT count(*) FROM tokens WHERE app_key = ? AND account = ? AND expires_at > ?",
            (app_key, account, _to_db(now)),
        )

    def list(
        self, app_key: str, account: str, query: ListQuery, *, now: datetime
    ) -> Page[AccessToken]:
        params: list[object] = [app_key, account, _to_db(now)]
        where = "app_key = ? AND account = ? AND expires_at > ?"
        where += _search_clause(query, "search_text", params)
        total = self._s.scalar(f"SELECT count(*) FROM tokens WHERE {where}", params)  # noqa: S608
        # OFFSET steps over every row it skips, so a page is read from whichever end of the
        # list is nearer: no page costs more than the count plus half the list (R26).
        limit, offset, backward = _nearer_end(total, query)
        rows = self._s.all(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where} "  # noqa: S608
            + (
                "ORDER BY expires_at DESC, token_id DESC LIMIT ? OFFSET ?"
                if backward
                else "ORDER BY expires_at, token_id LIMIT ? OFFSET ?"
            ),
            [*params, limit, offset],
        )
        if backward:
            rows.reverse()
        return _page_of([_token(row) for row in rows], total, query)

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        self._s.tune_for_purge(last=False)
        # By rowid: the expiry index holds it, so the batch is chosen from the index alone.
        deleted = self._s.execute(
            "DELETE FROM tokens WHERE rowid IN "
            "(SELECT rowid FROM tokens WHERE expires_at <= ? LIMIT ?)",
            (_to_db(now), limit),
        ).rowcount
        if deleted < limit:
            self._s.tune_for_purge(last=True)
        return deleted


class _Codes:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO codes (digest, {_CODE_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                digest,
                code.app_key,
                code.account,
                code.redirect_url,
                code.approved_by,
                _to_db(code.issued_at),
                _to_db(code.expires_at),
                code.code_challenge,
                code.code_challenge_method,
            ),
        )

    def take(self, digest: bytes) -> AuthorizationCode | None:
        # The transaction holds the write lock (BEGIN IMMEDIATE): nobody else can take it
        # between the read and the delete.
        row = self._s.one(f"SELECT {_CODE_COLUMNS} FROM codes WHERE digest = ?", (digest,))  # noqa: S608
        if row is None:
            return None
        self._s.execute("DELETE FROM codes WHERE digest = ?", (digest,))
        return _code(row)

    def remove_for(self, app_key: str, account: str) -> int:
        return self._s.execute(
            "DELETE FROM codes WHERE app_key = ? AND account = ?", (app_key, account)
        ).rowcount

    def remove_all_of_app(self, app_key: str) -> int:
        return self._s.execute("DELETE FROM codes WHERE app_key = ?", (app_key,)).rowcount

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._s.execute(
            "DELETE FROM codes WHERE rowid IN "
            "(SELECT rowid FROM codes WHERE expires_at <= ? LIMIT ?)",
            (_to_db(now), limit),
        ).rowcount


class _RefreshTokens:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, token: RefreshToken, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}, digest) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id,
                token.family_id,
                token.app_key,
                token.account,
                str(token.grant),
                _to_db(token.issued_at),
                _to_db(token.expires_at),
                None if token.rotated_at is None else _to_db(token.rotated_at),
                digest,
            ),
        )

    def get(self, digest: bytes) -> RefreshToken | None:
        row = self._s.one(
            f"SELECT {_REFRESH_COLUMNS} FROM refresh_tokens WHERE digest = ?",  # noqa: S608
            (digest,),
        )
        return None if row is None else _refresh(row)

    def mark_rotated(self, token_id: str, at: datetime) -> None:
        self._s.execute(
            "UPDATE refresh_tokens SET rotated_at = ? WHERE token_id = ?", (_to_db(at), token_id)
        )

    def remove_family(self, family_id: str) -> int:
        return self._s.execute(
            "DELETE FROM refresh_tokens WHERE family_id = ?", (family_id,)
        ).rowcount

    def remove_for(self, app_key: str, account: str) -> int:
        return self._s.execute(
            "DELETE FROM refresh_tokens WHERE app_key = ? AND account = ?", (app_key, account)
        ).rowcount

    def remove_all_of_app(self, app_key: str) -> int:
        return self._s.execute("DELETE FROM refresh_tokens WHERE app_key = ?", (app_key,)).rowcount

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._s.execute(
            "DELETE FROM refresh_tokens WHERE rowid IN "
            "(SELECT rowid FROM refresh_tokens WHERE expires_at <= ? LIMIT ?)",
            (_to_db(now), limit),
        ).rowcount


class _Unit:
    """The repositories of one transaction (an `appregistry.ports.UnitOfWork`)."""

    def __init__(self, session: _Session) -> None:
        self.apps = _Apps(session)
        self.permissions = _Permissions(session)
        self.installations = _Installations(session)
        self.tokens = _Tokens(session)
        self.codes = _Codes(session)
        self.refresh_tokens = _RefreshTokens(session)


class _Pool:
    """At most ``size`` connections, handed to one thread at a time."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], size: int, timeout: float, name: str
    ) -> None:
        self._connect = connect
        self._size = size
        self._timeout = timeout
        self._name = name
        self._idle: list[sqlite3.Connection] = []
        self._open = 0  # changed only under the lock
        self._closed = False
        # Every token check takes a connection and gives it back. When one is idle and nobody
        # waits, neither takes the lock: list.pop and list.append are atomic, so no two
        # threads get the same connection. The lock guards the count of open connections,
        # waiting for one, and closing.
        self._lock = threading.Lock()
        self._condition = threading.Condition(self._lock)
        self._waiting = 0  # changed only under the lock

    def acquire(self) -> sqlite3.Connection:
        try:
            connection = self._idle.pop()
        except IndexError:
            return self._acquire_waiting()
        if self._closed:
            # Taken as the pool closed: release closes it.
            self.release(connection)
            raise StorageError(f"the SQLite storage {self._name} is closed")
        return connection

    def _acquire_waiting(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self._timeout
        with self._condition:
            # Counted as waiting before looking at the idle list: a connection released
            # without the lock is then either seen below or followed by a notify (release
            # reads the count after it appends).
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise StorageError(f"the SQLite storage {self._name} is closed")
                    with contextlib.suppress(IndexError):
                        # Not "if self._idle": acquire may take the last one meanwhile.
                        return self._idle.pop()
                    if self._open < self._size:
                        self._open += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StorageUnavailable(
                            f"SQLite database {self._name}: all {self._size} connections "
                            f"stayed busy for {self._timeout:g} s"
                        )
                    self._condition.wait(remaining)
            finally:
                self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            self._forget()
            raise

    def release(self, connection: sqlite3.Connection, *, broken: bool = False) -> None:
        if broken:
            connection.close()
            self._forget()
            return
        self._idle.append(connection)
        if self._waiting or self._closed:
            with self._condition:
                if self._closed:
                    self._close_idle()
                self._condition.notify()

    def _forget(self) -> None:
        with self._condition:
            self._open -= 1
            self._condition.notify()

    def _close_idle(self) -> None:
        """Close the idle connections; the caller holds the lock."""
        while True:
            try:
                # Popped one at a time: acquire may take one meanwhile, without the lock.
                connection = self._idle.pop()
            except IndexError:
                return
            connection.close()
            self._open -= 1

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._close_idle()
            self._condition.notify_all()


class SQLiteStorage:
    """Storage in one SQLite file; see the module documentation for the guarantees.

    Opening creates the file if it does not exist and migrates an older appregistry schema
    forward.

    Args:
        path: The database file (relative to the working directory, or absolute), or
            ``":memory:"``.
        timeout: Seconds to wait for the write lock, or for a free connection, before giving
            up with `appregistry.errors.StorageUnavailable`.
        pool_size: Most connections kept open at once (one for ``":memory:"``).
        synchronous: SQLite's ``PRAGMA synchronous``. ``"FULL"`` (the default) makes every
            commit durable across power loss; ``"NORMAL"`` is faster and still survives a
            crash of the process, but may lose the last commits on power loss.
        mmap_size: Bytes of the file read through a memory map (SQLite's ``PRAGMA
            mmap_size``; 1 GiB by default, capped by how SQLite was built). Pages then come
            straight from the operating system's cache, without a system call and a copy
            each: a token check on a file of a million tokens, whose pages do not fit the
            connection's own cache, costs a fifth less. ``0`` reads through system calls
            only; choose it where an I/O error must raise rather than stop the process with
            ``SIGBUS``, as it does on a mapped page.

    Raises:
        SchemaError: The file is not an appregistry database, or its schema is newer than
            this code; it is left as it was.
        StorageUnavailable: The file cannot be opened or created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        pool_size: int = 8,
        synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL",
        mmap_size: int = 1 << 30,
    ) -> None:
        if timeout <= 0 or pool_size < 1:
            raise ValueError("timeout must be positive and pool_size at least 1")
        if mmap_size < 0:
            raise ValueError("mmap_size must be a whole number of bytes, 0 or more")
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self._path = os.fspath(path)
        self._name = repr(self._path)
        self._memory = self._path == ":memory:"
        self._timeout = timeout
        self._synchronous = synchronous
        self._mmap_size = mmap_size
        # The threads inside a transaction: a set, not a threading.local, because every
        # token check asks, and an empty set answers fastest.
        self._in_transaction: set[int] = set()
        self._shared_apps: dict[str, App] = {}
        self._pool = _Pool(self._connect, 1 if self._memory else pool_size, timeout, self._name)
        try:
            self._open_schema()
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStorage:
        """Open the storage a ``sqlite:`` URL names.

        ``sqlite:///registry.db`` is relative to the working directory,
        ``sqlite:////srv/registry.db`` is absolute (four slashes), and
        ``sqlite:///:memory:`` is a private in-memory database. Percent-escapes are decoded.

        >>> SQLiteStorage.from_url("sqlite:///:memory:")
        SQLiteStorage(':memory:')

        Args:
            options: Passed on to `SQLiteStorage` (``timeout``, ``pool_size``, ...).

        Raises:
            StorageUnavailable: The URL is not of that form, or the file cannot be opened.
        """
        prefix = "sqlite:///"
        path = url[len(prefix) :] if url[: len(prefix)].lower() == prefix else ""
        if not path or "?" in path or "#" in path:
            raise StorageUnavailable(
                f"bad SQLite URL {url!r}: expected sqlite:///RELATIVE/PATH, "
                "sqlite:////ABSOLUTE/PATH or sqlite:///:memory:"
            )
        return cls(urllib.parse.unquote(path), **options)

    def __repr__(self) -> str:
        return f"SQLiteStorage({self._name})"

    @property
    def path(self) -> str:
        """The database file, as given (or ``":memory:"``)."""
        return self._path

    # -- errors and connections -------------------------------------------------------------

    def _raise_mapped(self, exc: sqlite3.Error) -> NoReturn:
        # Errors the sqlite3 module raises itself (a parameter it cannot bind) carry no code.
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        message = f"SQLite database {self._name}: {exc}"
        if code in _UNAVAILABLE_CODES:
            raise StorageUnavailable(message) from exc
        raise StorageError(message) from exc

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            self._raise_mapped(exc)

    def _connect(self) -> sqlite3.Connection:
        with self._mapped_errors():
            # isolation_level=None: this module issues BEGIN and COMMIT itself.
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA foreign_keys = ON")
                connection.execute(f"PRAGMA synchronous = {self._synchronous}")
                # A purge lets the write-ahead log grow (see _Session.tune_for_purge); the
                # file shrinks back to this size when the log next starts over.
                connection.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
                connection.execute(f"PRAGMA mmap_size = {int(self._mmap_size)}")
            except BaseException:
                connection.close()
                raise
        return connection

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = self._pool.acquire()
        broken = False
        try:
            yield connection
        except BaseException:
            # A connection left inside a transaction it could not end is not reused.
            broken = connection.in_transaction
            raise
        finally:
            self._pool.release(connection, broken=broken)

    # -- schema -----------------------------------------------------------------------------

    def _open_schema(self) -> None:
        if not self._memory and pathlib.Path(self._path).exists():
            # Look first through a read-only connection, so a file that is not ours is
            # never written to, not even to switch it to WAL mode.
            uri = pathlib.Path(self._path).absolute().as_uri() + "?mode=ro"
            with self._mapped_errors():
                probe = sqlite3.connect(uri, uri=True, timeout=self._timeout)
            try:
                version = self._check_schema(probe)
            finally:
                probe.close()
            if version == SCHEMA_VERSION:
                return
        with self._connection() as connection:
            with self._mapped_errors():
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have created or migrated the file in the meantime.
                version = self._check_schema(connection)
                with self._mapped_errors():
                    for number in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[number]:
                            connection.execute(statement)
                        fill = _FILLS.get(number)
                        if fill is not None:
                            fill(connection)
                    if version < SCHEMA_VERSION:
                        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    connection.execute("COMMIT")
            except BaseException:
                with self._mapped_errors():
                    connection.execute("ROLLBACK")
                raise

    def _check_schema(self, connection: sqlite3.Connection) -> int:
        """The file's schema version; raises if it is not ours or too new."""
        try:
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            has_tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_NOTADB:
                raise SchemaError(
                    f"{self._name} is not an SQLite database; it was left untouched"
                ) from exc
            self._raise_mapped(exc)
        if application_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"SQLite database {self._name} has appregistry schema version {version}, "
                    f"newer than this code knows ({SCHEMA_VERSION}); upgrade appregistry"
                )
            return int(version)
        if application_id == 0 and version == 0 and not has_tables:
            return 0  # an empty database: ours to set up
        raise SchemaError(
            f"SQLite database {self._name} is not an appregistry database; it was left untouched"
        )

    # -- the port ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Unit]:
        """A transaction; see `appregistry.ports.Storage.transaction`.

        It holds the database's write lock from its start (``BEGIN IMMEDIATE``) to its end.
        Transactions do not nest: opening one inside another from the same thread raises
        `appregistry.errors.StorageError` rather than waiting for itself.
        """
        thread = threading.get_ident()
        if thread in self._in_transaction:
            self._refuse_nesting()
        with self._connection() as connection:
            self._in_transaction.add(thread)
            session = _Session(self, connection)
            try:
                with self._mapped_errors():
                    connection.execute("BEGIN IMMEDIATE")
                try:
                    yield _Unit(session)
                except BaseException:
                    session.end()
                    self._rollback(connection)
                    raise
                session.end()
                try:
                    with self._mapped_errors():
                        connection.execute("COMMIT")
                except StorageError:
                    self._rollback(connection)
                    raise
            finally:
                self._in_transaction.discard(thread)
                if session.untuned is not None:
                    self._untune(connection, *session.untuned)

    def _untune(self, connection: sqlite3.Connection, cache: int, checkpoint: int) -> None:
        """Give a connection back the settings `_Session.tune_for_purge` changed."""
        # A connection that cannot take them back is still correct, only slower or larger.
        with contextlib.suppress(sqlite3.Error):
            connection.execute(f"PRAGMA cache_size = {int(cache)}")
            connection.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint)}")

    def _rollback(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            # The original exception matters more; a connection that cannot roll back stays
            # in its transaction and is discarded as broken.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")

    def _refuse_nesting(self) -> NoReturn:
        raise StorageError("SQLite transactions do not nest, and token_context runs outside them")

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """See `appregistry.ports.Storage.token_context`: one ``SELECT`` (S3)."""
        in_transaction = self._in_transaction
        if in_transaction and threading.get_ident() in in_transaction:
            self._refuse_nesting()
        # The pool and error mapping by hand, not through their context managers: this is
        # the hot path, and generator-based context managers cost more than the query's
        # own Python overhead.
        pool = self._pool
        connection = pool.acquire()
        try:
            if older:
                # Older peppers are configured: the same query, over every digest at once.
                row = connection.execute(
                    _TOKEN_CONTEXT_SQL.replace("t.digest = ?", _digest_in(len(older) + 1)),
                    (digest, *older),
                ).fetchone()
            else:
                row = connection.execute(_TOKEN_CONTEXT_SQL, (digest,)).fetchone()
        except sqlite3.Error as exc:
            self._raise_mapped(exc)
        finally:
            pool.release(connection, broken=connection.in_transaction)
        if row is None:
            return None
        # Unpacked at once, and built by hand rather than through _token: this is most of
        # the Python a check runs.
        (
            token_id,
            app_key,
            account,
            grant,
            issued_at,
            expires_at,
            user_agent,
            family_id,
            record,
            installed_by,
            installed_at,
            suspended,
            granted_by,
            granted_at,
        ) = row
        token = AccessToken(
            token_id,
            app_key,
            account,
            _GRANTS[grant],
            _EPOCH + issued_at * _MICROSECOND,
            _EPOCH + expires_at * _MICROSECOND,
            user_agent,
            family_id,
        )
        return TokenContext(
            token,
            None if record is None else self._shared_apps.get(record) or self._share_app(record),
            None
            if installed_by is None
            else Installation(
                app_key,
                account,
                installed_by,
                _EPOCH + installed_at * _MICROSECOND,
                bool(suspended),
            ),
            None
            if granted_by is None
            else AppsPermission(account, granted_by, _EPOCH + granted_at * _MICROSECOND),
        )

    def _share_app(self, record: str) -> App:
        """The app of ``record`` (see _app_record), made once and shared by later checks.

        Records are immutable, so checks that read the same ``apps.record`` may share one
        `App`. Apps are few and their records the dearest part of a check to build; looking
        one up by its text costs a fraction of that. Any change to the app changes its text,
        so a shared record is never stale.
        """
        shared = self._shared_apps
        if len(shared) >= _SHARED_APPS:
            shared.clear()
        app = shared[record] = _app_of_record(record)
        return app

    def close(self) -> None:
        """Close the connections; using the storage afterwards raises `StorageError`.

        Connections in use by a running transaction are closed when it ends.
        """
        self._pool.close()

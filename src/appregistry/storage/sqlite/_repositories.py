"""The SQLite repositories: one session's connection, and the unit of work over it.

A little over 600 lines, kept whole: each repository is a thin class over the one
connection its unit of work holds, and the SQL, purge and last-use parts already live in
modules of their own (`_queries`, `_purge`, `_last_use`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ..._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Installation,
    InstallationListing,
    Page,
    RefreshToken,
    StoredSecret,
)
from ..._validation import search_text
from ...errors import StorageError
from ...ports import ListQuery, TokenOrder
from . import _purge
from ._last_use import list_by_use, record_uses
from ._queries import (
    _APP_COLUMNS,
    _APP_CONTEXT_SQL,
    _APP_WIDTH,
    _CODE_COLUMNS,
    _REFRESH_COLUMNS,
    _SECRET_COLUMNS,
    _SECRET_WIDTH,
    _TOKEN_COLUMNS,
    _app,
    _app_values,
    _code,
    _from_db,
    _installation,
    _ordered_page,
    _page_of,
    _prefixed,
    _refresh,
    _search_clause,
    _secret_values,
    _stored_secret,
    _to_db,
    _token,
)
from ._settings import _Settings

if TYPE_CHECKING:
    from ._storage import SQLiteStorage

# SQLite's default limit on bound parameters is 999 in older builds; stay well below it.
_CHUNK: Final = 500
# While purging (see _Session.tune_for_purge): the page cache, in KiB (a batch of 10,000
# tokens dirties some 24,000 pages of 4 KiB); and how far the write-ahead log may grow before
# it is checkpointed: as many pages as the database has, up to _PURGE_LOG_PAGES (1 GiB).
_PURGE_CACHE_KIB: Final = 128 * 1024
_PURGE_LOG_PAGES: Final = 262_144


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

    def count_expired_grace(self, *, now: datetime) -> int:
        return _purge.count_expired_grace(self._s, now)

    def purge_expired_grace(self, *, now: datetime, limit: int) -> int:
        return _purge.purge_expired_grace(self._s, now, limit)

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
        # On the name index (apps_by_name, or apps_by_owner for one owner's apps).
        tail, backward = _ordered_page(query, total, ("name_folded", "app_key"), params)
        rows = self._s.all(
            f"SELECT {_APP_COLUMNS}, "  # noqa: S608 - constant SQL; values are bound
            "(SELECT count(*) FROM installations AS i WHERE i.app_key = apps.app_key) "
            f"FROM apps WHERE {where}{tail}",
            params,
        )
        if backward:
            rows.reverse()
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

    def list(self, query: ListQuery) -> Page[AppsPermission]:
        params: list[object] = []
        # lower() folds ASCII letters only: account ids are matched ignoring their case.
        where = "1 = 1" + _search_clause(query, "lower(account)", params)
        total = self._s.scalar(f"SELECT count(*) FROM permissions WHERE {where}", params)  # noqa: S608
        tail, backward = _ordered_page(query, total, ("account",), params)
        rows = self._s.all(
            f"SELECT account, granted_by, granted_at FROM permissions WHERE {where}{tail}",  # noqa: S608
            params,
        )
        if backward:
            rows.reverse()
        items = [AppsPermission(row[0], row[1], _from_db(row[2])) for row in rows]
        return _page_of(items, total, query)


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
        at = _to_db(now)
        # The account's installations, and its own apps not installed on it that have live
        # tokens for it (client credentials), on the installations' account index and the
        # apps' owner index; then each entry's app, from the app's key.
        joined = (
            "FROM (SELECT app_key, installed_by, installed_at, suspended FROM installations "
            "WHERE account = ? UNION ALL "
            "SELECT o.app_key, NULL, NULL, NULL FROM apps AS o WHERE o.owner = ? "
            "AND NOT EXISTS (SELECT 1 FROM installations AS n "
            "WHERE n.app_key = o.app_key AND n.account = o.owner) "
            "AND EXISTS (SELECT 1 FROM tokens AS t "
            "WHERE t.app_key = o.app_key AND t.account = o.owner AND t.expires_at > ?)) AS e "
            "JOIN apps AS a ON a.app_key = e.app_key"
        )
        params: list[object] = [account, account, at]
        where = "1 = 1" + _search_clause(query, "a.search_text", params)
        total = self._s.scalar(f"SELECT count(*) {joined} WHERE {where}", params)
        tail, backward = _ordered_page(query, total, ("a.name_folded", "a.app_key"), params)
        rows = self._s.all(
            "SELECT e.installed_by, e.installed_at, e.suspended, "  # noqa: S608
            f"{_prefixed(_APP_COLUMNS, 'a')}, "
            "(SELECT count(*) FROM tokens AS t WHERE t.app_key = e.app_key "
            "AND t.account = ? AND t.expires_at > ?) "
            f"{joined} WHERE {where}{tail}",
            [account, at, *params],
        )
        if backward:
            rows.reverse()
        items = []
        for row in rows:
            app = _app(row[3:])
            installation = (
                None
                if row[0] is None
                else Installation(app.key, account, row[0], _from_db(row[1]), bool(row[2]))
            )
            items.append(InstallationListing(installation, app, row[3 + _APP_WIDTH]))
        return _page_of(items, total, query)

    def list_for_app(self, app_key: str, query: ListQuery) -> Page[Installation]:
        params: list[object] = [app_key]
        where = "app_key = ?" + _search_clause(query, "lower(account)", params)
        total = self._s.scalar(f"SELECT count(*) FROM installations WHERE {where}", params)  # noqa: S608
        # On the primary key, (app_key, account).
        tail, backward = _ordered_page(query, total, ("account",), params)
        rows = self._s.all(
            "SELECT app_key, account, installed_by, installed_at, suspended "  # noqa: S608
            f"FROM installations WHERE {where}{tail}",
            params,
        )
        if backward:
            rows.reverse()
        return _page_of([_installation(row) for row in rows], total, query)


class _Tokens:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, token: AccessToken, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}, digest, search_text) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id,
                token.app_key,
                token.account,
                str(token.grant),
                _to_db(token.issued_at),
                _to_db(token.expires_at),
                token.user_agent,
                token.family_id,
                token.approved_by,
                None if token.last_used_at is None else _to_db(token.last_used_at),
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
        self,
        app_key: str,
        account: str | None,
        query: ListQuery,
        *,
        now: datetime,
        order: TokenOrder = TokenOrder.EXPIRES,
    ) -> Page[AccessToken]:
        if order == TokenOrder.LAST_USED:
            return list_by_use(self._s, app_key, account, query, now=now)
        params: list[object] = [app_key]
        where = "app_key = ?"
        columns: tuple[str, ...] = ("account", "expires_at", "token_id")
        if account is not None:
            where += " AND account = ?"
            params.append(account)
            columns = columns[1:]
        search: list[object] = []
        searched = _search_clause(query, "search_text", search)
        live = " AND expires_at > ?"
        total = self._s.scalar(
            f"SELECT count(*) FROM tokens WHERE {where}{live}{searched}",  # noqa: S608
            [*params, _to_db(now), *search],
        )
        # On the pair index, (app_key, account, expires_at, token_id), in its own order.
        page, expiry = query, _after_expiry(query) if account is not None else None
        if expiry is not None and expiry > now:
            # Every token after the position is live: SQLite would take "expires_at > now"
            # for the range to scan, and step over the tokens up to the position.
            live = ""
        elif expiry is not None:
            page = ListQuery(per_page=query.per_page)  # every live token is after it
        params = [*params, *([_to_db(now)] if live else []), *search]
        tail, backward = _ordered_page(page, total, columns, params)
        rows = self._s.all(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where}{live}{searched}{tail}",  # noqa: S608
            params,
        )
        if backward:
            rows.reverse()
        return _page_of([_token(row) for row in rows], total, query)

    def record_uses(self, uses: Mapping[str, datetime]) -> None:
        record_uses(self._s, uses)

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

    def count_expired(self, *, now: datetime) -> int:
        return _purge.count_expired(self._s, "tokens", now)


def _after_expiry(query: ListQuery) -> datetime | None:
    """The expiry of the position a token page starts after, if it starts after one."""
    first = query.after[0] if query.after is not None else None
    return first if isinstance(first, datetime) else None


class _Codes:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO codes (digest, {_CODE_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                int(code.redirect_url_given),
                _to_db(code.used_at) if code.used_at is not None else None,
                code.family_id,
            ),
        )

    def redeem(self, digest: bytes, *, at: datetime, family_id: str) -> AuthorizationCode | None:
        # The transaction holds the write lock (BEGIN IMMEDIATE): nobody else can redeem it
        # between the read and the update.
        row = self._s.one(f"SELECT {_CODE_COLUMNS} FROM codes WHERE digest = ?", (digest,))  # noqa: S608
        if row is None:
            return None
        code = _code(row)
        if code.used_at is None:
            self._s.execute(
                "UPDATE codes SET used_at = ?, family_id = ? WHERE digest = ?",
                (_to_db(at), family_id, digest),
            )
        return code

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

    def count_expired(self, *, now: datetime) -> int:
        return _purge.count_expired(self._s, "codes", now)


class _RefreshTokens:
    def __init__(self, session: _Session) -> None:
        self._s = session

    def add(self, token: RefreshToken, digest: bytes) -> None:
        self._s.execute(
            f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS}, digest) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id,
                token.family_id,
                token.app_key,
                token.account,
                str(token.grant),
                _to_db(token.issued_at),
                _to_db(token.expires_at),
                None if token.rotated_at is None else _to_db(token.rotated_at),
                token.approved_by,
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

    def count_expired(self, *, now: datetime) -> int:
        return _purge.count_expired(self._s, "refresh_tokens", now)


class _Unit:
    """The repositories of one transaction (an `appregistry.ports.UnitOfWork`)."""

    def __init__(self, session: _Session) -> None:
        self.session = session  # for the change feed (see _feed)
        self.apps = _Apps(session)
        self.permissions = _Permissions(session)
        self.installations = _Installations(session)
        self.tokens = _Tokens(session)
        self.codes = _Codes(session)
        self.refresh_tokens = _RefreshTokens(session)
        self.settings = _Settings(session)

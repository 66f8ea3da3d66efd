"""The PostgreSQL unit of work, and the repositories of apps, permissions and installations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg.rows import TupleRow

from ..._records import (
    App,
    AppContext,
    AppListing,
    AppsPermission,
    Installation,
    InstallationListing,
    Page,
    StoredSecret,
)
from ...ports import ListQuery
from ._lists import list_params
from ._queries import (
    _APP_WIDTH,
    _INSTALLATION_WIDTH,
    _SECRET_COLUMNS,
    _SECRET_WIDTH,
    Row,
    _app,
    _app_values,
    _installation,
    _page,
    _permission,
    _Queries,
    _secret_values,
    _storable,
    _stored_secret,
    _utc,
)
from ._schema import _OWNER_LOCK_CLASS, Connection
from ._tokens import _Codes, _RefreshTokens, _Settings, _Tokens

if TYPE_CHECKING:
    from ._storage import PostgresStorage


Cursor = psycopg.Cursor[TupleRow]
_Cursors = tuple[Cursor, Cursor]  # a transaction's reader and writer (see _Unit)

# -- the unit of work --------------------------------------------------------------------------


class _Unit:
    """One transaction on one connection; the repositories share its app locks.

    How a transaction travels (see `PostgresStorage.transaction` for why): with libpq's
    pipeline mode (libpq 14 and later), the connection enters it at the first statement and
    sends no BEGIN. Statements sent before a Sync message run as one implicit transaction,
    which the Sync at the end commits, or rolls back if any statement failed (PostgreSQL's
    protocol documentation, "Pipelining"). Writes are sent without waiting for their
    answers; a read sends a Flush and waits for its rows (and for the answers before them).
    So issuing a token costs two round trips: the read of the app, and the INSERT with the
    Sync that commits it. Nothing may send a Sync before the end, as it would commit: so
    DELETEs whose count is needed answer it as a row (`_Queries._counted`), which comes back
    with a Flush. Without pipeline mode, BEGIN, every statement and COMMIT each wait for
    their answer.

    Statements go through two cursors: ``reader`` for those whose rows the caller needs,
    ``writer`` for the rest. They must not share one: the answer to a write arrives late and
    is attached to the cursor that sent it, where it would take the place of a read's rows.
    """

    def __init__(
        self, storage: PostgresStorage, conn: Connection, cursors: _Cursors, *, pipelined: bool
    ) -> None:
        self._storage = storage
        self._conn = conn
        self._pipelined = pipelined
        self._pipeline: psycopg.Pipeline | None = None
        self._leave_pipeline = ExitStack()
        self._reader, self._writer = cursors
        self._begun = False  # a statement was sent
        self._explicit = False  # BEGIN was sent (only without pipeline mode)
        self._wrote = False  # a statement that may change rows was sent
        self._in_pipeline = False  # in pipeline mode, not yet left by commit or roll_back
        self.q: _Queries = storage._queries
        self.locked_apps: set[str] = set()
        self.apps = _Apps(self)
        self.permissions = _Permissions(self)
        self.installations = _Installations(self)
        self.tokens = _Tokens(self)
        self.codes = _Codes(self)
        self.refresh_tokens = _RefreshTokens(self)
        self.settings = _Settings(self)

    def _begin(self) -> None:
        # Only when the first statement comes: a transaction that sends nothing costs
        # nothing.
        self._begun = True
        if self._pipelined:
            self._pipeline = self._leave_pipeline.enter_context(self._conn.pipeline())
            self._in_pipeline = True
        else:
            self._explicit = True
            self._writer.execute(_BEGIN, prepare=False)

    def execute(self, query: bytes, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a statement whose answer the caller does not need (in a pipeline: send it)."""
        self._wrote = True
        try:
            if not self._begun:
                self._begin()
            self._writer.execute(query, params)
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc

    def one(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> Row | None:
        self._wrote = self._wrote or not query.startswith(_SELECT)
        try:
            if not self._begun:
                self._begin()
            row: Row | None = self._reader.execute(query, params).fetchone()
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc
        return row

    def all(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> list[TupleRow]:
        self._wrote = self._wrote or not query.startswith(_SELECT)
        try:
            if not self._begun:
                self._begin()
            rows = self._reader.execute(query, params).fetchall()
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc
        return rows

    def count(self, query: bytes, params: Sequence[Any]) -> int:
        """Run a statement that answers one row holding a count (see `_Queries._counted`)."""
        row = self.one(query, params)
        return int(row[0]) if row is not None else 0

    def lock_app(self, key: str) -> None:
        """Lock the app's row until the transaction ends, unless this transaction already has."""
        if key not in self.locked_apps and self.one(self.q.app_lock, (key,)) is not None:
            self.locked_apps.add(key)

    def commit(self) -> None:
        """Commit, and wait for every answer still due: any statement's error is raised here.

        Raises:
            psycopg.Error: A statement or the commit failed. An implicit transaction is then
                rolled back already; an explicit one is still open, failed (see `end`).
        """
        if not self._begun:
            return
        if self._explicit:
            self._writer.execute(_COMMIT, prepare=False)
        self._sync()  # commits an implicit transaction

    def _sync(self) -> None:
        # Leave pipeline mode: the Sync, then every answer still due (errors are raised).
        self._in_pipeline = False
        self._leave_pipeline.close()

    def roll_back(self) -> None:
        """Roll back, swallowing errors: the caller is already raising one of its own.

        A transaction that only read is committed instead: that undoes nothing and releases
        its locks all the same, and spares the connection's prepared statements, which
        psycopg forgets (DEALLOCATE ALL) on every ROLLBACK.

        Otherwise, an implicit transaction must not meet a Sync before it is rolled back (the
        Sync would commit it): BEGIN makes it explicit, with what it did so far, and `end`
        sends ROLLBACK once the pipeline is left. (ROLLBACK in the pipeline would make
        psycopg forget its prepared statements only after the next one is prepared, which
        is then lost.) If a statement has failed, the server skips BEGIN up to the Sync,
        which rolls back.
        """
        if not self._begun:
            return
        if not self._wrote:
            with suppress(psycopg.Error):
                self.commit()
            return
        if not self._explicit:
            # Should this fail, a statement has failed (the Sync then rolls back) or the
            # connection is lost: either way the Sync commits nothing.
            with suppress(psycopg.Error):
                self._writer.execute(_BEGIN, prepare=False)
        with suppress(psycopg.Error):
            self._sync()

    def end(self) -> None:
        """Leave the connection idle, out of pipeline mode and out of any transaction.

        An explicit transaction still open (left so by `roll_back`, or failed) is rolled
        back here, by psycopg, which then forgets its prepared statements on both sides at
        once. A broken connection is left alone; the pool discards it.
        """
        if self._in_pipeline:
            # Interrupted (KeyboardInterrupt, say) before commit or roll_back left the
            # pipeline: a Sync now could commit what the block wrote. Closing the connection
            # rolls it back on the server; the pool opens another.
            self._conn.close()
            return
        with suppress(psycopg.Error):
            if self._conn.pgconn.transaction_status in _IN_TRANSACTION:
                self._conn.rollback()


class _Apps:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q
        # Secrets read along with their app; its row stays locked by this transaction, so
        # they stay current until it ends, unless it changes them itself.
        self._secrets: dict[str, StoredSecret] = {}

    def get(self, key: str) -> App | None:
        if not _storable(key):
            return None
        row = self._unit.one(self._q.app_get, (key,))
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        self._secrets[key] = _stored_secret(row[_APP_WIDTH:])
        return _app(row)

    def get_secret(self, key: str) -> StoredSecret | None:
        if not _storable(key):
            return None
        known = self._secrets.get(key)
        if known is not None:
            return known
        row = self._unit.one(self._q.app_secret, (key,))
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        return _stored_secret(row)

    def get_context(self, key: str, account: str | None) -> AppContext | None:
        if not _storable(key):
            return None
        if account is not None and not _storable(account):
            # No row can name such an account: it has no installation and no permission.
            app = self.get(key)
            if app is None:
                return None
            return AppContext(app, self._secrets[key], account, None, None)
        row = self._unit.one(self._q.app_context, {"key": key, "account": account})
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        app = _app(row)
        at = _APP_WIDTH + _SECRET_WIDTH
        secret = self._secrets[key] = _stored_secret(row[_APP_WIDTH:at])
        acting_for = app.owner if account is None else account
        installation = (
            Installation(key, acting_for, row[at], _utc(row[at + 1]), row[at + 2])
            if row[at] is not None
            else None
        )
        permission = (
            AppsPermission(acting_for, row[at + 3], _utc(row[at + 4]))
            if row[at + 3] is not None
            else None
        )
        return AppContext(app, secret, acting_for, installation, permission)

    def add(self, app: App, secret: StoredSecret) -> None:
        values = _app_values(app) | dict(zip(_SECRET_COLUMNS, _secret_values(secret), strict=True))
        self._unit.execute(self._q.app_add, values)
        self._unit.locked_apps.add(app.key)  # a new row is ours until commit

    def update(self, app: App) -> None:
        if _storable(app.key):
            self._unit.execute(self._q.app_update, _app_values(app))

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        if _storable(key):
            self._secrets.pop(key, None)
            self._unit.execute(self._q.app_set_secret, (*_secret_values(secret), key))

    def list_secrets(self, *, after: str | None, limit: int) -> list[tuple[str, StoredSecret]]:
        if after is not None and not _storable(after):
            return []
        if after is None:
            rows = self._unit.all(self._q.app_secrets_first, (limit,))
        else:
            rows = self._unit.all(self._q.app_secrets_after, (after, limit))
        self._unit.locked_apps.update(row[0] for row in rows)
        return [(row[0], _stored_secret(row[1:])) for row in rows]

    def count_expired_grace(self, *, now: datetime) -> int:
        return self._unit.count(self._q.purge.grace_count, (now,))

    def purge_expired_grace(self, *, now: datetime, limit: int) -> int:
        self._secrets.clear()  # those read before may be among the ones cleared
        return self._unit.count(self._q.purge.grace_purge, (now, limit))

    def remove(self, key: str) -> None:
        if _storable(key):
            self._secrets.pop(key, None)
            self._unit.execute(self._q.app_remove, (key,))

    def key_retired(self, key: str) -> bool:
        if not _storable(key):
            return False
        return self._unit.one(self._q.key_retired, (key,)) is not None

    def count_owned(self, owner: str) -> int:
        if not _storable(owner):
            return 0
        self._unit.execute(self._q.owner_lock, (_OWNER_LOCK_CLASS, owner))
        row = self._unit.one(self._q.app_count_owned, (owner,))
        return int(row[0]) if row is not None else 0

    def list(self, query: ListQuery, *, owner: str | None = None) -> Page[AppListing]:
        if not _storable(owner or "", query.search or ""):
            return Page((), 0, query.page, query.per_page)
        options = ("owner",) if owner is not None else ()
        rows = self._unit.all(
            self._q.lists.statement("apps", query, *options), list_params(query, owner=owner)
        )
        return _page(rows, query, lambda row: AppListing(_app(row), int(row[_APP_WIDTH])))


class _Permissions:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def get(self, account: str) -> AppsPermission | None:
        if not _storable(account):
            return None
        row = self._unit.one(self._q.permission_get, (account,))
        return _permission(row) if row is not None else None

    def put(self, permission: AppsPermission) -> None:
        self._unit.execute(
            self._q.permission_put,
            (permission.account, permission.granted_by, permission.granted_at),
        )

    def remove(self, account: str) -> None:
        if _storable(account):
            self._unit.execute(self._q.permission_remove, (account,))

    def list(self, query: ListQuery) -> Page[AppsPermission]:
        if not _storable(query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(self._q.lists.statement("permissions", query), list_params(query))
        return _page(rows, query, _permission)


class _Installations:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def get(self, app_key: str, account: str) -> Installation | None:
        if not _storable(app_key, account):
            return None
        self._unit.lock_app(app_key)
        row = self._unit.one(self._q.installation_get, (app_key, account))
        return _installation(row) if row is not None else None

    def put(self, installation: Installation) -> None:
        self._unit.lock_app(installation.app_key)
        self._unit.execute(
            self._q.installation_put,
            (
                installation.app_key,
                installation.account,
                installation.installed_by,
                installation.installed_at,
                installation.suspended,
            ),
        )

    def remove(self, app_key: str, account: str) -> None:
        if _storable(app_key, account):
            self._unit.lock_app(app_key)
            self._unit.execute(self._q.installation_remove, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.installation_remove_app, (app_key,))

    def list(self, account: str, query: ListQuery, *, now: datetime) -> Page[InstallationListing]:
        if not _storable(account, query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(
            self._q.lists.statement("installations", query),
            list_params(query, account=account, now=now),
        )

        def listing(row: Row) -> InstallationListing:
            # The app; installed_by, installed_at, suspended (NULL for an own app); the count.
            app = _app(row[:_APP_WIDTH])
            by, at, suspended, count = row[_APP_WIDTH:]
            installation = (
                None if by is None else Installation(app.key, account, by, _utc(at), suspended)
            )
            return InstallationListing(installation, app, int(count))

        return _page(rows, query, listing)

    def list_for_app(self, app_key: str, query: ListQuery) -> Page[Installation]:
        if not _storable(app_key, query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(
            self._q.lists.statement("app_installations", query),
            list_params(query, app_key=app_key),
        )
        return _page(rows, query, lambda row: _installation(row[:_INSTALLATION_WIDTH]))


# Transactions are begun and ended by these statements, never prepared (see _Unit).
_BEGIN: Final = b"BEGIN"
_SELECT: Final = b"SELECT"  # a statement that starts so changes no rows (see _Unit.roll_back)
_COMMIT: Final = b"COMMIT"
_IN_TRANSACTION: Final = frozenset(
    {psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR}
)

"""The PostgreSQL storage itself, with its pool of connections."""

from __future__ import annotations

import math
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ..._records import App, AppsPermission, Installation, TokenContext
from ...errors import StorageError, StorageUnavailable
from .. import redact_url
from ._feed import PostgresFeed, channel_name
from ._queries import _APP_WIDTH, _TOKEN_WIDTH, _app, _Queries, _storable, _token, _utc
from ._repositories import Cursor, _Cursors, _Unit
from ._schema import Connection, _migrate

Pool = ConnectionPool[Connection]

_MAX_IDENTIFIER_BYTES: Final = 63  # longer names are silently truncated by PostgreSQL
_DEFAULT_PORT: Final = "5432"
# How many distinct app records token checks keep to share (see PostgresStorage._shared_app).
_SHARED_APPS: Final = 4096


# -- connection details and errors -------------------------------------------------------------


def _place(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string, for messages (never the password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparsable connection string"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or _DEFAULT_PORT)
    dbname = params.get("dbname")
    return f"{host}:{port}" + (f"/{dbname}" if dbname else "")


def _scrub(message: str, conninfo: str) -> str:
    """``message`` on one line, with the connection's password (if any) masked."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        password = None
    text = " ".join(message.split())
    if password:
        text = text.replace(str(password), "***")
    return text


#: appregistry's own URL parameters: libpq would refuse them, so they are taken out.
_URL_OPTIONS: Final = frozenset({"schema", "prepare"})
#: How the ``prepare`` parameter may be spelt: libpq's boolean spellings.
_SWITCHES: Final = {
    "on": True,
    "true": True,
    "yes": True,
    "1": True,
    "off": False,
    "false": False,
    "no": False,
    "0": False,
}


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without appregistry's own query parameters (`_URL_OPTIONS`), and their values.

    libpq refuses parameters it does not know, so ours must go before it sees the URL. The
    other parameters are kept byte for byte.

    >>> _split_options("postgresql://db.example/apps?sslmode=require&schema=registry")
    ('postgresql://db.example/apps?sslmode=require', {'schema': 'registry'})
    >>> _split_options("postgresql://pooler.example/apps?prepare=off")
    ('postgresql://pooler.example/apps', {'prepare': 'off'})

    Raises:
        ValueError: One of ours is given twice (which one was meant is anyone's guess).
    """
    base, mark, query = url.partition("?")
    if not mark:
        return url, {}
    kept: list[str] = []
    options: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        name = urllib.parse.unquote(name)
        if name not in _URL_OPTIONS:
            kept.append(part)
        elif name in options:
            raise ValueError(f"the URL gives {name}= twice")
        else:
            options[name] = urllib.parse.unquote(value)
    return (f"{base}?{'&'.join(kept)}" if kept else base), options


def _switch(name: str, value: str) -> bool:
    """The boolean a URL parameter spells (``on``/``off`` and libpq's other spellings).

    >>> _switch("prepare", "OFF")
    False
    """
    found = _SWITCHES.get(value.strip().lower())
    if found is None:
        shown = value if len(value) <= 20 else value[:20] + "..."
        raise ValueError(f"{name}= must be on or off (or true/false, yes/no, 1/0), not {shown!r}")
    return found


def _check_schema_name(schema: object) -> str | None:
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema or not _storable(schema):
        raise ValueError("schema must be a non-empty PostgreSQL schema name")
    if len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"schema names are at most {_MAX_IDENTIFIER_BYTES} bytes long")
    return schema


# -- the storage -------------------------------------------------------------------------------


class PostgresStorage:
    """Transactional storage in PostgreSQL, safe to share between threads and servers.

    Most hosts open it with `from_url`. The constructor takes a ready
    `psycopg_pool.ConnectionPool`, for hosts that configure their own (TLS, ``check``,
    sizes); the storage takes it over: it opens it if needed, and `close` closes it.
    Connections are used in autocommit mode, transactions are explicit.

    Args:
        pool: The connection pool. Opening the storage applies pending migrations through it.
        schema: A PostgreSQL schema to keep the tables in (created if missing); ``None``: the
            connection's ``search_path`` decides (usually ``public``). Every statement names
            its tables with the schema: nothing depends on a session's ``search_path``.
        prepare: ``False`` turns off server-side prepared statements: token checks are not
            prepared, and the pool's connections get ``prepare_threshold = None`` (psycopg's
            automatic preparation) as they are handed out. Needed behind a pooler in
            transaction mode, such as PgBouncer, which moves transactions between server
            connections: a statement prepared on one is missing on the next, or clashes with
            another client's of the same name.

    Raises:
        StorageUnavailable: The server cannot be reached.
        SchemaError: The schema is newer than this code, or is not appregistry's.
        ValueError: ``schema`` is not a valid schema name.
    """

    def __init__(self, pool: Pool, *, schema: str | None = None, prepare: bool = True) -> None:
        self._pool = pool
        self._prepare = bool(prepare)
        self._conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
        self._place = _place(self._conninfo)
        self._schema: str | None = None
        self._local = threading.local()  # per thread: inside a transaction? (no nesting)
        self._closed = False
        # Cursors kept per connection (see token_context); for checks, and for transactions.
        self._check_cursors: dict[Connection, Cursor] = {}
        self._unit_cursors: dict[Connection, _Cursors] = {}
        #: A direct connection string for the check cache's ``LISTEN`` connection, where the
        #: pool goes through a pooler in transaction mode; ``None``: the pool's.
        self.listen_conninfo: str | None = None
        self._shared_apps: dict[tuple[Any, ...], App] = {}
        # Pipeline mode needs libpq 14 or later; without it, each statement waits its turn.
        self._pipelined = psycopg.Pipeline.is_supported()
        try:
            self._schema = _check_schema_name(schema)
            try:
                # Wait for the first connections: asked for while the pool is still filling,
                # a connection makes the pool open one more, and checks would then take turns
                # on two connections, each colder than one would be.
                pool.open(wait=True, timeout=pool.timeout)
            except psycopg.Error as exc:
                raise self._failure(exc) from exc
            with self._connection() as conn:
                try:
                    _migrate(conn, self._schema, self._place)
                    self._queries = _Queries(conn, self._schema)
                except (psycopg.Error, UnicodeError) as exc:
                    raise self._failure(exc) from exc
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str | None = None,
        prepare: bool | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5,
        pool_timeout: float = 30,
        listen_url: str | None = None,
    ) -> PostgresStorage:
        """Connect to the PostgreSQL server at ``url`` and open the registry there.

        Args:
            url: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``
                (``postgres://`` too); any libpq parameter may follow, such as
                ``sslmode=require``; and two of appregistry's own, which are taken out
                before libpq sees the URL: ``schema=NAME`` for the tables' schema, and
                ``prepare=off`` (default ``on``) to use no server-side prepared statements,
                which a pooler in transaction mode (PgBouncer's ``pool_mode = transaction``)
                needs: see docs/backends.md.
            schema: See the class; the tables' PostgreSQL schema. It may also come from
                the URL; giving two different ones is an error.
            prepare: See the class; ``None`` takes the URL's ``prepare`` (default on).
                Giving one that contradicts the URL's is an error.
            min_size, max_size: How many connections the pool keeps, and at most opens.
            connect_timeout: Seconds to wait for a connection (libpq counts whole seconds,
                at least 2).
            pool_timeout: Seconds an operation waits for a free connection before failing.

            listen_url: A direct connection string for the one ``LISTEN`` connection of
                a `appregistry.CheckCache`, where ``url`` goes through a pooler in
                transaction mode; ``None``: ``url`` itself.

        Raises:
            StorageUnavailable: The server cannot be reached or refuses the login; the
                message names the host and port, never the password.
            SchemaError: The schema is newer than this code, or is not appregistry's.
            ValueError: A size, timeout or schema name is out of range, or ``prepare=`` is
                not on or off.

        >>> PostgresStorage.from_url("postgresql://db.example/apps?prepare=maybe")
        Traceback (most recent call last):
        ...
        ValueError: prepare= must be on or off (or true/false, yes/no, 1/0), not 'maybe'
        """
        scheme = url.split(":", 1)[0].lower()
        if scheme not in {"postgresql", "postgres"}:
            raise StorageUnavailable(f"not a PostgreSQL URL: {redact_url(url)!r}")
        url, options = _split_options(url)
        url_schema = options.get("schema")
        if url_schema is not None and schema is not None and url_schema != schema:
            raise ValueError(f"two schemas given: {url_schema!r} in the URL, {schema!r}")
        schema = schema if schema is not None else url_schema
        _check_schema_name(schema)
        url_prepare = _switch("prepare", options["prepare"]) if "prepare" in options else None
        if url_prepare is not None and prepare is not None and url_prepare != bool(prepare):
            raise ValueError(f"prepare={prepare!r} contradicts the URL's prepare parameter")
        prepare = bool(prepare if prepare is not None else (url_prepare is not False))
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if connect_timeout <= 0 or pool_timeout <= 0:
            raise ValueError("timeouts must be positive")
        seconds = max(2, math.ceil(connect_timeout))  # libpq's unit and minimum
        place = _place(url)
        # One connection first: it fails fast with libpq's own reason (refused, timed out,
        # authentication failed) where a pool would only say it timed out.
        try:
            psycopg.connect(url, connect_timeout=seconds).close()
        except psycopg.Error as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL at {place}: {_scrub(str(exc), url)}"
            ) from exc
        connection: dict[str, Any] = {"autocommit": True, "connect_timeout": seconds}
        if not prepare:
            connection["prepare_threshold"] = None  # psycopg then prepares nothing at all
        pool: Pool = ConnectionPool(
            url,
            kwargs=connection,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=pool_timeout,
            name=f"appregistry@{place}",
        )
        storage = cls(pool, schema=schema, prepare=prepare)
        storage.listen_conninfo = listen_url
        return storage

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema holding the tables, or ``None`` for the connection's default."""
        return self._schema

    def __repr__(self) -> str:
        schema = f", schema={self._schema!r}" if self._schema else ""
        state = ", closed" if self._closed else ""
        return f"PostgresStorage({self._place!r}{schema}{state})"

    # -- plumbing ---------------------------------------------------------------------------

    def _failure(self, exc: BaseException) -> StorageError:
        """The appregistry error for a driver error; the caller chains ``exc``."""
        if isinstance(exc, UnicodeError):
            return StorageError("text that PostgreSQL cannot store (not valid Unicode)")
        if isinstance(exc, psycopg.errors.PipelineAborted):
            # Only seen after the failed statement's own error was raised (and caught).
            return StorageError(
                f"PostgreSQL at {self._place} failed: an earlier statement of this "
                "transaction failed"
            )
        state = getattr(exc, "sqlstate", None)
        diag = getattr(exc, "diag", None)
        # The primary message only: the detail can quote row values.
        primary = getattr(diag, "message_primary", None) or str(exc).split("\n", 1)[0]
        message = _scrub(primary, self._conninfo)
        if isinstance(exc, psycopg.OperationalError) and (
            state is None or state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES
        ):
            return StorageUnavailable(f"PostgreSQL at {self._place} is unavailable: {message}")
        code = f" [{state}]" if state else ""
        if state in _LOST_PREPARED and self._prepare:
            # A pooler cannot be told from a server (PgBouncer says nothing of itself), so the
            # error says what to do when it comes: a duplicate or missing prepared statement
            # means statements moved between server connections under the client.
            message += (
                "; the connection's prepared statements were lost or clash: behind a pooler "
                "in transaction mode (PgBouncer), open the storage with prepare=off in the URL"
            )
        return StorageError(f"PostgreSQL at {self._place} failed{code}: {message}")

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        try:
            with self._pool.connection() as conn:
                if not conn.autocommit:
                    conn.autocommit = True
                if not self._prepare and conn.prepare_threshold is not None:
                    conn.prepare_threshold = None  # a host's own pool (see the class)
                yield conn
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    # -- the port ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Unit]:
        """A transaction; see `appregistry.ports.Storage.transaction`.

        Transactions run at READ COMMITTED and lock what they read. The first read of an app
        in a transaction (or of an installation or token, which reads their app first) locks
        the app's row (``FOR NO KEY UPDATE``) until commit; permissions are locked the same
        way. So a disable and an issue of the same app run one after the other: either the
        issue commits first and the disable follows (the token is then refused, the app being
        disabled), or the issue waits and then sees the app disabled. The same holds for
        remove, uninstall, suspend, regenerate and forbid. Every transaction takes an app's
        row before the rows that belong to it, and apps before permissions, so they cannot
        deadlock on each other in the course of one operation of the Registry.

        SERIALIZABLE with retries was the alternative, but a retry has to re-run the
        caller's block, which a context manager cannot do; locks make the caller wait instead
        of fail. Token checks take no locks at all.

        Round trips: with libpq 14 or later a transaction runs in pipeline mode, without
        BEGIN or COMMIT statements (an implicit transaction, ended by the protocol's Sync):
        reads wait for their rows, writes go out without waiting, and the end commits them in
        one round trip. Issuing a token is two round trips, not four. The price: a failed
        write (a key taken meanwhile) is reported by the next read or by the end of the block,
        not by the call that sent it. Either way the whole transaction is rolled back and
        `appregistry.errors.StorageError` raised, before the block's changes are visible to
        anyone.

        Transactions do not nest: opening one inside another in the same thread raises
        `appregistry.errors.StorageError` (it would need a second connection and could wait
        on its own locks).
        """
        if getattr(self._local, "inside", False):
            raise StorageError("transactions do not nest")
        self._local.inside = True
        try:
            with self._connection() as conn:
                cursors = self._unit_cursors.get(conn) or self._new_unit_cursors(conn)
                unit = _Unit(self, conn, cursors, pipelined=self._pipelined)
                try:
                    try:
                        yield unit
                    except BaseException:
                        unit.roll_back()
                        raise
                    try:
                        unit.commit()
                    except psycopg.Error as exc:  # a statement's or the commit's own error
                        raise self._failure(exc) from exc
                finally:
                    unit.end()
        finally:
            self._local.inside = False

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """See `appregistry.ports.Storage.token_context`: one prepared query, no transaction.

        Prepared unless the storage was opened with ``prepare=off`` (see the class).
        """
        # The hot path: the pool is used without its context managers, and each connection
        # keeps a cursor for checks, which keeps its row loaders; a new cursor looks them up
        # again. Together that was a quarter of a check on top of the round trip.
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        pool = self._pool
        try:
            conn = pool.getconn()
            try:
                if not conn.autocommit:
                    conn.autocommit = True
                cursor = self._check_cursors.get(conn) or self._new_check_cursor(conn)
                # prepare=False: never prepared, whatever the connection's threshold says.
                if older:
                    cursor.execute(
                        self._queries.token_context_any,
                        ([digest, *older],),
                        prepare=self._prepare,
                    )
                else:
                    cursor.execute(self._queries.token_context, (digest,), prepare=self._prepare)
                row = cursor.fetchone()
            finally:
                pool.putconn(conn)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc
        if row is None:
            return None
        app_at = _TOKEN_WIDTH
        rest = app_at + _APP_WIDTH
        app = self._shared_app(row[app_at:rest]) if row[app_at] is not None else None
        installation = (
            Installation(row[1], row[2], row[rest], _utc(row[rest + 1]), row[rest + 2])
            if row[rest] is not None
            else None
        )
        permission = (
            AppsPermission(row[2], row[rest + 3], _utc(row[rest + 4]))
            if row[rest + 3] is not None
            else None
        )
        return TokenContext(_token(row), app, installation, permission)

    def _new_check_cursor(self, conn: Connection) -> Cursor:
        cursors = self._check_cursors
        if len(cursors) >= self._pool.max_size:
            # Forget the cursors of connections the pool has closed (and replaced).
            self._check_cursors = cursors = {c: cur for c, cur in cursors.items() if not c.closed}
        cursor = cursors[conn] = conn.cursor()
        return cursor

    def _new_unit_cursors(self, conn: Connection) -> _Cursors:
        # Kept, as the check's cursor is: a cursor that runs the same statement again keeps
        # what it looked up for its parameters and rows.
        cursors = self._unit_cursors
        if len(cursors) >= self._pool.max_size:
            self._unit_cursors = cursors = {c: pair for c, pair in cursors.items() if not c.closed}
        pair = cursors[conn] = (conn.cursor(), conn.cursor())
        return pair

    def _shared_app(self, row: tuple[Any, ...]) -> App:
        """The app record of these column values, made once and shared by later checks.

        Records are immutable, so checks that read the same values may share one. Apps are
        few and their records the dearest to build; looking one up by its values costs a
        fraction of building it. Any change to the app changes the values: never stale.
        """
        shared = self._shared_apps
        app = shared.get(row)
        if app is None:
            if len(shared) >= _SHARED_APPS:
                shared.clear()
            app = shared[row] = _app(row)
        return app

    def change_feed(self) -> PostgresFeed:
        """The storage's `appregistry.ports.ChangeFeed`: ``NOTIFY`` and ``LISTEN``.

        The listening connection uses the pool's connection string: behind a pooler in
        transaction mode, give the direct one as ``listen_conninfo`` (see `_feed`).
        """
        conninfo = self.listen_conninfo or self._conninfo
        return PostgresFeed(conninfo, channel_name(self._schema), self._notify_now)

    def _notify_now(self, channel: str, payload: str) -> None:
        with self._connection() as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def close(self) -> None:
        """Close the pool; the storage cannot be used afterwards. Closing twice is harmless."""
        self._closed = True
        self._check_cursors = {}
        self._unit_cursors = {}
        self._pool.close()


# SQLSTATEs that mean "the server cannot serve us now", not "the request was wrong":
# connection exceptions (08), insufficient resources (53), system errors (58), and the
# shutdowns and restarts of class 57 (not its query cancellations). A client-side failure
# (connection lost, no free connection in the pool) has no SQLSTATE at all.
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "53", "58"})
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
# duplicate_prepared_statement, invalid_sql_statement_name: the storage names no statements
# of its own, so these come from psycopg's prepared statements gone astray (see _failure).
_LOST_PREPARED: Final = frozenset({"42P05", "26000"})

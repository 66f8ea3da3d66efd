"""The SQLite storage itself, with its pool of connections."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal, NoReturn

from ..._records import AccessToken, App, AppsPermission, Installation, TokenContext
from ...errors import SchemaError, StorageError, StorageUnavailable
from ._feed import MemoryDatabaseFeed, SQLiteFeed
from ._queries import (
    _EPOCH,
    _GRANTS,
    _MICROSECOND,
    _TOKEN_CONTEXT_SQL,
    _app_of_record,
    _digest_in,
)
from ._repositories import _Session, _Unit
from ._schema import _FILLS, _MIGRATIONS, APPLICATION_ID, SCHEMA_VERSION

# How many distinct app records token checks keep to share (see SQLiteStorage.token_context).
_SHARED_APPS: Final = 4096
_SYNCHRONOUS: Final = ("FULL", "NORMAL", "EXTRA")
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
        self._memory_feed: MemoryDatabaseFeed | None = None
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
        elif not self._memory and self._path:
            self._create_private_file()
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

    def _create_private_file(self) -> None:
        """Create the empty database file readable and writable by its owner only (0600).

        SQLite would create it as 0644 less the umask, so anyone on the machine could read
        the digests, the app records and, with an encryption key configured elsewhere, the
        ciphertexts. SQLite gives the write-ahead log and its shared-memory index the mode
        of the database file, so they are 0600 too. An existing file keeps its mode: the
        host chose it. (SQLite takes an empty file for an empty database.)
        """
        try:
            descriptor = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # created meanwhile by another process: its mode is its creator's
        except OSError:
            return  # a missing folder, say: SQLite fails to open it next, and says so
        try:
            if hasattr(os, "fchmod"):  # POSIX: exactly 0600, whatever the umask took away
                os.fchmod(descriptor, 0o600)
        finally:
            os.close(descriptor)

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
            approved_by,
            last_used_at,
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
            approved_by,
            None if last_used_at is None else _EPOCH + last_used_at * _MICROSECOND,
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

    def change_feed(self) -> SQLiteFeed | MemoryDatabaseFeed:
        """The storage's `appregistry.ports.ChangeFeed`: its change log (see `_feed`)."""
        if self._memory:
            if self._memory_feed is None:
                self._memory_feed = MemoryDatabaseFeed()
            return self._memory_feed
        return SQLiteFeed(self._connect)

    def close(self) -> None:
        """Close the connections; using the storage afterwards raises `StorageError`.

        Connections in use by a running transaction are closed when it ends.
        """
        self._pool.close()

"""SQLite's change feed: a change log table, looked at when ``PRAGMA data_version`` moves.

SQLite has no messages between processes. A changing transaction appends its scopes to
``change_log`` instead, so they are written, or rolled back, with the change. A subscriber
keeps one read-only connection and asks it for ``PRAGMA data_version``, which changes when
any other connection (of this process or another) has committed; only then does it read the
log rows after the last one it saw. The pragma costs a few microseconds, about as much as a
whole cached check, so the check cache asks at most once per ``poll_interval``: that
interval is the cache's bound on SQLite.

The log keeps its last `_KEPT` rows; a subscriber that finds rows missing before the first
one it reads (it was asleep through more changes than that) drops everything it cached.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection
from typing import Final

from ...ports import Scope, UnitOfWork
from .._changes import InProcessFeed, decode, encode

logger = logging.getLogger("appregistry.cache")

_KEPT: Final = 10_000
_ALL: Final[Scope] = ("all",)
_APPEND: Final = "INSERT INTO change_log (scopes) VALUES (?)"
_TRIM: Final = "DELETE FROM change_log WHERE seq <= last_insert_rowid() - ?"


class SQLiteFeed:
    """The `appregistry.ports.ChangeFeed` of one SQLite file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect

    def publish(self, tx: UnitOfWork, scopes: Collection[Scope]) -> None:
        """Append ``scopes`` to the change log, in ``tx``."""
        session = getattr(tx, "session")  # noqa: B009  (the backend's own unit of work)
        session.execute(_APPEND, (encode(scopes),))
        session.execute(_TRIM, (_KEPT,))

    def subscribe(self, deliver: Callable[[Collection[Scope] | None], None]) -> _Reader:
        """Follow the change log from now on; see `appregistry.ports.ChangeFeed.subscribe`."""
        return _Reader(self._connect, deliver)


class MemoryDatabaseFeed(InProcessFeed):
    """The feed of a ``:memory:`` database, which no other process can open."""


class _Reader:
    """A read-only connection that follows the change log, polled by the check cache."""

    polled: Final = True

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        deliver: Callable[[Collection[Scope] | None], None],
    ) -> None:
        self._connect = connect
        self._deliver = deliver
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._version = -1
        self._last = 0
        self._start()

    def _start(self) -> None:
        connection = self._connect()
        connection.execute("PRAGMA query_only = ON")
        self._connection = connection
        self._version = connection.execute("PRAGMA data_version").fetchone()[0]
        self._last = connection.execute("SELECT coalesce(max(seq), 0) FROM change_log").fetchone()[
            0
        ]
        self._deliver([_ALL])

    def poll(self) -> None:
        """Deliver the changes committed by others since the last poll."""
        with self._lock:
            try:
                if self._connection is None:
                    self._start()  # after a failure: start over, dropping everything
                    return
                self._read()
            except sqlite3.Error as exc:
                logger.warning(
                    "reading the change log failed (%s); token checks read storage until it "
                    "works again",
                    exc,
                )
                self._lose()

    def _read(self) -> None:
        connection = self._connection
        if connection is None:  # closed meanwhile
            return
        version = connection.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        self._version = version
        rows = connection.execute(
            "SELECT seq, scopes FROM change_log WHERE seq > ? ORDER BY seq", (self._last,)
        ).fetchall()
        if not rows:
            return
        if rows[0][0] != self._last + 1:
            # Trimmed before this reader saw them: whatever they said, drop everything.
            self._deliver([_ALL])
        else:
            for _, message in rows:
                self._deliver(decode(message))
        self._last = rows[-1][0]

    def _lose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._deliver(None)

    def sync(self, timeout: float) -> bool:  # noqa: ARG002
        """Read the log now: what others committed before this call is then delivered."""
        self.poll()
        return self._connection is not None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

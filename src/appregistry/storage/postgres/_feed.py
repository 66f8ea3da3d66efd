"""PostgreSQL's change feed: ``NOTIFY`` in the changing transaction, ``LISTEN`` in each process.

``NOTIFY`` is transactional: the message leaves when, and only if, the transaction that sent
it commits, and listeners receive messages in commit order. Each subscribed process keeps
one connection that only listens, read by a thread of its own, so a change reaches its cache
within milliseconds of the commit, without any check waiting for it.

The listening connection holds session state (``LISTEN``), so it must go straight to
PostgreSQL, never through a pooler in transaction mode such as PgBouncer: hence its own
connection string (``listen_conninfo``), which defaults to the storage's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Collection
from typing import Final

import psycopg
from psycopg import sql

from ...ports import Scope, UnitOfWork
from .._changes import decode, encode

logger = logging.getLogger("appregistry.cache")

_NOTIFY: Final = b"SELECT pg_notify(%s, %s)"
_SYNC_PREFIX: Final = "sync:"
_WAKE: Final = "wake"  # tells a closing listener to look at its stop flag
_ALL: Final[Scope] = ("all",)
# Seconds the listening thread waits for a message before it checks the connection.
_IDLE_CHECK: Final = 1.0
_RECONNECT_FIRST: Final = 0.05
_RECONNECT_MOST: Final = 5.0
_MAX_CHANNEL_BYTES: Final = 63


def channel_name(schema: str | None) -> str:
    """The channel of the registry in ``schema``: one per schema, short enough for PostgreSQL.

    >>> channel_name(None), channel_name("tenant_7")
    ('appregistry', 'appregistry.tenant_7')
    >>> len(channel_name("x" * 63).encode())
    63
    """
    name = "appregistry" if schema is None else f"appregistry.{schema}"
    if len(name.encode()) > _MAX_CHANNEL_BYTES:
        name = "appregistry." + hashlib.sha256(name.encode()).hexdigest()[:51]
    return name


class PostgresFeed:
    """The `appregistry.ports.ChangeFeed` of one `PostgresStorage`."""

    def __init__(self, conninfo: str, channel: str, notify_now: Callable[[str, str], None]) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._notify_now = notify_now  # sends one message outside any transaction

    def publish(self, tx: UnitOfWork, scopes: Collection[Scope]) -> None:
        """Send ``scopes`` with the transaction: PostgreSQL delivers them when it commits."""
        execute = getattr(tx, "execute")  # noqa: B009  (the backend's own unit of work)
        execute(_NOTIFY, (self._channel, encode(scopes)))

    def subscribe(self, deliver: Callable[[Collection[Scope] | None], None]) -> _Listener:
        """Start a listening thread; see `appregistry.ports.ChangeFeed.subscribe`."""
        if not self._conninfo:
            # A pool made from a callable has no connection string to listen with; libpq's
            # defaults might reach another server, whose silence would look like no changes.
            raise ValueError(
                "the check cache needs a connection string to LISTEN with: set the storage's "
                "listen_conninfo (or from_url's listen_url)"
            )
        return _Listener(self._conninfo, self._channel, deliver, self._notify_now)


class _Listener:
    """One process's listening connection and the thread that reads it."""

    polled: Final = False

    def __init__(
        self,
        conninfo: str,
        channel: str,
        deliver: Callable[[Collection[Scope] | None], None],
        notify_now: Callable[[str, str], None],
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._deliver = deliver
        self._notify_now = notify_now
        self._stopped = threading.Event()
        self._live = threading.Event()
        self._marks: dict[str, threading.Event] = {}
        self._marks_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="appregistry-change-feed", daemon=True
        )
        self._thread.start()
        # Checks are read from storage until the feed is live; waiting a little for it
        # spares the first checks that, but a slow server must not hold the Registry up.
        self._live.wait(timeout=2.0)

    def poll(self) -> None:
        """Nothing to do: the thread delivers changes as they arrive."""

    def sync(self, timeout: float) -> bool:
        """Send a mark through the server and wait for it to come back to this listener.

        Messages arrive in commit order, so once the mark is back, every change committed
        before it was sent has been delivered.
        """
        if not self._live.wait(timeout):
            return False
        mark = secrets.token_hex(8)
        arrived = threading.Event()
        with self._marks_lock:
            self._marks[mark] = arrived
        try:
            self._notify_now(self._channel, _SYNC_PREFIX + mark)
            return arrived.wait(timeout)
        finally:
            with self._marks_lock:
                self._marks.pop(mark, None)

    def close(self) -> None:
        self._stopped.set()
        if self._live.is_set():
            # Wake the thread now rather than at its next idle check.
            with contextlib.suppress(Exception):
                self._notify_now(self._channel, _WAKE)
        self._thread.join(timeout=_IDLE_CHECK + 1)

    def _run(self) -> None:
        delay = _RECONNECT_FIRST
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    # Listening from here on: what was cached before may have missed changes.
                    self._deliver([_ALL])
                    self._live.set()
                    delay = _RECONNECT_FIRST
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=_IDLE_CHECK):
                            if self._stopped.is_set():
                                break
                            self._received(notice.payload)
                        # Nothing for a while: make sure the connection is still there.
                        conn.execute("SELECT 1")
            except psycopg.Error as exc:
                if self._stopped.is_set():
                    break
                logger.warning(
                    "the change feed's connection failed (%s); token checks read storage "
                    "until it is back",
                    type(exc).__name__,
                )
            except Exception:  # never let the thread die silently
                logger.exception("the change feed failed; token checks read storage")
            self._live.clear()
            self._deliver(None)
            self._stopped.wait(delay)
            delay = min(delay * 2, _RECONNECT_MOST)

    def _received(self, payload: str) -> None:
        if payload == _WAKE:
            return
        if payload.startswith(_SYNC_PREFIX):
            with self._marks_lock:
                arrived = self._marks.get(payload[len(_SYNC_PREFIX) :])
            if arrived is not None:
                arrived.set()
            return
        self._deliver(decode(payload))

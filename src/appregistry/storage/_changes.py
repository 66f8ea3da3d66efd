"""What the backends' change feeds share: the message format, and the in-process feed.

A message is the scopes of one committed change (see `appregistry.ports.Scope`) as JSON, at
most `MAX_MESSAGE` bytes: PostgreSQL's ``NOTIFY`` takes no more than 8000, so a change that
touches more (removing a thousand tokens at once) is sent as "everything", which is always
a correct answer, only a more expensive one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection
from typing import Final

from ..ports import Scope, UnitOfWork

__all__ = ["MAX_MESSAGE", "InProcessFeed", "decode", "encode"]

MAX_MESSAGE: Final = 7000
_ALL: Final[Scope] = ("all",)


def encode(scopes: Collection[Scope]) -> str:
    """One change's scopes as a message.

    >>> encode([("app", "K" * 4)])
    '[["app","KKKK"]]'
    >>> decode(encode([("token", "t" * 40)] * 200))
    [('all',)]
    """
    message = json.dumps(sorted(scopes), separators=(",", ":"), ensure_ascii=False)
    if len(message.encode()) > MAX_MESSAGE:
        return '[["all"]]'
    return message


def decode(message: str) -> list[Scope]:
    """The scopes of a message; anything unreadable is "everything".

    >>> decode('[["account","acme"]]')
    [('account', 'acme')]
    >>> decode("not json")
    [('all',)]
    """
    try:
        scopes = json.loads(message)
        if isinstance(scopes, list) and all(
            isinstance(s, list) and s and all(isinstance(p, str) for p in s) for s in scopes
        ):
            return [tuple(s) for s in scopes]
    except ValueError:
        pass
    return [_ALL]


class InProcessFeed:
    """A change feed for storage that lives in one process (the memory backend).

    A change is delivered to every subscriber as it is published, inside its transaction:
    the memory backend's checks wait for its lock, so no check can read the state from
    before the change and keep it afterwards. A rolled-back change has then been delivered
    for nothing, which costs only a cache miss.
    """

    polled: Final = False

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Collection[Scope] | None], None]] = []
        self._lock = threading.Lock()

    def publish(self, tx: UnitOfWork, scopes: Collection[Scope]) -> None:  # noqa: ARG002
        """Deliver ``scopes`` to every subscriber now (``tx`` is not needed to carry them)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for deliver in subscribers:
            deliver(scopes)

    def subscribe(self, deliver: Callable[[Collection[Scope] | None], None]) -> _Subscription:
        """Deliver every change from now on; see `appregistry.ports.ChangeFeed.subscribe`."""
        with self._lock:
            self._subscribers.append(deliver)
        deliver([_ALL])
        return _Subscription(self, deliver)

    def _unsubscribe(self, deliver: Callable[[Collection[Scope] | None], None]) -> None:
        with self._lock:
            if deliver in self._subscribers:
                self._subscribers.remove(deliver)


class _Subscription:
    polled: Final = False

    def __init__(
        self, feed: InProcessFeed, deliver: Callable[[Collection[Scope] | None], None]
    ) -> None:
        self._feed = feed
        self._deliver = deliver

    def poll(self) -> None:
        """Nothing to do: changes are delivered as they are published."""

    def sync(self, timeout: float) -> bool:  # noqa: ARG002
        """Always in sync: nothing to wait for."""
        return True

    def close(self) -> None:
        self._feed._unsubscribe(self._deliver)

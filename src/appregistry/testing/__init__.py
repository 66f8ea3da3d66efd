"""Test helpers for hosts: a manual clock, an event recorder, strategies, a contract suite.

`appregistry.testing.strategies` holds Hypothesis strategies; `appregistry.testing.contract`
the storage contract suite that every backend passes.

These are public API: test your own policies and backends with the same tools we use.

>>> from datetime import timedelta
>>> clock = ManualClock()
>>> start = clock()
>>> clock.advance(timedelta(minutes=5))
>>> clock() - start
datetime.timedelta(seconds=300)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from .._records import Event, EventKind

__all__ = ["EventRecorder", "ManualClock"]

_EPOCH = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)


class ManualClock:
    """A clock that moves only when told: pass it as ``Registry(clock=...)``.

    Args:
        start: The initial time (aware); by default 2015-04-20 09:56:40 UTC, the seeds' date.
    """

    def __init__(self, start: datetime = _EPOCH) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        """The current time of this clock."""
        with self._lock:
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta`` (never backward)."""
        if delta < timedelta(0):
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now += delta

    def set(self, when: datetime) -> None:
        """Move the clock to ``when``, which must not be earlier than now."""
        with self._lock:
            if when < self._now:
                raise ValueError("a ManualClock only moves forward")
            self._now = when


class EventRecorder:
    """A listener that keeps every event: pass it as ``Registry(listeners=[recorder])``.

    >>> recorder = EventRecorder()
    >>> recorder(Event(EventKind.APP_ENABLED, _EPOCH, "K" * 32, "acme"))
    >>> recorder.kinds()
    [<EventKind.APP_ENABLED: 'app_enabled'>]
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        """Keep ``event``."""
        with self._lock:
            self.events.append(event)

    def kinds(self) -> list[EventKind]:
        """The kinds of the events received, in order."""
        with self._lock:
            return [event.kind for event in self.events]

    def clear(self) -> None:
        """Forget the events received so far."""
        with self._lock:
            self.events.clear()

"""When each access token was last allowed: recorded in process memory, written in batches.

A token check stays a read. An allowed check looks up when the token's next use is due in a
dictionary of this process (`_Recorder.due`) and compares two times; only when a use is
due (once per ``interval`` per token), or a batch is (once per ``flush_delay``), does it
take the lock and do more. Due uses wait in memory, and are written together, in one
transaction of their own, by the check that finds the oldest of them ``flush_delay`` old or
the batch full, by `Registry.list_tokens` before it reads, and by `Registry.close`.

The time a check sees in the token's record may be stale (the check cache keeps a record up
to its ``max_age``; another process's batch may be on its way), so it decides nothing once
the token is in ``due``: that map, bounded, is what keeps the writes down to one per
interval. A write that fails is logged and dropped, never raised: the check it rode on was
answered already, and a last use is a hint.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

from .._records import AccessToken
from ..ports import Storage

logger = logging.getLogger("appregistry.last_use")

#: ``due`` of a token that is not tracked, and `_Recorder.flush_at` with nothing pending.
_FAR: Final = datetime.max.replace(tzinfo=UTC)
#: What `_Recorder.due` answers for a token it does not track: due at once.
NOT_TRACKED: Final = datetime.min.replace(tzinfo=UTC)


def _positive(_: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be positive")


def _at_least_one(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


@attrs.frozen
class LastUse:
    """Record when each access token was last allowed; pass one as ``Registry(last_use=...)``.

    On by default; ``last_use=None`` turns it off. A token's ``last_used_at`` is then the
    time of an allowed check of it, at most ``interval`` (plus ``flush_delay``, while the
    process keeps checking tokens) before its latest one, and never after it. Refused checks
    never set it.

    Args:
        interval: How often, at most, one token's use is written (by this process). The
            precision of ``last_used_at``.
        flush_delay: How long a due use may wait in memory for others to share its write;
            measured at the next check (or list, or close) after it.
        max_batch: A batch this large is written at once, however young.
        max_tracked: How many tokens' next due time the process keeps. Past that the least
            recently written are forgotten, and their next check reads the stored time
            again (which the check cache may hold stale, so such a token may be written
            more often than once per interval: never less).

    >>> LastUse().interval
    datetime.timedelta(seconds=60)
    """

    interval: timedelta = attrs.field(default=timedelta(minutes=1), validator=_positive)
    flush_delay: timedelta = attrs.field(default=timedelta(seconds=1), validator=_positive)
    max_batch: int = attrs.field(default=1000, validator=_at_least_one)
    max_tracked: int = attrs.field(default=100_000, validator=_at_least_one)


class _Recorder:
    """One Registry's pending uses, and when each token's next use is due."""

    __slots__ = (
        "_delay",
        "_interval",
        "_lock",
        "_max_batch",
        "_max_tracked",
        "_pending",
        "_write",
        "due",
        "flush_at",
    )

    def __init__(self, options: LastUse, write: Callable[[Mapping[str, datetime]], None]) -> None:
        #: Token id -> when its next use is to be written, least recently written first.
        #: Read without the lock by every allowed check (a lookup is atomic, and costs what a
        #: plain dict's does); written under it. Ordered, because evicting the oldest of a
        #: plain dict that keeps moving entries to its end scans the dead slots at its front
        #: (about 80 µs at 100,000 tokens, measured), where `popitem(last=False)` does not.
        self.due: OrderedDict[str, datetime] = OrderedDict()
        #: When the pending uses are to be written; `_FAR` while none is.
        self.flush_at = _FAR
        self._interval = options.interval
        self._delay = options.flush_delay
        self._max_batch = options.max_batch
        self._max_tracked = options.max_tracked
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._write = write

    def use(self, token: AccessToken, now: datetime) -> None:
        """An allowed check at ``now`` whose use, or batch, may be due: the rare path."""
        batch = None
        with self._lock:
            token_id = token.token_id
            due = self.due.get(token_id, NOT_TRACKED)
            if now >= due:
                stored = token.last_used_at
                if (
                    due is NOT_TRACKED
                    and stored is not None
                    and stored <= now < stored + self._interval
                ):
                    # Written lately (by another process, or before this one started).
                    self._track(token_id, stored + self._interval)
                else:
                    pending = self._pending
                    if not pending:
                        self.flush_at = now + self._delay
                    if pending.get(token_id, NOT_TRACKED) < now:
                        pending[token_id] = now
                    self._track(token_id, now + self._interval)
            if self._pending and (now >= self.flush_at or len(self._pending) >= self._max_batch):
                batch = self._take()
        if batch is not None:
            self._write(batch)

    def flush(self) -> None:
        """Write every pending use now (a list of tokens is about to be read, or the end)."""
        with self._lock:
            batch = self._take() if self._pending else None
        if batch is not None:
            self._write(batch)

    def _take(self) -> dict[str, datetime]:
        batch, self._pending = self._pending, {}
        self.flush_at = _FAR
        return batch

    def _track(self, token_id: str, due: datetime) -> None:
        tracked = self.due
        tracked[token_id] = due
        tracked.move_to_end(token_id)  # the first is the least recently written
        if len(tracked) > self._max_tracked:
            tracked.popitem(last=False)


def recorder(storage: Storage, options: LastUse | None) -> _Recorder | None:
    """The recorder of a Registry on ``storage`` (``None``: last use is not recorded)."""
    if options is None:
        return None

    def write(uses: Mapping[str, datetime]) -> None:
        try:
            with storage.transaction() as tx:
                tx.tokens.record_uses(uses)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the checks go on
            # No token id or time: the count and the kind of failure are what helps.
            logger.warning(
                "writing the last use of %d access tokens failed (%s); it is dropped",
                len(uses),
                type(exc).__name__,
            )

    return _Recorder(options, write)

"""The Registry's purge: every row that expires, removed in short batches, or only counted.

What expires: access tokens, refresh tokens (a grant family goes with its last one), codes,
and the previous secret an app keeps in its rotation grace window. Each batch is one short
transaction of its own that takes at most ``batch_size`` rows of each kind from the expiry
indexes, so a purge never reads the live rows nor holds every id, and its state is the
database itself: a purge that is stopped, or killed, loses at most its current batch, and
the next one carries on where it left off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import attrs

from .._records import Event, EventKind
from ..ports import UnitOfWork
from ._base import _DEFAULT_PURGE_BATCH, _MAX_PURGE_BATCH, _nonzero, _RegistryBase

#: How long a purge rests after each batch that leaves more to do, as a multiple of the time
#: that batch took, unless told otherwise. Measured with the ``purge_while_checking_postgres``
#: row of ``make bench`` (docs/performance.md): on a busy machine the checks kept 0.94 of
#: their rate at this pace, as at 1.0, and 0.81 flat out; on a quiet one the pace made no
#: difference (about 0.7 at any rest from 0 to 3).
DEFAULT_PURGE_REST: Final = 0.5

_NO_RETENTION: Final = timedelta(0)


@attrs.frozen
class PurgeCounts:
    """How many expired rows of each kind a purge removed, or `Registry.count_expired` found.

    Attributes:
        tokens: Access tokens.
        refresh_tokens: Refresh tokens (a grant family goes with its last one).
        codes: Authorization codes, used or not.
        grace_secrets: Apps whose previous secret's grace window had ended: that secret is
            forgotten (it authenticated nothing already); the app and its current secret
            stay.

    >>> counts = PurgeCounts(tokens=3, codes=1) + PurgeCounts(tokens=2, grace_secrets=1)
    >>> counts.total
    7
    >>> counts.as_dict()
    {'tokens': 5, 'refresh_tokens': 0, 'codes': 1, 'grace_secrets': 1, 'total': 7}
    """

    tokens: int = 0
    refresh_tokens: int = 0
    codes: int = 0
    grace_secrets: int = 0

    @property
    def total(self) -> int:
        """Every kind together."""
        return self.tokens + self.refresh_tokens + self.codes + self.grace_secrets

    def as_dict(self) -> dict[str, int]:
        """Each kind's count, and ``total``: what ``appregistry tokens purge --json`` shows."""
        return {**attrs.asdict(self), "total": self.total}

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(
            self.tokens + other.tokens,
            self.refresh_tokens + other.refresh_tokens,
            self.codes + other.codes,
            self.grace_secrets + other.grace_secrets,
        )


class _Purge(_RegistryBase):
    """Purging expired rows, and counting them first (a dry run)."""

    __slots__ = ()

    def purge_expired_tokens(
        self,
        *,
        retention: timedelta = _NO_RETENTION,
        batch_size: int = _DEFAULT_PURGE_BATCH,
        max_batches: int | None = None,
        rest: float = DEFAULT_PURGE_REST,
        progress: Callable[[int], None] | None = None,
    ) -> PurgeCounts:
        """Delete every expired row in bounded batches, one short transaction each.

        Access tokens, refresh tokens, authorization codes, and previous secrets whose
        grace window has ended (`rotate_secret`) all go: each batch takes at most
        ``batch_size`` of each kind, from the expiry indexes. Rows that expire while the
        purge runs wait for the next one. A purge that stops or is killed keeps every
        batch it committed; running it again finishes the work. Several may run at once.

        Nothing an app or a user can do changes: these rows are refused or ignored already
        (an expired token is refused whether or not it is stored).

        Args:
            retention: Keep rows that expired less than this long ago, for audit: only
                those expired before now minus ``retention`` go. They stay refused and
                unlisted, as every expired row is.
            batch_size: Most rows of each kind deleted per transaction; at most 100 000 (a
                larger size is cut to that).
            max_batches: Stop after this many batches (``None``: until none are left).
            rest: After each batch, when more are left, wait this many times as long as
                the batch took, so that the purge leaves the database to the token checks
                between batches: at 0.5 (the default) it is at work two thirds of the time,
                and the pace follows the database's load by itself. 0 goes flat out.
            progress: Called after each batch commits with how many rows it deleted, for
                a progress bar or `appregistry.metrics.Metrics.purge_progress`. An
                exception from it stops the purge; the batches already committed stay.

        Returns:
            How many rows of each kind were deleted (`PurgeCounts`; ``.total`` for all).

        Raises:
            ValueError: ``batch_size`` or ``max_batches`` below 1, or a negative
                ``retention`` or ``rest``.

        >>> from datetime import timedelta
        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> registry.purge_expired_tokens(retention=timedelta(days=30)).total
        0
        """
        if batch_size < 1 or (max_batches is not None and max_batches < 1):
            raise ValueError("batch_size and max_batches must be at least 1")
        if not rest >= 0:  # NaN too
            raise ValueError("rest must not be negative")
        batch_size = min(batch_size, _MAX_PURGE_BATCH)
        now = self._now()
        before = _cutoff(now, retention)
        total = PurgeCounts()
        batches = 0
        while True:
            started = time.monotonic()
            with self._transaction() as (tx, events):
                batch = _purge_batch(tx, before, batch_size)
                if batch.total:
                    details = {
                        "count": batch.tokens,
                        **_nonzero(
                            codes=batch.codes,
                            refresh_tokens=batch.refresh_tokens,
                            grace_secrets=batch.grace_secrets,
                        ),
                    }
                    events.append(Event(EventKind.TOKENS_PURGED, now, details=details))
            took = time.monotonic() - started
            total += batch
            batches += 1
            if progress is not None:
                progress(batch.total)
            more = max(attrs.astuple(batch)) >= batch_size
            if not more or (max_batches is not None and batches >= max_batches):
                return total
            if rest:
                time.sleep(took * rest)

    def count_expired(self, *, retention: timedelta = _NO_RETENTION) -> PurgeCounts:
        """How many rows of each kind `purge_expired_tokens` would delete now: a dry run.

        Counted from the expiry indexes in one transaction that writes nothing.

        Raises:
            ValueError: A negative ``retention``.

        >>> from datetime import timedelta
        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> Registry(storage=MemoryStorage()).count_expired(retention=timedelta(days=30))
        PurgeCounts(tokens=0, refresh_tokens=0, codes=0, grace_secrets=0)
        """
        before = _cutoff(self._now(), retention)
        with self._transaction() as (tx, _):
            return PurgeCounts(
                tokens=tx.tokens.count_expired(now=before),
                refresh_tokens=tx.refresh_tokens.count_expired(now=before),
                codes=tx.codes.count_expired(now=before),
                grace_secrets=tx.apps.count_expired_grace(now=before),
            )


def _cutoff(now: datetime, retention: timedelta) -> datetime:
    """The instant rows must have expired by to go: ``now`` minus ``retention``."""
    if retention < _NO_RETENTION:
        raise ValueError("retention must be a timedelta of zero or more")
    return now - retention


def _purge_batch(tx: UnitOfWork, before: datetime, limit: int) -> PurgeCounts:
    """One batch: at most ``limit`` rows of each kind expired at ``before``."""
    return PurgeCounts(
        tokens=tx.tokens.purge_expired(now=before, limit=limit),
        refresh_tokens=tx.refresh_tokens.purge_expired(now=before, limit=limit),
        codes=tx.codes.purge_expired(now=before, limit=limit),
        grace_secrets=tx.apps.purge_expired_grace(now=before, limit=limit),
    )

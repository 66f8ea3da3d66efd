"""The purge of expired rows: the storage contract suite's part on counting and purging.

Each repository counts its expired rows (``count_expired``) exactly as ``purge_expired``
would take them, boundaries included; apps forget a previous secret whose grace window has
ended (``purge_expired_grace``) and nothing else. End to end, one purge takes every kind,
keeps what a retention period protects, and a dry run (`Registry.count_expired`) counts
what it would take without writing.
"""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..._records import EventKind, RegisteredApp, StoredSecret
from ..._registry import PurgeCounts, Registry
from ...ports import Storage
from .. import EventRecorder, ManualClock
from ._registry import _code, _exchange, _register
from ._support import (
    DAY,
    EVERYTHING,
    HOUR,
    T0,
    StorageFixtures,
    _add_app,
    _add_code,
    _add_refresh,
    _add_token,
    make_app,
    make_code,
    make_refresh,
    make_token,
    new_digest,
)

_TICK = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)


def _counts(storage: Storage, now: datetime) -> tuple[int, int, int, int]:
    with storage.transaction() as tx:
        return (
            tx.tokens.count_expired(now=now),
            tx.refresh_tokens.count_expired(now=now),
            tx.codes.count_expired(now=now),
            tx.apps.count_expired_grace(now=now),
        )


def _with_grace(storage: Storage, until: datetime | None) -> tuple[str, StoredSecret]:
    """An app whose previous secret authenticates until ``until`` (none when ``None``)."""
    app = make_app()
    secret = StoredSecret(
        new_digest(),
        b"ciphertext",
        previous_digest=None if until is None else new_digest(),
        previous_valid_until=until,
    )
    with storage.transaction() as tx:
        tx.apps.add(app, secret)
    return app.key, secret


def _secret(storage: Storage, key: str) -> StoredSecret | None:
    with storage.transaction() as tx:
        return tx.apps.get_secret(key)


def _registry(storage: Storage, clock: ManualClock, *listeners: Any) -> Registry:
    return Registry(storage=storage, clock=clock, listeners=listeners)


class PurgeContract(StorageFixtures):
    """Expired rows are counted as they would be purged; one purge takes every kind."""

    # -- the repositories --------------------------------------------------------------------

    def test_counts_take_the_rows_expired_at_now_exactly(self, storage: Storage) -> None:
        """A row expiring at ``now`` counts; one expiring a microsecond later does not."""
        app = _add_app(storage)
        edge = T0 + HOUR
        for expires_at in (edge - HOUR, edge, edge + _TICK):
            _add_token(storage, make_token(app.key, expires_at=expires_at))
            _add_refresh(storage, make_refresh(app.key, expires_at=expires_at))
            _add_code(storage, make_code(app.key, expires_at=expires_at))
        assert (0, 0, 0, 0) == _counts(storage, edge - HOUR - _TICK)
        assert (2, 2, 2, 0) == _counts(storage, edge)
        assert (3, 3, 3, 0) == _counts(storage, edge + _TICK)

    def test_counting_writes_nothing_and_purges_take_what_was_counted(
        self, storage: Storage
    ) -> None:
        """After a count, each ``purge_expired`` removes that many rows, and no live one."""
        app = _add_app(storage)
        now = T0 + DAY
        for n in range(5):
            _add_token(storage, make_token(app.key, expires_at=now - n * _MINUTE))
            _add_refresh(storage, make_refresh(app.key, expires_at=now - n * _MINUTE))
            _add_code(storage, make_code(app.key, expires_at=now - n * _MINUTE))
        live = make_token(app.key, expires_at=now + _TICK)
        _add_token(storage, live)
        counted = _counts(storage, now)
        assert counted == _counts(storage, now)
        with storage.transaction() as tx:
            purged = (
                tx.tokens.purge_expired(now=now, limit=100),
                tx.refresh_tokens.purge_expired(now=now, limit=100),
                tx.codes.purge_expired(now=now, limit=100),
                tx.apps.purge_expired_grace(now=now, limit=100),
            )
        assert (5, 5, 5, 0) == counted == purged
        assert (0, 0, 0, 0) == _counts(storage, now)
        with storage.transaction() as tx:
            assert [live] == list(tx.tokens.list(app.key, "acme", EVERYTHING, now=now).items)

    def test_ended_grace_is_counted_and_forgotten_in_bounded_batches(
        self, storage: Storage
    ) -> None:
        """Previous secrets past their deadline go, at most ``limit`` a call; the rest stay."""
        now = T0 + DAY
        ended = [_with_grace(storage, now - n * HOUR) for n in range(3)]
        running = _with_grace(storage, now + _TICK)
        none = _with_grace(storage, None)
        assert 3 == _counts(storage, now)[3]
        with storage.transaction() as tx:
            first = tx.apps.purge_expired_grace(now=now, limit=2)
        with storage.transaction() as tx:
            second = tx.apps.purge_expired_grace(now=now, limit=2)
            third = tx.apps.purge_expired_grace(now=now, limit=2)
        assert (2, 1, 0) == (first, second, third)
        assert 0 == _counts(storage, now)[3]
        for key, secret in ended:
            cleared = attrs.evolve(secret, previous_digest=None, previous_valid_until=None)
            assert cleared == _secret(storage, key)
        assert [running[1], none[1]] == [_secret(storage, key) for key, _ in (running, none)]

    def test_forgetting_grace_rolls_back_with_its_transaction(self, storage: Storage) -> None:
        """A purge of previous secrets in a transaction that raises changes nothing."""
        key, secret = _with_grace(storage, T0)
        cleared: list[int] = []

        def purge_then_fail() -> None:
            with storage.transaction() as tx:
                cleared.append(tx.apps.purge_expired_grace(now=T0, limit=10))
                raise RuntimeError

        with pytest.raises(RuntimeError):
            purge_then_fail()
        assert [1] == cleared
        assert secret == _secret(storage, key)

    @settings(
        max_examples=25,
        deadline=None,
        # One storage serves every example: counts are taken at instants before every row
        # of the earlier examples expires, and those rows are then purged.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        offsets=st.lists(st.integers(-3_600_000_000, 3_600_000_000), max_size=12),
        limit=st.integers(1, 5),
    )
    def test_count_and_purge_agree_with_the_expiries(
        self, storage: Storage, offsets: list[int], limit: int
    ) -> None:
        """For any expiries around ``now``, the count is the expired rows; batches take them."""
        app = _add_app(storage)
        now = T0 + 10 * DAY
        for offset in offsets:
            expires_at = now + timedelta(microseconds=offset)
            _add_token(storage, make_token(app.key, expires_at=expires_at))
            _add_refresh(storage, make_refresh(app.key, expires_at=expires_at))
        expected = sum(offset <= 0 for offset in offsets)
        counted = _counts(storage, now)
        taken: list[int] = []
        while not taken or taken[-1] == limit:
            with storage.transaction() as tx:
                taken.append(tx.tokens.purge_expired(now=now, limit=limit))
                tx.refresh_tokens.purge_expired(now=now, limit=len(offsets) + 1)
        with storage.transaction() as tx:
            live = tx.tokens.list(app.key, "acme", EVERYTHING, now=now).total
            tx.tokens.purge_expired(now=now + 2 * HOUR, limit=len(offsets) + 1)
            tx.refresh_tokens.purge_expired(now=now + 2 * HOUR, limit=len(offsets) + 1)
        assert (expected, expected) == counted[:2]
        assert expected == sum(taken)
        assert len(offsets) - expected == live

    # -- the Registry --------------------------------------------------------------------------

    def _grants(self, registry: Registry, name: str) -> tuple[RegisteredApp, str]:
        """An app with a token and refresh token (from a code) and a second, unused code."""
        new = _register(registry, "dev", name=name)
        registry.permit_account("acme", by="admin")
        _exchange(registry, new, _code(registry, new))
        return new, _code(registry, new)

    def test_one_purge_takes_every_kind(self, storage: Storage) -> None:
        """Tokens, refresh tokens, codes and ended grace secrets go; per-kind counts say so."""
        clock, events = ManualClock(T0), EventRecorder()
        registry = _registry(storage, clock, events)
        new, _ = self._grants(registry, "First")
        rotated = registry.rotate_secret(new.app.key, old_secret_valid_until=clock() + DAY)
        clock.advance(31 * DAY)
        later, _ = self._grants(registry, "Later")
        expected = PurgeCounts(tokens=1, refresh_tokens=1, codes=2, grace_secrets=1)
        assert expected == registry.count_expired()
        events.clear()
        assert expected == registry.purge_expired_tokens(batch_size=1, rest=0)
        assert PurgeCounts() == registry.count_expired()
        details = {
            key: sum(int(str(e.details.get(key, 0))) for e in events.events)
            for key in ("count", "refresh_tokens", "codes", "grace_secrets")
        }
        assert {"count": 1, "refresh_tokens": 1, "codes": 2, "grace_secrets": 1} == details
        assert {EventKind.TOKENS_PURGED} == set(events.kinds())
        # What the other app got since is live, and the rotated secret still authenticates.
        assert 1 == registry.list_tokens(later.app.key, "acme").total
        assert registry.authenticate_client(new.app.key, rotated.secret).allowed

    def test_forgetting_an_ended_grace_changes_no_answer(self, storage: Storage) -> None:
        """Before and after the purge, the old secret is refused and the new one accepted."""
        clock = ManualClock(T0)
        registry = _registry(storage, clock)
        old = _register(registry)
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + HOUR)
        clock.advance(HOUR)

        def answers() -> list[str]:
            return [
                str(registry.authenticate_client(old.app.key, s).reason)
                for s in (old.secret, new.secret)
            ]

        before = answers()
        assert 1 == registry.purge_expired_tokens().grace_secrets
        assert ["bad_credentials", "allowed"] == before == answers()
        # A rotation after it finds no grace window to replace, as before the purge.
        events = EventRecorder()
        again = _registry(storage, clock, events)
        again.rotate_secret(old.app.key, old_secret_valid_until=clock() + HOUR)
        assert "grace_secret_replaced" not in events.events[-1].details

    def test_retention_keeps_recently_expired_rows_refused_and_unlisted(
        self, storage: Storage
    ) -> None:
        """Rows expired less than ``retention`` ago stay, refused and unlisted, until later."""
        clock = ManualClock(T0)
        registry = _registry(storage, clock)
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        old = registry.issue_token(new.app.key, new.secret)
        clock.advance(2 * DAY)
        recent = registry.issue_token(new.app.key, new.secret)
        clock.advance(2 * HOUR)
        live = registry.issue_token(new.app.key, new.secret)
        retention = timedelta(days=1)
        assert PurgeCounts(tokens=1) == registry.count_expired(retention=retention)
        assert PurgeCounts(tokens=1) == registry.purge_expired_tokens(retention=retention)
        assert "token_unknown" == registry.check_token(old.token).reason
        assert "token_expired" == registry.check_token(recent.token).reason
        listed = registry.list_tokens(new.app.key, "acme")
        assert [live.record.token_id] == [t.token_id for t in listed.items]
        clock.advance(retention)
        assert PurgeCounts(tokens=1) == registry.purge_expired_tokens(retention=retention)
        # Refused still: unknown, or expired as a check cache in front of the storage recalls.
        assert not registry.check_token(recent.token).allowed
        assert PurgeCounts() == registry.count_expired(retention=retention)

    def test_bad_pacing_and_retention_are_refused(self, storage: Storage) -> None:
        """A negative retention or rest raises `ValueError` before anything is written."""
        registry = _registry(storage, ManualClock(T0))
        with pytest.raises(ValueError, match="retention"):
            registry.count_expired(retention=-_TICK)
        with pytest.raises(ValueError, match="retention"):
            registry.purge_expired_tokens(retention=-_TICK)
        for rest in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="rest"):
                registry.purge_expired_tokens(rest=rest)

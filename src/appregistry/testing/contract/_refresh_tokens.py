"""The refresh token repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest

from ..._records import (
    Grant,
)
from ...errors import (
    StorageError,
)
from ...ports import Storage
from ._support import (
    DAY,
    HOUR,
    T0,
    StorageFixtures,
    _add_app,
    _add_refresh,
    _get_refresh,
    make_refresh,
    new_digest,
)


class RefreshTokenRepositoryContract(StorageFixtures):
    """Refresh tokens are stored by digest and read back exactly, rotated in place.

    Families, app+account pairs and apps are removed whole, with counts; purges are bounded.
    """

    def test_refresh_token_round_trips_exactly(self, storage: Storage) -> None:
        """Every field comes back equal, ``rotated_at``, the grant and the approver included."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=3))
        rotated = make_refresh(
            app.key,
            issued_at=datetime(2015, 4, 20, 12, 56, 40, 1, tzinfo=offset),
            rotated_at=T0 + HOUR,
            grant=Grant.CLIENT_CREDENTIALS,
        )
        fresh = make_refresh(app.key, "beta", family_id="other", approved_by="bøb")
        digests = [_add_refresh(storage, t) for t in (rotated, fresh)]
        assert [rotated, fresh] == [_get_refresh(storage, d) for d in digests]
        stored = _get_refresh(storage, digests[0])
        assert stored is not None
        assert Grant.CLIENT_CREDENTIALS is stored.grant

    def test_an_unknown_digest_is_none(self, storage: Storage) -> None:
        """``get`` of a digest no refresh token has returns ``None``."""
        assert _get_refresh(storage, new_digest()) is None

    def test_adding_a_taken_id_raises(self, storage: Storage) -> None:
        """A second refresh token with the same id raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        token = make_refresh(app.key)
        digest = _add_refresh(storage, token)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.refresh_tokens.add(attrs.evolve(token, account="other"), new_digest())
        assert token == _get_refresh(storage, digest)

    def test_mark_rotated_records_the_time(self, storage: Storage) -> None:
        """``mark_rotated`` sets ``rotated_at`` of that token only; an unknown id is a no-op."""
        app = _add_app(storage)
        token, other = make_refresh(app.key), make_refresh(app.key)
        digest, other_digest = _add_refresh(storage, token), _add_refresh(storage, other)
        when = T0 + timedelta(minutes=5, microseconds=7)
        with storage.transaction() as tx:
            tx.refresh_tokens.mark_rotated(token.token_id, when)
            tx.refresh_tokens.mark_rotated("no-such-token", when)
        assert attrs.evolve(token, rotated_at=when) == _get_refresh(storage, digest)
        assert other == _get_refresh(storage, other_digest)

    def test_removals_count_and_spare_the_others(self, storage: Storage) -> None:
        """Family, pair and app removals each take what they name, and report how many."""
        app, other = _add_app(storage), _add_app(storage)
        family = [make_refresh(app.key, "acme", family_id="f1") for _ in range(2)]
        pair = make_refresh(app.key, "acme", family_id="f2")
        beta = make_refresh(app.key, "beta", family_id="f3")
        kept = make_refresh(other.key, "acme", family_id="f4")
        digests = {t.token_id: _add_refresh(storage, t) for t in [*family, pair, beta, kept]}
        with storage.transaction() as tx:
            assert [2, 0] == [tx.refresh_tokens.remove_family("f1") for _ in range(2)]
            assert [1, 0] == [tx.refresh_tokens.remove_for(app.key, "acme") for _ in range(2)]
        assert beta == _get_refresh(storage, digests[beta.token_id])
        with storage.transaction() as tx:
            assert [1, 0] == [tx.refresh_tokens.remove_all_of_app(app.key) for _ in range(2)]
        assert [None] * 4 == [
            _get_refresh(storage, digests[t.token_id]) for t in [*family, pair, beta]
        ]
        assert kept == _get_refresh(storage, digests[kept.token_id])

    def test_purge_removes_at_most_limit_expired_tokens(self, storage: Storage) -> None:
        """``purge_expired`` removes only refresh tokens dead at ``now``, ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + 30 * DAY
        expired = [
            _add_refresh(storage, make_refresh(app.key, expires_at=now - timedelta(minutes=n)))
            for n in range(5)
        ]
        live = make_refresh(app.key, expires_at=now + timedelta(microseconds=1))
        live_digest = _add_refresh(storage, live)
        with storage.transaction() as tx:
            batches = [tx.refresh_tokens.purge_expired(now=now, limit=2) for _ in range(4)]
        assert [2, 2, 1, 0] == batches
        assert [None] * 5 == [_get_refresh(storage, d) for d in expired]
        assert live == _get_refresh(storage, live_digest)

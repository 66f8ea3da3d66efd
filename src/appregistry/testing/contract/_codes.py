"""The authorization code repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ..._credentials import pkce_s256
from ...errors import (
    StorageError,
)
from ...ports import Storage
from ._support import (
    CODE_LIFETIME,
    T0,
    StorageFixtures,
    _add_app,
    _add_code,
    _take,
    make_code,
    new_digest,
)


class CodeRepositoryContract(StorageFixtures):
    """Authorization codes are stored by digest and read only by taking them, once.

    Removals report counts and spare other apps and accounts; purges are bounded.
    """

    def test_a_code_is_taken_exactly_once(self, storage: Storage) -> None:
        """``take`` returns the code, every field equal, then ``None`` ever after."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=-5))
        code = make_code(
            app.key,
            issued_at=datetime(2015, 4, 20, 4, 56, 40, 999999, tzinfo=offset),
            code_challenge=pkce_s256("v" * 43),
        )
        bare = make_code(app.key, "beta")
        digest, bare_digest = _add_code(storage, code), _add_code(storage, bare)
        with storage.transaction() as tx:
            first = tx.codes.take(digest)
            again = tx.codes.take(digest)
        assert (code, None) == (first, again)
        assert (bare, None) == (_take(storage, bare_digest), _take(storage, bare_digest))

    def test_an_unknown_digest_takes_nothing(self, storage: Storage) -> None:
        """``take`` of a digest no code has returns ``None``."""
        assert _take(storage, new_digest()) is None

    def test_adding_a_taken_digest_raises(self, storage: Storage) -> None:
        """A second code under the same digest raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        code = make_code(app.key)
        digest = _add_code(storage, code)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.codes.add(make_code(app.key, "beta"), digest)
        assert code == _take(storage, digest)

    def test_removals_count_and_spare_the_others(self, storage: Storage) -> None:
        """``remove_for`` takes one app on one account; ``remove_all_of_app`` the whole app."""
        app, other = _add_app(storage), _add_app(storage)
        acme = [_add_code(storage, make_code(app.key, "acme")) for _ in range(2)]
        beta = _add_code(storage, make_code(app.key, "beta"))
        kept = make_code(other.key, "acme")
        kept_digest = _add_code(storage, kept)
        with storage.transaction() as tx:
            assert [2, 0] == [tx.codes.remove_for(app.key, "acme") for _ in range(2)]
        assert _take(storage, beta) is not None  # beta's code survived the pair's removal
        _add_code(storage, make_code(app.key, "beta"))
        with storage.transaction() as tx:
            assert [1, 0] == [tx.codes.remove_all_of_app(app.key) for _ in range(2)]
        assert [None, None] == [_take(storage, d) for d in acme]
        assert kept == _take(storage, kept_digest)

    def test_purge_removes_at_most_limit_expired_codes(self, storage: Storage) -> None:
        """``purge_expired`` removes only codes dead at ``now``, at most ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + CODE_LIFETIME
        expired = [
            _add_code(storage, make_code(app.key, expires_at=now - timedelta(minutes=n)))
            for n in range(5)
        ]
        live = make_code(app.key, expires_at=now + timedelta(microseconds=1))
        live_digest = _add_code(storage, live)
        with storage.transaction() as tx:
            batches = [tx.codes.purge_expired(now=now, limit=2) for _ in range(4)]
        assert [2, 2, 1, 0] == batches
        assert [None] * 5 == [_take(storage, d) for d in expired]
        assert live == _take(storage, live_digest)

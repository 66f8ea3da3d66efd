"""The authorization code repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from ..._credentials import pkce_s256
from ..._policy import Reason
from ..._records import AuthorizationCode, EventKind, IssuedToken
from ..._registry import Registry
from ...errors import InvalidGrant, StorageError
from ...ports import Storage
from .. import EventRecorder, ManualClock
from ._registry import REDIRECT, _code, _exchange, _register
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
    """Authorization codes are stored by digest and read only by redeeming them.

    The first redemption gets the code unused and marks it used; every later one gets it as
    the first left it, with the grant family the first redemption named. Removals report
    counts and spare other apps and accounts; purges are bounded and take used codes too.
    """

    def test_a_code_is_redeemed_unused_exactly_once(self, storage: Storage) -> None:
        """``redeem`` returns the code as stored, every field equal, then marked used."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=-5))
        code = make_code(
            app.key,
            issued_at=datetime(2015, 4, 20, 4, 56, 40, 999999, tzinfo=offset),
            code_challenge=pkce_s256("v" * 43),
        )
        bare = attrs.evolve(make_code(app.key, "beta"), redirect_url_given=False)
        digest, bare_digest = _add_code(storage, code), _add_code(storage, bare)
        used_at = T0 + timedelta(minutes=1, microseconds=7)
        with storage.transaction() as tx:
            first = tx.codes.redeem(digest, at=used_at, family_id="fam-1")
            again = tx.codes.redeem(digest, at=T0 + timedelta(minutes=2), family_id="fam-2")
        used = attrs.evolve(code, used_at=used_at, family_id="fam-1")
        assert (code, used) == (first, again)
        assert used == _take(storage, digest)  # the first use stays as it was
        assert bare == _take(storage, bare_digest)
        again = _take(storage, bare_digest)
        assert again is not None
        assert (False, T0) == (again.redirect_url_given, again.used_at)

    def test_one_of_many_racing_redemptions_gets_the_code_unused(self, storage: Storage) -> None:
        """Threads redeeming one code at once: exactly one finds it unused."""
        app = _add_app(storage)
        digest = _add_code(storage, make_code(app.key))
        start = threading.Barrier(4)
        found: list[AuthorizationCode | None] = []

        def redeem(n: int) -> None:
            start.wait(timeout=30)
            with storage.transaction() as tx:
                found.append(tx.codes.redeem(digest, at=T0, family_id=f"fam-{n}"))

        workers = [threading.Thread(target=redeem, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        unused = [code for code in found if code is not None and code.used_at is None]
        families = {code.family_id for code in found if code is not None and code.used_at}
        assert (4, 1, 1) == (len(found), len(unused), len(families))

    def test_an_unknown_digest_redeems_nothing(self, storage: Storage) -> None:
        """``redeem`` of a digest no code has returns ``None``."""
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
            # beta's used code and its new one.
            assert [2, 0] == [tx.codes.remove_all_of_app(app.key) for _ in range(2)]
        assert [None, None] == [_take(storage, d) for d in acme]
        assert kept == _take(storage, kept_digest)

    def test_purge_removes_at_most_limit_expired_codes(self, storage: Storage) -> None:
        """``purge_expired`` removes codes dead at ``now``, used or not, ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + CODE_LIFETIME
        expired = [
            _add_code(storage, make_code(app.key, expires_at=now - timedelta(minutes=n)))
            for n in range(5)
        ]
        _take(storage, expired[0])
        used_live = _add_code(storage, make_code(app.key, expires_at=now + timedelta(seconds=1)))
        _take(storage, used_live)
        live = make_code(app.key, expires_at=now + timedelta(microseconds=1))
        live_digest = _add_code(storage, live)
        with storage.transaction() as tx:
            batches = [tx.codes.purge_expired(now=now, limit=2) for _ in range(4)]
        assert [2, 2, 1, 0] == batches
        assert [None] * 5 == [_take(storage, d) for d in expired]
        assert live == _take(storage, live_digest)
        kept = _take(storage, used_live)
        assert kept is not None
        assert kept.used_at is not None  # a used code stays, to trace a replay, until it expires

    def test_a_replayed_code_revokes_the_tokens_its_exchange_issued(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """RFC 6749 10.5: the second exchange is refused and ends the first one's family."""
        recorder = EventRecorder()
        listeners: Any = (recorder,)  # the listener type is an internal protocol
        registry = Registry(storage=storage, clock=clock, listeners=listeners)
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        code = _code(registry, new)
        issued = _exchange(registry, new, code)
        rotated = registry.refresh(new.app.key, issued.refresh_token or "")
        other = _exchange(registry, new, _code(registry, new))
        recorder.clear()
        with pytest.raises(InvalidGrant) as refused:
            _exchange(registry, new, code)
        assert "used before" in refused.value.detail
        assert [Reason.TOKEN_UNKNOWN] * 2 + [Reason.ALLOWED] == [
            registry.check_token(t.token).reason for t in (issued, rotated, other)
        ]
        assert _refused(lambda: registry.refresh(new.app.key, rotated.refresh_token or ""))
        assert [(EventKind.FAMILY_REVOKED, issued.record.family_id, "code_reuse", 2, 2)] == [
            (e.kind, e.details["family_id"], e.details["cause"], *_removed(e.details))
            for e in recorder.events
        ]

    def test_a_replay_by_another_app_or_after_a_failed_exchange_is_refused(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """Whoever replays a code is refused; a first exchange that failed issued nothing."""
        registry = Registry(storage=storage, clock=clock)
        new, other = _register(registry, "dev"), _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        code = _code(registry, new)
        issued = _exchange(registry, new, code)
        assert _refused(lambda: _exchange(registry, other, code))
        assert Reason.TOKEN_UNKNOWN == registry.check_token(issued.token).reason
        failed = _code(registry, new)
        assert _refused(
            lambda: registry.exchange_code(
                new.app.key, failed, redirect_url=REDIRECT, code_verifier="w" * 43
            )
        )
        assert _refused(lambda: _exchange(registry, new, failed))

    def test_a_used_code_is_purged_once_expired_and_then_unknown(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """Kept for its ten minutes to trace a replay, then purged like any expired code."""
        registry = Registry(storage=storage, clock=clock)
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        code = _code(registry, new)
        issued = _exchange(registry, new, code)
        clock.advance(CODE_LIFETIME)
        registry.purge_expired_tokens()
        with pytest.raises(InvalidGrant) as refused:
            _exchange(registry, new, code)
        assert "unknown" in refused.value.detail
        assert Reason.ALLOWED == registry.check_token(issued.token).reason

    def test_a_code_issued_without_a_redirect_url_needs_none(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """RFC 6749 4.1.3: the exchange repeats the redirect URL only if the request named it."""
        registry = Registry(storage=storage, clock=clock)
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")

        def code(redirect_url: str | None) -> str:
            return registry.authorize(
                new.app.key, "acme", redirect_url=redirect_url, approved_by="alice"
            ).code

        def exchange(code: str, redirect_url: str | None) -> object:
            return registry.exchange_code(new.app.key, code, redirect_url=redirect_url)

        assert isinstance(exchange(code(None), None), IssuedToken)
        assert isinstance(exchange(code(None), REDIRECT), IssuedToken)
        assert _refused(lambda: exchange(code(None), REDIRECT + "/x"))
        assert _refused(lambda: exchange(code(REDIRECT), None))
        assert isinstance(exchange(code(REDIRECT), REDIRECT), IssuedToken)


def _refused(call: Callable[[], object]) -> bool:
    with pytest.raises(InvalidGrant):
        call()
    return True


def _removed(details: Mapping[str, object]) -> tuple[object, object]:
    return details["tokens_removed"], details["refresh_tokens_removed"]

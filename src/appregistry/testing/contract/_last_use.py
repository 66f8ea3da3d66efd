"""The last use of access tokens: the storage contract suite's part on `record_uses`.

`appregistry.ports.TokenRepository.record_uses` writes a batch of last uses, never moving
one backwards; `TokenOrder.LAST_USED` lists tokens by it, with cursors as in every list.
"""

# A test suite states its expectations with assert, as `assert expected == actual`; its
# token ids ("a", "dead") are labels, not credentials.
# ruff: noqa: S101, SIM300, S106

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from ..._records import AccessToken, Page
from ..._registry import Registry
from ...ports import NEVER_USED, ListQuery, Storage, TokenOrder
from .. import ManualClock
from ._paging import assert_pages_agree
from ._support import EVERYTHING, T0, StorageFixtures, _add_app, _add_token, make_token

_MINUTE = timedelta(minutes=1)
_BY_USE = TokenOrder.LAST_USED


def _by_use(token: AccessToken) -> tuple[object, ...]:
    # The list's order, in Python: most recent first, never used last, then the id.
    return (-(token.last_used_at or NEVER_USED).timestamp(), token.token_id)


class LastUseContract(StorageFixtures):
    """Last uses are written in batches, never backwards, and listed most recent first."""

    def test_record_uses_sets_each_time_and_never_goes_back(self, storage: Storage) -> None:
        """A batch writes every token's time; an earlier time leaves a later one alone."""
        app = _add_app(storage)
        a, b, c = (make_token(app.key, token_id=name) for name in ("a", "b", "c"))
        digest = _add_token(storage, a)
        _add_token(storage, b)
        _add_token(storage, attrs.evolve(c, last_used_at=T0 + 9 * _MINUTE))
        with storage.transaction() as tx:
            tx.tokens.record_uses({"a": T0 + 5 * _MINUTE, "b": T0 + _MINUTE})
            tx.tokens.record_uses({"b": T0, "c": T0 + 2 * _MINUTE, "gone": T0})
            tx.tokens.record_uses({})
        with storage.transaction() as tx:
            stored = [tx.tokens.get(name) for name in ("a", "b", "c", "gone")]
        context = storage.token_context(digest)
        assert [T0 + 5 * _MINUTE, T0 + _MINUTE, T0 + 9 * _MINUTE, None] == [
            None if t is None else t.last_used_at for t in stored
        ]
        assert context is not None
        assert T0 + 5 * _MINUTE == context.token.last_used_at

    def test_record_uses_rolls_back_with_its_transaction(self, storage: Storage) -> None:
        """A batch in a transaction that raises is not written."""
        app = _add_app(storage)
        _add_token(storage, make_token(app.key, token_id="a"))

        def fail() -> None:
            with storage.transaction() as tx:
                tx.tokens.record_uses({"a": T0})
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            fail()
        with storage.transaction() as tx:
            token = tx.tokens.get("a")
        assert token is not None
        assert None is token.last_used_at

    def test_record_uses_takes_a_large_batch(self, storage: Storage) -> None:
        """Thousands of tokens in one batch, each with its own time."""
        app = _add_app(storage)
        tokens = [make_token(app.key, token_id=f"t{n:05d}") for n in range(2500)]
        with storage.transaction() as tx:
            for token in tokens:
                tx.tokens.add(token, token.token_id.encode() * 2)
        uses = {t.token_id: T0 + n * timedelta(seconds=1) for n, t in enumerate(tokens)}
        with storage.transaction() as tx:
            tx.tokens.record_uses(uses)
        with storage.transaction() as tx:
            page = tx.tokens.list(app.key, "acme", ListQuery(per_page=3), now=T0, order=_BY_USE)
        assert 2500 == page.total
        assert ["t02499", "t02498", "t02497"] == [t.token_id for t in page.items]
        assert [uses[t.token_id] for t in page.items] == [t.last_used_at for t in page.items]

    def test_list_by_use_puts_the_most_recent_first(self, storage: Storage) -> None:
        """Most recently used first, ties by id, never used last; only live tokens."""
        app = _add_app(storage)
        now = T0 + 10 * _MINUTE
        used = {"u1": T0 + 3 * _MINUTE, "u2": T0 + 5 * _MINUTE, "u3": T0 + 3 * _MINUTE}
        for token_id in ("n2", "u3", "u1", "n1", "u2"):
            _add_token(storage, make_token(app.key, token_id=token_id, user_agent=token_id))
        _add_token(storage, make_token(app.key, token_id="dead", expires_at=now))
        _add_token(storage, make_token(app.key, "beta", token_id="b1"))
        with storage.transaction() as tx:
            tx.tokens.record_uses({**used, "dead": now, "b1": T0 + 9 * _MINUTE})
        with storage.transaction() as tx:
            mine = tx.tokens.list(app.key, "acme", EVERYTHING, now=now, order=_BY_USE)
            everyone = tx.tokens.list(app.key, None, EVERYTHING, now=now, order=_BY_USE)
            found = tx.tokens.list(app.key, "acme", ListQuery(search="n"), now=now, order=_BY_USE)
            by_expiry = tx.tokens.list(app.key, "acme", EVERYTHING, now=now)
        assert (["u2", "u1", "u3", "n1", "n2"], 5) == (
            [t.token_id for t in mine.items],
            mine.total,
        )
        assert ["u2", "u1", "u3", "n1", "n2", "b1"] == [t.token_id for t in everyone.items]
        assert ["n1", "n2"] == [t.token_id for t in found.items]
        assert 5 == by_expiry.total

    @pytest.mark.parametrize("per_page", [1, 2, 5])
    def test_pages_by_use_by_number_and_from_positions(
        self, storage: Storage, per_page: int
    ) -> None:
        """R26 by last use: a page after or before a position is the slice its number names.

        Positions are ``(last_used_at or NEVER_USED, token_id)``, account first for every
        account's list; with times tied, and never-used tokens among them.
        """
        app = _add_app(storage)
        now = T0 + 10 * _MINUTE
        tokens = [
            make_token(
                app.key,
                ("acme", "beta")[n % 2],
                token_id=f"t{(n * 7) % 13:02d}",
                user_agent=f"agent {n % 3}",
            )
            for n in range(13)
        ]
        uses = {t.token_id: T0 + (n % 4) * _MINUTE for n, t in enumerate(tokens) if n % 5}
        for token in tokens:
            _add_token(storage, token)
        with storage.transaction() as tx:
            tx.tokens.record_uses(uses)
        stored = [attrs.evolve(t, last_used_at=uses.get(t.token_id)) for t in tokens]
        for account in ("acme", "beta"):
            mine = sorted((t for t in stored if t.account == account), key=_by_use)
            with storage.transaction() as tx:

                def read(query: ListQuery, account: str = account) -> Page[AccessToken]:
                    return tx.tokens.list(app.key, account, query, now=now, order=_BY_USE)

                assert_pages_agree(
                    read,
                    lambda t: (t.last_used_at or NEVER_USED, t.token_id),
                    mine,
                    per_page=per_page,
                )
        everyone = sorted(stored, key=lambda t: (t.account, *_by_use(t)))
        with storage.transaction() as tx:
            for search in (None, "agent 1"):
                assert_pages_agree(
                    lambda query: tx.tokens.list(app.key, None, query, now=now, order=_BY_USE),
                    lambda t: (t.account, t.last_used_at or NEVER_USED, t.token_id),
                    [t for t in everyone if search is None or t.user_agent == search],
                    per_page=per_page,
                    search=search,
                )

    def test_registry_records_allowed_checks_only(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """Through the Registry: an allowed check is written, a refused one never."""
        registry = Registry(storage=storage, clock=clock)
        new = registry.register_app(
            "acme",
            name="MyApp",
            homepage="http://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/cb",
        )
        registry.permit_account("globex", by="provider")
        registry.install_app(new.app.key, "globex", by="alice")
        issued = [
            registry.issue_token(new.app.key, new.secret, account="globex", approved_by="alice")
            for _ in range(3)
        ]
        first, second, unused = issued
        assert registry.check_token(first.token).allowed
        clock.advance(_MINUTE)
        assert registry.check_token(second.token).allowed
        registry.suspend_installation(new.app.key, "globex")
        clock.advance(_MINUTE)
        assert not registry.check_token(first.token).allowed
        registry.resume_installation(new.app.key, "globex")
        listed = registry.list_tokens(new.app.key, "globex", order="last_used")
        assert [
            (second.record.token_id, T0 + _MINUTE),
            (first.record.token_id, T0),
            (unused.record.token_id, None),
        ] == [(t.token_id, t.last_used_at) for t in listed.items]

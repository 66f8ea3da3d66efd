"""The token repository's and ``token_context``'s parts of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`; its
# token ids ("a", "dead") are labels, not credentials.
# ruff: noqa: S101, SIM300, S106

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest

from ..._records import (
    AccessToken,
    AppsPermission,
    Grant,
    Installation,
    Page,
    TokenContext,
)
from ...errors import (
    StorageError,
)
from ...ports import ListQuery, Storage
from ._paging import assert_pages_agree
from ._support import (
    EVERYTHING,
    HOUR,
    T0,
    StorageFixtures,
    _add_app,
    _add_token,
    make_token,
    new_digest,
)


class TokenRepositoryContract(StorageFixtures):
    """Access tokens are stored by digest and read back exactly.

    Removals report counts and skip unknown ids; counts and lists see only live tokens;
    purges are bounded.
    """

    def test_token_round_trips_exactly(self, storage: Storage) -> None:
        """Every field comes back equal; the grant is a `Grant`."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=-5))
        token = make_token(
            app.key,
            "acme",
            issued_at=datetime(2015, 4, 20, 4, 56, 40, 999999, tzinfo=offset),
            user_agent="libwww-perl 5.833 ✓",
            grant=Grant.CLIENT_CREDENTIALS,
        )
        bare = make_token(app.key, "beta")
        with storage.transaction() as tx:
            tx.tokens.add(token, new_digest())
            tx.tokens.add(bare, new_digest())
        with storage.transaction() as tx:
            stored = tx.tokens.get(token.token_id)
            assert bare == tx.tokens.get(bare.token_id)
        assert token == stored
        assert stored is not None
        assert Grant.CLIENT_CREDENTIALS is stored.grant

    def test_every_grant_round_trips(self, storage: Storage) -> None:
        """Each `Grant`, the host-approved one included, comes back as stored, checks too."""
        app = _add_app(storage)
        tokens = {grant: make_token(app.key, grant=grant) for grant in Grant}
        digests = {grant: _add_token(storage, token) for grant, token in tokens.items()}
        with storage.transaction() as tx:
            stored = {grant: tx.tokens.get(token.token_id) for grant, token in tokens.items()}
        contexts = {grant: storage.token_context(digest) for grant, digest in digests.items()}
        assert tokens == stored
        assert tokens == {
            grant: context.token for grant, context in contexts.items() if context is not None
        }

    def test_approver_and_last_use_round_trip_everywhere(self, storage: Storage) -> None:
        """``approved_by`` and ``last_used_at`` come back from get, lists and token_context.

        ``None`` stays ``None``; a time in another zone comes back as the same instant.
        """
        app = _add_app(storage)
        offset = timezone(timedelta(hours=9, minutes=30))
        used = datetime(2015, 4, 20, 19, 30, 1, 123457, tzinfo=offset)
        approved = make_token(app.key, approved_by="ålice@acme", last_used_at=used)
        bare = make_token(app.key, grant=Grant.CLIENT_CREDENTIALS, expires_at=T0 + 2 * HOUR)
        digests = [_add_token(storage, token) for token in (approved, bare)]
        with storage.transaction() as tx:
            got = [tx.tokens.get(t.token_id) for t in (approved, bare)]
            by_digest = [tx.tokens.get_by_digest(d) for d in digests]
            listed = list(tx.tokens.list(app.key, "acme", EVERYTHING, now=T0).items)
            listed_all = list(tx.tokens.list(app.key, None, EVERYTHING, now=T0).items)
        contexts = [storage.token_context(d) for d in digests]
        expected = [approved, bare]
        assert expected == got
        assert expected == by_digest
        assert expected == listed
        assert expected == listed_all
        assert expected == [getattr(c, "token", None) for c in contexts]
        assert [used, None] == [getattr(t, "last_used_at", None) for t in got]

    def test_missing_token_is_none(self, storage: Storage) -> None:
        """``get`` of an unknown id returns ``None``."""
        with storage.transaction() as tx:
            assert tx.tokens.get("no-such-token") is None

    def test_adding_a_taken_token_id_raises(self, storage: Storage) -> None:
        """A second token with the same id raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        token = make_token(app.key)
        _add_token(storage, token)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.tokens.add(attrs.evolve(token, account="other"), new_digest())
        with storage.transaction() as tx:
            assert token == tx.tokens.get(token.token_id)

    def test_remove_counts_and_skips_unknown_ids(self, storage: Storage) -> None:
        """``remove`` deletes the named tokens once each, skips unknown ids, returns the count."""
        app = _add_app(storage)
        tokens = [make_token(app.key) for _ in range(3)]
        for token in tokens:
            _add_token(storage, token)
        with storage.transaction() as tx:
            gone = [tokens[0].token_id, tokens[1].token_id, tokens[0].token_id, "unknown"]
            assert 2 == tx.tokens.remove(gone)
            assert 0 == tx.tokens.remove([])
        with storage.transaction() as tx:
            assert [None, None, tokens[2]] == [tx.tokens.get(t.token_id) for t in tokens]

    def test_remove_many_at_once(self, storage: Storage) -> None:
        """A removal may name a thousand ids."""
        app = _add_app(storage)
        ids = []
        with storage.transaction() as tx:
            for _ in range(1000):
                token = make_token(app.key)
                tx.tokens.add(token, new_digest())
                ids.append(token.token_id)
        with storage.transaction() as tx:
            assert 1000 == tx.tokens.remove(ids)
            assert 0 == tx.tokens.count_live(app.key, "acme", now=T0)

    def test_remove_for_takes_one_app_on_one_account(self, storage: Storage) -> None:
        """``remove_for`` removes the app's tokens on that account only."""
        app, other = _add_app(storage), _add_app(storage)
        doomed = [make_token(app.key, "acme") for _ in range(2)]
        kept = [make_token(app.key, "beta"), make_token(other.key, "acme")]
        for token in doomed + kept:
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert 2 == tx.tokens.remove_for(app.key, "acme")
            assert 0 == tx.tokens.remove_for(app.key, "acme")
        with storage.transaction() as tx:
            assert kept == [tx.tokens.get(t.token_id) for t in kept]

    def test_remove_all_of_app_spares_other_apps(self, storage: Storage) -> None:
        """``remove_all_of_app`` removes the app's tokens on every account, no others."""
        app, other = _add_app(storage), _add_app(storage)
        kept = make_token(other.key, "acme")
        for token in (make_token(app.key, "acme"), make_token(app.key, "beta"), kept):
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert 2 == tx.tokens.remove_all_of_app(app.key)
        with storage.transaction() as tx:
            assert kept == tx.tokens.get(kept.token_id)

    def test_count_live_excludes_tokens_expiring_now(self, storage: Storage) -> None:
        """A token is dead from ``expires_at`` on: counted before that instant, not at it."""
        app = _add_app(storage)
        expiry = T0 + HOUR
        for token in (
            make_token(app.key, expires_at=expiry),
            make_token(app.key, expires_at=expiry + timedelta(microseconds=1)),
            make_token(app.key, "beta", expires_at=expiry + HOUR),
        ):
            _add_token(storage, token)
        just_before = expiry - timedelta(microseconds=1)
        with storage.transaction() as tx:
            counts = [
                tx.tokens.count_live(app.key, "acme", now=when)
                for when in (just_before, expiry, expiry + timedelta(microseconds=1))
            ]
        assert [2, 1, 0] == counts

    def test_list_shows_live_tokens_by_expiry_then_id(self, storage: Storage) -> None:
        """Only live tokens of the app on the account, soonest expiry first, ties by id."""
        app = _add_app(storage)
        now = T0 + timedelta(minutes=10)
        late = T0 + 2 * HOUR
        tokens = [
            make_token(app.key, token_id="b", expires_at=late),
            make_token(app.key, token_id="a", expires_at=late),
            make_token(app.key, token_id="c", expires_at=T0 + HOUR),
            make_token(app.key, token_id="dead", expires_at=now),
            make_token(app.key, "beta", token_id="elsewhere"),
        ]
        for token in tokens:
            _add_token(storage, token)
        with storage.transaction() as tx:
            page = tx.tokens.list(app.key, "acme", EVERYTHING, now=now)
        assert (["c", "a", "b"], 3) == ([t.token_id for t in page.items], page.total)

    def test_list_searches_the_folded_user_agent_and_pages(self, storage: Storage) -> None:
        """Search matches the folded user agent (never a token without one); pages keep totals."""
        app = _add_app(storage)
        agents = ["libwww-perl 5.833", "LIBWWW-PERL 6", "Straße/1.0", None, "curl/8"]
        for n, agent in enumerate(agents):
            _add_token(
                storage,
                make_token(
                    app.key, token_id=f"t{n}", expires_at=T0 + (n + 1) * HOUR, user_agent=agent
                ),
            )
        with storage.transaction() as tx:
            perl = tx.tokens.list(app.key, "acme", ListQuery(search="libwww"), now=T0)
            folded = tx.tokens.list(app.key, "acme", ListQuery(search="strasse"), now=T0)
            second = tx.tokens.list(app.key, "acme", ListQuery(page=2, per_page=2), now=T0)
        assert (["t0", "t1"], 2) == ([t.token_id for t in perl.items], perl.total)
        assert ["t2"] == [t.token_id for t in folded.items]
        assert (["t2", "t3"], 5) == ([t.token_id for t in second.items], second.total)

    def test_list_of_every_account_orders_by_account_then_expiry(self, storage: Storage) -> None:
        """Without an account: the app's live tokens on every account, by account, expiry, id."""
        app, other = _add_app(storage), _add_app(storage)
        now = T0 + timedelta(minutes=10)
        tokens = [
            make_token(app.key, account, token_id=token_id, expires_at=T0 + hours * HOUR)
            for account, token_id, hours in [
                ("beta", "t1", 2),
                ("acme", "t2", 2),
                ("acme", "t3", 1),
                ("Zeta", "t4", 3),
                ("acme", "t0", 2),
            ]
        ]
        dead = make_token(app.key, "acme", token_id="dead", expires_at=now)
        elsewhere = make_token(other.key, "acme", token_id="elsewhere")
        for token in [*tokens, dead, elsewhere]:
            _add_token(storage, token)
        with storage.transaction() as tx:
            page = tx.tokens.list(app.key, None, EVERYTHING, now=now)
            searched = tx.tokens.list(app.key, None, ListQuery(search="nothing"), now=now)
        assert (["t4", "t3", "t0", "t2", "t1"], 5) == (
            [t.token_id for t in page.items],
            page.total,
        )
        assert ((), 0) == (searched.items, searched.total)

    @pytest.mark.parametrize("per_page", [1, 2, 5])
    def test_token_pages_by_number_and_from_positions(
        self, storage: Storage, per_page: int
    ) -> None:
        """R26: a page after or before a token's position is the slice its number names.

        For one account (position: expiry, id) and for every account (account first); with
        expiries tied, and positions of tokens that have expired since.
        """
        app = _add_app(storage)
        now = T0 + timedelta(minutes=10)
        tokens = [
            make_token(
                app.key,
                ("acme", "beta")[n % 2],
                token_id=f"t{(n * 7) % 11:02d}",
                expires_at=T0 + (n // 3) * 20 * timedelta(minutes=1),
                user_agent=f"agent {n % 4}",
            )
            for n in range(11)
        ]
        with storage.transaction() as tx:
            for token in tokens:
                tx.tokens.add(token, new_digest())
        live = [t for t in tokens if not t.is_expired(now)]
        for account in ("acme", "beta"):
            mine = sorted(
                (t for t in live if t.account == account), key=lambda t: (t.expires_at, t.token_id)
            )
            with storage.transaction() as tx:

                def read(query: ListQuery, account: str = account) -> Page[AccessToken]:
                    return tx.tokens.list(app.key, account, query, now=now)

                assert_pages_agree(
                    read,
                    lambda t: (t.expires_at, t.token_id),
                    mine,
                    per_page=per_page,
                )
                # After an expired token's position: from the first live one on.
                first = tx.tokens.list(
                    app.key,
                    account,
                    ListQuery(per_page=per_page, after=(T0, "")),
                    now=now,
                )
            assert mine[:per_page] == list(first.items)
        everyone = sorted(live, key=lambda t: (t.account, t.expires_at, t.token_id))
        with storage.transaction() as tx:
            assert_pages_agree(
                lambda query: tx.tokens.list(app.key, None, query, now=now),
                lambda t: (t.account, t.expires_at, t.token_id),
                everyone,
                per_page=per_page,
            )
            assert_pages_agree(
                lambda query: tx.tokens.list(app.key, None, query, now=now),
                lambda t: (t.account, t.expires_at, t.token_id),
                [t for t in everyone if t.user_agent == "agent 1"],
                per_page=per_page,
                search="agent 1",
            )

    def test_purge_removes_at_most_limit_expired_access_tokens(self, storage: Storage) -> None:
        """``purge_expired`` removes only tokens dead at ``now``, at most ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + HOUR
        expired = [make_token(app.key, expires_at=now - timedelta(minutes=n)) for n in range(5)]
        live = make_token(app.key, expires_at=now + timedelta(microseconds=1))
        for token in [*expired, live]:
            _add_token(storage, token)
        with storage.transaction() as tx:
            batches = [tx.tokens.purge_expired(now=now, limit=2) for _ in range(4)]
        with storage.transaction() as tx:
            assert [None] * 5 == [tx.tokens.get(t.token_id) for t in expired]
            assert live == tx.tokens.get(live.token_id)
        assert [2, 2, 1, 0] == batches

    def test_get_by_digest_reads_the_token_with_its_family(self, storage: Storage) -> None:
        """``get_by_digest`` finds a token by its digest, ``family_id`` included."""
        app = _add_app(storage)
        token = make_token(app.key, family_id="fam-1", user_agent="agent")
        digest = _add_token(storage, token)
        with storage.transaction() as tx:
            found = tx.tokens.get_by_digest(digest)
            missing = tx.tokens.get_by_digest(new_digest())
            by_id = tx.tokens.get(token.token_id)
        assert (token, None, token) == (found, missing, by_id)

    def test_remove_family_takes_only_that_family(self, storage: Storage) -> None:
        """``remove_family`` removes the family's tokens, on any account, and no others."""
        app = _add_app(storage)
        family = [make_token(app.key, "acme", family_id="f1") for _ in range(2)]
        family.append(make_token(app.key, "beta", family_id="f1"))
        kept = [make_token(app.key, family_id="f2"), make_token(app.key)]
        for token in family + kept:
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert [3, 0, 0] == [tx.tokens.remove_family(f) for f in ("f1", "f1", "none")]
        with storage.transaction() as tx:
            assert [None] * 3 == [tx.tokens.get(t.token_id) for t in family]
            assert kept == [tx.tokens.get(t.token_id) for t in kept]


class TokenContextContract(StorageFixtures):
    """``token_context`` gives a token with its app, installation and permission.

    It reads committed data in one call; an unknown digest gives ``None``.
    """

    def test_unknown_digest_is_none(self, storage: Storage) -> None:
        """A digest no token has gives ``None``."""
        assert storage.token_context(new_digest()) is None

    def test_token_without_installation_or_permission(self, storage: Storage) -> None:
        """Missing installation and permission come back as ``None``."""
        app = _add_app(storage)
        token = make_token(app.key, "acme", grant=Grant.CLIENT_CREDENTIALS)
        digest = _add_token(storage, token)
        assert TokenContext(token, app, None, None) == storage.token_context(digest)

    def test_full_context(self, storage: Storage) -> None:
        """App, installation and permission are those of the token's app and account."""
        app = _add_app(storage)
        other = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0, suspended=True)
        permission = AppsPermission("acme", "root", T0)
        token = make_token(app.key, "acme")
        with storage.transaction() as tx:
            tx.installations.put(installation)
            tx.installations.put(Installation(other.key, "acme", "admin", T0))
            tx.installations.put(Installation(app.key, "beta", "admin", T0))
            tx.permissions.put(permission)
            tx.permissions.put(AppsPermission("beta", "root", T0))
        digest = _add_token(storage, token)
        _add_token(storage, make_token(app.key, "beta"))
        assert TokenContext(token, app, installation, permission) == storage.token_context(digest)

    def test_context_follows_committed_changes(self, storage: Storage) -> None:
        """A committed disable, suspension or removal shows in the next ``token_context``."""
        app = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0)
        with storage.transaction() as tx:
            tx.installations.put(installation)
        token = make_token(app.key)
        digest = _add_token(storage, token)
        disabled = attrs.evolve(app, enabled=False)
        suspended = attrs.evolve(installation, suspended=True)
        with storage.transaction() as tx:
            tx.apps.update(disabled)
            tx.installations.put(suspended)
        assert TokenContext(token, disabled, suspended, None) == storage.token_context(digest)
        with storage.transaction() as tx:
            tx.tokens.remove([token.token_id])
        assert storage.token_context(digest) is None

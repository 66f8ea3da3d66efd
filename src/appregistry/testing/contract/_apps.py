"""The app repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Final

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..._records import (
    AppContext,
    AppListing,
    AppsPermission,
    Installation,
    StoredSecret,
)
from ..._validation import search_text
from ...errors import (
    StorageError,
)
from ...ports import ListQuery, Storage
from ._paging import assert_pages_agree
from ._support import (
    EVERYTHING,
    T0,
    StorageFixtures,
    _add_app,
    _keys,
    _names,
    _secret,
    make_app,
    new_digest,
    new_key,
)

# -- (a) the ports ---------------------------------------------------------------------------


_FOLDING_NAMES: Final = (
    "Straße",
    "STRASSE",
    "strasse",
    "ǅemal",
    "İstanbul",
    "ﬁle",
    "Ωmega",
    "ωmega",
    "éclair",
    "e\u0301clair",
    "Zoë",
    "a",
    "A",
    "日本",
)
_app_names: Final = st.one_of(
    st.sampled_from(_FOLDING_NAMES),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


class AppRepositoryContract(StorageFixtures):
    """Apps are stored exactly; lists follow the folding rules.

    Missing keys are ``None`` or a no-op; lists are ordered by case-folded name then key,
    searched by folded name and description, paged with a total, and count each app's
    installations.
    """

    def test_missing_app_is_none(self, storage: Storage) -> None:
        """``get`` and ``get_secret`` of an unknown key return ``None``."""
        with storage.transaction() as tx:
            assert tx.apps.get(new_key()) is None
            assert tx.apps.get_secret(new_key()) is None

    def test_app_and_secret_round_trip_exactly(self, storage: Storage) -> None:
        """Every field comes back equal, Unicode and microseconds included."""
        created = datetime(2015, 4, 20, 11, 56, 40, 123456, tzinfo=timezone(timedelta(hours=2)))
        app = attrs.evolve(
            make_app(name="Bücher ǅ", description="Line one\nline two ✓", trusted=True),
            image_url="http://example.com/logo.png",
            admin_phone="+40212345678",
            created_at=created,
            enabled=False,
        )
        secret = StoredSecret(new_digest(), b"gAAAAA-ciphertext")
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
        with storage.transaction() as tx:
            assert app == tx.apps.get(app.key)
            assert secret == tx.apps.get_secret(app.key)
            stored = tx.apps.get(app.key)
        assert stored is not None
        assert created == stored.created_at
        assert stored.created_at.utcoffset() is not None

    def test_secret_without_ciphertext_round_trips(self, storage: Storage) -> None:
        """A digest-only secret comes back with ``ciphertext=None``."""
        app = make_app()
        secret = StoredSecret(new_digest())
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            assert secret == tx.apps.get_secret(app.key)

    def test_context_of_a_missing_app_is_none(self, storage: Storage) -> None:
        """``get_context`` of an unknown key is ``None``, with or without an account."""
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("beta", "admin", T0))
        with storage.transaction() as tx:
            assert tx.apps.get_context(new_key(), "beta") is None
            assert tx.apps.get_context(new_key(), None) is None

    def test_context_reads_the_accounts_installation_and_permission(self, storage: Storage) -> None:
        """The app, its secret, and the named account's records: no other account's."""
        app = make_app(owner="acme", trusted=True)
        secret = StoredSecret(new_digest(), b"cipher")
        suspended = Installation(app.key, "beta", "admin", T0, suspended=True)
        permission = AppsPermission("beta", "root", T0 + timedelta(microseconds=7))
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            tx.installations.put(suspended)
            tx.permissions.put(permission)
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            other = make_app(owner="beta")
            tx.apps.add(other, _secret())
            tx.installations.put(Installation(other.key, "beta", "admin", T0))
        with storage.transaction() as tx:
            found = tx.apps.get_context(app.key, "beta")
        assert AppContext(app, secret, "beta", suspended, permission) == found

    def test_context_without_an_account_is_the_owners(self, storage: Storage) -> None:
        """With ``account=None`` the context is the owner's: client credentials act for it."""
        app = make_app(owner="acme", trusted=True)
        installation = Installation(app.key, "acme", "admin", T0)
        permission = AppsPermission("acme", "admin", T0)
        secret = _secret()
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            tx.installations.put(installation)
            tx.permissions.put(permission)
            tx.permissions.put(AppsPermission("beta", "admin", T0))
        with storage.transaction() as tx:
            assert AppContext(app, secret, "acme", installation, permission) == (
                tx.apps.get_context(app.key, None)
            )

    def test_context_of_an_account_with_nothing_has_no_records(self, storage: Storage) -> None:
        """An account without installation or permission gets ``None`` for both."""
        app = _add_app(storage)
        with storage.transaction() as tx:
            found = tx.apps.get_context(app.key, "nobody")
            secret = tx.apps.get_secret(app.key)
        assert secret is not None
        assert AppContext(app, secret, "nobody", None, None) == found

    def test_adding_a_taken_key_raises(self, storage: Storage) -> None:
        """A second app with the same key raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.apps.add(make_app(app.key, name="Other"), _secret())
        with storage.transaction() as tx:
            assert app == tx.apps.get(app.key)

    def test_update_replaces_the_app(self, storage: Storage) -> None:
        """``update`` stores the new record whole; the secret is untouched."""
        app = make_app()
        secret = _secret()
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
        changed = attrs.evolve(app, name="Renamed", description="new", enabled=False)
        with storage.transaction() as tx:
            tx.apps.update(changed)
        with storage.transaction() as tx:
            assert changed == tx.apps.get(app.key)
            assert secret == tx.apps.get_secret(app.key)

    def test_update_of_a_missing_app_is_a_no_op(self, storage: Storage) -> None:
        """``update`` with an unknown key stores nothing and does not raise."""
        ghost = make_app()
        with storage.transaction() as tx:
            tx.apps.update(ghost)
        with storage.transaction() as tx:
            assert tx.apps.get(ghost.key) is None
            assert 0 == tx.apps.list(EVERYTHING).total

    def test_set_secret_replaces_and_ignores_missing_apps(self, storage: Storage) -> None:
        """``set_secret`` replaces the stored secret; for an unknown key it does nothing."""
        app = _add_app(storage)
        replacement = StoredSecret(new_digest(), b"cipher")
        ghost = new_key()
        with storage.transaction() as tx:
            tx.apps.set_secret(app.key, replacement)
            tx.apps.set_secret(ghost, _secret())
        with storage.transaction() as tx:
            assert replacement == tx.apps.get_secret(app.key)
            assert tx.apps.get_secret(ghost) is None

    def test_remove_deletes_app_and_secret(self, storage: Storage) -> None:
        """``remove`` deletes the app and its secret; an unknown key is a no-op."""
        app = _add_app(storage)
        kept = _add_app(storage)
        with storage.transaction() as tx:
            tx.apps.remove(app.key)
            tx.apps.remove(new_key())
        with storage.transaction() as tx:
            assert tx.apps.get(app.key) is None
            assert tx.apps.get_secret(app.key) is None
            assert kept == tx.apps.get(kept.key)

    def test_remove_retires_the_key(self, storage: Storage) -> None:
        """R13: a removed app's key is retired for good; live and unknown keys are not."""
        app, kept = _add_app(storage), _add_app(storage)
        unknown = new_key()
        with storage.transaction() as tx:
            assert [False, False, False] == [
                tx.apps.key_retired(k) for k in (app.key, kept.key, unknown)
            ]
            tx.apps.remove(app.key)
            tx.apps.remove(unknown)  # no app, so nothing to retire
        with storage.transaction() as tx:
            assert [True, False, False] == [
                tx.apps.key_retired(k) for k in (app.key, kept.key, unknown)
            ]

    def test_count_owned(self, storage: Storage) -> None:
        """``count_owned`` counts the owner's apps, following adds, owner changes and removals."""
        first = _add_app(storage, make_app(owner="acme"))
        _add_app(storage, make_app(owner="acme"))
        _add_app(storage, make_app(owner="other"))
        with storage.transaction() as tx:
            assert 2 == tx.apps.count_owned("acme")
            assert 0 == tx.apps.count_owned("nobody")
            tx.apps.update(attrs.evolve(first, owner="other"))
        with storage.transaction() as tx:
            assert 1 == tx.apps.count_owned("acme")
            assert 2 == tx.apps.count_owned("other")
            tx.apps.remove(first.key)
            assert 1 == tx.apps.count_owned("other")

    def test_list_orders_by_folded_name_then_key(self, storage: Storage) -> None:
        """Order is ``name.casefold()``, then key; equal folded names tie-break on the key."""
        apps = [make_app(name=name) for name in ("beta", "Alpha", "alpha", "ALPHA", "Straße")]
        apps.append(make_app(name="STRASSE"))
        for app in apps:
            _add_app(storage, app)
        expected = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        with storage.transaction() as tx:
            page = tx.apps.list(EVERYTHING)
        assert _keys(expected) == [listing.app.key for listing in page.items]
        assert len(apps) == page.total

    def test_list_filters_by_owner(self, storage: Storage) -> None:
        """With ``owner``, only that owner's apps are listed and counted."""
        mine = [_add_app(storage, make_app(owner="acme", name=n)) for n in ("b", "a")]
        _add_app(storage, make_app(owner="other", name="c"))
        with storage.transaction() as tx:
            page = tx.apps.list(EVERYTHING, owner="acme")
            assert ["a", "b"] == _names(page.items)
            assert len(mine) == page.total
            assert 0 == tx.apps.list(EVERYTHING, owner="nobody").total

    def test_list_search_matches_folded_name_and_description(self, storage: Storage) -> None:
        """Search is a substring of `search_text` (NFKC case-folded) of name and description."""
        _add_app(storage, make_app(name="Straße Maps"))
        _add_app(storage, make_app(name="Plain", description="The ﬁle helper"))
        _add_app(storage, make_app(name="Other", description="100% off_sale"))
        cases = {
            "strasse": ["Straße Maps"],
            "file": ["Plain"],
            "maps": ["Straße Maps"],
            "%": ["Other"],
            "_": ["Other"],
            "nothing": [],
        }
        with storage.transaction() as tx:
            found = {
                needle: _names(tx.apps.list(ListQuery(search=needle)).items) for needle in cases
            }
        assert cases == found

    def test_list_pages_with_a_total(self, storage: Storage) -> None:
        """Pages slice the ordered list; ``total`` counts every match, past the end too."""
        for n in range(25):
            _add_app(storage, make_app(name=f"app {n:02d}"))
        with storage.transaction() as tx:
            third = tx.apps.list(ListQuery(page=3, per_page=10))
            beyond = tx.apps.list(ListQuery(page=4, per_page=10))
            searched = tx.apps.list(ListQuery(page=2, per_page=3, search="app 1"))
        assert ([f"app {n}" for n in range(20, 25)], 25, 3) == (
            _names(third.items),
            third.total,
            third.page,
        )
        assert ((), 25) == (beyond.items, beyond.total)
        assert (["app 13", "app 14", "app 15"], 10) == (_names(searched.items), searched.total)

    @pytest.mark.parametrize("per_page", [1, 3, 7])
    def test_app_pages_by_number_and_from_positions(self, storage: Storage, per_page: int) -> None:
        """R26: a page after or before an app's position is the slice its number names.

        Ties in the folded name are broken by key; one owner's list and a search's pages
        agree too.
        """
        apps = [
            make_app(owner="acme" if n % 3 else "other", name=name, description=f"n{n % 2}")
            for n, name in enumerate(["b", "B", "a", "ä", "C", "c", "b", "A", "Ω", "z", "a"])
        ]
        for app in apps:
            _add_app(storage, app)
        ordered = sorted(apps, key=lambda a: (a.name.casefold(), a.key))

        def position(listing: AppListing) -> tuple[str, str]:
            return (listing.app.name.casefold(), listing.app.key)

        with storage.transaction() as tx:
            listings = [AppListing(app, 0) for app in ordered]
            assert_pages_agree(tx.apps.list, position, listings, per_page=per_page)
            assert_pages_agree(
                lambda query: tx.apps.list(query, owner="acme"),
                position,
                [item for item in listings if item.app.owner == "acme"],
                per_page=per_page,
            )
            assert_pages_agree(
                tx.apps.list,
                position,
                [item for item in listings if item.app.description == "n1"],
                per_page=per_page,
                search="n1",
            )

    def test_list_counts_instances(self, storage: Storage) -> None:
        """Each listed app carries the number of accounts that installed it."""
        popular, unused = (
            _add_app(storage, make_app(name="a")),
            _add_app(storage, make_app(name="b")),
        )
        with storage.transaction() as tx:
            for account in ("acme", "beta", "gamma"):
                tx.installations.put(Installation(popular.key, account, "admin", T0))
        with storage.transaction() as tx:
            listed = tx.apps.list(EVERYTHING)
        assert (AppListing(popular, 3), AppListing(unused, 0)) == listed.items

    def test_update_moves_the_app_in_order_and_search(self, storage: Storage) -> None:
        """A renamed app is listed and found under its new name only."""
        app = _add_app(storage, make_app(name="Zeta"))
        _add_app(storage, make_app(name="Middle"))
        with storage.transaction() as tx:
            tx.apps.update(attrs.evolve(app, name="Alpha"))
        with storage.transaction() as tx:
            assert ["Alpha", "Middle"] == _names(tx.apps.list(EVERYTHING).items)
            assert 0 == tx.apps.list(ListQuery(search="zeta")).total
            assert 1 == tx.apps.list(ListQuery(search="alpha")).total

    @settings(
        max_examples=25,
        deadline=None,
        # One storage serves every example; each example lists only its own owner's apps.
        # Every backend's subclass runs this same method: the property does not depend on it.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        names=st.lists(st.tuples(_app_names, st.none() | _app_names), min_size=1, max_size=6),
        data=st.data(),
    )
    def test_order_and_search_follow_the_folding_rules(
        self, storage: Storage, names: list[tuple[str, str | None]], data: st.DataObject
    ) -> None:
        """For any Unicode names, order and search agree with the rules that memory follows."""
        owner = f"prop-{secrets.token_hex(8)}"
        apps = [make_app(owner=owner, name=name, description=desc) for name, desc in names]
        with storage.transaction() as tx:
            for app in apps:
                tx.apps.add(app, _secret())
        texts = [search_text(app.name, app.description) for app in apps]
        needle = data.draw(
            st.one_of(
                st.sampled_from(texts).flatmap(
                    lambda text: st.tuples(
                        st.integers(0, len(text) - 1), st.integers(1, len(text))
                    ).map(lambda span: text[span[0] : max(span[0] + 1, span[1])])
                ),
                _app_names.map(search_text),
            )
        )
        ordered = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        expected = [app.key for app in ordered if needle in search_text(app.name, app.description)]
        with storage.transaction() as tx:
            listed = tx.apps.list(EVERYTHING, owner=owner)
            found = tx.apps.list(ListQuery(per_page=1000, search=needle), owner=owner)
        assert _keys(ordered) == [listing.app.key for listing in listed.items]
        assert expected == [listing.app.key for listing in found.items]
        assert len(expected) == found.total

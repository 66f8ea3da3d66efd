"""The installation repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from ..._records import (
    Grant,
    Installation,
    InstallationListing,
)
from ...ports import ListQuery, Storage
from ._paging import assert_pages_agree
from ._support import (
    EVERYTHING,
    HOUR,
    T0,
    StorageFixtures,
    _add_app,
    _secret,
    make_app,
    make_token,
    new_digest,
)


def _listing_position(listing: InstallationListing) -> tuple[str, str]:
    return (listing.app.name.casefold(), listing.app.key)


class InstallationRepositoryContract(StorageFixtures):
    """Installations: one per app and account, listed with live Access Tokens counts.

    An account's list shows its installed apps and its own apps with live tokens for it,
    ordered like the app list and searched by app name and description. An app's list shows
    the accounts it is installed on, by account id.
    """

    def test_missing_installation_is_none(self, storage: Storage) -> None:
        """An app not installed on the account has ``None``."""
        app = _add_app(storage)
        with storage.transaction() as tx:
            assert tx.installations.get(app.key, "acme") is None

    def test_installation_put_stores_and_replaces(self, storage: Storage) -> None:
        """``put`` stores the installation; a second ``put`` replaces it (e.g. suspends it)."""
        app = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0 + timedelta(microseconds=1))
        with storage.transaction() as tx:
            tx.installations.put(installation)
        suspended = attrs.evolve(installation, suspended=True)
        with storage.transaction() as tx:
            assert installation == tx.installations.get(app.key, "acme")
            tx.installations.put(suspended)
        with storage.transaction() as tx:
            assert suspended == tx.installations.get(app.key, "acme")

    def test_remove_one_and_ignore_missing(self, storage: Storage) -> None:
        """``remove`` deletes one installation; a missing one is a no-op."""
        app = _add_app(storage)
        kept = Installation(app.key, "beta", "admin", T0)
        with storage.transaction() as tx:
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
            tx.installations.put(kept)
        with storage.transaction() as tx:
            tx.installations.remove(app.key, "acme")
            tx.installations.remove(app.key, "nobody")
        with storage.transaction() as tx:
            assert tx.installations.get(app.key, "acme") is None
            assert kept == tx.installations.get(app.key, "beta")

    def test_remove_all_of_app_counts_and_spares_other_apps(self, storage: Storage) -> None:
        """``remove_all_of_app`` removes that app's installations and says how many."""
        app, other = _add_app(storage), _add_app(storage)
        kept = Installation(other.key, "acme", "admin", T0)
        with storage.transaction() as tx:
            for account in ("acme", "beta"):
                tx.installations.put(Installation(app.key, account, "admin", T0))
            tx.installations.put(kept)
        with storage.transaction() as tx:
            assert 2 == tx.installations.remove_all_of_app(app.key)
            assert 0 == tx.installations.remove_all_of_app(app.key)
        with storage.transaction() as tx:
            assert kept == tx.installations.get(other.key, "acme")

    def test_list_shows_the_accounts_apps_in_order_with_live_counts(self, storage: Storage) -> None:
        """Only the account's installations, by folded app name then key, counting live tokens."""
        apps = [_add_app(storage, make_app(name=n)) for n in ("beta", "Alpha", "alpha")]
        elsewhere = _add_app(storage, make_app(name="aaa"))
        now = T0 + timedelta(minutes=30)
        installations = {app.key: Installation(app.key, "acme", "admin", T0) for app in apps}
        with storage.transaction() as tx:
            for installation in installations.values():
                tx.installations.put(installation)
            tx.installations.put(Installation(elsewhere.key, "beta", "admin", T0))
            tx.tokens.add(make_token(apps[0].key, "acme"), new_digest())
            tx.tokens.add(make_token(apps[0].key, "acme"), new_digest())
            expired = make_token(apps[0].key, "acme", expires_at=now)
            tx.tokens.add(expired, new_digest())
            tx.tokens.add(make_token(apps[0].key, "beta"), new_digest())
        ordered = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        counts = {apps[0].key: 2}
        expected = tuple(
            InstallationListing(installations[app.key], app, counts.get(app.key, 0))
            for app in ordered
        )
        with storage.transaction() as tx:
            page = tx.installations.list("acme", EVERYTHING, now=now)
        assert (expected, 3) == (page.items, page.total)

    def test_list_searches_and_pages(self, storage: Storage) -> None:
        """Search matches the app's folded name and description; paging keeps the total."""
        for name, description in (("Straße", None), ("Maps", "of STRASSE"), ("Other", None)):
            app = _add_app(storage, make_app(name=name, description=description))
            with storage.transaction() as tx:
                tx.installations.put(Installation(app.key, "acme", "admin", T0))
        with storage.transaction() as tx:
            found = tx.installations.list("acme", ListQuery(search="strasse"), now=T0)
            second = tx.installations.list("acme", ListQuery(page=2, per_page=2), now=T0)
        assert (["Maps", "Straße"], 2) == (
            [item.app.name for item in found.items],
            found.total,
        )
        assert (["Straße"], 3) == ([item.app.name for item in second.items], second.total)

    def test_list_shows_the_accounts_own_apps_with_live_tokens(self, storage: Storage) -> None:
        """R19, R21: the account's own apps not installed there, while they have live tokens.

        Listed with ``installation=None``; an own app that is installed is listed once.
        """
        now = T0 + timedelta(minutes=30)
        own = _add_app(storage, make_app(owner="acme", name="Own", trusted=True))
        spent = _add_app(storage, make_app(owner="acme", name="Spent", trusted=True))
        idle = _add_app(storage, make_app(owner="acme", name="Idle", trusted=True))
        both = _add_app(storage, make_app(owner="acme", name="Both", trusted=True))
        theirs = _add_app(storage, make_app(owner="beta", name="Theirs", trusted=True))
        installed = Installation(both.key, "acme", "admin", T0)
        cc = Grant.CLIENT_CREDENTIALS
        with storage.transaction() as tx:
            tx.installations.put(installed)
            for app in (own, own, both, theirs):
                tx.tokens.add(make_token(app.key, app.owner, grant=cc), new_digest())
            tx.tokens.add(make_token(spent.key, "acme", grant=cc, expires_at=now), new_digest())
            # Another account's tokens of the account's own app do not list it.
            tx.tokens.add(make_token(idle.key, "beta", grant=cc), new_digest())
        with storage.transaction() as tx:
            page = tx.installations.list("acme", EVERYTHING, now=now)
            searched = tx.installations.list("acme", ListQuery(search="own"), now=now)
            later = tx.installations.list("acme", EVERYTHING, now=T0 + HOUR)
        assert (
            InstallationListing(installed, both, 1),
            InstallationListing(None, own, 2),
        ) == page.items
        assert 2 == page.total
        assert ((InstallationListing(None, own, 2),), 1) == (searched.items, searched.total)
        assert ((InstallationListing(installed, both, 0),), 1) == (later.items, later.total)

    @pytest.mark.parametrize("per_page", [1, 2, 4])
    def test_installation_pages_by_number_and_from_positions(
        self, storage: Storage, per_page: int
    ) -> None:
        """R26: a page after or before an app's position is the slice its number names.

        The account's own apps with live tokens have their places among the installed ones.
        """
        entries = []
        with storage.transaction() as tx:
            for n, name in enumerate(["b", "B", "a", "ä", "C", "c", "b", "A", "z"]):
                app = make_app(owner="acme", name=name, trusted=True)
                tx.apps.add(app, _secret())
                installation = None
                if n % 3:
                    installation = Installation(app.key, "acme", "admin", T0)
                    tx.installations.put(installation)
                else:
                    tx.tokens.add(make_token(app.key, "acme"), new_digest())
                entries.append(InstallationListing(installation, app, 0 if n % 3 else 1))
        entries.sort(key=_listing_position)
        with storage.transaction() as tx:
            assert_pages_agree(
                lambda query: tx.installations.list("acme", query, now=T0),
                _listing_position,
                entries,
                per_page=per_page,
            )

    def test_list_for_app_shows_its_accounts_in_order(self, storage: Storage) -> None:
        """An app's installations, by account id; another app's are not among them."""
        app, other = _add_app(storage), _add_app(storage)
        installations = [
            Installation(app.key, account, f"user-{n}", T0 + timedelta(microseconds=n), n == 1)
            for n, account in enumerate(["org-2", "ORG-1", "acme", "ôrg"])
        ]
        with storage.transaction() as tx:
            for installation in installations:
                tx.installations.put(installation)
            tx.installations.put(Installation(other.key, "beta", "admin", T0))
        with storage.transaction() as tx:
            page = tx.installations.list_for_app(app.key, EVERYTHING)
            found = tx.installations.list_for_app(app.key, ListQuery(search="org"))
            none = tx.installations.list_for_app(other.key, ListQuery(search="org"))
        expected = sorted(installations, key=lambda i: i.account)
        assert (expected, 4) == (list(page.items), page.total)
        assert ["ORG-1", "org-2"] == [i.account for i in found.items]
        assert ((), 0) == (none.items, none.total)

    @pytest.mark.parametrize("per_page", [1, 3])
    def test_app_installation_pages_by_number_and_from_positions(
        self, storage: Storage, per_page: int
    ) -> None:
        """R26: the same for an app's list of accounts."""
        app = _add_app(storage)
        installations = [Installation(app.key, f"org-{n:02d}", "admin", T0) for n in range(8)]
        with storage.transaction() as tx:
            for installation in reversed(installations):
                tx.installations.put(installation)
        with storage.transaction() as tx:
            assert_pages_agree(
                lambda query: tx.installations.list_for_app(app.key, query),
                lambda i: (i.account,),
                installations,
                per_page=per_page,
            )

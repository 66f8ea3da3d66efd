"""The installation repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import timedelta

import attrs

from ..._records import (
    Installation,
    InstallationListing,
)
from ...ports import ListQuery, Storage
from ._support import EVERYTHING, T0, StorageFixtures, _add_app, make_app, make_token, new_digest


class InstallationRepositoryContract(StorageFixtures):
    """Installations: one per app and account, listed with live Access Tokens counts.

    Lists show an account's apps ordered like the app list and searched by app name and
    description.
    """

    def test_missing_installation_is_none(self, storage: Storage) -> None:
        """An app not installed on the account has ``None``."""
        app = _add_app(storage)
        with storage.transaction() as tx:
            assert tx.installations.get(app.key, "acme") is None

    def test_put_stores_and_replaces(self, storage: Storage) -> None:
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

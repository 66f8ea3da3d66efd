"""Bulk removals and the provider's lists, end to end through the Registry on the storage."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from typing import Any

import pytest

from ..._policy import Reason
from ..._records import RegisteredApp
from ..._registry import Registry
from ...errors import AppNotFound, InstallationNotFound
from ...ports import Storage
from .. import EventRecorder, ManualClock
from ._support import StorageFixtures


def _installed(registry: Registry, name: str, *accounts: str, trusted: bool = False) -> Any:
    new = registry.register_app(
        "acme",
        name=name,
        homepage="http://example.com/",
        admin_email="admin@example.com",
        redirect_url="https://example.com/cb",
        trusted=trusted,
    )
    for account in accounts:
        registry.permit_account(account, by="provider")
        registry.install_app(new.app.key, account, by="alice")
    return new


def _token(registry: Registry, new: RegisteredApp, account: str) -> str:
    return registry.issue_token(new.app.key, new.secret, account=account, approved_by="a").token


class SelectionContract(StorageFixtures):
    """Bulk removals ("Remove Selected") are all or nothing here; the lists agree with them."""

    @pytest.fixture
    def events(self) -> EventRecorder:
        """Every event the registry emits."""
        return EventRecorder()

    @pytest.fixture
    def selecting(self, storage: Storage, clock: ManualClock, events: EventRecorder) -> Registry:
        """A registry on the storage, with a manual clock and an event recorder."""
        listeners: Any = (events,)
        return Registry(storage=storage, clock=clock, listeners=listeners)

    def test_removing_selected_apps_is_all_or_nothing(
        self, selecting: Registry, events: EventRecorder
    ) -> None:
        """One unknown key among them: nothing removed, no event; then all of them go."""
        registry = selecting
        apps = [_installed(registry, f"App {n}", "globex") for n in range(3)]
        tokens = [_token(registry, new, "globex") for new in apps]
        events.clear()
        keys = [new.app.key for new in apps[:2]]
        with pytest.raises(AppNotFound):
            registry.remove_apps([*keys, "U" * 32])
        assert ([], 3) == (events.events, registry.list_apps().total)
        assert [Reason.ALLOWED] * 3 == [registry.check_token(t).reason for t in tokens]

        assert 2 == registry.remove_apps(keys)
        assert [Reason.TOKEN_UNKNOWN] * 2 + [Reason.ALLOWED] == [
            registry.check_token(t).reason for t in tokens
        ]
        assert [apps[2].app.key] == [item.app.key for item in registry.list_apps().items]
        assert 2 == len(events.events)

    def test_uninstalling_selected_apps_is_all_or_nothing(self, selecting: Registry) -> None:
        """One app not installed on the account: nothing uninstalled; then all of them."""
        registry = selecting
        apps = [_installed(registry, f"App {n}", "globex", "initech") for n in range(2)]
        stranger = _installed(registry, "Stranger", "initech")
        tokens = [_token(registry, new, "globex") for new in apps]
        keys = [new.app.key for new in apps]
        with pytest.raises(InstallationNotFound):
            registry.uninstall_apps([*keys, stranger.app.key], "globex")
        assert 2 == registry.list_installations("globex").total
        assert [Reason.ALLOWED] * 2 == [registry.check_token(t).reason for t in tokens]

        assert 2 == registry.uninstall_apps(keys, "globex")
        assert (0, 3) == (
            registry.list_installations("globex").total,
            registry.list_installations("initech").total,
        )
        assert ["initech"] == [i.account for i in registry.list_app_installations(keys[0]).items]

    def test_the_provider_lists(self, selecting: Registry) -> None:
        """Permitted accounts, an app's accounts and tokens, an owner's own trusted app."""
        registry = selecting
        new = _installed(registry, "Shared", "initech", "globex", trusted=True)
        registry.permit_account("acme", by="provider")
        for account in ("initech", "globex", "initech"):
            _token(registry, new, account)
        registry.issue_token(new.app.key, new.secret)  # client credentials, for acme

        assert ["acme", "globex", "initech"] == [
            p.account for p in registry.list_permissions().items
        ]
        assert ["globex", "initech"] == [
            i.account for i in registry.list_app_installations(new.app.key).items
        ]
        assert ["acme", "globex", "initech", "initech"] == [
            t.account for t in registry.list_tokens(new.app.key).items
        ]
        (own,) = registry.list_installations("acme").items
        assert (new.app.key, None, 1) == (own.app.key, own.installation, own.access_tokens)

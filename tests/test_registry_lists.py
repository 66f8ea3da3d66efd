"""The seeds' remaining lists and selections, on the Registry over in-memory storage.

"Remove Selected" for apps and installations (all or nothing), the lists a provider needs
(permitted accounts, an app's accounts, an app's tokens on every account), a trusted app's
own tokens on its owner's App Management, and page cursors (R26). The storage parts run on
every backend in the contract suite.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from _support import HOUR, problems_of, register
from appregistry import (
    AppNotFound,
    EventKind,
    InstallationNotFound,
    Page,
    Reason,
    RegisteredApp,
    Registry,
)
from appregistry.testing import EventRecorder, ManualClock


def installed(registry: Registry, *accounts: str, **fields: Any) -> RegisteredApp:
    """A new app of "acme", installed on each of ``accounts`` (permitted first)."""
    new = register(registry, **fields)
    for account in accounts:
        registry.permit_account(account, by="provider")
        registry.install_app(new.app.key, account, by=f"admin@{account}")
    return new


def token(registry: Registry, new: RegisteredApp, account: str | None = None, **kw: Any) -> str:
    approval = {} if account is None else {"approved_by": f"user@{account}"}
    return registry.issue_token(new.app.key, new.secret, account=account, **approval, **kw).token


class TestRemoveSelectedApps:
    """``remove_apps`` removes every app named, with everything of each, or none."""

    def test_all_go_with_their_installations_and_tokens(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        doomed = [installed(registry, "globex", name=f"App {n}") for n in range(3)]
        kept = installed(registry, "globex", name="Kept")
        tokens = [token(registry, new, "globex") for new in doomed]
        recorder.clear()

        removed = registry.remove_apps([new.app.key for new in doomed])

        assert 3 == removed
        assert [Reason.TOKEN_UNKNOWN] * 3 == [registry.check_token(t).reason for t in tokens]
        assert [kept.app.key] == [i.app.key for i in registry.list_installations("globex").items]
        assert [(EventKind.APP_REMOVED, new.app.key) for new in doomed] == [
            (event.kind, event.app_key) for event in recorder.events
        ]
        assert {"tokens_removed": 1, "installations_removed": 1} == dict(recorder.events[0].details)

    def test_one_unknown_key_removes_nothing(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        first, second = (installed(registry, "globex") for _ in range(2))
        live = token(registry, first, "globex")
        recorder.clear()

        with pytest.raises(AppNotFound) as missing:
            registry.remove_apps([first.app.key, "U" * 32, "V" * 32, second.app.key])

        assert "U" * 32 == missing.value.key  # the first unknown key, in the order given
        assert ([], 2) == (recorder.events, registry.list_apps().total)
        assert Reason.ALLOWED == registry.check_token(live).reason

    def test_a_key_named_twice_is_removed_once(self, registry: Registry) -> None:
        new = register(registry)
        assert (1, 0) == (registry.remove_apps([new.app.key] * 2), registry.list_apps().total)

    def test_removed_keys_never_work_again(self, registry: Registry) -> None:
        new = installed(registry, "acme", trusted=True)
        registry.remove_apps([new.app.key])
        assert (
            Reason.BAD_CREDENTIALS == registry.authenticate_client(new.app.key, new.secret).reason
        )

    @pytest.mark.parametrize(
        ("keys", "code"),
        [("K" * 32, "invalid"), (["K" * 32, 7], "invalid"), (["K"] * 1001, "too_many"),
         (["K" * 600], "too_long"), (None, "invalid")],
    )  # fmt: skip
    def test_a_bad_selection_is_refused(self, registry: Registry, keys: Any, code: str) -> None:
        new = register(registry)
        assert [("keys", code)] == problems_of(lambda: registry.remove_apps(keys))
        assert 1 == registry.list_apps().total
        del new

    def test_nothing_selected_removes_nothing(self, registry: Registry) -> None:
        register(registry)
        assert (0, 1) == (registry.remove_apps([]), registry.list_apps().total)


class TestUninstallSelected:
    """``uninstall_apps`` uninstalls every app named from the account, or none."""

    def test_all_go_with_that_accounts_tokens(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        apps = [installed(registry, "globex", "initech") for _ in range(2)]
        gone = [token(registry, new, "globex") for new in apps for _ in range(2)]
        kept = token(registry, apps[0], "initech")
        recorder.clear()

        removed = registry.uninstall_apps([new.app.key for new in apps], "globex")

        assert (4, 0) == (removed, registry.list_installations("globex").total)
        assert [Reason.TOKEN_UNKNOWN] * 4 == [registry.check_token(t).reason for t in gone]
        assert Reason.ALLOWED == registry.check_token(kept).reason
        assert [EventKind.APP_UNINSTALLED] * 2 == [event.kind for event in recorder.events]

    def test_one_missing_installation_uninstalls_nothing(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        mine = installed(registry, "globex")
        elsewhere = installed(registry, "initech")
        live = token(registry, mine, "globex")
        recorder.clear()

        with pytest.raises(InstallationNotFound) as missing:
            registry.uninstall_apps([mine.app.key, elsewhere.app.key], "globex")

        assert (elsewhere.app.key, "globex") == (missing.value.key, missing.value.account)
        assert ([], 1) == (recorder.events, registry.list_installations("globex").total)
        assert Reason.ALLOWED == registry.check_token(live).reason

    def test_a_bad_selection_is_refused(self, registry: Registry) -> None:
        assert [("keys", "too_many")] == problems_of(
            lambda: registry.uninstall_apps(["K" * 32] * 1001, "globex")
        )


class TestProviderLists:
    """The permitted accounts, an app's accounts, and an app's tokens on every account."""

    def test_permitted_accounts_with_who_and_when(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        registry.permit_account("org-2", by="sp-admin")
        clock.advance(HOUR)
        registry.permit_account("org-1", by="root")
        registry.permit_account("gone", by="root")
        registry.forbid_account("gone")

        listed = registry.list_permissions()

        assert [("org-1", "root", clock()), ("org-2", "sp-admin", clock() - HOUR)] == [
            (p.account, p.granted_by, p.granted_at) for p in listed.items
        ]
        assert ["org-2"] == [p.account for p in registry.list_permissions(search="ORG-2").items]

    def test_the_accounts_an_app_is_installed_on(self, registry: Registry) -> None:
        new = installed(registry, "initech", "globex")
        installed(registry, "acme")
        registry.suspend_installation(new.app.key, "initech")

        listed = registry.list_app_installations(new.app.key)

        assert [("globex", False), ("initech", True)] == [
            (i.account, i.suspended) for i in listed.items
        ]
        with pytest.raises(AppNotFound):
            registry.list_app_installations("U" * 32)

    def test_an_apps_tokens_on_every_account(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "initech", "globex")
        other = installed(registry, "globex")
        token(registry, new, "initech", user_agent="curl/8")
        clock.advance(timedelta(minutes=1))
        token(registry, new, "globex", user_agent="libwww-perl 5.833")
        token(registry, new, "initech", user_agent="libwww-perl 6")
        token(registry, other, "globex")

        every = registry.list_tokens(new.app.key)
        perl = registry.list_tokens(new.app.key, search="PERL")

        assert ["globex", "initech", "initech"] == [t.account for t in every.items]
        assert (2, ["libwww-perl 5.833", "libwww-perl 6"]) == (
            perl.total,
            [t.user_agent for t in perl.items],
        )
        assert 2 == registry.list_tokens(new.app.key, "initech").total


class TestOwnAppsOnAppManagement:
    """A trusted app's own tokens are on its owner's App Management, installed or not."""

    def test_listed_while_it_has_live_tokens(self, registry: Registry, clock: ManualClock) -> None:
        registry.permit_account("acme", by="provider")
        own = register(registry, name="Own", trusted=True)
        installed(registry, "acme", name="Installed")
        first = token(registry, own)
        token(registry, own)

        listed = registry.list_installations("acme")

        assert [("Installed", True, 0), ("Own", False, 2)] == [
            (i.app.name, i.installed, i.access_tokens) for i in listed.items
        ]
        assert 2 == listed.total
        registry.remove_tokens([registry.check_token(first).token.token_id])  # type: ignore[union-attr]
        assert 1 == registry.list_installations("acme", search="own").items[0].access_tokens
        clock.advance(HOUR)
        assert ["Installed"] == [i.app.name for i in registry.list_installations("acme").items]

    def test_installed_it_is_listed_once_with_every_token(self, registry: Registry) -> None:
        own = installed(registry, "acme", trusted=True)
        token(registry, own)
        token(registry, own, "acme")

        (listed,) = registry.list_installations("acme").items

        assert (True, 2) == (listed.installed, listed.access_tokens)

    def test_not_on_another_accounts_management(self, registry: Registry) -> None:
        registry.permit_account("acme", by="provider")
        own = register(registry, trusted=True)
        token(registry, own)
        registry.permit_account("globex", by="provider")
        assert 0 == registry.list_installations("globex").total


class TestCursors:
    """R26: pages reached by cursors are the pages their numbers name, on every list."""

    @staticmethod
    def walk(read: Callable[..., Page[Any]]) -> list[list[Any]]:
        """Every page: forward by ``after`` cursors, checked against the same pages by
        number and backward by ``before`` cursors."""
        pages = [read(page=1)]
        while pages[-1].after is not None:
            pages.append(read(page=pages[-1].page + 1, after=pages[-1].after))
        back = [pages[-1]]
        while back[-1].before is not None:
            back.append(read(page=back[-1].page - 1, before=back[-1].before))
        by_number = [read(page=n) for n in range(1, pages[0].pages + 1)]
        assert [p.items for p in by_number] == [p.items for p in pages]
        assert [p.items for p in by_number] == [p.items for p in reversed(back)]
        assert (None, None) == (pages[0].before, pages[-1].after)
        return [list(p.items) for p in pages]

    def test_every_list(self, registry: Registry) -> None:
        apps = [installed(registry, "globex", name=name) for name in "bBaAcCdD"]
        for n in range(7):
            registry.permit_account(f"org-{n}", by="provider")
            registry.install_app(apps[0].app.key, f"org-{n}", by="alice")
            token(registry, apps[0], f"org-{n}")
        token(registry, apps[0], "globex")

        lists: list[Callable[..., Page[Any]]] = [
            lambda **kw: registry.list_apps(per_page=3, **kw),
            lambda **kw: registry.list_installations("globex", per_page=3, **kw),
            lambda **kw: registry.list_permissions(per_page=3, **kw),
            lambda **kw: registry.list_app_installations(apps[0].app.key, per_page=3, **kw),
            lambda **kw: registry.list_tokens(apps[0].app.key, per_page=3, **kw),
            lambda **kw: registry.list_tokens(apps[0].app.key, "org-1", per_page=3, **kw),
        ]
        sizes = [sum(len(page) for page in self.walk(read)) for read in lists]

        assert [8, 8, 8, 8, 8, 1] == sizes

    def test_a_cursor_is_opaque_and_holds_no_secret(self, registry: Registry) -> None:
        apps = [installed(registry, "globex", name=f"App {n}") for n in range(3)]
        first = registry.list_apps(per_page=1)
        assert first.after is not None
        assert all(new.secret not in first.after for new in apps)
        assert (True, False) == (first.after.isascii(), "=" in first.after)

    def test_bad_cursors_are_refused_with_every_problem(self, registry: Registry) -> None:
        installed(registry, "globex")
        installed(registry, "globex")
        apps_cursor = registry.list_apps(per_page=1).after
        assert apps_cursor is not None

        assert [("page", "invalid"), ("after", "invalid")] == problems_of(
            lambda: registry.list_apps(page=0, after="not a cursor")
        )
        # A cursor of another list is not one of this list.
        assert [("after", "invalid")] == problems_of(
            lambda: registry.list_installations("globex", after=apps_cursor)
        )
        assert [("before", "conflict")] == problems_of(
            lambda: registry.list_apps(after=apps_cursor, before=apps_cursor)
        )
        for forged in ("x" * 5000, "e30", "WyJhcHBzIiwxLDJd", 7):
            assert [("before", "invalid")] == problems_of(
                lambda forged=forged: registry.list_apps(before=forged)
            )
        # An empty cursor is none, as a form's empty field sends it.
        assert registry.list_apps(after="", before="") == registry.list_apps()

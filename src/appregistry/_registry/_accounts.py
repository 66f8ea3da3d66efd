"""Accounts and installations: the apps permission, installing, suspending, uninstalling."""

from __future__ import annotations

from collections.abc import Collection

import attrs

from .._policy import AccessRequest, Action
from .._records import AppsPermission, Event, EventKind, Installation, InstallationListing, Page
from .._validation import Problems
from ..errors import Denied
from ._base import _identifiers, _is_id, _RegistryBase, _remove_grants
from ._lists import ListKind, key_selection, list_query, with_cursors


class _Accounts(_RegistryBase):
    """The operations on accounts' apps permission and installations."""

    __slots__ = ()

    def permit_account(self, account: str, *, by: str) -> AppsPermission:
        """Grant the account the apps permission; tokens it had work again.

        Args:
            account: The account that may use apps.
            by: Who granted it (a user id of the host).
        """
        account, by = _identifiers(account=account, by=by)
        now = self._now()
        with self._transaction() as (tx, events):
            permission = tx.permissions.get(account)
            if permission is None:
                permission = AppsPermission(account, by, now)
                tx.permissions.put(permission)
                events.append(Event(EventKind.ACCOUNT_PERMITTED, now, None, account, {"by": by}))
        return permission

    def forbid_account(self, account: str) -> None:
        """Withdraw the account's apps permission: its tokens stop acting, but are kept."""
        (account,) = _identifiers(account=account)
        now = self._now()
        with self._transaction() as (tx, events):
            if tx.permissions.get(account) is not None:
                tx.permissions.remove(account)
                events.append(Event(EventKind.ACCOUNT_FORBIDDEN, now, None, account))

    def get_permission(self, account: str) -> AppsPermission | None:
        """The account's apps permission, or ``None`` if it has none."""
        with self._transaction() as (tx, _):
            return tx.permissions.get(account) if _is_id(account) else None

    def list_permissions(
        self,
        *,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[AppsPermission]:
        """A page of the accounts permitted to use apps, with who permitted each and when.

        Ordered by account id; ``search`` matches the account id, ignoring the case of
        ASCII letters. Paging and cursors work as in `list_apps`.

        Raises:
            ValidationError: Bad paging, search text or cursor.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> for account in ("org-2", "org-1", "ACME"):
        ...     _ = registry.permit_account(account, by="sp-admin")
        >>> [p.account for p in registry.list_permissions().items]
        ['ACME', 'org-1', 'org-2']
        >>> [(p.account, p.granted_by) for p in registry.list_permissions(search="Acme").items]
        [('ACME', 'sp-admin')]
        """
        query = list_query(
            Problems(),
            ListKind.PERMISSIONS,
            search=search,
            page=page,
            per_page=per_page,
            after=after,
            before=before,
        )
        with self._transaction() as (tx, _):
            found = tx.permissions.list(query)
        return with_cursors(ListKind.PERMISSIONS, found, lambda p: (p.account,))

    def install_app(self, key: str, account: str, *, by: str) -> Installation:
        """Install (authorize) the app on the account.

        Installing again returns the existing installation unchanged (suspended or not).

        Args:
            by: The user who authorized it, holding the account's apps permission.

        Raises:
            AppNotFound: No app has ``key``.
            Denied: The app is disabled or the account is not permitted to use apps.
        """
        account, by = _identifiers(account=account, by=by)
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            existing = tx.installations.get(key, account)
            request = AccessRequest(
                Action.INSTALL, app=app, account=account, permission=tx.permissions.get(account)
            )
            decision = self._policy.evaluate(request, now)
            if not decision.allowed:
                raise Denied(decision, f"cannot install the app: {decision.detail}")
            if existing is not None:
                return existing
            installation = Installation(key, account, by, now)
            tx.installations.put(installation)
            events.append(Event(EventKind.APP_INSTALLED, now, key, account, {"by": by}))
        return installation

    def suspend_installation(self, key: str, account: str) -> Installation:
        """Suspend the app on this account only; its tokens there stop acting.

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        return self._set_suspended(key, account, suspended=True)

    def resume_installation(self, key: str, account: str) -> Installation:
        """Resume a suspended installation; unexpired tokens work again.

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        return self._set_suspended(key, account, suspended=False)

    def _set_suspended(self, key: str, account: str, *, suspended: bool) -> Installation:
        now = self._now()
        with self._transaction() as (tx, events):
            installation = self._installation(tx, key, account)
            if installation.suspended != suspended:
                installation = attrs.evolve(installation, suspended=suspended)
                tx.installations.put(installation)
                kind = (
                    EventKind.INSTALLATION_SUSPENDED
                    if suspended
                    else EventKind.INSTALLATION_RESUMED
                )
                events.append(Event(kind, now, key, account))
        return installation

    def uninstall_app(self, key: str, account: str) -> int:
        """Remove the installation and the account's tokens for the app.

        The account's refresh tokens and authorization codes for the app go too.

        Returns:
            How many access tokens were removed.

        Raises:
            InstallationNotFound: The app is not installed on the account (whatever ``key``
                and ``account`` are).
        """
        return self._uninstall_apps([key], account)

    def uninstall_apps(self, keys: Collection[str], account: str) -> int:
        """Uninstall several apps from the account, as `uninstall_app` does one, all at once.

        The seeds' "Remove Selected" on an account's App Management: every app named is
        uninstalled, with the account's tokens, refresh tokens and codes for it, or none is,
        in one transaction. Each emits its own `EventKind.APP_UNINSTALLED` event.

        Args:
            keys: The apps' keys, at most 1000. A key named twice is uninstalled once.
            account: The account to uninstall them from.

        Returns:
            How many access tokens were removed, for all the apps together.

        Raises:
            InstallationNotFound: An app named is not installed on the account: the first
                such, in the order given. Nothing is removed.
            ValidationError: ``keys`` is not a collection of strings, names more than
                1000, or has an entry longer than any key. Nothing is removed.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> _ = registry.permit_account("org-1", by="sp-admin")
        >>> keys = [registry.register_app("acme", name=name, homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb").app.key
        ...     for name in ("One", "Two")]
        >>> for key in keys:
        ...     _ = registry.install_app(key, "org-1", by="alice")
        >>> registry.uninstall_apps(keys, "org-1"), registry.list_installations("org-1").total
        (0, 0)
        """
        return self._uninstall_apps(key_selection("keys", keys), account)

    def _uninstall_apps(self, selected: list[str], account: str) -> int:
        now = self._now()
        with self._transaction() as (tx, events):
            for key in selected:
                self._installation(tx, key, account)
            total = 0
            for key in selected:
                removed, grants = _remove_grants(tx, key, account)
                tx.installations.remove(key, account)
                total += removed
                events.append(
                    Event(
                        EventKind.APP_UNINSTALLED,
                        now,
                        key,
                        account,
                        {"tokens_removed": removed, **grants},
                    )
                )
        return total

    def list_installations(
        self,
        account: str,
        *,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[InstallationListing]:
        """A page of the account's App Management, with live Access Tokens counts.

        The apps installed on the account, with when and by whom; and the account's own apps
        that are not installed on it but have live tokens for it (a trusted app's
        client-credentials tokens), with ``installation=None``, so that their owner
        sees those tokens and can remove them. Ordered and searched as `list_apps`; paging
        and cursors work as there.

        Raises:
            ValidationError: Bad account, paging, search text or cursor.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> _ = registry.permit_account("acme", by="sp-admin")
        >>> new = registry.register_app("acme", name="Own", homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb",
        ...     trusted=True)
        >>> registry.list_installations("acme").total
        0
        >>> _ = registry.issue_token(new.app.key, new.secret)  # client credentials
        >>> [(i.app.name, i.installed, i.access_tokens)
        ...  for i in registry.list_installations("acme").items]
        [('Own', False, 1)]
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        query = list_query(
            problems,
            ListKind.INSTALLATIONS,
            search=search,
            page=page,
            per_page=per_page,
            after=after,
            before=before,
        )
        now = self._now()
        with self._transaction() as (tx, _):
            found = tx.installations.list(account, query, now=now)
        return with_cursors(
            ListKind.INSTALLATIONS, found, lambda i: (i.app.name.casefold(), i.app.key)
        )

    def list_app_installations(
        self,
        key: str,
        *,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[Installation]:
        """A page of the accounts the app is installed on: its Instances, one by one.

        Ordered by account id; ``search`` matches the account id, ignoring the case of
        ASCII letters. Paging and cursors work as in `list_apps`.

        Raises:
            AppNotFound: No app has ``key``.
            ValidationError: Bad paging, search text or cursor.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> key = registry.register_app("acme", name="MyApp", homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb").app.key
        >>> for account in ("org-2", "org-1"):
        ...     _ = registry.permit_account(account, by="sp-admin")
        ...     _ = registry.install_app(key, account, by="alice")
        >>> [(i.account, i.installed_by) for i in registry.list_app_installations(key).items]
        [('org-1', 'alice'), ('org-2', 'alice')]
        """
        query = list_query(
            Problems(),
            ListKind.APP_INSTALLATIONS,
            search=search,
            page=page,
            per_page=per_page,
            after=after,
            before=before,
        )
        with self._transaction() as (tx, _):
            self._app(tx, key)
            found = tx.installations.list_for_app(key, query)
        return with_cursors(ListKind.APP_INSTALLATIONS, found, lambda i: (i.account,))

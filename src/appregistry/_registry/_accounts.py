"""Accounts and installations: the apps permission, installing, suspending, uninstalling."""

from __future__ import annotations

import attrs

from .._policy import AccessRequest, Action
from .._records import AppsPermission, Event, EventKind, Installation, InstallationListing, Page
from .._validation import Problems
from ..errors import Denied
from ._base import _identifiers, _is_id, _RegistryBase, _remove_grants


class _Accounts(_RegistryBase):
    """The operations on accounts' apps permission and installations (R12, R14, R15)."""

    __slots__ = ()

    def permit_account(self, account: str, *, by: str) -> AppsPermission:
        """Grant the account the apps permission; tokens it had work again (R14).

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
        """Withdraw the account's apps permission: its tokens stop acting, but are kept (R14)."""
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

    def install_app(self, key: str, account: str, *, by: str) -> Installation:
        """Install (authorize) the app on the account (R15).

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
        """Suspend the app on this account only; its tokens there stop acting (R12).

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        return self._set_suspended(key, account, suspended=True)

    def resume_installation(self, key: str, account: str) -> Installation:
        """Resume a suspended installation; unexpired tokens work again (R12).

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
        """Remove the installation and the account's tokens for the app (R15).

        The account's refresh tokens and authorization codes for the app go too.

        Returns:
            How many access tokens were removed.

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            self._installation(tx, key, account)
            removed, grants = _remove_grants(tx, key, account)
            tx.installations.remove(key, account)
            events.append(
                Event(
                    EventKind.APP_UNINSTALLED,
                    now,
                    key,
                    account,
                    {"tokens_removed": removed, **grants},
                )
            )
        return removed

    def list_installations(
        self, account: str, *, search: str | None = None, page: int = 1, per_page: int = 10
    ) -> Page[InstallationListing]:
        """A page of the apps installed on the account, with live Access Tokens counts (R26).

        Raises:
            ValidationError: Bad account, paging or search text.
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        query = self._query(problems, search, page, per_page)
        now = self._now()
        with self._transaction() as (tx, _):
            return tx.installations.list(account, query, now=now)

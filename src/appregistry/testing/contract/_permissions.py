"""The permission repository's part of the storage contract suite."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from datetime import timedelta

import pytest

from ..._records import (
    AppsPermission,
)
from ...ports import ListQuery, Storage
from ._paging import assert_pages_agree
from ._support import EVERYTHING, T0, StorageFixtures


class PermissionRepositoryContract(StorageFixtures):
    """Apps permissions: one per account, replaced by ``put``; missing ones are ``None``.

    Listed by account id, each with who granted it and when; searched by account id,
    ignoring the case of ASCII letters.
    """

    def test_missing_permission_is_none(self, storage: Storage) -> None:
        """An account without a permission has ``None``."""
        with storage.transaction() as tx:
            assert tx.permissions.get("acme") is None

    def test_permission_put_stores_and_replaces(self, storage: Storage) -> None:
        """``put`` stores the permission; a second ``put`` replaces it."""
        first = AppsPermission("acme", "admin", T0)
        second = AppsPermission("acme", "root", T0 + timedelta(microseconds=7))
        with storage.transaction() as tx:
            tx.permissions.put(first)
        with storage.transaction() as tx:
            assert first == tx.permissions.get("acme")
            tx.permissions.put(second)
        with storage.transaction() as tx:
            assert second == tx.permissions.get("acme")

    def test_remove_withdraws_and_ignores_missing(self, storage: Storage) -> None:
        """``remove`` withdraws only that account's permission; a missing one is a no-op."""
        kept = AppsPermission("beta", "admin", T0)
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            tx.permissions.put(kept)
        with storage.transaction() as tx:
            tx.permissions.remove("acme")
            tx.permissions.remove("nobody")
        with storage.transaction() as tx:
            assert tx.permissions.get("acme") is None
            assert kept == tx.permissions.get("beta")

    def test_permissions_list_by_account_with_who_and_when(self, storage: Storage) -> None:
        """Every permitted account, by code point; a withdrawn one is no longer listed."""
        permissions = [
            AppsPermission(account, f"admin-{n}", T0 + timedelta(microseconds=n))
            for n, account in enumerate(["org-2", "Org-1", "org-10", "acme", "ôrg", "gone"])
        ]
        with storage.transaction() as tx:
            for permission in permissions:
                tx.permissions.put(permission)
            tx.permissions.remove("gone")
        with storage.transaction() as tx:
            page = tx.permissions.list(EVERYTHING)
        expected = sorted(permissions[:-1], key=lambda p: p.account)
        assert (expected, 5) == (list(page.items), page.total)

    def test_permission_search_ignores_ascii_case(self, storage: Storage) -> None:
        """Search text matches inside the account id, whatever the case of ASCII letters."""
        with storage.transaction() as tx:
            for account in ("ORG-1", "org-2", "acme", "Acme-Org"):
                tx.permissions.put(AppsPermission(account, "admin", T0))
        with storage.transaction() as tx:
            found = {
                needle: [p.account for p in tx.permissions.list(ListQuery(search=needle)).items]
                for needle in ("org", "acme", "-2", "nothing")
            }
        assert {
            "org": ["Acme-Org", "ORG-1", "org-2"],
            "acme": ["Acme-Org", "acme"],
            "-2": ["org-2"],
            "nothing": [],
        } == found

    @pytest.mark.parametrize("per_page", [1, 2, 5])
    def test_permission_pages_by_number_and_from_positions(
        self, storage: Storage, per_page: int
    ) -> None:
        """R26: a page after or before an account's position is the slice its number names."""
        permissions = [AppsPermission(f"org-{n:02d}", "admin", T0) for n in range(11)]
        with storage.transaction() as tx:
            for permission in reversed(permissions):
                tx.permissions.put(permission)
        with storage.transaction() as tx:
            assert_pages_agree(
                tx.permissions.list, lambda p: (p.account,), permissions, per_page=per_page
            )
            assert_pages_agree(
                tx.permissions.list,
                lambda p: (p.account,),
                [p for p in permissions if "1" in p.account],
                per_page=per_page,
                search="1",
            )

"""The permission repository's part of the storage contract suite."""

# A test suite states its expectations with assert.
# ruff: noqa: S101

from __future__ import annotations

from datetime import timedelta

from ..._records import (
    AppsPermission,
)
from ...ports import Storage
from ._support import T0, StorageFixtures


class PermissionRepositoryContract(StorageFixtures):
    """Apps permissions: one per account, replaced by ``put``; missing ones are ``None``."""

    def test_missing_permission_is_none(self, storage: Storage) -> None:
        """An account without a permission has ``None``."""
        with storage.transaction() as tx:
            assert tx.permissions.get("acme") is None

    def test_put_stores_and_replaces(self, storage: Storage) -> None:
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

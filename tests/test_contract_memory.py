"""The storage contract suite on the in-memory backend: the fake passes the same suite."""

from __future__ import annotations

import pytest

from appregistry.storage.memory import MemoryStorage
from appregistry.testing.contract import StorageContract, StorageFactory


class TestMemoryStorageContract(StorageContract):
    """MemoryStorage honours every rule of the storage contract."""

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        return MemoryStorage

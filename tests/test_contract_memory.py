"""The storage contract suite on the in-memory backend: the fake passes the same suite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from appregistry import AccessToken, Grant
from appregistry.storage.memory import MemoryStorage, _used
from appregistry.testing.contract import StorageContract, StorageFactory


class TestMemoryStorageContract(StorageContract):
    """MemoryStorage honours every rule of the storage contract."""

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        return MemoryStorage


def test_a_recorded_use_keeps_every_other_field() -> None:
    """The memory backend rebuilds a token to record its use without `attrs.evolve` (for
    speed): a field added to AccessToken and left out there would be lost, and this fails."""
    fields = attrs.fields(AccessToken)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # A distinct value for every field, so that any field dropped or shifted shows.
    values: dict[str, Any] = {
        field.name: when + timedelta(seconds=index) for index, field in enumerate(fields)
    }
    values.update(
        token_id="t1",
        app_key="K" * 32,
        account="acme",
        grant=Grant.AUTHORIZATION_CODE,
        user_agent="agent",
        family_id="family",
        approved_by="alice",
    )
    token = AccessToken(**values)
    later = when + timedelta(days=1)
    assert _used(token, later) == attrs.evolve(token, last_used_at=later)

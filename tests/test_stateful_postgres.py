"""The model-based test of tests/test_stateful.py, run on PostgreSQL (a schema per run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from appregistry.ports import Storage
from test_stateful import make_machine

_factory: list[Callable[..., Any]] = []


@pytest.fixture(autouse=True)
def _postgres_factory(postgres_storage_factory: Callable[..., Any]) -> Iterator[None]:
    _factory.append(postgres_storage_factory)
    yield
    _factory.remove(postgres_storage_factory)


def _fresh_postgres() -> Storage:
    storage: Storage = _factory[-1]()
    return storage


TestPostgresStorageAgreesWithModel = make_machine(
    _fresh_postgres, name="Postgres", max_examples=30, stateful_step_count=30
)

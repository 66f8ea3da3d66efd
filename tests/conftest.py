"""Shared fixtures: a PostgreSQL server for the tests that need one, and a memory registry.

The server is the one at ``$APPREGISTRY_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it cannot be reached, its tests are
skipped, except under ``CI=true``, where they fail: CI must never pass by skipping them.

Each test run works in PostgreSQL schemas of its own, named after a random prefix, and drops
them (``CASCADE``) when done; every storage a test asks for gets a fresh, empty schema, which
is faster than emptying tables. Tests that use these fixtures are marked ``postgres``, so
``pytest -m "not postgres"`` leaves them out.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

from appregistry import Registry
from appregistry.storage import redact_url
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock

if TYPE_CHECKING:
    from appregistry.storage.postgres import PostgresStorage

POSTGRES_URL_VARIABLE = "APPREGISTRY_TEST_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class StorageFactory(Protocol):
    """Makes a `PostgresStorage`: on a fresh schema, or on ``schema`` to share one."""

    def __call__(self, *, schema: str | None = None, **options: Any) -> PostgresStorage: ...


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason}; under CI=true the PostgreSQL tests must run", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name.startswith("postgres_") for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a reachable PostgreSQL server (the test is skipped, or fails in CI, if none)."""
    url = os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unavailable(
            f"no PostgreSQL server at {redact_url(url)} (set {POSTGRES_URL_VARIABLE}): {first_line}"
        )
    return url


@pytest.fixture(scope="session")
def postgres_run_prefix(postgres_url: str) -> Iterator[str]:
    """The prefix of this run's schema names; every schema with it is dropped at the end."""
    prefix = f"appregistry_test_{secrets.token_hex(4)}"
    yield prefix
    # Tests drop their own schemas; this catches those of a test that was interrupted.
    _drop_schemas(postgres_url, _schemas_of_run(postgres_url, prefix))


@pytest.fixture(scope="session")
def _postgres_schema_names(postgres_run_prefix: str) -> Iterator[str]:
    return (f"{postgres_run_prefix}_{n}" for n in itertools.count(1))


@pytest.fixture
def postgres_schema(postgres_url: str, _postgres_schema_names: Iterator[str]) -> Iterator[str]:
    """A fresh schema name for this test; the schema is dropped after it."""
    name = next(_postgres_schema_names)
    yield name
    _drop_schemas(postgres_url, [name])


@pytest.fixture
def postgres_schema_url(postgres_url: str, postgres_schema: str) -> str:
    """The server's URL with ``schema=`` naming a fresh schema, as `open_storage` takes it."""
    separator = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{separator}schema={postgres_schema}"


@pytest.fixture
def postgres_storage_factory(
    postgres_url: str, _postgres_schema_names: Iterator[str]
) -> Iterator[StorageFactory]:
    """Makes `PostgresStorage` instances: each on a fresh, empty schema unless ``schema`` says.

    Pass ``schema=storage.schema`` for another instance on the same data, as another app
    server would have. ``options`` go to `PostgresStorage.from_url`. Every storage made is
    closed, and every schema made is dropped, when the test ends.
    """
    from appregistry.storage.postgres import PostgresStorage

    opened: list[PostgresStorage] = []
    made: list[str] = []

    def make(*, schema: str | None = None, **options: Any) -> PostgresStorage:
        if schema is None:
            schema = next(_postgres_schema_names)
            made.append(schema)
        options.setdefault("min_size", 0)  # connections only when used: many storages, few idle
        storage = PostgresStorage.from_url(postgres_url, schema=schema, **options)
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        storage.close()
    _drop_schemas(postgres_url, made)


@pytest.fixture
def postgres_storage(postgres_storage_factory: StorageFactory) -> PostgresStorage:
    """One fresh, empty `PostgresStorage`."""
    return postgres_storage_factory()


def _schemas_of_run(url: str, prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE starts_with(nspname, %s)",
            (f"{prefix}_",),
        ).fetchall()
    return [row[0] for row in rows]


def _drop_schemas(url: str, names: list[str]) -> None:
    import psycopg
    from psycopg import sql

    if not names:
        return
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        # One statement per schema: dropping many at once can exhaust the lock table.
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# -- a registry over memory storage, with a manual clock and an event recorder ---------------


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when told."""
    return ManualClock()


@pytest.fixture
def recorder() -> EventRecorder:
    """Keeps every event the `registry` emits."""
    return EventRecorder()


@pytest.fixture
def storage() -> MemoryStorage:
    """Empty memory storage."""
    return MemoryStorage()


@pytest.fixture
def make_registry(
    storage: MemoryStorage, clock: ManualClock, recorder: EventRecorder
) -> Callable[..., Registry]:
    """Registries on one storage, clock and recorder, each with options of its own."""

    def make(**options: Any) -> Registry:
        return Registry(storage=storage, clock=clock, listeners=[recorder], **options)

    return make


@pytest.fixture
def registry(make_registry: Callable[..., Registry]) -> Registry:
    """A registry with the default options on `storage`, `clock` and `recorder`."""
    return make_registry()

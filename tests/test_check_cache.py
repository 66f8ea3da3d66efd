"""The token-check cache: answers never change beyond its bound, on every backend.

The cache's promise is that a check answered from memory says what a check read from storage
would say, once the change feed has delivered what other processes committed. So the tests
here check answers through a cached Registry while a second Registry, on its own storage
handle (its own connections, as another process has), makes the changes:

- the storage contract suite, through the cached storage;
- the model-based test of tests/test_stateful.py, with checks through the cached reader and
  every change through the writer, waiting only for the feed (``sync_check_cache``);
- each kind of change that refuses a token, on each backend, without waiting: on memory at
  once, on SQL backends once the feed has delivered it;
- the cache's own edges: unknown tokens, expiry, the age backstop, the entry bound, a read
  that races a change, a lost feed.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings

from appregistry import CheckCache, Registry
from appregistry._registry._cache import attach
from appregistry.ports import Storage
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing import ManualClock
from appregistry.testing.contract import StorageContract, StorageFactory
from test_stateful import RegistryMachine

# How long a test waits for a change to reach another handle's cache before it fails: far
# beyond the bound (milliseconds), so a loaded machine does not fail it; it is not a figure.
PATIENCE = 10.0

# -- the contract suite through the cache ----------------------------------------------------


class TestMemoryContractCached(StorageContract):
    """The memory backend behind the check cache honours the whole contract."""

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        return lambda: attach(MemoryStorage(), CheckCache())


class TestSQLiteContractCached(StorageContract):
    """A SQLite file behind the check cache honours the whole contract."""

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> StorageFactory:
        paths = (tmp_path / f"cached-{n}.db" for n in itertools.count())
        return lambda: attach(SQLiteStorage(next(paths)), CheckCache())


@pytest.mark.postgres
class TestPostgresContractCached(StorageContract):
    """PostgreSQL behind the check cache honours the whole contract."""

    @pytest.fixture
    def storage_factory(self, postgres_storage_factory: Any) -> StorageFactory:
        return lambda: attach(postgres_storage_factory(), CheckCache())


# -- two handles on one store: the reader caches, the writer changes ---------------------------

Pair = Callable[[], tuple[Storage, Storage]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage_pair(request: pytest.FixtureRequest, tmp_path: Path) -> Pair:
    """Makes two storage handles on the same data: (the reader's, the writer's)."""
    if request.param == "memory":
        shared = MemoryStorage()
        return lambda: (shared, shared)
    if request.param == "sqlite":
        paths = (tmp_path / f"pair-{n}.db" for n in itertools.count())

        def sqlite_pair() -> tuple[Storage, Storage]:
            path = next(paths)
            return SQLiteStorage(path), SQLiteStorage(path)

        return sqlite_pair
    factory = request.getfixturevalue("postgres_storage_factory")

    def postgres_pair() -> tuple[Storage, Storage]:
        first = factory()
        return first, factory(schema=first.schema)

    return postgres_pair


class _World:
    """A reader Registry with a check cache, and a writer Registry on the same data."""

    def __init__(self, pair: Pair, **cache: Any) -> None:
        self.clock = ManualClock()
        reader_storage, writer_storage = pair()
        self.reader = Registry(
            storage=reader_storage, clock=self.clock, check_cache=CheckCache(**cache)
        )
        self.writer = Registry(storage=writer_storage, clock=self.clock)
        self.app = self.writer.register_app(
            "acme",
            name="App",
            homepage="https://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/cb",
            trusted=True,
        )
        self.key = self.app.app.key
        for account in ("acme", "globex"):
            self.writer.permit_account(account, by="provider")
            self.writer.install_app(self.key, account, by="alice")

    def token(self, account: str | None = None) -> Any:
        if account is None:
            return self.writer.issue_token(self.key, self.app.secret)
        return self.writer.issue_token(
            self.key, self.app.secret, account=account, approved_by="alice"
        )

    def cached(self) -> int:
        return len(self.reader._storage.cache)  # type: ignore[attr-defined]

    def refused_eventually(self, token: str) -> str:
        """The reader's reason once it refuses ``token``; fails after PATIENCE seconds."""
        deadline = time.monotonic() + PATIENCE
        while (check := self.reader.check_token(token)).allowed:
            assert time.monotonic() < deadline, "the change never reached the cache"
            time.sleep(0.001)
        return str(check.reason)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


@pytest.fixture
def world(storage_pair: Pair) -> Iterator[_World]:
    made = _World(storage_pair)
    yield made
    made.close()


REFUSING_CHANGES: dict[str, tuple[Callable[[_World, Any], object], str]] = {
    "disable": (lambda w, t: w.writer.disable_app(w.key), "app_disabled"),
    "remove app": (lambda w, t: w.writer.remove_app(w.key), "token_unknown"),
    "untrust": (lambda w, t: w.writer.update_app(w.key, trusted=False), "app_not_trusted"),
    "regenerate": (lambda w, t: w.writer.regenerate_secret(w.key), "token_unknown"),
    "suspend": (
        lambda w, t: w.writer.suspend_installation(w.key, "acme"),
        "installation_suspended",
    ),
    "uninstall": (lambda w, t: w.writer.uninstall_app(w.key, "acme"), "token_unknown"),
    "forbid": (lambda w, t: w.writer.forbid_account("acme"), "apps_not_permitted"),
    "remove token": (lambda w, t: w.writer.remove_tokens([t.record.token_id]), "token_unknown"),
    "remove all": (lambda w, t: w.writer.remove_all_tokens(w.key, "acme"), "token_unknown"),
}


@pytest.mark.parametrize("change", sorted(REFUSING_CHANGES))
def test_every_refusing_change_reaches_the_cache(world: _World, change: str) -> None:
    issued = world.token()
    assert world.reader.check_token(issued.token).allowed
    assert world.reader.check_token(issued.token).allowed  # now from the cache
    assert world.cached() == 1
    make_change, reason = REFUSING_CHANGES[change]
    uncached = Registry(storage=world.writer._storage, clock=world.clock)
    make_change(world, issued)
    expected = str(uncached.check_token(issued.token).reason)
    assert expected in {reason, "token_unknown"}  # what the rules say, read from storage
    assert world.refused_eventually(issued.token) == expected


def test_a_token_issued_anywhere_is_accepted_at_once(world: _World) -> None:
    warm = world.token()
    world.reader.check_token(warm.token)
    assert not world.reader.check_token("never-issued-token-" + "x" * 30).allowed
    cached = world.cached()
    fresh = world.token("globex")  # no waiting: unknown tokens were not cached
    assert world.reader.check_token(fresh.token).allowed
    assert world.cached() == cached + 1


def test_expiry_is_judged_at_every_check(world: _World) -> None:
    issued = world.token()
    assert world.reader.check_token(issued.token).allowed
    world.clock.advance(timedelta(hours=2))
    assert str(world.reader.check_token(issued.token).reason) == "token_expired"


def test_changes_that_refuse_nothing_keep_the_cache_warm(world: _World) -> None:
    issued = world.token()
    world.reader.check_token(issued.token)
    other = world.writer.register_app(
        "globex",
        name="Other",
        homepage="https://example.org/",
        admin_email="admin@example.org",
        redirect_url="https://example.org/cb",
    )
    world.writer.disable_app(other.app.key)  # another app: this token's entry stays
    world.token("globex")
    assert world.reader.sync_check_cache()
    world.reader.check_token(issued.token)
    assert world.cached() == 1


# -- the model-based test, checks through the cache ---------------------------------------------


class _SplitRegistry:
    """Checks through the cached reader, everything else through the writer."""

    def __init__(self, reader: Registry, writer: Registry) -> None:
        self._reader = reader
        self._writer = writer

    def check_token(self, token: str) -> Any:
        # Only the feed is waited for, never a fixed time: what is left is the cache's own.
        assert self._reader.sync_check_cache(PATIENCE)
        return self._reader.check_token(token)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def _split_machine(pair: Pair, name: str, **kw: Any) -> Any:
    """The model-agreement test case with checks through a cache, changes through another."""

    class Split(RegistryMachine):
        def __init__(self) -> None:
            super().__init__()
            self.registry.close()  # the single Registry the base made: replaced by two
            reader, writer = pair()
            self.registry = cast(
                Registry,
                _SplitRegistry(
                    Registry(storage=reader, clock=self.clock, check_cache=CheckCache()),
                    Registry(storage=writer, clock=self.clock),
                ),
            )

    Split.__name__ = f"RegistryMachine{name}"
    case = Split.TestCase
    case.settings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], **kw)
    case.__doc__ = f"Checks through a cache on {name} agree with the reference model."
    return case


def _memory_pair() -> tuple[Storage, Storage]:
    shared = MemoryStorage()
    return shared, shared


TestCachedMemoryAgreesWithModel = _split_machine(
    _memory_pair, "CachedMemory", max_examples=60, stateful_step_count=30
)

# The machines below make their storage outside any fixture (Hypothesis calls the factory),
# so the folder and the PostgreSQL factory of the running test are kept here.
_current: dict[str, Any] = {}
_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _current_test_places(tmp_path: Path) -> Iterator[None]:
    _current["folder"] = tmp_path
    yield
    _current.clear()


def _sqlite_pair() -> tuple[Storage, Storage]:
    path = _current["folder"] / f"model-{next(_numbers)}.db"
    return SQLiteStorage(path), SQLiteStorage(path)


def _postgres_pair() -> tuple[Storage, Storage]:
    factory = _current["postgres"]
    first = factory()
    return first, factory(schema=first.schema)


TestCachedSQLiteAgreesWithModel = _split_machine(
    _sqlite_pair, "CachedSQLite", max_examples=25, stateful_step_count=25
)


@pytest.mark.postgres
class TestCachedPostgresAgreesWithModel(
    _split_machine(_postgres_pair, "CachedPostgres", max_examples=15, stateful_step_count=25)
):
    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_storage_factory: Any) -> None:
        _current["postgres"] = postgres_storage_factory


# -- another process, and a lost feed -----------------------------------------------------------

_DISABLE_IN_ANOTHER_PROCESS = """
import sys
from appregistry import open_registry
registry = open_registry(sys.argv[1])
registry.disable_app(sys.argv[2])
registry.close()
"""


def _another_process_disables(url: str, key: str) -> None:
    subprocess.run(  # noqa: S603 - our own script, arguments from the test
        [sys.executable, "-c", _DISABLE_IN_ANOTHER_PROCESS, url, key], check=True, timeout=60
    )


def test_a_change_in_another_process_reaches_the_cache_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    world = _World(lambda: (SQLiteStorage(path), SQLiteStorage(path)))
    try:
        issued = world.token()
        assert world.reader.check_token(issued.token).allowed
        _another_process_disables(f"sqlite:///{path}", world.key)
        assert world.refused_eventually(issued.token) == "app_disabled"
    finally:
        world.close()


@pytest.mark.postgres
def test_a_change_in_another_process_reaches_the_cache_on_postgres(
    postgres_storage_factory: Any, postgres_url: str
) -> None:
    first = postgres_storage_factory()
    world = _World(lambda: (first, postgres_storage_factory(schema=first.schema)))
    try:
        issued = world.token()
        assert world.reader.check_token(issued.token).allowed
        separator = "&" if "?" in postgres_url else "?"
        _another_process_disables(f"{postgres_url}{separator}schema={first.schema}", world.key)
        assert world.refused_eventually(issued.token) == "app_disabled"
    finally:
        world.close()


@pytest.mark.postgres
def test_a_lost_listening_connection_empties_the_cache_until_it_is_back(
    postgres_storage_factory: Any, postgres_url: str
) -> None:
    import psycopg

    first = postgres_storage_factory()
    world = _World(lambda: (first, postgres_storage_factory(schema=first.schema)))
    try:
        issued = world.token()
        world.reader.check_token(issued.token)
        assert world.cached() == 1
        channel = "appregistry." + first.schema
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query ILIKE %s AND pid <> pg_backend_pid()",
                (f"%LISTEN%{channel}%",),
            ).fetchone()
        assert killed == (1,)
        # Meanwhile the writer disables the app: with the feed down, a check must read it.
        world.writer.disable_app(world.key)
        assert world.refused_eventually(issued.token) == "app_disabled"
        world.writer.enable_app(world.key)
        # The listener comes back on its own, and the cache fills again.
        assert world.reader.sync_check_cache(PATIENCE)
        assert world.reader.check_token(issued.token).allowed
        assert world.reader.check_token(issued.token).allowed
        assert world.cached() == 1
    finally:
        world.close()


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    storage = MemoryStorage()
    world = _World(lambda: (storage, storage))
    try:
        issued = world.token()
        cache = world.reader._storage.cache  # type: ignore[attr-defined]
        real_read = cache._read

        def read_then_change(*digests: bytes) -> Any:
            context = real_read(*digests)
            world.writer.disable_app(world.key)  # commits after the read, before it is kept
            return context

        cache._read = read_then_change
        assert world.reader.check_token(issued.token).allowed  # what the read saw
        cache._read = real_read
        assert world.cached() == 0
        assert str(world.reader.check_token(issued.token).reason) == "app_disabled"
    finally:
        world.close()


def test_the_age_backstop_and_the_entry_bound(storage_pair: Pair) -> None:
    world = _World(storage_pair, max_age=timedelta(milliseconds=50), max_entries=2)
    try:
        issued = [world.token(account) for account in ("acme", "globex", None)]
        for token in issued:
            assert world.reader.check_token(token.token).allowed
        assert world.cached() == 2  # the oldest went
        cache = world.reader._storage.cache  # type: ignore[attr-defined]
        reads = []
        real_read = cache._read
        cache._read = lambda *d: reads.append(d) or real_read(*d)
        world.reader.check_token(issued[-1].token)
        assert reads == []  # answered from the cache
        time.sleep(0.06)
        world.reader.check_token(issued[-1].token)
        assert len(reads) == 1  # older than max_age: read again
    finally:
        world.close()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        CheckCache(max_entries=0)
    with pytest.raises(ValueError, match="max_age"):
        CheckCache(max_age=timedelta(0))
    with pytest.raises(ValueError, match="poll_interval"):
        CheckCache(poll_interval=timedelta(seconds=-1))


def test_a_storage_without_a_feed_is_refused() -> None:
    class Plain:
        def __init__(self) -> None:
            self._inner = MemoryStorage()

        def transaction(self) -> Any:
            return self._inner.transaction()

        def token_context(self, digest: bytes, *older: bytes) -> Any:
            return self._inner.token_context(digest, *older)

        def close(self) -> None:
            self._inner.close()

    with pytest.raises(TypeError, match="change feed"):
        Registry(storage=cast(Storage, Plain()), check_cache=CheckCache())
    Registry(storage=cast(Storage, Plain())).close()  # without a cache it is fine

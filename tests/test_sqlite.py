"""The SQLite backend: the contract suite on a file, plus what only a real file can show.

Schema versions and foreign files (S4), one query per token check and indexed plans (S3),
threads and processes (S2), crashes mid-write, and the bytes at rest (S6).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.fernet import Fernet

from _support import APP_FIELDS
from appregistry import (
    AppListing,
    AppsPermission,
    Installation,
    Registry,
    SchemaError,
    StorageError,
    StorageUnavailable,
    StoredSecret,
)
from appregistry.ports import ListQuery, Storage
from appregistry.storage import open_storage
from appregistry.storage.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStorage
from appregistry.testing import ManualClock
from appregistry.testing.contract import (
    StorageContents,
    StorageContract,
    StorageFactory,
    StorageReopener,
    make_app,
    make_token,
    new_digest,
)

T0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)


def file_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as they are on disk now."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def pragma(path: Path, name: str) -> Any:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"PRAGMA {name}").fetchall()
    finally:
        connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def open_sqlite(db_path: Path) -> Iterator[Callable[..., SQLiteStorage]]:
    """Opens SQLite storages (on ``db_path`` unless told otherwise), closing them afterwards."""
    opened: list[SQLiteStorage] = []

    def open_(path: Path | str = db_path, **options: Any) -> SQLiteStorage:
        storage = SQLiteStorage(path, **options)
        opened.append(storage)
        return storage

    yield open_
    for storage in opened:
        storage.close()


class TestSQLiteFileContract(StorageContract):
    """A SQLite file honours the whole storage contract, across handles and at rest."""

    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> StorageFactory:
        paths = (tmp_path / f"registry-{n}.db" for n in itertools.count())
        return lambda: SQLiteStorage(next(paths))

    @pytest.fixture
    def storage_reopener(self) -> StorageReopener:
        def reopen(storage: Storage) -> Storage:
            assert isinstance(storage, SQLiteStorage)
            return SQLiteStorage(storage.path)

        return reopen

    @pytest.fixture
    def storage_contents(self) -> StorageContents:
        def contents(storage: Storage) -> bytes:
            assert isinstance(storage, SQLiteStorage)
            return file_bytes(Path(storage.path))

        return contents

    @pytest.fixture
    def race_rounds(self) -> int:
        return 5


class TestSQLiteInMemoryContract(StorageContract):
    """``:memory:`` (one connection, so one operation at a time) honours the contract too."""

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        return lambda: SQLiteStorage(":memory:")


class TestOpenByURL:
    """``sqlite:///`` URLs name a relative path, ``sqlite:////`` an absolute one."""

    def test_relative_path(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        storage = open_storage("sqlite:///sub%20dir.db")
        storage.close()
        assert [tmp_path / "sub dir.db"] == sorted(tmp_path.glob("*.db"))

    def test_absolute_path(self, tmp_path: Path) -> None:
        path = tmp_path / "abs.db"
        storage = open_storage(f"sqlite:///{path}")
        assert isinstance(storage, SQLiteStorage)
        storage.close()
        assert (True, str(path)) == (path.is_absolute() and path.exists(), storage.path)

    def test_memory(self) -> None:
        storage = open_storage("sqlite:///:memory:")
        registry = Registry(storage=storage)
        registry.permit_account("acme", by="admin")
        assert "admin" == getattr(registry.get_permission("acme"), "granted_by", None)
        registry.close()

    @pytest.mark.parametrize(
        "url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "sqlite:///x.db?mode=ro"]
    )
    def test_malformed_urls_are_refused(self, url: str) -> None:
        with pytest.raises(StorageUnavailable, match="expected sqlite:///"):
            open_storage(url)

    def test_missing_directory_names_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "no" / "such" / "dir.db"
        with pytest.raises(StorageUnavailable, match=r"dir\.db") as raised:
            SQLiteStorage(path)
        assert isinstance(raised.value.__cause__, sqlite3.Error)


class TestSchema:
    """S4: the file is marked and versioned; foreign or newer files are refused untouched."""

    def test_a_new_file_is_marked_and_versioned(self, open_sqlite: Any, db_path: Path) -> None:
        open_sqlite()
        assert [(APPLICATION_ID,)] == pragma(db_path, "application_id")
        assert [(SCHEMA_VERSION,)] == pragma(db_path, "user_version")
        assert [("wal",)] == pragma(db_path, "journal_mode")

    def test_reopening_keeps_the_data(self, db_path: Path) -> None:
        clock = ManualClock()
        with Registry(storage=SQLiteStorage(db_path), clock=clock) as registry:
            new = registry.register_app("acme", **APP_FIELDS, trusted=True)
            registry.permit_account("acme", by="admin")
            token = registry.issue_token(new.app.key, new.secret).token
        with Registry(storage=SQLiteStorage(db_path), clock=clock) as registry:
            assert (AppListing(new.app, 0),) == registry.list_apps().items
            assert "allowed" == registry.check_token(token).reason

    def test_an_empty_file_is_adopted(self, open_sqlite: Any, db_path: Path) -> None:
        db_path.touch()
        storage = open_sqlite()
        with storage.transaction() as tx:
            assert 0 == tx.apps.count_owned("acme")
        assert [(SCHEMA_VERSION,)] == pragma(db_path, "user_version")

    def test_an_older_schema_is_migrated_forward(self, open_sqlite: Any, db_path: Path) -> None:
        connection = sqlite3.connect(db_path)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.close()
        storage = open_sqlite()
        app = make_app()
        with storage.transaction() as tx:
            tx.apps.add(app, _stored_secret())
        assert [(SCHEMA_VERSION,)] == pragma(db_path, "user_version")

    def test_a_version_1_file_with_tokens_is_migrated_forward(self, db_path: Path) -> None:
        # The first schema, as released, holding a token of a trusted app: after the migration
        # the token still acts (with no grant family), and the new grants work on the file.
        from appregistry._credentials import Credentials
        from appregistry.storage.sqlite import _MIGRATIONS

        token, micros = "a-token-issued-before-the-oauth-grants", 1_429_523_800_000_000
        connection = sqlite3.connect(db_path)
        for statement in _MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO apps (app_key, owner, name, name_folded, search_text, homepage, "
            "admin_email, redirect_url, created_at, trusted, enabled, secret_digest) "
            "VALUES (?, 'acme', 'MyApp', 'myapp', 'myapp', 'http://example.com/', "
            "'a@example.com', ?, ?, 1, 1, x'00')",
            ("K" * 32, APP_FIELDS["redirect_url"], micros),
        )
        connection.execute("INSERT INTO permissions VALUES ('acme', 'admin', ?)", (micros,))
        connection.execute(
            "INSERT INTO tokens (token_id, digest, app_key, account, grant_type, issued_at, "
            "expires_at, search_text) VALUES ('t1', ?, ?, 'acme', 'client_credentials', ?, ?, '')",
            (Credentials().token_digest(token), "K" * 32, micros, micros + 3_600_000_000),
        )
        connection.commit()
        connection.close()

        with Registry(storage=SQLiteStorage(db_path), clock=ManualClock(T0)) as registry:
            check = registry.check_token(token)
            code = registry.authorize(
                "K" * 32, "acme", redirect_url=APP_FIELDS["redirect_url"], approved_by="alice"
            ).code
            issued = registry.exchange_code("K" * 32, code, redirect_url=APP_FIELDS["redirect_url"])
            rotated = registry.refresh("K" * 32, issued.refresh_token or "")
            reasons = [registry.check_token(t).reason for t in (issued.token, rotated.token)]
        assert check.token is not None
        assert ("allowed", "t1", None) == (
            check.reason,
            check.token.token_id,
            check.token.family_id,
        )
        assert ["allowed", "allowed"] == reasons
        assert [(SCHEMA_VERSION,)] == pragma(db_path, "user_version")

    def test_a_version_3_file_keeps_its_records(self, db_path: Path) -> None:
        # Version 4 rebuilt permissions and installations and added the apps' records that
        # token checks read: every record of a version 3 file reads back as it was stored.
        from appregistry.storage.sqlite import _MIGRATIONS

        app = make_app(owner="acme", description="Ünïcode", trusted=True)
        token = make_token(app.key, "beta", user_agent="agent", family_id="f1")
        installation = Installation(app.key, "beta", "admin", T0, suspended=True)
        permission = AppsPermission("beta", "root", T0 + timedelta(microseconds=7))
        digest = new_digest()
        at = (T0 - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        connection = sqlite3.connect(db_path)
        for migration in _MIGRATIONS[:3]:
            for statement in migration:
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 3")
        connection.execute(
            "INSERT INTO apps (app_key, owner, name, name_folded, search_text, homepage, "
            "admin_email, redirect_url, created_at, description, trusted, enabled, "
            "secret_digest) VALUES (?, ?, ?, '', '', ?, ?, ?, ?, ?, 1, 1, x'00')",
            (
                app.key,
                app.owner,
                app.name,
                app.homepage,
                app.admin_email,
                app.redirect_url,
                at,
                app.description,
            ),
        )
        connection.execute(
            "INSERT INTO installations VALUES (?, 'beta', 'admin', ?, 1)",
            (app.key, at),
        )
        connection.execute("INSERT INTO permissions VALUES ('beta', 'root', ?)", (at + 7,))
        connection.execute(
            "INSERT INTO tokens (token_id, digest, app_key, account, grant_type, issued_at, "
            "expires_at, user_agent, search_text, family_id) "
            "VALUES (?, ?, ?, 'beta', 'authorization_code', ?, ?, 'agent', 'agent', 'f1')",
            (
                token.token_id,
                digest,
                app.key,
                at,
                at + 3_600_000_000,
            ),
        )
        connection.commit()
        connection.close()

        storage = SQLiteStorage(db_path)
        try:
            context = storage.token_context(digest)
            with storage.transaction() as tx:
                found = (tx.apps.get(app.key), tx.installations.get(app.key, "beta"))
        finally:
            storage.close()
        assert (token, app, installation, permission) == (
            getattr(context, "token", None),
            getattr(context, "app", None),
            getattr(context, "installation", None),
            getattr(context, "permission", None),
        )
        assert (app, installation) == found
        assert [(SCHEMA_VERSION,)] == pragma(db_path, "user_version")

    def test_a_newer_schema_is_refused_untouched(self, open_sqlite: Any, db_path: Path) -> None:
        open_sqlite().close()
        connection = sqlite3.connect(db_path)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        connection.close()
        before = file_bytes(db_path)
        with pytest.raises(SchemaError) as raised:
            SQLiteStorage(db_path)
        message = str(raised.value)
        assert [True] * 3 == [
            part in message
            for part in ("registry.db", f"version {SCHEMA_VERSION + 1}", "upgrade appregistry")
        ]
        assert before == file_bytes(db_path)

    def test_another_sqlite_database_is_refused_untouched(self, db_path: Path) -> None:
        connection = sqlite3.connect(db_path)
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
        connection.commit()
        connection.close()
        before = db_path.read_bytes()
        with pytest.raises(SchemaError, match="not an appregistry database"):
            SQLiteStorage(db_path)
        assert before == db_path.read_bytes()
        assert [db_path] == list(db_path.parent.iterdir())

    def test_another_application_is_refused_untouched(self, db_path: Path) -> None:
        connection = sqlite3.connect(db_path)
        connection.execute("PRAGMA application_id = 1234")
        connection.close()
        before = db_path.read_bytes()
        with pytest.raises(SchemaError, match="not an appregistry database"):
            SQLiteStorage(db_path)
        assert before == db_path.read_bytes()

    @pytest.mark.parametrize(
        "content", [b"hello, world\n", bytes(range(256)) * 40], ids=["text", "binary"]
    )
    def test_a_file_that_is_not_sqlite_is_refused_untouched(
        self, db_path: Path, content: bytes
    ) -> None:
        db_path.write_bytes(content)
        with pytest.raises(SchemaError, match="not an SQLite database") as raised:
            SQLiteStorage(db_path)
        assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
        assert content == db_path.read_bytes()
        assert [db_path] == list(db_path.parent.iterdir())


def _stored_secret() -> StoredSecret:
    return StoredSecret(new_digest())


class _TracedStorage(SQLiteStorage):
    """Keeps every SQL statement its connections run, with the values bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.statements: list[str] = []
        super().__init__(*args, **kwargs)

    def _connect(self) -> sqlite3.Connection:
        connection = super()._connect()
        connection.set_trace_callback(self.statements.append)
        return connection


@pytest.fixture
def populated(db_path: Path) -> Iterator[tuple[_TracedStorage, bytes]]:
    """Apps, installations and a few hundred tokens; returns the storage and one digest."""
    storage = _TracedStorage(db_path)
    apps = [make_app(owner=f"owner-{n % 5}", name=f"app {n}") for n in range(50)]
    digest = new_digest()
    with storage.transaction() as tx:
        for app in apps:
            tx.apps.add(app, _stored_secret())
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
        tx.permissions.put(AppsPermission("acme", "admin", T0))
        for n in range(500):
            app = apps[n % len(apps)]
            expires = T0 + timedelta(minutes=n)
            tx.tokens.add(
                make_token(app.key, "acme", expires_at=expires, user_agent=f"agent {n}"),
                digest if n == 0 else new_digest(),
            )
    storage.statements.clear()
    yield storage, digest
    storage.close()


class TestQueries:
    """S3: a token check is one SELECT; checks, counts, lists and purges use indexes."""

    def test_a_token_check_is_one_select(self, populated: tuple[_TracedStorage, bytes]) -> None:
        storage, digest = populated
        context = storage.token_context(digest)
        assert (True, True, True) == (
            context is not None and context.app is not None,
            context is not None and context.installation is not None,
            context is not None and context.permission is not None,
        )
        assert 1 == len(storage.statements)
        assert storage.statements[0].lstrip().startswith("SELECT")

    def test_hot_queries_use_indexes(
        self, populated: tuple[_TracedStorage, bytes], db_path: Path
    ) -> None:
        storage, digest = populated
        context = storage.token_context(digest)
        assert context is not None
        key = context.token.app_key
        with storage.transaction() as tx:
            tx.tokens.count_live(key, "acme", now=T0)
            tx.tokens.list(key, "acme", ListQuery(page=3, per_page=2), now=T0)
            tx.apps.list(ListQuery(), owner="owner-1")
            tx.apps.count_owned("owner-1")
            tx.installations.list("acme", ListQuery(), now=T0)
            tx.tokens.purge_expired(now=T0, limit=10)
            tx.tokens.remove_for(key, "nobody")
            tx.tokens.remove_all_of_app("no-such-app")
            tx.apps.get(key)
        queries = [
            s for s in storage.statements if s.lstrip().startswith(("SELECT", "DELETE", "UPDATE"))
        ]
        connection = sqlite3.connect(db_path)
        try:
            plans = {
                query: [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + query)]
                for query in queries
            }
        finally:
            connection.close()
        # "SCAN e" walks an account's App Management entries, made from index searches.
        scans = {
            q: plan
            for q, plan in plans.items()
            if any(s.startswith("SCAN") and s != "SCAN e" for s in plan)
        }
        assert {} == scans
        # Only an account's installations (a handful) may be sorted outside an index.
        sorts = [q for q, plan in plans.items() if any("TEMP B-TREE" in s for s in plan)]
        assert [] == [q for q in sorts if "FROM installations" not in q]
        assert len(queries) >= 10


class TestErrors:
    """Driver errors surface as StorageError or StorageUnavailable, naming the file."""

    def test_a_locked_database_is_unavailable(self, open_sqlite: Any, db_path: Path) -> None:
        storage = open_sqlite(timeout=0.2)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with (
                pytest.raises(StorageUnavailable, match=r"registry\.db") as raised,
                storage.transaction() as tx,
            ):
                tx.permissions.remove("acme")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)

    def test_checks_read_while_another_process_writes(
        self, open_sqlite: Any, db_path: Path
    ) -> None:
        """WAL: a writer holding the lock does not stop token checks."""
        storage = open_sqlite(timeout=0.2)
        app = make_app()
        token = make_token(app.key)
        digest = new_digest()
        with storage.transaction() as tx:
            tx.apps.add(app, _stored_secret())
            tx.tokens.add(token, digest)
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("DELETE FROM tokens")
        try:
            context = storage.token_context(digest)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert context is not None
        assert token == context.token

    def test_a_busy_pool_is_unavailable(self, open_sqlite: Any) -> None:
        storage = open_sqlite(pool_size=1, timeout=0.2)
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            with storage.transaction():
                entered.set()
                release.wait(timeout=30)

        holder = threading.Thread(target=hold)
        holder.start()
        entered.wait(timeout=30)
        try:
            with pytest.raises(StorageUnavailable, match="connections"):
                storage.token_context(new_digest())
        finally:
            release.set()
            holder.join()

    def test_token_context_inside_a_transaction_is_refused(self, open_sqlite: Any) -> None:
        storage = open_sqlite()
        with storage.transaction(), pytest.raises(StorageError, match="outside"):
            storage.token_context(new_digest())

    def test_a_unit_cannot_be_used_after_its_transaction(self, open_sqlite: Any) -> None:
        storage = open_sqlite()
        with storage.transaction() as tx:
            pass
        with pytest.raises(StorageError, match="ended"):
            tx.permissions.get("acme")

    def test_naive_datetimes_are_refused(self, open_sqlite: Any) -> None:
        storage = open_sqlite()
        naive = datetime(2015, 4, 20, 9, 56, 40)  # noqa: DTZ001 - the point of the test
        with pytest.raises(StorageError, match="aware"), storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", naive))

    def test_memory_mapping_can_be_turned_off(self, open_sqlite: Any) -> None:
        storage = open_sqlite(mmap_size=0)
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
        mapped = [c.execute("PRAGMA mmap_size").fetchone()[0] for c in storage._pool._idle]
        assert [0] == mapped

    def test_bad_options_are_refused(self, db_path: Path) -> None:
        with pytest.raises(ValueError, match="synchronous"):
            SQLiteStorage(db_path, synchronous="OFF")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="pool_size"):
            SQLiteStorage(db_path, pool_size=0)
        with pytest.raises(ValueError, match="mmap_size"):
            SQLiteStorage(db_path, mmap_size=-1)


class TestManyHandles:
    """S2 across handles: two storages on one file serialize their read-modify-writes."""

    def test_two_handles_lose_no_update(self, open_sqlite: Any) -> None:
        handles = [open_sqlite(pool_size=2), open_sqlite(pool_size=2)]
        app = make_app(description="0")
        with handles[0].transaction() as tx:
            tx.apps.add(app, _stored_secret())
        errors: list[BaseException] = []

        def bump(storage: SQLiteStorage) -> None:
            try:
                for _ in range(10):
                    with storage.transaction() as tx:
                        current = tx.apps.get(app.key)
                        assert current is not None
                        count = int(current.description or "0")
                        tx.apps.update(attrs.evolve(current, description=str(count + 1)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(handles[n % 2],)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == errors
        with handles[1].transaction() as tx:
            final = tx.apps.get(app.key)
        assert "60" == getattr(final, "description", None)


class TestPool:
    """Threads share a few connections: each is handed to one thread at a time, and closing
    the storage closes every one of them, even those in use at the time."""

    def test_a_connection_is_never_handed_to_two_threads(self, open_sqlite: Any) -> None:
        storage = open_sqlite(pool_size=2)
        pool = storage._pool
        holders: dict[int, int] = {}
        guard = threading.Lock()
        clashes: list[int] = []

        def use() -> None:
            for _ in range(2000):
                connection = pool.acquire()
                with guard:
                    if id(connection) in holders:
                        clashes.append(id(connection))
                    holders[id(connection)] = threading.get_ident()
                time.sleep(0)  # let another thread run while this one holds it
                with guard:
                    del holders[id(connection)]
                pool.release(connection)

        threads = [threading.Thread(target=use) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == clashes
        assert (True, pool._open) == (pool._open <= 2, len(pool._idle))

    def test_checks_and_writes_share_a_small_pool(self, open_sqlite: Any) -> None:
        storage = open_sqlite(pool_size=2)
        app = make_app()
        tokens = [make_token(app.key) for _ in range(20)]
        digests = [new_digest() for _ in tokens]
        with storage.transaction() as tx:
            tx.apps.add(app, _stored_secret())
            for token, digest in zip(tokens, digests, strict=True):
                tx.tokens.add(token, digest)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(300):
                    if i % 25 == 0:
                        with storage.transaction() as tx:
                            tx.permissions.put(AppsPermission(f"account-{n}", "admin", T0))
                    context = storage.token_context(digests[i % len(digests)])
                    assert context is not None
                    assert tokens[i % len(tokens)] == context.token
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == errors
        with storage.transaction() as tx:
            permitted = [tx.permissions.get(f"account-{n}") is not None for n in range(6)]
        assert [True] * 6 == permitted

    def test_closing_closes_connections_in_use(self, open_sqlite: Any) -> None:
        storage = open_sqlite(pool_size=3)
        pool = storage._pool
        held = [pool.acquire() for _ in range(3)]
        pool.release(held.pop())
        storage.close()
        for connection in held:
            pool.release(connection)
        with pytest.raises(StorageError, match="closed"):
            storage.token_context(new_digest())
        assert (0, []) == (pool._open, pool._idle)


# The child writes until killed. Each batch adds five tokens and records the number of batches
# in the app's description, in one transaction; uninstalling removes an installation with its
# tokens; every third app is removed whole. After any kill, the counts must still agree.
CHILD = """
import secrets, sys
import attrs
from appregistry import Registry
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing.contract import make_token

storage = SQLiteStorage(sys.argv[1], timeout=60)
registry = Registry(storage=storage)
registry.permit_account("acme", by="admin")
fields = dict(name="App", homepage="http://example.com/", admin_email="a@example.com",
              redirect_url="https://example.com/cb")
previous = None
for n in range(1, 10**9):
    new = registry.register_app("dev", **fields)
    key = new.app.key
    registry.install_app(key, "acme", by="user")
    for _ in range(3):
        registry.issue_token(key, new.secret, account="acme", approved_by="user")
    for batch in range(1, 4):
        with storage.transaction() as tx:
            app = tx.apps.get(key)
            for _ in range(5):
                tx.tokens.add(make_token(key, "batch", user_agent="batch"),
                              secrets.token_bytes(32))
            tx.apps.update(attrs.evolve(app, description=f"batches={batch}"))
    if n % 2:
        registry.uninstall_app(key, "acme")
    if n % 3 == 0 and previous is not None:
        registry.remove_app(previous)
    previous = key
    print(n, flush=True)
"""


class TestCrashes:
    """A writer killed with SIGKILL at random points leaves a sound, all-or-nothing file."""

    KILLS = 12

    @pytest.mark.slow
    @pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
    def test_killed_writers_leave_every_operation_whole(self, db_path: Path) -> None:
        SQLiteStorage(db_path).close()
        rng = random.Random(20150420)  # noqa: S311 - only picks when to kill
        for _ in range(self.KILLS):
            child = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                [sys.executable, "-c", CHILD, str(db_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert child.stdout is not None
            first = child.stdout.readline()
            if not first:
                _, err = child.communicate()
                pytest.fail(f"the writer died before its first operation: {err.decode()}")
            time.sleep(rng.uniform(0, 0.15))
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
            assert -signal.SIGKILL == child.returncode

        assert [("ok",)] == pragma(db_path, "integrity_check")
        assert [] == pragma(db_path, "foreign_key_check")
        connection = sqlite3.connect(db_path)
        try:
            batches = connection.execute(
                "SELECT a.description, count(t.token_id) FROM apps AS a "
                "LEFT JOIN tokens AS t ON t.app_key = a.app_key AND t.account = 'batch' "
                "GROUP BY a.app_key"
            ).fetchall()
            orphans = connection.execute(
                "SELECT count(*) FROM tokens AS t WHERE t.account = 'acme' AND NOT EXISTS "
                "(SELECT 1 FROM installations AS i "
                "WHERE i.app_key = t.app_key AND i.account = t.account)"
            ).fetchone()[0]
        finally:
            connection.close()
        assert len(batches) >= self.KILLS // 2
        mismatched = [
            (description, count)
            for description, count in batches
            if count != 5 * int((description or "batches=0").removeprefix("batches="))
        ]
        assert [] == mismatched
        assert 0 == orphans
        with Registry(storage=SQLiteStorage(db_path)) as registry:
            assert len(batches) == registry.list_apps().total


class TestPurgeSettings:
    """A purge tunes its connection (see ``_Session.tune_for_purge``) only while it runs."""

    @staticmethod
    def settings(storage: SQLiteStorage) -> list[tuple[int, int]]:
        pool = storage._pool
        return [
            (
                connection.execute("PRAGMA cache_size").fetchone()[0],
                connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            )
            for connection in pool._idle
        ]

    def _storage_with_expired_tokens(self, open_sqlite: Any, count: int) -> SQLiteStorage:
        storage: SQLiteStorage = open_sqlite()
        app = make_app()
        with storage.transaction() as tx:
            tx.apps.add(app, _stored_secret())
            for _ in range(count):
                tx.tokens.add(make_token(app.key, expires_at=T0), new_digest())
        return storage

    def test_settings_are_restored_after_every_batch(self, open_sqlite: Any) -> None:
        storage = self._storage_with_expired_tokens(open_sqlite, 7)
        before = self.settings(storage)
        registry = Registry(storage=storage, clock=ManualClock(T0 + timedelta(hours=1)))
        assert 2 == registry.purge_expired_tokens(batch_size=2, max_batches=1).total
        assert before == self.settings(storage)
        assert 5 == registry.purge_expired_tokens(batch_size=2).total
        assert before == self.settings(storage)

    def test_settings_are_restored_after_a_rollback(self, open_sqlite: Any) -> None:
        storage = self._storage_with_expired_tokens(open_sqlite, 3)
        before = self.settings(storage)

        def purge_then_fail() -> None:
            with storage.transaction() as tx:
                tx.tokens.purge_expired(now=T0, limit=2)
                raise KeyError("undo")

        with pytest.raises(KeyError):
            purge_then_fail()
        assert before == self.settings(storage)
        with storage.transaction() as tx:
            assert 3 == tx.tokens.purge_expired(now=T0, limit=10)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that takes nothing away, as some hosts' service managers set, for one test."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
class TestFilePermissions:
    """The database file, its write-ahead log and its shared memory are the owner's alone."""

    @pytest.mark.usefixtures("permissive_umask")
    def test_a_new_database_is_0600_with_its_wal_and_shm(self, db_path: Path) -> None:
        storage = SQLiteStorage(db_path)
        try:
            Registry(storage=storage).permit_account("acme", by="admin")
            files = {
                path.name: oct(path.stat().st_mode & 0o777) for path in db_path.parent.iterdir()
            }
        finally:
            storage.close()
        assert {"registry.db": "0o600", "registry.db-wal": "0o600", "registry.db-shm": "0o600"} == (
            files
        )

    @pytest.mark.usefixtures("permissive_umask")
    def test_an_existing_file_keeps_the_mode_its_host_chose(self, db_path: Path) -> None:
        SQLiteStorage(db_path).close()
        db_path.chmod(0o640)
        SQLiteStorage(db_path).close()
        assert 0o640 == db_path.stat().st_mode & 0o777


class TestNothingAtRest:
    """S6: the bytes of the file and its write-ahead log hold no secret and no token."""

    def test_file_and_wal_hold_no_plaintext(self, db_path: Path) -> None:
        storage = SQLiteStorage(db_path)
        registry = Registry(storage=storage, secret_encryption_key=Fernet.generate_key())
        plaintexts: list[str] = []
        keys: list[str] = []
        registry.permit_account("acme", by="admin")
        for n in range(5):
            new = registry.register_app("acme", **APP_FIELDS, trusted=True)
            keys.append(new.app.key)
            plaintexts.append(new.secret)
            plaintexts.extend(
                registry.issue_token(new.app.key, new.secret).token for _ in range(n + 1)
            )
            plaintexts.append(registry.regenerate_secret(new.app.key).secret)
        while_open = file_bytes(db_path)
        registry.close()
        after_close = file_bytes(db_path)
        for contents in (while_open, after_close):
            assert [True] * len(keys) == [key.encode() in contents for key in keys]
            assert [] == [p for p in plaintexts if p.encode() in contents]

"""Transactions and persistence: the storage contract suite's parts on commits and rollbacks."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta

import attrs
import pytest

from ..._records import (
    AccessToken,
    App,
    AppsPermission,
    AuthorizationCode,
    Installation,
    RefreshToken,
    TokenContext,
)
from ...errors import (
    StorageError,
)
from ...ports import Storage, UnitOfWork
from ._support import (
    EVERYTHING,
    HOUR,
    T0,
    StorageFactory,
    StorageFixtures,
    StorageReopener,
    _add_app,
    _add_code,
    _add_refresh,
    _add_token,
    _secret,
    make_app,
    make_code,
    make_refresh,
    make_token,
    new_digest,
    new_key,
)

# -- (c) transactions ------------------------------------------------------------------------


class _Boom(Exception):
    """Raised inside a transaction to make it roll back."""


class _Interrupt(BaseException):
    """Like KeyboardInterrupt: not an Exception, and still a reason to roll back."""


@attrs.frozen
class _World:
    """The committed data a transaction test touches."""

    app: App
    other_key: str
    digest: bytes
    token: AccessToken
    new_digest: bytes


def _snapshot(storage: Storage, world: _World) -> tuple[object, ...]:
    with storage.transaction() as tx:
        reads = (
            tx.apps.get(world.app.key),
            tx.apps.get(world.other_key),
            tx.apps.get_secret(world.app.key),
            tx.apps.list(EVERYTHING),
            tx.apps.count_owned("acme"),
            tx.permissions.get("acme"),
            tx.permissions.get("beta"),
            tx.installations.list("acme", EVERYTHING, now=T0),
            tx.installations.list("beta", EVERYTHING, now=T0),
            tx.tokens.list(world.app.key, "acme", EVERYTHING, now=T0),
            tx.tokens.get(world.token.token_id),
        )
    return (*reads, storage.token_context(world.digest), storage.token_context(world.new_digest))


def _change_everything(tx: UnitOfWork, world: _World) -> None:
    tx.apps.add(make_app(world.other_key, name="New"), _secret())
    tx.apps.update(attrs.evolve(world.app, name="Renamed", enabled=False))
    tx.apps.set_secret(world.app.key, _secret())
    tx.permissions.remove("acme")
    tx.permissions.put(AppsPermission("beta", "root", T0))
    tx.installations.put(Installation(world.app.key, "acme", "admin", T0, suspended=True))
    tx.installations.put(Installation(world.other_key, "beta", "admin", T0))
    tx.tokens.remove([world.token.token_id])
    tx.tokens.add(make_token(world.other_key, "beta"), world.new_digest)
    tx.tokens.add(make_token(world.app.key, "acme"), new_digest())


@attrs.frozen
class _GrantWorld:
    """The committed codes, refresh tokens and apps a grant transaction test touches."""

    app: App
    doomed: App
    code_digest: bytes
    new_code_digest: bytes
    refresh: RefreshToken
    refresh_digest: bytes
    other_refresh_digest: bytes
    new_refresh_digest: bytes
    token_digest: bytes


def _peek_code(storage: Storage, digest: bytes) -> AuthorizationCode | None:
    # Redeeming is the only way to read a code: redeem it in a transaction that is rolled back.
    peeked: list[AuthorizationCode | None] = []
    with suppress(_Boom), storage.transaction() as tx:
        peeked.append(tx.codes.redeem(digest, at=T0, family_id="peek"))
        raise _Boom
    return peeked[0]


def _grant_snapshot(storage: Storage, world: _GrantWorld) -> tuple[object, ...]:
    codes = (_peek_code(storage, world.code_digest), _peek_code(storage, world.new_code_digest))
    with storage.transaction() as tx:
        reads = (
            tx.refresh_tokens.get(world.refresh_digest),
            tx.refresh_tokens.get(world.other_refresh_digest),
            tx.refresh_tokens.get(world.new_refresh_digest),
            tx.tokens.get_by_digest(world.token_digest),
            tx.apps.get(world.doomed.key),
            tx.apps.key_retired(world.doomed.key),
        )
    return (*codes, *reads)


def _change_grants(tx: UnitOfWork, world: _GrantWorld) -> None:
    tx.codes.redeem(world.code_digest, at=T0 + HOUR, family_id="new")
    tx.codes.add(make_code(world.app.key, "beta"), world.new_code_digest)
    tx.refresh_tokens.mark_rotated(world.refresh.token_id, T0 + HOUR)
    tx.refresh_tokens.remove_family("other")
    tx.refresh_tokens.add(make_refresh(world.app.key, family_id="new"), world.new_refresh_digest)
    tx.tokens.remove_family("family")
    tx.apps.remove(world.doomed.key)


def _in_transaction(storage: Storage, change: Callable[[UnitOfWork], object]) -> None:
    with storage.transaction() as tx:
        change(tx)


def _raise_inside(
    storage: Storage, change: Callable[[UnitOfWork], object], error: BaseException
) -> None:
    with storage.transaction() as tx:
        change(tx)
        raise error


class TransactionContract(StorageFixtures):
    """Transactions are all or nothing (S2).

    A block that raises leaves no trace, even of changes to existing rows; nobody ever sees
    a transaction half done.
    """

    @pytest.fixture
    def world(self, storage: Storage) -> _World:
        """An app installed on a permitted account, with one token."""
        app = _add_app(storage)
        token = make_token(app.key, "acme")
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
        digest = _add_token(storage, token)
        return _World(app, new_key(), digest, token, new_digest())

    def test_an_exception_undoes_every_change(self, storage: Storage, world: _World) -> None:
        """Adds, updates and removals on every repository are rolled back; the error passes."""
        before = _snapshot(storage, world)
        boom = _Boom()
        with pytest.raises(_Boom) as raised:
            _raise_inside(storage, lambda tx: _change_everything(tx, world), boom)
        assert boom is raised.value
        assert before == _snapshot(storage, world)

    def test_the_same_changes_commit_without_an_exception(
        self, storage: Storage, world: _World
    ) -> None:
        """The changes the rollback test undoes are real: committed, they show."""
        before = _snapshot(storage, world)
        with storage.transaction() as tx:
            _change_everything(tx, world)
        after = _snapshot(storage, world)
        assert [False] * len(before) == [b == a for b, a in zip(before, after, strict=True)]

    def test_an_exception_undoes_a_purge(self, storage: Storage, world: _World) -> None:
        """Tokens purged in a block that raises are all back, and a later purge finds them."""
        family = make_token(world.app.key, expires_at=T0 + HOUR, family_id="family")
        expired = [
            make_token(world.app.key, expires_at=T0 + HOUR + timedelta(microseconds=micros))
            for micros in (0, 1, 999_999, 1_000_000)
        ]
        digests = [_add_token(storage, token) for token in (family, *expired)]

        def read() -> tuple[object, ...]:
            with storage.transaction() as tx:
                listed = tx.tokens.list(world.app.key, "acme", EVERYTHING, now=T0)
            return (listed, *(storage.token_context(digest) for digest in digests))

        before = read()
        later = T0 + 2 * HOUR
        with pytest.raises(_Boom):
            _raise_inside(storage, lambda tx: tx.tokens.purge_expired(now=later, limit=10), _Boom())
        assert before == read()
        with storage.transaction() as tx:  # the indexes came back too
            assert 1 == tx.tokens.remove_family("family")
            # The expired ones, and the world's token, which has expired by then as well.
            assert len(expired) + 1 == tx.tokens.purge_expired(now=later, limit=10)

    def test_a_base_exception_also_rolls_back(self, storage: Storage, world: _World) -> None:
        """An interrupt (a `BaseException`) inside the block rolls back too."""
        before = _snapshot(storage, world)
        with pytest.raises(_Interrupt):
            _raise_inside(storage, lambda tx: _change_everything(tx, world), _Interrupt())
        assert before == _snapshot(storage, world)

    def test_a_failed_write_rolls_back_the_earlier_ones(
        self, storage: Storage, world: _World
    ) -> None:
        """When a port raises (a taken key), the transaction's earlier writes are undone."""
        before = _snapshot(storage, world)

        def add_a_taken_key(tx: UnitOfWork) -> None:
            tx.permissions.remove("acme")
            tx.apps.add(make_app(world.app.key), _secret())

        with pytest.raises(StorageError):
            _in_transaction(storage, add_a_taken_key)
        assert before == _snapshot(storage, world)

    @pytest.fixture
    def grant_world(self, storage: Storage) -> _GrantWorld:
        """An app with a code, refresh tokens in two families and an access token; another app."""
        app, doomed = _add_app(storage), _add_app(storage)
        refresh = make_refresh(app.key, family_id="family")
        return _GrantWorld(
            app=app,
            doomed=doomed,
            code_digest=_add_code(storage, make_code(app.key)),
            new_code_digest=new_digest(),
            refresh=refresh,
            refresh_digest=_add_refresh(storage, refresh),
            other_refresh_digest=_add_refresh(storage, make_refresh(app.key, family_id="other")),
            new_refresh_digest=new_digest(),
            token_digest=_add_token(storage, make_token(app.key, family_id="family")),
        )

    def test_an_exception_undoes_every_grant_change(
        self, storage: Storage, grant_world: _GrantWorld
    ) -> None:
        """Taken and added codes, rotations, family removals and retired keys roll back."""
        before = _grant_snapshot(storage, grant_world)
        with pytest.raises(_Boom):
            _raise_inside(storage, lambda tx: _change_grants(tx, grant_world), _Boom())
        assert before == _grant_snapshot(storage, grant_world)

    def test_the_same_grant_changes_commit_without_an_exception(
        self, storage: Storage, grant_world: _GrantWorld
    ) -> None:
        """The grant changes the rollback test undoes are real: committed, every one shows."""
        before = _grant_snapshot(storage, grant_world)
        _in_transaction(storage, lambda tx: _change_grants(tx, grant_world))
        after = _grant_snapshot(storage, grant_world)
        assert [False] * len(before) == [b == a for b, a in zip(before, after, strict=True)]

    def test_the_storage_works_after_a_rollback(self, storage: Storage) -> None:
        """A rolled-back transaction leaves the storage ready for the next one."""
        with pytest.raises(_Boom):
            _raise_inside(
                storage, lambda tx: tx.permissions.put(AppsPermission("beta", "root", T0)), _Boom()
            )
        permission = AppsPermission("gamma", "root", T0)
        with storage.transaction() as tx:
            tx.permissions.put(permission)
        with storage.transaction() as tx:
            assert (None, permission) == (tx.permissions.get("beta"), tx.permissions.get("gamma"))

    def test_token_checks_never_see_uncommitted_tokens(
        self, storage: Storage, world: _World
    ) -> None:
        """A check running while a transaction adds a token, later rolled back, finds nothing."""
        digest = new_digest()
        seen: list[TokenContext | None] = []
        checker = threading.Thread(target=lambda: seen.append(storage.token_context(digest)))

        def add_and_check(tx: UnitOfWork) -> None:
            tx.tokens.add(make_token(world.app.key), digest)
            checker.start()
            # Give the check a chance to run inside the transaction's lifetime. A backend may
            # make it wait for the transaction instead; either way it must not see the token.
            checker.join(timeout=0.5)

        with pytest.raises(_Boom):
            _raise_inside(storage, add_and_check, _Boom())
        checker.join()
        assert [None] == seen

    def test_nested_transactions_are_refused(
        self, storage: Storage, refuses_nested_transactions: bool
    ) -> None:
        """A transaction opened inside another on the same thread raises `StorageError`."""
        if not refuses_nested_transactions:
            pytest.skip("the backend does not promise to refuse nested transactions")
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            with pytest.raises(StorageError), storage.transaction():
                pass  # pragma: no cover - never entered

    def test_a_closed_storage_refuses_transactions(self, open_storage: StorageFactory) -> None:
        """After ``close``, a transaction raises `StorageError`; closing again is harmless."""
        storage = open_storage()
        storage.close()
        with pytest.raises(StorageError), storage.transaction():
            pass  # pragma: no cover - never entered
        storage.close()


# -- persistence (capability: storage_reopener) ----------------------------------------------


class PersistenceContract(StorageFixtures):
    """Committed data is seen at once by another handle, and outlives the first handle."""

    def test_committed_data_outlives_the_handle(
        self, open_storage: StorageFactory, reopen: StorageReopener
    ) -> None:
        """Everything committed reads back the same through a new handle."""
        storage = open_storage()
        app = _add_app(storage, make_app(name="Straße", description="kept"))
        token = make_token(app.key, user_agent="agent")
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
        digest = _add_token(storage, token)
        world = _World(app, new_key(), digest, token, new_digest())
        before = _snapshot(storage, world)
        other = reopen(storage)
        storage.close()
        assert before == _snapshot(other, world)

    def test_a_second_handle_sees_commits_at_once(
        self, storage: Storage, reopen: StorageReopener
    ) -> None:
        """A token added, then removed, through one handle is found, then not, by the other."""
        other = reopen(storage)
        app = _add_app(storage)
        token = make_token(app.key)
        digest = _add_token(storage, token)
        assert TokenContext(token, app, None, None) == other.token_context(digest)
        with storage.transaction() as tx:
            tx.tokens.remove([token.token_id])
        assert other.token_context(digest) is None

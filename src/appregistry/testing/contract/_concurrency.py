"""Racing threads serialize: the storage contract suite's part on concurrency."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Final

import attrs
import pytest

from ..._policy import Reason
from ..._records import (
    IssuedToken,
)
from ..._registry import Registry
from ...errors import (
    Denied,
    InvalidGrant,
)
from ...ports import Storage
from .. import ManualClock
from ._registry import _code, _exchange, _register
from ._support import EVERYTHING, StorageFixtures, StorageReopener, _add_app, make_app

# -- concurrency ------------------------------------------------------------------------------

_REVOCATIONS: Final[Mapping[str, Callable[[Registry, str, str], object]]] = {
    "disable": lambda registry, key, _account: registry.disable_app(key),
    "forbid": lambda registry, _key, account: registry.forbid_account(account),
    "suspend": lambda registry, key, account: registry.suspend_installation(key, account),
    "uninstall": lambda registry, key, account: registry.uninstall_app(key, account),
    "remove": lambda registry, key, _account: registry.remove_app(key),
}
# Each worker stops after this many operations begun once the revocation has returned.
_OPS_AFTER: Final = 15
_MAX_OPS: Final = 400
_WARM_TOKENS: Final = 5


def _race(threads: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(n)`` on ``threads`` threads released at once; their results or errors."""
    start = threading.Barrier(threads)
    outcomes: list[object] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        start.wait(timeout=30)
        try:
            outcome = work(n)
        except Exception as exc:  # noqa: BLE001 - the outcome the test looks at
            outcome = exc
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def _live_ids(storage: Storage, key: str, account: str, now: datetime) -> set[str]:
    with storage.transaction() as tx:
        return {t.token_id for t in tx.tokens.list(key, account, EVERYTHING, now=now).items}


class _Race:
    """One round: issuers and checkers run while another thread revokes."""

    def __init__(
        self, writer: Registry, reader: Registry, storage: Storage, clock: ManualClock, n: int
    ) -> None:
        self.writer, self.reader, self.storage, self.clock = writer, reader, storage, clock
        self.account = f"race-{n}-{secrets.token_hex(4)}"
        writer.permit_account(self.account, by="admin")
        self.app = _register(writer, f"owner-{self.account}")
        writer.install_app(self.app.app.key, self.account, by="user")
        self.issued: list[str] = []
        self.violations: list[str] = []
        self.errors: list[BaseException] = []
        self.revoked = threading.Event()
        self.warm = threading.Event()  # enough tokens exist to race on
        self.checked = threading.Event()  # checks have run before the revocation
        self.snapshot: set[str] = set()
        self._lock = threading.Lock()

    def run(self, revocation: str) -> None:
        workers = [
            self._issuer(self.writer),
            self._issuer(self.reader),
            self._checker(self.reader),
            self._checker(self.writer),
        ]
        threads = [threading.Thread(target=self._guard(w)) for w in workers]
        threads.append(threading.Thread(target=self._guard(lambda: self._revoke(revocation))))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _guard(self, work: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost
                self.errors.append(exc)
                self.warm.set()
                self.checked.set()

        return guarded

    def _issuer(self, registry: Registry) -> Callable[[], None]:
        key, secret = self.app.app.key, self.app.secret

        def issue() -> None:
            after = 0
            for _ in range(_MAX_OPS):
                revoked = self.revoked.is_set()
                try:
                    token = registry.issue_token(
                        key, secret, account=self.account, approved_by="alice"
                    )
                except Denied:
                    pass
                else:
                    if revoked:
                        self.violations.append("a token was issued after the revocation")
                    with self._lock:
                        self.issued.append(token.token)
                        if len(self.issued) >= _WARM_TOKENS:
                            self.warm.set()
                after += revoked
                if after >= _OPS_AFTER:
                    return

        return issue

    def _checker(self, registry: Registry) -> Callable[[], None]:
        def check() -> None:
            self.warm.wait(timeout=30)
            after = 0
            for n in range(_MAX_OPS):
                revoked = self.revoked.is_set()
                with self._lock:
                    recent = self.issued[-3:]
                for token in recent:
                    if registry.check_token(token).allowed and revoked:
                        self.violations.append("a token acted after the revocation")
                if n >= _WARM_TOKENS:
                    self.checked.set()
                after += revoked
                if after >= _OPS_AFTER:
                    return

        return check

    def _revoke(self, revocation: str) -> None:
        self.warm.wait(timeout=30)
        self.checked.wait(timeout=30)
        _REVOCATIONS[revocation](self.writer, self.app.app.key, self.account)
        self.revoked.set()
        self.snapshot = _live_ids(self.storage, self.app.app.key, self.account, self.clock())

    def late_tokens(self) -> set[str]:
        """Tokens present now that were not there right after the revocation returned."""
        now = _live_ids(self.storage, self.app.app.key, self.account, self.clock())
        return now - self.snapshot


class ConcurrencyContract(StorageFixtures):
    """S2 under threads: revocations win every race once they return; no update is lost.

    Once a disable, forbid, suspend, uninstall or remove has returned, no check of the
    affected tokens succeeds and no token is issued for them; read-modify-write
    transactions never lose an update.
    """

    @pytest.fixture
    def second_handle(
        self, storage: Storage, storage_reopener: StorageReopener | None
    ) -> Iterator[Storage]:
        """Another handle on the storage's data when the backend can open one, else itself."""
        if storage_reopener is None:
            yield storage
            return
        other = storage_reopener(storage)
        yield other
        other.close()

    @pytest.mark.parametrize("revocation", sorted(_REVOCATIONS))
    def test_nothing_acts_or_is_issued_once_a_revocation_returns(
        self,
        storage: Storage,
        second_handle: Storage,
        clock: ManualClock,
        race_rounds: int,
        revocation: str,
    ) -> None:
        """Racing issuers and checkers never beat a revocation that has returned."""
        writer = Registry(storage=storage, clock=clock)
        reader = Registry(storage=second_handle, clock=clock)
        for n in range(race_rounds):
            race = _Race(writer, reader, storage, clock, n)
            race.run(revocation)
            assert [] == race.errors
            assert [] == race.violations
            assert len(race.issued) >= 1
            assert [False] * len(race.issued) == [
                reader.check_token(token).allowed for token in race.issued
            ]
            assert set() == race.late_tokens()

    def test_a_code_is_exchanged_once_however_many_race(
        self, storage: Storage, second_handle: Storage, clock: ManualClock
    ) -> None:
        """Threads exchanging one code at once: one gets tokens, every other `InvalidGrant`."""
        registries = [Registry(storage=h, clock=clock) for h in (storage, second_handle)]
        new = _register(registries[0], "dev")
        registries[0].permit_account("acme", by="admin")
        code = _code(registries[0], new)
        outcomes = _race(8, lambda n: _exchange(registries[n % 2], new, code))
        assert (1, 7) == (
            sum(isinstance(o, IssuedToken) for o in outcomes),
            sum(isinstance(o, InvalidGrant) for o in outcomes),
        )

    def test_a_refresh_token_rotates_once_however_many_race(
        self, storage: Storage, second_handle: Storage, clock: ManualClock
    ) -> None:
        """Threads refreshing one token at once: one rotates it, the others revoke the family."""
        registries = [Registry(storage=h, clock=clock) for h in (storage, second_handle)]
        new = _register(registries[0], "dev")
        registries[0].permit_account("acme", by="admin")
        issued = _exchange(registries[0], new, _code(registries[0], new))
        refresh_token = issued.refresh_token or ""
        outcomes = _race(8, lambda n: registries[n % 2].refresh(new.app.key, refresh_token))
        winners = [o for o in outcomes if isinstance(o, IssuedToken)]
        assert (1, 7) == (len(winners), sum(isinstance(o, InvalidGrant) for o in outcomes))
        # A loser came after the winner and found the token rotated: the family is gone.
        assert [Reason.TOKEN_UNKNOWN] * 2 == [
            registries[1].check_token(t.token).reason for t in (issued, *winners)
        ]

    def test_read_modify_write_transactions_serialize(self, storage: Storage) -> None:
        """Threads that read a row and write it back, each in a transaction, lose no update."""
        app = _add_app(storage, make_app(description="0"))
        threads_count, rounds = 8, 5

        def bump() -> None:
            for _ in range(rounds):
                with storage.transaction() as tx:
                    current = tx.apps.get(app.key)
                    assert current is not None
                    count = int(current.description or "0")
                    tx.apps.update(attrs.evolve(current, description=str(count + 1)))

        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                bump()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=guarded) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == errors
        with storage.transaction() as tx:
            final = tx.apps.get(app.key)
        assert final is not None
        assert str(threads_count * rounds) == final.description

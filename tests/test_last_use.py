"""The last use of access tokens: recorded once per interval, in batches, and only when allowed.

The state machine checks the bounds `appregistry.LastUse` documents against a model of the
true history of checks, on every backend, with the check cache and without; the tests below
it check what the machine cannot see: failures, threads, the change feed, turning it off.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import TestCase

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from appregistry import CheckCache, LastUse, Registry, ValidationError
from appregistry.ports import Storage
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing import ManualClock

INTERVAL = timedelta(seconds=60)
DELAY = timedelta(seconds=1)
OPTIONS = LastUse(interval=INTERVAL, flush_delay=DELAY)


def _setup(registry: Registry, tokens: int = 1) -> tuple[str, list[Any]]:
    new = registry.register_app(
        "acme",
        name="MyApp",
        homepage="http://example.com/",
        admin_email="admin@example.com",
        redirect_url="https://example.com/cb",
    )
    registry.permit_account("globex", by="provider")
    registry.install_app(new.app.key, "globex", by="alice")
    issued = [
        registry.issue_token(new.app.key, new.secret, account="globex", approved_by="alice")
        for _ in range(tokens)
    ]
    return new.app.key, issued


def _stored(storage: Storage, token_id: str) -> datetime | None:
    with storage.transaction() as tx:
        token = tx.tokens.get(token_id)
    return None if token is None else token.last_used_at


# -- the model -----------------------------------------------------------------------------------


@dataclass
class Truth:
    """What really happened to one token: the times of its allowed checks."""

    allowed: list[datetime] = field(default_factory=list)
    #: Every distinct stored value seen, in order.
    seen: list[datetime] = field(default_factory=list)


class LastUseMachine(RuleBasedStateMachine):
    """Checks, clock moves, suspensions and lists; the stored times always keep the bounds."""

    storage_factory: Callable[[], Storage] = MemoryStorage
    check_cache: CheckCache | None = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.storage = self.storage_factory()
        self.registry = Registry(
            storage=self.storage,
            clock=self.clock,
            last_use=OPTIONS,
            check_cache=self.check_cache,
            token_lifetime=timedelta(minutes=30),
        )
        self.key, self.issued = _setup(self.registry, tokens=3)
        self.truth = {i.record.token_id: Truth() for i in self.issued}
        self.suspended = False
        #: Whether the last step may have written every use at least DELAY old.
        self.flushed_before: datetime | None = None

    def teardown(self) -> None:
        self.registry.close()

    @initialize()
    def start(self) -> None:
        pass

    @rule(which=st.integers(0, 2))
    def check(self, which: int) -> None:
        issued = self.issued[which]
        allowed = self.registry.check_token(issued.token).allowed
        expired = self.clock() >= issued.record.expires_at
        assert allowed == (not self.suspended and not expired)
        if allowed:
            self.truth[issued.record.token_id].allowed.append(self.clock())
            # An allowed check writes the batch once its oldest use is DELAY old.
            self.flushed_before = self.clock() - DELAY
        else:
            self.flushed_before = None

    @rule(seconds=st.sampled_from([0, 0.5, 1, 1.5, 2, 30, 59, 60, 61, 90, 600]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        self.flushed_before = None

    @rule()
    def suspend_or_resume(self) -> None:
        if self.suspended:
            self.registry.resume_installation(self.key, "globex")
        else:
            self.registry.suspend_installation(self.key, "globex")
        self.suspended = not self.suspended
        self.flushed_before = None

    @rule(order=st.sampled_from(["expires", "last_used"]))
    def list_tokens(self, order: str) -> None:
        listed = self.registry.list_tokens(self.key, "globex", order=order, per_page=100)
        # The list writes every pending use first, and shows what it wrote.
        self.flushed_before = self.clock()
        for token in listed.items:
            assert _stored(self.storage, token.token_id) == token.last_used_at

    @invariant()
    def stored_times_keep_their_bounds(self) -> None:
        for token_id, truth in self.truth.items():
            stored = _stored(self.storage, token_id)
            if stored is None:
                assert self.flushed_before is None or not any(
                    t <= self.flushed_before for t in truth.allowed
                )
                continue
            # Never ahead of the true last use, never a refused check: an allowed check's time.
            assert stored in truth.allowed
            if not truth.seen or truth.seen[-1] != stored:
                # Written at most once per interval.
                assert not truth.seen or stored - truth.seen[-1] >= INTERVAL
                truth.seen.append(stored)
            # Within one interval of the last allowed check written out by now.
            written = [t for t in truth.allowed if self.flushed_before and t <= self.flushed_before]
            if written:
                assert written[-1] - stored < INTERVAL


def make_machine(factory: Callable[[], Storage], cache: CheckCache | None = None) -> type[TestCase]:
    machine: Any = type(
        "Machine",
        (LastUseMachine,),
        {"storage_factory": staticmethod(factory), "check_cache": cache},
    )
    case: type[TestCase] = machine.TestCase
    case.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    case.__doc__ = "Stored last uses keep the documented bounds against the true history."
    return case


TestMemory = make_machine(MemoryStorage)
TestMemoryCached = make_machine(MemoryStorage, CheckCache())
TestSQLiteCached = make_machine(lambda: SQLiteStorage(":memory:"), CheckCache())


# -- what the machine does not see -----------------------------------------------------------


class TestLastUse:
    """Last use is on by default, off with ``None``, and never fails or slows a check."""

    def test_default_is_one_minute_and_none_turns_it_off(self) -> None:
        """Without the option a use is recorded; with ``last_use=None`` never."""
        for options, expected in ((LastUse(), True), (None, False)):
            storage = MemoryStorage()
            clock = ManualClock()
            registry = Registry(storage=storage, clock=clock, last_use=options)
            key, (issued,) = _setup(registry)
            assert registry.check_token(issued.token).allowed
            registry.list_tokens(key)  # writes what is pending
            assert expected == (_stored(storage, issued.record.token_id) == clock())
        assert timedelta(minutes=1) == LastUse().interval

    def test_bad_options_are_refused(self) -> None:
        """Intervals must be positive, sizes at least one; an unknown order is refused."""
        for bad in (
            {"interval": timedelta(0)},
            {"flush_delay": timedelta(seconds=-1)},
            {"max_batch": 0},
            {"max_tracked": 0},
        ):
            with pytest.raises(ValueError, match="must be"):
                LastUse(**bad)
        registry = Registry(storage=MemoryStorage())
        key, _ = _setup(registry)
        with pytest.raises(ValidationError) as refused:
            registry.list_tokens(key, "globex", order="newest")
        assert ["order"] == [p.field for p in refused.value.problems]

    def test_a_full_batch_is_written_at_once(self) -> None:
        """``max_batch`` uses are written by the check that fills the batch."""
        storage, clock = MemoryStorage(), ManualClock()
        registry = Registry(
            storage=storage, clock=clock, last_use=LastUse(max_batch=3, flush_delay=DELAY)
        )
        _, issued = _setup(registry, tokens=4)
        for token in issued:
            registry.check_token(token.token)
        assert [clock()] * 3 + [None] == [_stored(storage, t.record.token_id) for t in issued]

    def test_tracking_forgets_the_least_recently_written_first(self) -> None:
        """Past ``max_tracked`` the oldest-written token is forgotten; its stored time decides."""
        storage, clock = MemoryStorage(), ManualClock()
        options = LastUse(interval=INTERVAL, flush_delay=DELAY, max_tracked=2)
        registry = Registry(storage=storage, clock=clock, last_use=options)
        key, issued = _setup(registry, tokens=3)
        first, second, third = (token.record.token_id for token in issued)
        for token in issued:
            registry.check_token(token.token)
        registry.list_tokens(key)  # writes what is pending
        written = clock()
        recorder: Any = registry._last_use  # private, on purpose: the bound itself
        assert [second, third] == list(recorder.due)
        clock.advance(timedelta(seconds=5))
        # Forgotten, the first token's stored time (5 s old) says no write is due yet.
        registry.check_token(issued[0].token)
        registry.list_tokens(key)
        assert [third, first] == list(recorder.due)
        assert [written] * 3 == [_stored(storage, t) for t in (first, second, third)]

    def test_a_failed_write_is_logged_without_tokens_and_the_check_is_allowed(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A batch SQLite refuses is dropped with a warning; the checks are answered."""
        path = tmp_path / "r.db"
        clock = ManualClock()
        registry = Registry(storage=SQLiteStorage(path), clock=clock, last_use=OPTIONS)
        _, issued = _setup(registry, tokens=2)
        with sqlite3.connect(path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE OF last_used_at ON tokens "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        caplog.set_level(logging.WARNING, logger="appregistry.last_use")
        assert registry.check_token(issued[0].token).allowed
        clock.advance(DELAY)
        assert registry.check_token(issued[1].token).allowed  # writes the batch, which fails
        registry.close()
        assert ["WARNING"] == [r.levelname for r in caplog.records]
        message = caplog.records[0].getMessage()
        assert "2 access tokens" in message
        assert all(i.record.token_id not in message and i.token not in message for i in issued)

    def test_threads_checking_at_once_write_each_token(self) -> None:
        """Many threads checking the same tokens while the clock moves: each token ends
        with a last use no later than its last check, and within an interval of it."""
        storage, clock = MemoryStorage(), ManualClock()
        registry = Registry(storage=storage, clock=clock, last_use=OPTIONS)
        _, issued = _setup(registry, tokens=20)
        start = threading.Barrier(8)
        step = timedelta(seconds=20)
        # Token id -> the clock read just after its latest check: no earlier than that check.
        after: dict[str, datetime] = {}
        lock = threading.Lock()

        def work(n: int) -> None:
            start.wait()
            for round_ in range(50):
                for token in issued[n % 3 :: 3]:
                    assert registry.check_token(token.token).allowed
                    seen = clock()
                    with lock:
                        after[token.record.token_id] = max(
                            after.get(token.record.token_id, seen), seen
                        )
                if n == 0 and round_ % 10 == 0:
                    clock.advance(step)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        registry.list_tokens(issued[0].record.app_key)  # writes what is pending
        for token in issued:
            stored = _stored(storage, token.record.token_id)
            latest = after[token.record.token_id]
            assert stored is not None
            # The clock may move between a check and the read after it: one step at most.
            assert stored <= latest
            assert latest - stored < INTERVAL + step

    def test_a_flush_publishes_nothing_on_the_change_feed(self) -> None:
        """Writing last uses refuses no token: the caches are told nothing."""
        storage, clock = MemoryStorage(), ManualClock()
        registry = Registry(storage=storage, clock=clock, check_cache=CheckCache())
        _, (issued,) = _setup(registry)
        delivered: list[object] = []
        subscription = storage.change_feed().subscribe(delivered.append)
        assert registry.check_token(issued.token).allowed
        registry.list_tokens(issued.record.app_key)  # writes the use
        subscription.close()
        assert clock() == _stored(storage, issued.record.token_id)
        assert [[("all",)]] == delivered

    def test_close_writes_the_pending_and_skips_removed_tokens(self, tmp_path: Path) -> None:
        """A token removed while its use waits is skipped; close writes the others."""
        clock = ManualClock()
        registry = Registry(storage=SQLiteStorage(tmp_path / "r.db"), clock=clock)
        _, (gone, kept) = _setup(registry, tokens=2)
        for token in (gone, kept):
            assert registry.check_token(token.token).allowed
        registry.remove_tokens([gone.record.token_id])
        registry.close()
        storage = SQLiteStorage(tmp_path / "r.db")
        assert (None, clock()) == (
            _stored(storage, gone.record.token_id),
            _stored(storage, kept.record.token_id),
        )
        storage.close()

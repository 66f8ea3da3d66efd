"""Rotation of secrets, peppers and encryption keys, and the counting of failed authentications.

On the Registry over in-memory storage with a manual clock; the storage side of the same
features runs on every backend in the contract suite (`RotationContract`), and the schema
migration that adds it is shown here on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from _support import (
    APP_FIELDS,
    DAY,
    HOUR,
    SEED_KEY,
    SEED_SECRET,
    counting_postgres_storage,
    problems_of,
)
from appregistry import (
    AppNotFound,
    AppRegistryError,
    Denied,
    Event,
    EventKind,
    Reason,
    RegisteredApp,
    Registry,
    TokenContext,
)
from appregistry._credentials import Credentials
from appregistry._registry import MAX_SECRET_GRACE, _FailureCounter
from appregistry.oauth2 import make_server
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock

UNKNOWN_KEY = "U" * 32
WRONG_SECRET = "W" * 32


# The clock, recorder, storage, make_registry and registry fixtures are in conftest.py.


def register(registry: Registry, *, trusted: bool = True) -> RegisteredApp:
    new = registry.register_app("acme", trusted=trusted, **APP_FIELDS)
    registry.permit_account("acme", by="admin")
    return new


def authenticates(registry: Registry, key: str, secret: str) -> bool:
    return registry.authenticate_client(key, secret).allowed


# -- secret rotation with a grace window -----------------------------------------------------------


class TestRotateSecret:
    """The new secret works at once, the old one until its deadline, and tokens are kept."""

    def test_both_secrets_work_until_the_deadline_and_tokens_stay(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        old = register(registry)
        token = registry.issue_token(old.app.key, old.secret).token
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + 7 * DAY)

        assert old.app == new.app
        assert [True, True] == [
            authenticates(registry, old.app.key, s) for s in (old.secret, new.secret)
        ]
        assert Reason.ALLOWED == registry.check_token(token).reason
        during = registry.issue_token(old.app.key, old.secret).token
        clock.advance(7 * DAY - timedelta(microseconds=1))
        assert authenticates(registry, old.app.key, old.secret)
        clock.advance(timedelta(microseconds=1))
        assert [False, True] == [
            authenticates(registry, old.app.key, s) for s in (old.secret, new.secret)
        ]
        with pytest.raises(Denied) as denied:
            registry.issue_token(old.app.key, old.secret)
        assert Reason.BAD_CREDENTIALS == denied.value.decision.reason
        # Tokens issued with either secret simply live out their lifetimes.
        assert [Reason.TOKEN_EXPIRED] * 2 == [
            registry.check_token(t).reason for t in (token, during)
        ]

    def test_grants_survive_a_rotation(self, registry: Registry, clock: ManualClock) -> None:
        """Refresh tokens and pending codes are kept, unlike with regenerate_secret."""
        old = register(registry, trusted=False)
        redirect = APP_FIELDS["redirect_url"]
        code = registry.authorize(old.app.key, "acme", redirect_url=redirect, approved_by="al")
        pair = registry.exchange_code(old.app.key, code.code, redirect_url=redirect)
        pending = registry.authorize(old.app.key, "acme", redirect_url=redirect, approved_by="al")
        registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + HOUR)

        assert Reason.ALLOWED == registry.check_token(pair.token).reason
        assert registry.refresh(old.app.key, pair.refresh_token or "").token
        assert registry.exchange_code(old.app.key, pending.code, redirect_url=redirect).token

    def test_the_event_says_until_when(
        self, registry: Registry, clock: ManualClock, recorder: EventRecorder
    ) -> None:
        old = register(registry)
        recorder.clear()
        until = datetime(2015, 4, 21, 12, 0, tzinfo=timezone(timedelta(hours=2)))
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=until)

        assert [
            Event(
                EventKind.APP_SECRET_ROTATED,
                clock(),
                old.app.key,
                "acme",
                {"old_secret_valid_until": "2015-04-21T10:00:00+00:00"},
            )
        ] == recorder.events
        assert all(old.secret not in repr(e) and new.secret not in repr(e) for e in recorder.events)

    def test_a_second_rotation_replaces_the_previous_secret(
        self, registry: Registry, clock: ManualClock, recorder: EventRecorder
    ) -> None:
        first = register(registry)
        second = registry.rotate_secret(first.app.key, old_secret_valid_until=clock() + DAY)
        recorder.clear()
        third = registry.rotate_secret(first.app.key, old_secret_valid_until=clock() + HOUR)

        details = {"old_secret_valid_until": (clock() + HOUR).isoformat()}
        assert [details | {"grace_secret_replaced": True}] == [e.details for e in recorder.events]
        assert [False, True, True] == [
            authenticates(registry, first.app.key, s.secret) for s in (first, second, third)
        ]
        clock.advance(HOUR)
        assert [False, False, True] == [
            authenticates(registry, first.app.key, s.secret) for s in (first, second, third)
        ]

    def test_regenerating_ends_the_grace_window_and_the_tokens(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        """The seeds' regenerate is unchanged: only the newest secret works, no token does."""
        old = register(registry)
        token = registry.issue_token(old.app.key, old.secret).token
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)
        fresh = registry.regenerate_secret(old.app.key)

        assert [False, False, True] == [
            authenticates(registry, old.app.key, s.secret) for s in (old, new, fresh)
        ]
        assert Reason.TOKEN_UNKNOWN == registry.check_token(token).reason

    def test_the_new_secret_can_be_revealed(
        self, make_registry: Callable[..., Registry], clock: ManualClock
    ) -> None:
        registry = make_registry(secret_encryption_key=Fernet.generate_key())
        old = register(registry)
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)

        assert new.secret == registry.reveal_secret(old.app.key)

    @pytest.mark.parametrize(
        ("deadline", "code"),
        [
            (lambda now: now, "not_in_future"),
            (lambda now: now - HOUR, "not_in_future"),
            (lambda now: now + MAX_SECRET_GRACE + timedelta(microseconds=1), "too_far"),
            (lambda now: now.replace(tzinfo=None) + HOUR, "not_aware"),
            (lambda now: "tomorrow", "not_datetime"),
            (lambda now: None, "not_datetime"),
        ],
    )
    def test_a_bad_deadline_is_refused_and_nothing_changes(
        self,
        *,
        registry: Registry,
        clock: ManualClock,
        recorder: EventRecorder,
        storage: MemoryStorage,
        deadline: Callable[[datetime], Any],
        code: str,
    ) -> None:
        old = register(registry)
        with storage.transaction() as tx:
            before = tx.apps.get_secret(old.app.key)
        recorder.clear()

        assert [("old_secret_valid_until", code)] == problems_of(
            lambda: registry.rotate_secret(old.app.key, old_secret_valid_until=deadline(clock()))
        )
        with storage.transaction() as tx:
            assert before == tx.apps.get_secret(old.app.key)
        assert [] == recorder.events

    def test_thirty_days_is_the_longest_grace(self, registry: Registry, clock: ManualClock) -> None:
        old = register(registry)
        registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + MAX_SECRET_GRACE)
        clock.advance(MAX_SECRET_GRACE - timedelta(microseconds=1))

        assert authenticates(registry, old.app.key, old.secret)
        assert timedelta(days=30) == MAX_SECRET_GRACE

    def test_an_unknown_app_is_not_found(self, registry: Registry, clock: ManualClock) -> None:
        with pytest.raises(AppNotFound):
            registry.rotate_secret(UNKNOWN_KEY, old_secret_valid_until=clock() + DAY)

    def test_the_grace_window_is_computed_from_the_registry_clock(
        self, registry: Registry, clock: ManualClock, storage: MemoryStorage
    ) -> None:
        """Storage keeps the deadline; whether it has passed is decided with ``now``."""
        old = register(registry)
        until = clock() + DAY
        registry.rotate_secret(old.app.key, old_secret_valid_until=until)
        with storage.transaction() as tx:
            stored = tx.apps.get_secret(old.app.key)

        assert stored is not None
        assert (until, True, False) == (
            stored.previous_valid_until,
            stored.previous_valid(until - timedelta(microseconds=1)),
            stored.previous_valid(until),
        )


_step = st.one_of(
    st.tuples(st.just("rotate"), st.integers(min_value=1, max_value=30 * 24)),
    st.tuples(st.just("regenerate"), st.just(0)),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=40 * 24)),
)


class TestRotationProperty:
    """Whatever the rotations: the current secret works, the previous one only before its
    deadline, and no older one at all."""

    @settings(max_examples=60, deadline=None)
    @given(steps=st.lists(_step, max_size=12))
    def test_only_current_and_unexpired_previous_authenticate(
        self, steps: list[tuple[str, int]]
    ) -> None:
        clock = ManualClock()
        registry = Registry(storage=MemoryStorage(), clock=clock)
        new = registry.register_app("acme", **APP_FIELDS)
        key, current = new.app.key, new.secret
        previous: tuple[str, datetime] | None = None
        retired: list[str] = []
        for action, hours in steps:
            if action == "rotate":
                until = clock() + timedelta(hours=hours)
                if previous is not None:
                    retired.append(previous[0])
                previous = (current, until)
                current = registry.rotate_secret(key, old_secret_valid_until=until).secret
            elif action == "regenerate":
                retired += [current] + ([previous[0]] if previous is not None else [])
                previous = None
                current = registry.regenerate_secret(key).secret
            else:
                clock.advance(timedelta(hours=hours))
            expected = {current: True} | dict.fromkeys(retired, False)
            if previous is not None:
                expected[previous[0]] = clock() < previous[1]
            assert expected == {s: authenticates(registry, key, s) for s in expected}


# -- pepper rotation -------------------------------------------------------------------------------


class _CountingStorage(MemoryStorage):
    """Memory storage that records the digests of every token check."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[tuple[bytes, ...]] = []

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        self.checks.append((digest, *older))
        return super().token_context(digest, *older)


class TestPepperRotation:
    """What an older pepper digested keeps working while it is configured; new things use
    the newest."""

    def test_old_tokens_work_until_they_expire(
        self, make_registry: Callable[..., Registry], clock: ManualClock
    ) -> None:
        before = make_registry(pepper=b"pepper one")
        new = register(before)
        old_token = before.issue_token(new.app.key, new.secret).token
        clock.advance(HOUR / 2)
        after = make_registry(pepper=[b"pepper two", b"pepper one"])
        new_token = after.issue_token(new.app.key, new.secret).token

        assert [Reason.ALLOWED] * 2 == [after.check_token(t).reason for t in (old_token, new_token)]
        clock.advance(HOUR / 2)
        assert [Reason.TOKEN_EXPIRED, Reason.ALLOWED] == [
            after.check_token(t).reason for t in (old_token, new_token)
        ]
        only_new = make_registry(pepper=b"pepper two")
        assert Reason.ALLOWED == only_new.check_token(new_token).reason

    def test_a_check_is_one_look_up_and_with_one_pepper_takes_one_digest(
        self, clock: ManualClock
    ) -> None:
        storage = _CountingStorage()
        single = Registry(storage=storage, clock=clock, pepper=b"pepper one")
        new = register(single)
        token = single.issue_token(new.app.key, new.secret).token
        rotating = Registry(storage=storage, clock=clock, pepper=[b"pepper two", b"pepper one"])

        single.check_token(token)
        rotating.check_token(token)

        assert [1, 2] == [len(digests) for digests in storage.checks]

    def test_old_secrets_authenticate_and_new_ones_use_the_newest_pepper(
        self, make_registry: Callable[..., Registry]
    ) -> None:
        before = make_registry(pepper=b"pepper one")
        old_app = register(before)
        after = make_registry(pepper=[b"pepper two", b"pepper one"])
        new_app = register(after)

        assert [True, True] == [
            authenticates(after, a.app.key, a.secret) for a in (old_app, new_app)
        ]
        only_new = make_registry(pepper=b"pepper two")
        assert [False, True] == [
            authenticates(only_new, a.app.key, a.secret) for a in (old_app, new_app)
        ]

    def test_tokens_under_an_old_pepper_can_be_revoked(
        self, make_registry: Callable[..., Registry]
    ) -> None:
        before = make_registry(pepper=b"pepper one")
        new = register(before)
        token = before.issue_token(new.app.key, new.secret).token
        after = make_registry(pepper=[b"pepper two", b"pepper one"])

        assert after.revoke(token)
        assert Reason.TOKEN_UNKNOWN == after.check_token(token).reason

    def test_none_stands_for_the_default_pepper(
        self, make_registry: Callable[..., Registry]
    ) -> None:
        """A registry that ran without a pepper moves to one with ``[new, None]``."""
        before = make_registry()
        new = register(before)
        token = before.issue_token(new.app.key, new.secret).token
        after = make_registry(pepper=[b"pepper one", None])

        assert Reason.ALLOWED == after.check_token(token).reason
        assert authenticates(after, new.app.key, new.secret)

    @pytest.mark.parametrize("pepper", [[], [b""], b"", [b"ok", b""]])
    def test_empty_peppers_are_refused(self, storage: MemoryStorage, pepper: Any) -> None:
        with pytest.raises(ValueError, match="pepper"):
            Registry(storage=storage, pepper=pepper)

    def test_peppers_must_be_bytes(self, storage: MemoryStorage) -> None:
        with pytest.raises(TypeError, match="bytes"):
            Registry(storage=storage, pepper=["text pepper"])  # type: ignore[list-item]


# -- encryption-key rotation -----------------------------------------------------------------------


class TestEncryptionKeyRotation:
    """With several keys, newest first, every key decrypts and the newest encrypts."""

    def test_old_secrets_stay_readable_and_new_ones_use_the_newest_key(
        self, make_registry: Callable[..., Registry]
    ) -> None:
        old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
        before = make_registry(secret_encryption_key=old_key)
        old_app = register(before)
        during = make_registry(secret_encryption_key=[new_key, old_key])
        new_app = register(during)

        assert [old_app.secret, new_app.secret] == [
            during.reveal_secret(a.app.key) for a in (old_app, new_app)
        ]
        assert new_app.secret == make_registry(secret_encryption_key=new_key).reveal_secret(
            new_app.app.key
        )

    def test_reencrypting_walks_every_app_in_batches_and_once(
        self,
        make_registry: Callable[..., Registry],
        recorder: EventRecorder,
        clock: ManualClock,
    ) -> None:
        old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
        before = make_registry(secret_encryption_key=old_key)
        apps = [register(before) for _ in range(7)]
        plain = make_registry()
        unencrypted = register(plain)
        during = make_registry(secret_encryption_key=(new_key, old_key))
        recorder.clear()

        assert 7 == during.reencrypt_secrets(batch_size=3)
        # Eight apps in batches of three; the unencrypted one, wherever its key falls, is
        # left alone, and every batch holds an encrypted one.
        assert [(EventKind.SECRETS_REENCRYPTED, clock(), None)] * 3 == [
            (e.kind, e.at, e.app_key) for e in recorder.events
        ]
        assert 7 == sum(cast(int, e.details["count"]) for e in recorder.events)
        assert 0 == during.reencrypt_secrets(batch_size=3)
        after = make_registry(secret_encryption_key=new_key)
        assert [a.secret for a in apps] == [after.reveal_secret(a.app.key) for a in apps]
        assert authenticates(after, unencrypted.app.key, unencrypted.secret)

    def test_an_undecryptable_secret_stops_its_batch_and_names_the_app(
        self, make_registry: Callable[..., Registry], storage: MemoryStorage
    ) -> None:
        old_key, lost_key, new_key = (Fernet.generate_key() for _ in range(3))
        apps = [register(make_registry(secret_encryption_key=old_key)) for _ in range(4)]
        lost = register(make_registry(secret_encryption_key=old_key))
        # A registry with the lost key is refused (ConfigurationError): its ciphertext is
        # written to storage directly, as a key dropped too soon would have left it.
        with storage.transaction() as tx:
            tx.apps.set_secret(
                lost.app.key, Credentials(encryption_key=lost_key).store_secret(lost.secret)
            )
        rotating = make_registry(secret_encryption_key=[new_key, old_key])
        order = sorted(a.app.key for a in (*apps, lost))
        with storage.transaction() as tx:
            before = {key: tx.apps.get_secret(key) for key in order}

        with pytest.raises(AppRegistryError) as caught:
            rotating.reencrypt_secrets(batch_size=1)

        assert repr(lost.app.key) in str(caught.value)
        with storage.transaction() as tx:
            after = {key: tx.apps.get_secret(key) for key in order}
        # Batches of one: those before the lost app's were written, the rest were not.
        at = order.index(lost.app.key)
        assert [True] * at + [False] * (len(order) - at) == [
            before[key] != after[key] for key in order
        ]

    def test_reencrypting_needs_a_key_and_a_positive_batch(
        self, make_registry: Callable[..., Registry]
    ) -> None:
        with pytest.raises(ValueError, match="secret_encryption_key"):
            make_registry().reencrypt_secrets()
        with pytest.raises(ValueError, match="batch_size"):
            make_registry(secret_encryption_key=Fernet.generate_key()).reencrypt_secrets(
                batch_size=0
            )

    @pytest.mark.parametrize("keys", [[], ["not a key"], [Fernet.generate_key(), b"short"]])
    def test_bad_keys_are_refused_without_echoing_them(
        self, storage: MemoryStorage, keys: list[Any]
    ) -> None:
        with pytest.raises(ValueError, match="encryption_key") as caught:
            Registry(storage=storage, secret_encryption_key=keys)
        given = [k.decode() if isinstance(k, bytes) else k for k in keys]
        assert [] == [k for k in given if k in str(caught.value)]

    def test_keys_and_peppers_stay_out_of_reprs_and_logs(
        self,
        make_registry: Callable[..., Registry],
        caplog: pytest.LogCaptureFixture,
        recorder: EventRecorder,
    ) -> None:
        old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
        before = make_registry(secret_encryption_key=old_key, pepper=b"pepper-one-xyz")
        new = register(before)
        during = make_registry(
            secret_encryption_key=[new_key, old_key], pepper=[b"pepper-two-xyz", b"pepper-one-xyz"]
        )
        with caplog.at_level(logging.DEBUG):
            during.reencrypt_secrets()
        shown = repr(during) + caplog.text + repr(recorder.events)
        for value in (old_key, new_key, b"pepper-one-xyz", b"pepper-two-xyz"):
            assert value.decode() not in shown
        assert new.secret not in shown


# -- failed authentication events ------------------------------------------------------------------


class TestAuthenticationFailedEvents:
    """Each failed client authentication is told, with a running count per presented key."""

    def test_unknown_key_and_wrong_secret_are_told_alike(
        self, registry: Registry, recorder: EventRecorder, clock: ManualClock
    ) -> None:
        new = register(registry)
        recorder.clear()
        denials = []
        for key in (new.app.key, UNKNOWN_KEY):
            with pytest.raises(Denied) as denied:
                registry.issue_token(key, WRONG_SECRET)
            denials.append(denied.value.args)

        assert denials[0] == denials[1]
        assert [
            Event(EventKind.AUTHENTICATION_FAILED, clock(), key, None, {"failures": 1})
            for key in (new.app.key, UNKNOWN_KEY)
        ] == recorder.events

    def test_failures_are_counted_per_key_across_entry_points(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        new = register(registry)
        recorder.clear()
        registry.authenticate_client(new.app.key, WRONG_SECRET)
        with pytest.raises(Denied):
            registry.issue_token(new.app.key, WRONG_SECRET)
        registry.authenticate_client(UNKNOWN_KEY, WRONG_SECRET)
        registry.authenticate_client(new.app.key, WRONG_SECRET)

        assert [
            (new.app.key, 1),
            (new.app.key, 2),
            (UNKNOWN_KEY, 1),
            (new.app.key, 3),
        ] == [(e.app_key, e.details["failures"]) for e in recorder.events]

    def test_the_count_restarts_after_the_window(
        self, make_registry: Callable[..., Registry], recorder: EventRecorder, clock: ManualClock
    ) -> None:
        registry = make_registry(failure_window=timedelta(minutes=5))
        for _ in range(2):
            registry.authenticate_client(UNKNOWN_KEY, WRONG_SECRET)
        clock.advance(timedelta(minutes=5) - timedelta(microseconds=1))
        registry.authenticate_client(UNKNOWN_KEY, WRONG_SECRET)
        clock.advance(timedelta(microseconds=1))
        registry.authenticate_client(UNKNOWN_KEY, WRONG_SECRET)

        assert [1, 2, 3, 1] == [e.details["failures"] for e in recorder.events]

    @pytest.mark.parametrize("key", ["short", "K" * 33, "K" * 31 + "!", "K" * 31 + "\x00", 42])
    def test_a_malformed_key_is_not_repeated(
        self, registry: Registry, recorder: EventRecorder, key: Any
    ) -> None:
        registry.authenticate_client(key, WRONG_SECRET)
        registry.authenticate_client(key, WRONG_SECRET)

        assert [(None, 1), (None, 2)] == [
            (e.app_key, e.details["failures"]) for e in recorder.events
        ]

    def test_the_secret_is_never_in_the_event(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        new = register(registry)
        recorder.clear()
        presented = new.secret[:-1] + ("x" if new.secret[-1] != "x" else "y")
        registry.authenticate_client(new.app.key, presented)
        registry.authenticate_client(new.app.key, 12345)  # type: ignore[arg-type]

        assert 2 == len(recorder.events)
        assert all(presented not in repr(e) and new.secret not in repr(e) for e in recorder.events)

    def test_success_and_other_denials_are_not_failures(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        new = register(registry)
        untrusted = register(registry, trusted=False)
        registry.disable_app(new.app.key)
        recorder.clear()
        registry.authenticate_client(new.app.key, new.secret)
        for app in (new, untrusted):
            with pytest.raises(Denied):
                registry.issue_token(app.app.key, app.secret)

        assert [] == recorder.events

    def test_a_grace_secret_is_no_failure(
        self, registry: Registry, recorder: EventRecorder, clock: ManualClock
    ) -> None:
        old = register(registry)
        registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)
        recorder.clear()
        registry.issue_token(old.app.key, old.secret)

        assert [EventKind.TOKEN_ISSUED] == recorder.kinds()

    def test_the_token_endpoint_counts_through_the_registry(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        new = register(registry)
        recorder.clear()
        server = make_server(registry)
        body = f"grant_type=client_credentials&client_id={new.app.key}&client_secret=nothing"
        _, _, status = server.create_token_response(
            "https://example.com/oauth/token.php", "POST", body, {}
        )

        assert 401 == status
        assert [(EventKind.AUTHENTICATION_FAILED, new.app.key, {"failures": 1})] == [
            (e.kind, e.app_key, e.details) for e in recorder.events
        ]

    def test_the_event_comes_after_the_transaction(
        self, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        """A listener may use the registry at once: no transaction is open any more."""
        seen: list[int] = []
        registry: Registry

        def listener(event: Event) -> None:
            seen.append(registry.list_apps().total)

        listeners: Any = (listener,)
        registry = Registry(storage=storage, clock=clock, listeners=listeners)
        for call in (
            lambda: registry.authenticate_client(UNKNOWN_KEY, WRONG_SECRET),
            lambda: registry.issue_token(UNKNOWN_KEY, WRONG_SECRET),
        ):
            with contextlib.suppress(Denied):
                call()

        assert [0, 0] == seen

    def test_the_window_must_be_positive(self, storage: MemoryStorage) -> None:
        with pytest.raises(ValueError, match="failure_window"):
            Registry(storage=storage, failure_window=timedelta(0))


class TestFailureCounter:
    """Counts stay bounded: past ``max_keys``, the key that failed least recently goes."""

    def test_the_least_recent_key_is_forgotten(self) -> None:
        counter = _FailureCounter(timedelta(minutes=15), max_keys=2)
        now = datetime(2015, 4, 20, tzinfo=UTC)
        counts = [
            counter.add("a", now),
            counter.add("b", now),
            counter.add("a", now),  # "b" is now the least recent
            counter.add("c", now),  # forgets "b"
            counter.add("a", now),
            counter.add("b", now),  # starts again; forgets "c"
            counter.add("c", now),
        ]

        assert [1, 1, 2, 1, 3, 1, 1] == counts

    def test_a_clock_that_went_back_opens_a_new_window(self) -> None:
        counter = _FailureCounter(timedelta(minutes=15), max_keys=10)
        now = datetime(2015, 4, 20, tzinfo=UTC)

        assert [1, 2, 1] == [
            counter.add(None, now),
            counter.add(None, now + timedelta(minutes=1)),
            counter.add(None, now - timedelta(minutes=1)),
        ]


# -- SQL backends: one query, indexed batches ------------------------------------------------------


class TestOneQueryWhileRotating:
    """S3 holds with older peppers configured: a token check is still one query."""

    def test_sqlite_checks_with_one_select_over_every_digest(self, tmp_path: Path) -> None:
        from appregistry.storage.sqlite import SQLiteStorage

        statements: list[str] = []

        class Traced(SQLiteStorage):
            def _connect(self) -> sqlite3.Connection:
                connection = super()._connect()
                connection.set_trace_callback(statements.append)
                return connection

        storage = Traced(tmp_path / "traced.sqlite3")
        try:
            clock = ManualClock()
            before = Registry(storage=storage, clock=clock, pepper=b"pepper one")
            new = register(before)
            token = before.issue_token(new.app.key, new.secret).token
            rotating = Registry(storage=storage, clock=clock, pepper=[b"two", b"pepper one"])
            statements.clear()
            assert Reason.ALLOWED == rotating.check_token(token).reason
            assert 1 == len(statements)
            assert "t.digest IN (" in statements[0]
            with storage.transaction() as tx:
                tx.apps.list_secrets(after=None, limit=10)
                tx.apps.list_secrets(after=new.app.key, limit=10)
        finally:
            storage.close()
        queries = [q for q in statements if "previous_secret_valid_until FROM apps" in q]
        connection = sqlite3.connect(tmp_path / "traced.sqlite3")
        try:
            plans = [
                [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + query)]
                for query in queries
            ]
        finally:
            connection.close()
        # Batches walk the primary key's index, in its order: nothing is sorted.
        assert [(True, False)] * 2 == [
            (
                any("USING INDEX" in step for step in plan),
                any("TEMP B-TREE" in step for step in plan),
            )
            for plan in plans
        ]

    def test_postgres_checks_with_one_prepared_query(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        storage, _, executed = counting_postgres_storage(postgres_url, postgres_schema)
        try:
            clock = ManualClock()
            before = Registry(storage=storage, clock=clock, pepper=b"pepper one")
            new = register(before)
            token = before.issue_token(new.app.key, new.secret).token
            rotating = Registry(storage=storage, clock=clock, pepper=[b"two", b"pepper one"])
            executed.clear()
            assert Reason.ALLOWED == rotating.check_token(token).reason
            assert 1 == len(executed)
        finally:
            storage.close()


# -- the schema migration --------------------------------------------------------------------------


class TestMigration:
    """A database made before rotation existed is migrated; its apps rotate at once."""

    def test_a_version_2_sqlite_file_is_migrated(self, tmp_path: Path) -> None:
        from appregistry._credentials import Credentials
        from appregistry.storage.sqlite import _MIGRATIONS, APPLICATION_ID, SQLiteStorage

        path = tmp_path / "v2.sqlite3"
        connection = sqlite3.connect(path)
        for migration in _MIGRATIONS[:2]:
            for statement in migration:
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 2")
        connection.execute(
            "INSERT INTO apps (app_key, owner, name, name_folded, search_text, homepage, "
            "admin_email, redirect_url, created_at, trusted, enabled, secret_digest) "
            "VALUES (?, 'acme', 'MyApp', 'myapp', 'myapp', 'http://example.com/', "
            "'a@example.com', 'https://example.com/cb', 0, 1, 1, ?)",
            (SEED_KEY, Credentials().store_secret(SEED_SECRET).digest),
        )
        connection.commit()
        connection.close()

        with Registry(storage=SQLiteStorage(path), clock=ManualClock()) as registry:
            _rotate_the_migrated_app(registry)
        connection = sqlite3.connect(path)
        try:
            assert [(len(_MIGRATIONS),)] == connection.execute("PRAGMA user_version").fetchall()
        finally:
            connection.close()

    def test_a_version_2_postgres_schema_is_migrated(
        self, postgres_url: str, postgres_schema: str
    ) -> None:
        import psycopg
        from psycopg import sql

        from appregistry._credentials import Credentials
        from appregistry.storage.postgres import _MIGRATIONS, _TABLES, PostgresStorage

        names = {key: sql.Identifier(postgres_schema, table) for key, table in _TABLES.items()}
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
            for script in _MIGRATIONS[:2]:
                admin.execute(sql.SQL(script).format(**names))
            admin.execute(
                sql.SQL(
                    "CREATE TABLE {} (singleton boolean PRIMARY KEY DEFAULT true "
                    "CHECK (singleton), version integer NOT NULL); "
                    "INSERT INTO {} (version) VALUES (2)"
                ).format(names["version"], names["version"])
            )
            admin.execute(
                sql.SQL(
                    "INSERT INTO {} (app_key, owner, name, homepage, admin_email, redirect_url, "
                    "created_at, trusted, enabled, name_folded, search_text, secret_digest) "
                    "VALUES (%s, 'acme', 'MyApp', 'http://example.com/', 'a@example.com', "
                    "'https://example.com/cb', now(), true, true, 'myapp', 'myapp', %s)"
                ).format(names["apps"]),
                (SEED_KEY, Credentials().store_secret(SEED_SECRET).digest),
            )
            storage = PostgresStorage.from_url(postgres_url, schema=postgres_schema, min_size=0)
            try:
                _rotate_the_migrated_app(Registry(storage=storage, clock=ManualClock()))
            finally:
                storage.close()
            version = admin.execute(sql.SQL("SELECT version FROM {}").format(names["version"]))
            assert [(len(_MIGRATIONS),)] == version.fetchall()


def _rotate_the_migrated_app(registry: Registry) -> None:
    """The migrated app has no previous secret; rotated, both secrets work for a day."""
    with registry._storage.transaction() as tx:
        stored = tx.apps.get_secret(SEED_KEY)
    assert stored is not None
    assert (None, None) == (stored.previous_digest, stored.previous_valid_until)
    assert authenticates(registry, SEED_KEY, SEED_SECRET)
    new = registry.rotate_secret(SEED_KEY, old_secret_valid_until=registry._clock() + DAY)
    assert [True, True] == [authenticates(registry, SEED_KEY, s) for s in (SEED_SECRET, new.secret)]

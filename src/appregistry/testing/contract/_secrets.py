"""No plaintext and rotation: the storage contract suite's parts on secrets and tokens."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import attrs
import pytest
from cryptography.fernet import Fernet

from ..._policy import Reason
from ..._records import (
    EventKind,
    Grant,
    ImportedCredentials,
    IssuedToken,
    StoredSecret,
    TokenContext,
)
from ..._registry import Registry
from ...ports import Storage, UnitOfWork
from .. import EventRecorder, ManualClock
from ._registry import VERIFIER, _code, _denial, _exchange, _register
from ._support import (
    DAY,
    HOUR,
    StorageContents,
    StorageFixtures,
    _add_app,
    _add_token,
    make_app,
    make_token,
    new_digest,
    new_key,
)

# -- (d) no plaintext ------------------------------------------------------------------------


class _RecordingRepository:
    """Passes calls to a repository and keeps every argument."""

    def __init__(self, repository: object, received: list[object]) -> None:
        self._repository = repository
        self._received = received

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._repository, name)

        def record(*args: object, **kwargs: object) -> Any:
            self._received.extend(args)
            self._received.extend(kwargs.values())
            return method(*args, **kwargs)

        return record


class _RecordingUnit:
    def __init__(self, unit: UnitOfWork, received: list[object]) -> None:
        self.apps: Any = _RecordingRepository(unit.apps, received)
        self.permissions: Any = _RecordingRepository(unit.permissions, received)
        self.installations: Any = _RecordingRepository(unit.installations, received)
        self.tokens: Any = _RecordingRepository(unit.tokens, received)
        self.codes: Any = _RecordingRepository(unit.codes, received)
        self.refresh_tokens: Any = _RecordingRepository(unit.refresh_tokens, received)
        self.settings: Any = _RecordingRepository(unit.settings, received)


class _RecordingStorage:
    """A storage that passes everything on and keeps every argument the ports receive."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.received: list[object] = []

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        with self._storage.transaction() as tx:
            yield _RecordingUnit(tx, self.received)

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        self.received.extend((digest, *older))
        return self._storage.token_context(digest, *older)

    def close(self) -> None:
        self._storage.close()


def _leaves(value: object) -> Iterator[object]:
    """Every scalar inside ``value``: through attrs records, mappings and collections."""
    if attrs.has(type(value)):
        for field in attrs.fields(cast(Any, type(value))):
            yield from _leaves(getattr(value, field.name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(key)
            yield from _leaves(item)
    elif isinstance(value, Collection) and not isinstance(value, str | bytes | bytearray):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _holds(value: object, plaintext: str) -> bool:
    if isinstance(value, bytes | bytearray):
        return plaintext.encode() in value
    return plaintext in str(value) or plaintext in repr(value)


def _exercise(registry: Registry, clock: ManualClock) -> list[str]:
    """Every operation that handles a secret or a token; returns the plaintexts it saw."""
    trusted = _register(registry, trusted=True)
    imported = ImportedCredentials(new_key(), new_key())
    other = _register(registry, "dev", credentials=imported)
    registry.permit_account("acme", by="admin")
    registry.install_app(other.app.key, "acme", by="user")
    tokens = [
        registry.issue_token(trusted.app.key, trusted.secret, user_agent="agent"),
        registry.issue_token(other.app.key, imported.secret, account="acme", approved_by="alice"),
    ]
    for token in tokens:
        registry.check_token(token.token)
    rotated_secret = registry.rotate_secret(trusted.app.key, old_secret_valid_until=clock() + DAY)
    regenerated = registry.regenerate_secret(other.app.key)
    registry.reveal_secret(other.app.key)
    after = registry.issue_token(
        other.app.key, regenerated.secret, account="acme", approved_by="alice"
    )
    registry.check_token(after.token)
    clock.advance(2 * HOUR)
    registry.check_token(after.token)
    # The OAuth grants, after the regeneration so that their records stay at rest.
    current = attrs.evolve(other, secret=regenerated.secret)
    registry.authenticate_client(other.app.key, regenerated.secret)
    code = _code(registry, current)
    pair = _exchange(registry, current, code, user_agent="agent")
    rotated = registry.refresh(other.app.key, pair.refresh_token or "")
    registry.check_token(rotated.token)
    registry.revoke(pair.token)
    spare = _exchange(registry, current, _code(registry, current))
    registry.revoke(spare.refresh_token or "")
    pending = _code(registry, current)
    grants = [code, pair, rotated, spare, pending]
    return [
        trusted.secret,
        imported.secret,
        rotated_secret.secret,
        regenerated.secret,
        *(t.token for t in tokens),
        after.token,
        VERIFIER,
        *(g for g in grants if isinstance(g, str)),
        *(g.token for g in grants if isinstance(g, IssuedToken)),
        *(g.refresh_token or "" for g in grants if isinstance(g, IssuedToken)),
    ]


class NoPlaintextContract(StorageFixtures):
    """S6: no plaintext secret or token reaches the ports, or rests in the backend.

    The ports receive only digests and ciphertext; where the backend can show its raw
    contents, they hold no secret or token either.
    """

    def test_ports_never_receive_a_plaintext_secret_or_token(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """No argument the ports receive holds any secret or token shown to a caller."""
        recording = _RecordingStorage(storage)
        registry = Registry(
            storage=recording, clock=clock, secret_encryption_key=Fernet.generate_key()
        )
        plaintexts = _exercise(registry, clock)
        leaves = list(_leaves(recording.received))
        leaked = [p for p in plaintexts if any(_holds(leaf, p) for leaf in leaves)]
        assert [] == leaked
        stored_secrets = [v for v in recording.received if isinstance(v, StoredSecret)]
        assert len(stored_secrets) >= 3  # two registrations and a regeneration went through
        assert all(s.ciphertext is not None for s in stored_secrets)

    def test_nothing_at_rest_holds_a_plaintext(
        self,
        storage: Storage,
        clock: ManualClock,
        storage_contents: StorageContents | None,
    ) -> None:
        """The backend's raw contents hold the app keys, but no secret or token."""
        if storage_contents is None:
            pytest.skip("the backend offers no storage_contents")
        registry = Registry(
            storage=storage, clock=clock, secret_encryption_key=Fernet.generate_key()
        )
        plaintexts = _exercise(registry, clock)
        contents = storage_contents(storage)
        keys = [listing.app.key for listing in registry.list_apps().items]
        assert [True] * len(keys) == [key.encode() in contents for key in keys]
        assert [] == [p for p in plaintexts if p.encode() in contents]


# -- (e) rotation -----------------------------------------------------------------------------


def _rotating(storage: Storage, clock: ManualClock, **options: Any) -> Registry:
    """A registry on ``storage`` with the given peppers and encryption keys."""
    return Registry(storage=storage, clock=clock, **options)


class RotationContract(StorageFixtures):
    """Keys, peppers and secrets rotate on this storage without losing what they protect.

    A previous (grace) secret is stored with its deadline and cleared by a plain
    ``set_secret``; ``list_secrets`` walks every app in key order; ``token_context`` finds a
    token under any of its digests (one per pepper); and the Registry's rotations work end
    to end: `Registry.rotate_secret`, pepper sequences, `Registry.reencrypt_secrets`.
    """

    @pytest.fixture
    def events(self) -> EventRecorder:
        """Every event the registry under test emits."""
        return EventRecorder()

    def test_a_previous_secret_round_trips_and_a_plain_set_clears_it(
        self, storage: Storage
    ) -> None:
        """The previous digest and its deadline come back exactly; a plain secret clears them."""
        app = _add_app(storage)
        until = datetime(2015, 4, 27, 11, 56, 40, 123456, tzinfo=timezone(timedelta(hours=2)))
        rotated = StoredSecret(new_digest(), b"cipher", new_digest(), until)
        with storage.transaction() as tx:
            tx.apps.set_secret(app.key, rotated)
        with storage.transaction() as tx:
            assert rotated == tx.apps.get_secret(app.key)
        plain = StoredSecret(new_digest(), None)
        with storage.transaction() as tx:
            tx.apps.set_secret(app.key, plain)
        with storage.transaction() as tx:
            assert plain == tx.apps.get_secret(app.key)
        kept = make_app()
        with storage.transaction() as tx:
            tx.apps.add(kept, rotated)
        with storage.transaction() as tx:
            assert rotated == tx.apps.get_secret(kept.key)

    def test_list_secrets_walks_every_app_in_key_order(self, storage: Storage) -> None:
        """Batches of ``limit`` after the last key seen give every app once, in key order."""
        stored = {}
        for _ in range(5):
            app = make_app()
            stored[app.key] = StoredSecret(new_digest(), secrets.token_bytes(8))
            with storage.transaction() as tx:
                tx.apps.add(app, stored[app.key])
        walked: list[tuple[str, StoredSecret]] = []
        sizes = []
        after = None
        while True:
            with storage.transaction() as tx:
                batch = list(tx.apps.list_secrets(after=after, limit=2))
            sizes.append(len(batch))
            walked += batch
            if len(batch) < 2:
                break
            after = batch[-1][0]
        assert [2, 2, 1] == sizes
        assert sorted(stored.items()) == walked
        with storage.transaction() as tx:
            assert [] == list(tx.apps.list_secrets(after=max(stored), limit=10))

    def test_token_context_finds_a_token_under_any_of_its_digests(self, storage: Storage) -> None:
        """Older digests are tried too; only a digest a token has finds it."""
        app = _add_app(storage)
        token = make_token(app.key, grant=Grant.CLIENT_CREDENTIALS)
        digest = _add_token(storage, token)
        expected = TokenContext(token, app, None, None)
        assert expected == storage.token_context(new_digest(), digest)
        assert expected == storage.token_context(digest, new_digest(), new_digest())
        assert storage.token_context(new_digest(), new_digest(), new_digest()) is None

    def test_a_rotated_secret_keeps_tokens_and_the_old_secret_until_its_deadline(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """Both secrets work until the deadline, tokens stay; a second rotation drops the first."""
        registry = _rotating(storage, clock)
        old = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        token = registry.issue_token(old.app.key, old.secret).token
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)
        assert Reason.ALLOWED == registry.check_token(token).reason
        for secret in (old.secret, new.secret):
            assert Reason.ALLOWED == registry.authenticate_client(old.app.key, secret).reason
            registry.issue_token(old.app.key, secret)
        newest = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)
        assert [Reason.BAD_CREDENTIALS, Reason.ALLOWED, Reason.ALLOWED] == [
            registry.authenticate_client(old.app.key, s).reason
            for s in (old.secret, new.secret, newest.secret)
        ]
        clock.advance(DAY)
        assert [Reason.BAD_CREDENTIALS, Reason.ALLOWED] == [
            registry.authenticate_client(old.app.key, s).reason for s in (new.secret, newest.secret)
        ]
        assert Reason.BAD_CREDENTIALS == _denial(
            lambda: registry.issue_token(old.app.key, new.secret)
        )

    def test_regenerating_ends_the_grace_window(self, storage: Storage, clock: ManualClock) -> None:
        """R8 stays as it was: after a rotation, regenerating leaves only the newest secret."""
        registry = _rotating(storage, clock)
        old = _register(registry)
        new = registry.rotate_secret(old.app.key, old_secret_valid_until=clock() + DAY)
        fresh = registry.regenerate_secret(old.app.key)
        assert [Reason.BAD_CREDENTIALS, Reason.BAD_CREDENTIALS, Reason.ALLOWED] == [
            registry.authenticate_client(old.app.key, s).reason
            for s in (old.secret, new.secret, fresh.secret)
        ]

    def test_an_older_pepper_keeps_what_it_digested_working(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """Tokens, refresh tokens, codes and secrets digested under an older pepper still work."""
        before = _rotating(storage, clock, pepper=b"pepper one")
        new = _register(before, "dev")
        before.permit_account("acme", by="admin")
        issued = _exchange(before, new, _code(before, new))
        pending = _code(before, new)
        after = _rotating(storage, clock, pepper=[b"pepper two", b"pepper one"])
        assert Reason.ALLOWED == after.check_token(issued.token).reason
        assert Reason.ALLOWED == after.authenticate_client(new.app.key, new.secret).reason
        exchanged = _exchange(after, new, pending)
        rotated = after.refresh(new.app.key, issued.refresh_token or "")
        assert after.revoke(exchanged.token)
        assert Reason.TOKEN_UNKNOWN == after.check_token(exchanged.token).reason
        # What the newest pepper digested needs no other; the old tokens need the old pepper.
        only_new = _rotating(storage, clock, pepper=b"pepper two")
        assert [Reason.TOKEN_UNKNOWN, Reason.ALLOWED] == [
            only_new.check_token(t.token).reason for t in (issued, rotated)
        ]
        assert only_new.refresh(new.app.key, rotated.refresh_token or "").token

    def test_reencrypting_moves_every_secret_to_the_newest_key(
        self, storage: Storage, clock: ManualClock, events: EventRecorder
    ) -> None:
        """Every secret is readable with the newest key alone afterwards; a rerun does nothing."""
        old_key, newest_key = Fernet.generate_key(), Fernet.generate_key()
        before = _rotating(storage, clock, secret_encryption_key=old_key)
        apps = [_register(before) for _ in range(5)]
        listeners: Any = (events,)
        during = _rotating(
            storage, clock, secret_encryption_key=[newest_key, old_key], listeners=listeners
        )
        assert 5 == during.reencrypt_secrets(batch_size=2)
        assert [EventKind.SECRETS_REENCRYPTED] * 3 == events.kinds()
        assert 0 == during.reencrypt_secrets(batch_size=2)
        after = _rotating(storage, clock, secret_encryption_key=newest_key)
        assert [a.secret for a in apps] == [after.reveal_secret(a.app.key) for a in apps]

    def test_reencrypting_digests_secrets_again_under_the_newest_pepper(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """With older peppers configured, encrypted secrets move to the newest pepper too."""
        key = Fernet.generate_key()
        before = _rotating(storage, clock, pepper=b"pepper one", secret_encryption_key=key)
        new = _register(before)
        during = _rotating(
            storage, clock, pepper=[b"pepper two", b"pepper one"], secret_encryption_key=key
        )
        assert 1 == during.reencrypt_secrets()
        after = _rotating(storage, clock, pepper=b"pepper two")
        assert Reason.ALLOWED == after.authenticate_client(new.app.key, new.secret).reason

"""Shared parts of the storage contract suite: record factories, helpers and fixtures."""

from __future__ import annotations

import itertools
import secrets
import string
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias

import pytest

from ..._records import (
    AccessToken,
    App,
    AppListing,
    AuthorizationCode,
    Grant,
    RefreshToken,
    StoredSecret,
)
from ...ports import ListQuery, Storage
from .. import ManualClock

#: Returns a fresh, empty storage on every call.
StorageFactory: TypeAlias = Callable[[], Storage]
#: Returns a second handle on the same data as the given storage.
StorageReopener: TypeAlias = Callable[[Storage], Storage]
#: Returns every byte the backend has stored for the given storage.
StorageContents: TypeAlias = Callable[[Storage], bytes]

T0: Final = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
CODE_LIFETIME: Final = timedelta(minutes=10)
#: Wide enough for every list the suite reads whole.
EVERYTHING: Final = ListQuery(page=1, per_page=1000)
_ALNUM: Final = string.ascii_letters + string.digits
_ids = itertools.count()


# -- records ---------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh 32-character app key."""
    return "".join(secrets.choice(_ALNUM) for _ in range(32))


def new_digest() -> bytes:
    """A fresh 32-byte digest, as the Registry would store for a token or secret."""
    return secrets.token_bytes(32)


def make_app(
    key: str | None = None,
    *,
    owner: str = "acme",
    name: str = "MyApp",
    description: str | None = None,
    trusted: bool = False,
    enabled: bool = True,
    created_at: datetime = T0,
) -> App:
    """An app record with plausible, already-validated fields."""
    return App(
        key=key or new_key(),
        owner=owner,
        name=name,
        homepage="http://xn--bcher-kva.example/MyApp",
        admin_email="myapp@example.com",
        redirect_url="https://example.com/MyApp/handler",
        created_at=created_at,
        description=description,
        trusted=trusted,
        enabled=enabled,
    )


def make_token(
    app_key: str,
    account: str = "acme",
    *,
    token_id: str | None = None,
    issued_at: datetime = T0,
    expires_at: datetime | None = None,
    user_agent: str | None = None,
    grant: Grant = Grant.AUTHORIZATION_CODE,
    family_id: str | None = None,
    approved_by: str | None = None,
    last_used_at: datetime | None = None,
) -> AccessToken:
    """A token record; it expires an hour after ``issued_at`` unless told otherwise."""
    return AccessToken(
        token_id=token_id or f"tok-{next(_ids):06d}-{secrets.token_hex(4)}",
        app_key=app_key,
        account=account,
        grant=grant,
        issued_at=issued_at,
        expires_at=expires_at if expires_at is not None else issued_at + HOUR,
        user_agent=user_agent,
        family_id=family_id,
        approved_by=approved_by,
        last_used_at=last_used_at,
    )


def make_code(
    app_key: str,
    account: str = "acme",
    *,
    issued_at: datetime = T0,
    expires_at: datetime | None = None,
    code_challenge: str | None = None,
) -> AuthorizationCode:
    """An authorization code record; it expires ten minutes after ``issued_at`` by default."""
    return AuthorizationCode(
        app_key=app_key,
        account=account,
        redirect_url="https://example.com/MyApp/handler",
        approved_by="alice",
        issued_at=issued_at,
        expires_at=expires_at if expires_at is not None else issued_at + CODE_LIFETIME,
        code_challenge=code_challenge,
        code_challenge_method="S256" if code_challenge is not None else None,
    )


def make_refresh(
    app_key: str,
    account: str = "acme",
    *,
    family_id: str = "family",
    token_id: str | None = None,
    issued_at: datetime = T0,
    expires_at: datetime | None = None,
    rotated_at: datetime | None = None,
    grant: Grant = Grant.AUTHORIZATION_CODE,
    approved_by: str | None = None,
) -> RefreshToken:
    """A refresh token record; it expires thirty days after ``issued_at`` by default."""
    return RefreshToken(
        token_id=token_id or f"ref-{next(_ids):06d}-{secrets.token_hex(4)}",
        family_id=family_id,
        app_key=app_key,
        account=account,
        grant=grant,
        issued_at=issued_at,
        expires_at=expires_at if expires_at is not None else issued_at + 30 * DAY,
        rotated_at=rotated_at,
        approved_by=approved_by,
    )


def _secret() -> StoredSecret:
    return StoredSecret(new_digest(), None)


def _add_app(storage: Storage, app: App | None = None) -> App:
    app = app or make_app()
    with storage.transaction() as tx:
        tx.apps.add(app, _secret())
    return app


def _add_token(storage: Storage, token: AccessToken, digest: bytes | None = None) -> bytes:
    digest = digest or new_digest()
    with storage.transaction() as tx:
        tx.tokens.add(token, digest)
    return digest


def _names(listings: Collection[AppListing]) -> list[str]:
    return [listing.app.name for listing in listings]


def _keys(apps: Collection[App]) -> list[str]:
    return [app.key for app in apps]


def _add_code(storage: Storage, code: AuthorizationCode) -> bytes:
    digest = new_digest()
    with storage.transaction() as tx:
        tx.codes.add(code, digest)
    return digest


def _take(storage: Storage, digest: bytes) -> AuthorizationCode | None:
    """Redeem the code under ``digest`` now; the record as it was before, or ``None``."""
    with storage.transaction() as tx:
        return tx.codes.redeem(digest, at=T0, family_id=f"fam-{next(_ids):06d}")


def _add_refresh(storage: Storage, token: RefreshToken) -> bytes:
    digest = new_digest()
    with storage.transaction() as tx:
        tx.refresh_tokens.add(token, digest)
    return digest


def _get_refresh(storage: Storage, digest: bytes) -> RefreshToken | None:
    with storage.transaction() as tx:
        return tx.refresh_tokens.get(digest)


# -- fixtures --------------------------------------------------------------------------------


class StorageFixtures:
    """The fixtures every part of the suite uses; override ``storage_factory``."""

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        """Override: return a callable that makes a fresh, empty storage on every call."""
        pytest.fail(f"{type(self).__name__} must override the storage_factory fixture")

    @pytest.fixture
    def storage_reopener(self) -> StorageReopener | None:
        """Override to open a second handle on a storage's data (see the module docs)."""
        return None

    @pytest.fixture
    def storage_contents(self) -> StorageContents | None:
        """Override to return a storage's raw stored bytes (see the module docs)."""
        return None

    @pytest.fixture
    def refuses_nested_transactions(self) -> bool:
        """Whether a nested transaction on one thread raises `StorageError`."""
        return True

    @pytest.fixture
    def race_rounds(self) -> int:
        """How many rounds each race test runs."""
        return 3

    @pytest.fixture
    def open_storage(self, storage_factory: StorageFactory) -> Iterator[StorageFactory]:
        """``storage_factory``, with every storage it makes closed after the test."""
        opened: list[Storage] = []

        def factory() -> Storage:
            storage = storage_factory()
            opened.append(storage)
            return storage

        yield factory
        for storage in reversed(opened):
            storage.close()

    @pytest.fixture
    def storage(self, open_storage: StorageFactory) -> Storage:
        """A fresh, empty storage, closed after the test."""
        return open_storage()

    @pytest.fixture
    def reopen(self, storage_reopener: StorageReopener | None) -> Iterator[StorageReopener]:
        """``storage_reopener``, closing what it opens; skips the test when there is none."""
        if storage_reopener is None:
            pytest.skip("the backend offers no storage_reopener")
        opened: list[Storage] = []

        def reopen(storage: Storage) -> Storage:
            other = storage_reopener(storage)
            opened.append(other)
            return other

        yield reopen
        for other in reversed(opened):
            other.close()

    @pytest.fixture
    def clock(self) -> ManualClock:
        """A clock at the seeds' date, moved only by the test."""
        return ManualClock(T0)

"""The storage contract suite (S5): every backend, ours or yours, passes these same tests.

The suite is a set of pytest test classes. To run it on a backend, subclass `StorageContract`
in a test module and override one fixture, ``storage_factory``: a callable that returns a
**fresh, empty** `appregistry.ports.Storage` every time it is called. The suite closes every
storage it opens.

.. code-block:: python

    import itertools
    import pytest
    from appregistry.testing.contract import StorageContract
    from mybackend import MyStorage

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage_factory(self, tmp_path):
            names = (tmp_path / f"db{n}" for n in itertools.count())
            return lambda: MyStorage(next(names))

Capability fixtures describe what a backend can do beyond the core contract; override them
to switch on the tests that need them (the defaults suit an in-process backend):

``storage_reopener`` (default ``None``)
    ``Callable[[Storage], Storage]``: open a second, independent handle on the same data as
    the given storage (the same file, the same database schema). Enables the persistence
    tests, and the race tests then check through a second handle.
``storage_contents`` (default ``None``)
    ``Callable[[Storage], bytes]``: everything the backend has written, as raw bytes (the
    file and its journal, a dump of the tables). Enables the test that no plaintext secret
    or token is at rest.
``refuses_nested_transactions`` (default ``True``)
    Opening a transaction inside another on the same thread raises
    `appregistry.errors.StorageError` instead of deadlocking.
``race_rounds`` (default ``3``)
    How many rounds each race test runs; raise it for a slower, more thorough run.

The parts can also be used alone (``class TestMine(TokenRepositoryContract): ...``): each
needs only the fixtures of `StorageFixtures`.

The suite checks: (a) each port method's documented edge behaviour (`appregistry.ports`),
authorization codes and refresh tokens included; (b) the Registry's rules end to end on the
storage, the OAuth grants included; (c) that a transaction which raises leaves nothing
written; (d) that no plaintext secret, token or code ever reaches the ports; (e) that keys,
peppers and secrets rotate without losing what they protect; and that racing operations
serialize (a code is exchanged once, a refresh token rotated once).

This module needs pytest and Hypothesis (``pip install 'appregistry[testing]'``).
"""

# A test suite states its expectations with assert, as `assert expected == actual`; its
# token ids ("a", "dead") are labels, not credentials.
# ruff: noqa: S101, SIM300, S106

from __future__ import annotations

import itertools
import secrets
import string
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeAlias, cast

import attrs
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._credentials import Credentials, pkce_s256
from .._policy import Reason
from .._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    EventKind,
    Grant,
    ImportedCredentials,
    Installation,
    InstallationListing,
    IssuedToken,
    RefreshToken,
    RegisteredApp,
    StoredSecret,
    TokenContext,
)
from .._registry import Registry
from .._validation import search_text
from ..errors import (
    AppNotFound,
    Denied,
    InvalidGrant,
    StorageError,
    TokenNotFound,
    ValidationError,
)
from ..ports import ListQuery, Storage, UnitOfWork
from . import EventRecorder, ManualClock

__all__ = [
    "AppRepositoryContract",
    "CodeRepositoryContract",
    "ConcurrencyContract",
    "InstallationRepositoryContract",
    "NoPlaintextContract",
    "PermissionRepositoryContract",
    "PersistenceContract",
    "RefreshTokenRepositoryContract",
    "RegistryContract",
    "RotationContract",
    "StorageContents",
    "StorageContract",
    "StorageFactory",
    "StorageFixtures",
    "StorageReopener",
    "TokenContextContract",
    "TokenRepositoryContract",
    "TransactionContract",
]

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


# -- (a) the ports ---------------------------------------------------------------------------


_FOLDING_NAMES: Final = (
    "Straße",
    "STRASSE",
    "strasse",
    "ǅemal",
    "İstanbul",
    "ﬁle",
    "Ωmega",
    "ωmega",
    "éclair",
    "e\u0301clair",
    "Zoë",
    "a",
    "A",
    "日本",
)
_app_names: Final = st.one_of(
    st.sampled_from(_FOLDING_NAMES),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


class AppRepositoryContract(StorageFixtures):
    """Apps are stored exactly; lists follow the folding rules.

    Missing keys are ``None`` or a no-op; lists are ordered by case-folded name then key,
    searched by folded name and description, paged with a total, and count each app's
    installations.
    """

    def test_missing_app_is_none(self, storage: Storage) -> None:
        """``get`` and ``get_secret`` of an unknown key return ``None``."""
        with storage.transaction() as tx:
            assert tx.apps.get(new_key()) is None
            assert tx.apps.get_secret(new_key()) is None

    def test_app_and_secret_round_trip_exactly(self, storage: Storage) -> None:
        """Every field comes back equal, Unicode and microseconds included."""
        created = datetime(2015, 4, 20, 11, 56, 40, 123456, tzinfo=timezone(timedelta(hours=2)))
        app = attrs.evolve(
            make_app(name="Bücher ǅ", description="Line one\nline two ✓", trusted=True),
            image_url="http://example.com/logo.png",
            admin_phone="+40212345678",
            created_at=created,
            enabled=False,
        )
        secret = StoredSecret(new_digest(), b"gAAAAA-ciphertext")
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
        with storage.transaction() as tx:
            assert app == tx.apps.get(app.key)
            assert secret == tx.apps.get_secret(app.key)
            stored = tx.apps.get(app.key)
        assert stored is not None
        assert created == stored.created_at
        assert stored.created_at.utcoffset() is not None

    def test_secret_without_ciphertext_round_trips(self, storage: Storage) -> None:
        """A digest-only secret comes back with ``ciphertext=None``."""
        app = make_app()
        secret = StoredSecret(new_digest())
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            assert secret == tx.apps.get_secret(app.key)

    def test_context_of_a_missing_app_is_none(self, storage: Storage) -> None:
        """``get_context`` of an unknown key is ``None``, with or without an account."""
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("beta", "admin", T0))
        with storage.transaction() as tx:
            assert tx.apps.get_context(new_key(), "beta") is None
            assert tx.apps.get_context(new_key(), None) is None

    def test_context_reads_the_accounts_installation_and_permission(self, storage: Storage) -> None:
        """The app, its secret, and the named account's records: no other account's."""
        app = make_app(owner="acme", trusted=True)
        secret = StoredSecret(new_digest(), b"cipher")
        suspended = Installation(app.key, "beta", "admin", T0, suspended=True)
        permission = AppsPermission("beta", "root", T0 + timedelta(microseconds=7))
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            tx.installations.put(suspended)
            tx.permissions.put(permission)
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            other = make_app(owner="beta")
            tx.apps.add(other, _secret())
            tx.installations.put(Installation(other.key, "beta", "admin", T0))
        with storage.transaction() as tx:
            found = tx.apps.get_context(app.key, "beta")
        assert AppContext(app, secret, "beta", suspended, permission) == found

    def test_context_without_an_account_is_the_owners(self, storage: Storage) -> None:
        """With ``account=None`` the context is the owner's: client credentials act for it."""
        app = make_app(owner="acme", trusted=True)
        installation = Installation(app.key, "acme", "admin", T0)
        permission = AppsPermission("acme", "admin", T0)
        secret = _secret()
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
            tx.installations.put(installation)
            tx.permissions.put(permission)
            tx.permissions.put(AppsPermission("beta", "admin", T0))
        with storage.transaction() as tx:
            assert AppContext(app, secret, "acme", installation, permission) == (
                tx.apps.get_context(app.key, None)
            )

    def test_context_of_an_account_with_nothing_has_no_records(self, storage: Storage) -> None:
        """An account without installation or permission gets ``None`` for both."""
        app = _add_app(storage)
        with storage.transaction() as tx:
            found = tx.apps.get_context(app.key, "nobody")
            secret = tx.apps.get_secret(app.key)
        assert secret is not None
        assert AppContext(app, secret, "nobody", None, None) == found

    def test_adding_a_taken_key_raises(self, storage: Storage) -> None:
        """A second app with the same key raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.apps.add(make_app(app.key, name="Other"), _secret())
        with storage.transaction() as tx:
            assert app == tx.apps.get(app.key)

    def test_update_replaces_the_app(self, storage: Storage) -> None:
        """``update`` stores the new record whole; the secret is untouched."""
        app = make_app()
        secret = _secret()
        with storage.transaction() as tx:
            tx.apps.add(app, secret)
        changed = attrs.evolve(app, name="Renamed", description="new", enabled=False)
        with storage.transaction() as tx:
            tx.apps.update(changed)
        with storage.transaction() as tx:
            assert changed == tx.apps.get(app.key)
            assert secret == tx.apps.get_secret(app.key)

    def test_update_of_a_missing_app_is_a_no_op(self, storage: Storage) -> None:
        """``update`` with an unknown key stores nothing and does not raise."""
        ghost = make_app()
        with storage.transaction() as tx:
            tx.apps.update(ghost)
        with storage.transaction() as tx:
            assert tx.apps.get(ghost.key) is None
            assert 0 == tx.apps.list(EVERYTHING).total

    def test_set_secret_replaces_and_ignores_missing_apps(self, storage: Storage) -> None:
        """``set_secret`` replaces the stored secret; for an unknown key it does nothing."""
        app = _add_app(storage)
        replacement = StoredSecret(new_digest(), b"cipher")
        ghost = new_key()
        with storage.transaction() as tx:
            tx.apps.set_secret(app.key, replacement)
            tx.apps.set_secret(ghost, _secret())
        with storage.transaction() as tx:
            assert replacement == tx.apps.get_secret(app.key)
            assert tx.apps.get_secret(ghost) is None

    def test_remove_deletes_app_and_secret(self, storage: Storage) -> None:
        """``remove`` deletes the app and its secret; an unknown key is a no-op."""
        app = _add_app(storage)
        kept = _add_app(storage)
        with storage.transaction() as tx:
            tx.apps.remove(app.key)
            tx.apps.remove(new_key())
        with storage.transaction() as tx:
            assert tx.apps.get(app.key) is None
            assert tx.apps.get_secret(app.key) is None
            assert kept == tx.apps.get(kept.key)

    def test_remove_retires_the_key(self, storage: Storage) -> None:
        """R13: a removed app's key is retired for good; live and unknown keys are not."""
        app, kept = _add_app(storage), _add_app(storage)
        unknown = new_key()
        with storage.transaction() as tx:
            assert [False, False, False] == [
                tx.apps.key_retired(k) for k in (app.key, kept.key, unknown)
            ]
            tx.apps.remove(app.key)
            tx.apps.remove(unknown)  # no app, so nothing to retire
        with storage.transaction() as tx:
            assert [True, False, False] == [
                tx.apps.key_retired(k) for k in (app.key, kept.key, unknown)
            ]

    def test_count_owned(self, storage: Storage) -> None:
        """``count_owned`` counts the owner's apps, following adds, owner changes and removals."""
        first = _add_app(storage, make_app(owner="acme"))
        _add_app(storage, make_app(owner="acme"))
        _add_app(storage, make_app(owner="other"))
        with storage.transaction() as tx:
            assert 2 == tx.apps.count_owned("acme")
            assert 0 == tx.apps.count_owned("nobody")
            tx.apps.update(attrs.evolve(first, owner="other"))
        with storage.transaction() as tx:
            assert 1 == tx.apps.count_owned("acme")
            assert 2 == tx.apps.count_owned("other")
            tx.apps.remove(first.key)
            assert 1 == tx.apps.count_owned("other")

    def test_list_orders_by_folded_name_then_key(self, storage: Storage) -> None:
        """Order is ``name.casefold()``, then key; equal folded names tie-break on the key."""
        apps = [make_app(name=name) for name in ("beta", "Alpha", "alpha", "ALPHA", "Straße")]
        apps.append(make_app(name="STRASSE"))
        for app in apps:
            _add_app(storage, app)
        expected = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        with storage.transaction() as tx:
            page = tx.apps.list(EVERYTHING)
        assert _keys(expected) == [listing.app.key for listing in page.items]
        assert len(apps) == page.total

    def test_list_filters_by_owner(self, storage: Storage) -> None:
        """With ``owner``, only that owner's apps are listed and counted."""
        mine = [_add_app(storage, make_app(owner="acme", name=n)) for n in ("b", "a")]
        _add_app(storage, make_app(owner="other", name="c"))
        with storage.transaction() as tx:
            page = tx.apps.list(EVERYTHING, owner="acme")
            assert ["a", "b"] == _names(page.items)
            assert len(mine) == page.total
            assert 0 == tx.apps.list(EVERYTHING, owner="nobody").total

    def test_list_search_matches_folded_name_and_description(self, storage: Storage) -> None:
        """Search is a substring of `search_text` (NFKC case-folded) of name and description."""
        _add_app(storage, make_app(name="Straße Maps"))
        _add_app(storage, make_app(name="Plain", description="The ﬁle helper"))
        _add_app(storage, make_app(name="Other", description="100% off_sale"))
        cases = {
            "strasse": ["Straße Maps"],
            "file": ["Plain"],
            "maps": ["Straße Maps"],
            "%": ["Other"],
            "_": ["Other"],
            "nothing": [],
        }
        with storage.transaction() as tx:
            found = {
                needle: _names(tx.apps.list(ListQuery(search=needle)).items) for needle in cases
            }
        assert cases == found

    def test_list_pages_with_a_total(self, storage: Storage) -> None:
        """Pages slice the ordered list; ``total`` counts every match, past the end too."""
        for n in range(25):
            _add_app(storage, make_app(name=f"app {n:02d}"))
        with storage.transaction() as tx:
            third = tx.apps.list(ListQuery(page=3, per_page=10))
            beyond = tx.apps.list(ListQuery(page=4, per_page=10))
            searched = tx.apps.list(ListQuery(page=2, per_page=3, search="app 1"))
        assert ([f"app {n}" for n in range(20, 25)], 25, 3) == (
            _names(third.items),
            third.total,
            third.page,
        )
        assert ((), 25) == (beyond.items, beyond.total)
        assert (["app 13", "app 14", "app 15"], 10) == (_names(searched.items), searched.total)

    def test_list_counts_instances(self, storage: Storage) -> None:
        """Each listed app carries the number of accounts that installed it."""
        popular, unused = (
            _add_app(storage, make_app(name="a")),
            _add_app(storage, make_app(name="b")),
        )
        with storage.transaction() as tx:
            for account in ("acme", "beta", "gamma"):
                tx.installations.put(Installation(popular.key, account, "admin", T0))
        with storage.transaction() as tx:
            listed = tx.apps.list(EVERYTHING)
        assert (AppListing(popular, 3), AppListing(unused, 0)) == listed.items

    def test_update_moves_the_app_in_order_and_search(self, storage: Storage) -> None:
        """A renamed app is listed and found under its new name only."""
        app = _add_app(storage, make_app(name="Zeta"))
        _add_app(storage, make_app(name="Middle"))
        with storage.transaction() as tx:
            tx.apps.update(attrs.evolve(app, name="Alpha"))
        with storage.transaction() as tx:
            assert ["Alpha", "Middle"] == _names(tx.apps.list(EVERYTHING).items)
            assert 0 == tx.apps.list(ListQuery(search="zeta")).total
            assert 1 == tx.apps.list(ListQuery(search="alpha")).total

    @settings(
        max_examples=25,
        deadline=None,
        # One storage serves every example; each example lists only its own owner's apps.
        # Every backend's subclass runs this same method: the property does not depend on it.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        names=st.lists(st.tuples(_app_names, st.none() | _app_names), min_size=1, max_size=6),
        data=st.data(),
    )
    def test_order_and_search_follow_the_folding_rules(
        self, storage: Storage, names: list[tuple[str, str | None]], data: st.DataObject
    ) -> None:
        """For any Unicode names, order and search agree with the rules that memory follows."""
        owner = f"prop-{secrets.token_hex(8)}"
        apps = [make_app(owner=owner, name=name, description=desc) for name, desc in names]
        with storage.transaction() as tx:
            for app in apps:
                tx.apps.add(app, _secret())
        texts = [search_text(app.name, app.description) for app in apps]
        needle = data.draw(
            st.one_of(
                st.sampled_from(texts).flatmap(
                    lambda text: st.tuples(
                        st.integers(0, len(text) - 1), st.integers(1, len(text))
                    ).map(lambda span: text[span[0] : max(span[0] + 1, span[1])])
                ),
                _app_names.map(search_text),
            )
        )
        ordered = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        expected = [app.key for app in ordered if needle in search_text(app.name, app.description)]
        with storage.transaction() as tx:
            listed = tx.apps.list(EVERYTHING, owner=owner)
            found = tx.apps.list(ListQuery(per_page=1000, search=needle), owner=owner)
        assert _keys(ordered) == [listing.app.key for listing in listed.items]
        assert expected == [listing.app.key for listing in found.items]
        assert len(expected) == found.total


class PermissionRepositoryContract(StorageFixtures):
    """Apps permissions: one per account, replaced by ``put``; missing ones are ``None``."""

    def test_missing_permission_is_none(self, storage: Storage) -> None:
        """An account without a permission has ``None``."""
        with storage.transaction() as tx:
            assert tx.permissions.get("acme") is None

    def test_put_stores_and_replaces(self, storage: Storage) -> None:
        """``put`` stores the permission; a second ``put`` replaces it."""
        first = AppsPermission("acme", "admin", T0)
        second = AppsPermission("acme", "root", T0 + timedelta(microseconds=7))
        with storage.transaction() as tx:
            tx.permissions.put(first)
        with storage.transaction() as tx:
            assert first == tx.permissions.get("acme")
            tx.permissions.put(second)
        with storage.transaction() as tx:
            assert second == tx.permissions.get("acme")

    def test_remove_withdraws_and_ignores_missing(self, storage: Storage) -> None:
        """``remove`` withdraws only that account's permission; a missing one is a no-op."""
        kept = AppsPermission("beta", "admin", T0)
        with storage.transaction() as tx:
            tx.permissions.put(AppsPermission("acme", "admin", T0))
            tx.permissions.put(kept)
        with storage.transaction() as tx:
            tx.permissions.remove("acme")
            tx.permissions.remove("nobody")
        with storage.transaction() as tx:
            assert tx.permissions.get("acme") is None
            assert kept == tx.permissions.get("beta")


class InstallationRepositoryContract(StorageFixtures):
    """Installations: one per app and account, listed with live Access Tokens counts.

    Lists show an account's apps ordered like the app list and searched by app name and
    description.
    """

    def test_missing_installation_is_none(self, storage: Storage) -> None:
        """An app not installed on the account has ``None``."""
        app = _add_app(storage)
        with storage.transaction() as tx:
            assert tx.installations.get(app.key, "acme") is None

    def test_put_stores_and_replaces(self, storage: Storage) -> None:
        """``put`` stores the installation; a second ``put`` replaces it (e.g. suspends it)."""
        app = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0 + timedelta(microseconds=1))
        with storage.transaction() as tx:
            tx.installations.put(installation)
        suspended = attrs.evolve(installation, suspended=True)
        with storage.transaction() as tx:
            assert installation == tx.installations.get(app.key, "acme")
            tx.installations.put(suspended)
        with storage.transaction() as tx:
            assert suspended == tx.installations.get(app.key, "acme")

    def test_remove_one_and_ignore_missing(self, storage: Storage) -> None:
        """``remove`` deletes one installation; a missing one is a no-op."""
        app = _add_app(storage)
        kept = Installation(app.key, "beta", "admin", T0)
        with storage.transaction() as tx:
            tx.installations.put(Installation(app.key, "acme", "admin", T0))
            tx.installations.put(kept)
        with storage.transaction() as tx:
            tx.installations.remove(app.key, "acme")
            tx.installations.remove(app.key, "nobody")
        with storage.transaction() as tx:
            assert tx.installations.get(app.key, "acme") is None
            assert kept == tx.installations.get(app.key, "beta")

    def test_remove_all_of_app_counts_and_spares_other_apps(self, storage: Storage) -> None:
        """``remove_all_of_app`` removes that app's installations and says how many."""
        app, other = _add_app(storage), _add_app(storage)
        kept = Installation(other.key, "acme", "admin", T0)
        with storage.transaction() as tx:
            for account in ("acme", "beta"):
                tx.installations.put(Installation(app.key, account, "admin", T0))
            tx.installations.put(kept)
        with storage.transaction() as tx:
            assert 2 == tx.installations.remove_all_of_app(app.key)
            assert 0 == tx.installations.remove_all_of_app(app.key)
        with storage.transaction() as tx:
            assert kept == tx.installations.get(other.key, "acme")

    def test_list_shows_the_accounts_apps_in_order_with_live_counts(self, storage: Storage) -> None:
        """Only the account's installations, by folded app name then key, counting live tokens."""
        apps = [_add_app(storage, make_app(name=n)) for n in ("beta", "Alpha", "alpha")]
        elsewhere = _add_app(storage, make_app(name="aaa"))
        now = T0 + timedelta(minutes=30)
        installations = {app.key: Installation(app.key, "acme", "admin", T0) for app in apps}
        with storage.transaction() as tx:
            for installation in installations.values():
                tx.installations.put(installation)
            tx.installations.put(Installation(elsewhere.key, "beta", "admin", T0))
            tx.tokens.add(make_token(apps[0].key, "acme"), new_digest())
            tx.tokens.add(make_token(apps[0].key, "acme"), new_digest())
            expired = make_token(apps[0].key, "acme", expires_at=now)
            tx.tokens.add(expired, new_digest())
            tx.tokens.add(make_token(apps[0].key, "beta"), new_digest())
        ordered = sorted(apps, key=lambda a: (a.name.casefold(), a.key))
        counts = {apps[0].key: 2}
        expected = tuple(
            InstallationListing(installations[app.key], app, counts.get(app.key, 0))
            for app in ordered
        )
        with storage.transaction() as tx:
            page = tx.installations.list("acme", EVERYTHING, now=now)
        assert (expected, 3) == (page.items, page.total)

    def test_list_searches_and_pages(self, storage: Storage) -> None:
        """Search matches the app's folded name and description; paging keeps the total."""
        for name, description in (("Straße", None), ("Maps", "of STRASSE"), ("Other", None)):
            app = _add_app(storage, make_app(name=name, description=description))
            with storage.transaction() as tx:
                tx.installations.put(Installation(app.key, "acme", "admin", T0))
        with storage.transaction() as tx:
            found = tx.installations.list("acme", ListQuery(search="strasse"), now=T0)
            second = tx.installations.list("acme", ListQuery(page=2, per_page=2), now=T0)
        assert (["Maps", "Straße"], 2) == (
            [item.app.name for item in found.items],
            found.total,
        )
        assert (["Straße"], 3) == ([item.app.name for item in second.items], second.total)


class TokenRepositoryContract(StorageFixtures):
    """Access tokens are stored by digest and read back exactly.

    Removals report counts and skip unknown ids; counts and lists see only live tokens;
    purges are bounded.
    """

    def test_token_round_trips_exactly(self, storage: Storage) -> None:
        """Every field comes back equal; the grant is a `Grant`."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=-5))
        token = make_token(
            app.key,
            "acme",
            issued_at=datetime(2015, 4, 20, 4, 56, 40, 999999, tzinfo=offset),
            user_agent="libwww-perl 5.833 ✓",
            grant=Grant.CLIENT_CREDENTIALS,
        )
        bare = make_token(app.key, "beta")
        with storage.transaction() as tx:
            tx.tokens.add(token, new_digest())
            tx.tokens.add(bare, new_digest())
        with storage.transaction() as tx:
            stored = tx.tokens.get(token.token_id)
            assert bare == tx.tokens.get(bare.token_id)
        assert token == stored
        assert stored is not None
        assert Grant.CLIENT_CREDENTIALS is stored.grant

    def test_missing_token_is_none(self, storage: Storage) -> None:
        """``get`` of an unknown id returns ``None``."""
        with storage.transaction() as tx:
            assert tx.tokens.get("no-such-token") is None

    def test_adding_a_taken_id_raises(self, storage: Storage) -> None:
        """A second token with the same id raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        token = make_token(app.key)
        _add_token(storage, token)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.tokens.add(attrs.evolve(token, account="other"), new_digest())
        with storage.transaction() as tx:
            assert token == tx.tokens.get(token.token_id)

    def test_remove_counts_and_skips_unknown_ids(self, storage: Storage) -> None:
        """``remove`` deletes the named tokens once each, skips unknown ids, returns the count."""
        app = _add_app(storage)
        tokens = [make_token(app.key) for _ in range(3)]
        for token in tokens:
            _add_token(storage, token)
        with storage.transaction() as tx:
            gone = [tokens[0].token_id, tokens[1].token_id, tokens[0].token_id, "unknown"]
            assert 2 == tx.tokens.remove(gone)
            assert 0 == tx.tokens.remove([])
        with storage.transaction() as tx:
            assert [None, None, tokens[2]] == [tx.tokens.get(t.token_id) for t in tokens]

    def test_remove_many_at_once(self, storage: Storage) -> None:
        """A removal may name a thousand ids."""
        app = _add_app(storage)
        ids = []
        with storage.transaction() as tx:
            for _ in range(1000):
                token = make_token(app.key)
                tx.tokens.add(token, new_digest())
                ids.append(token.token_id)
        with storage.transaction() as tx:
            assert 1000 == tx.tokens.remove(ids)
            assert 0 == tx.tokens.count_live(app.key, "acme", now=T0)

    def test_remove_for_takes_one_app_on_one_account(self, storage: Storage) -> None:
        """``remove_for`` removes the app's tokens on that account only."""
        app, other = _add_app(storage), _add_app(storage)
        doomed = [make_token(app.key, "acme") for _ in range(2)]
        kept = [make_token(app.key, "beta"), make_token(other.key, "acme")]
        for token in doomed + kept:
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert 2 == tx.tokens.remove_for(app.key, "acme")
            assert 0 == tx.tokens.remove_for(app.key, "acme")
        with storage.transaction() as tx:
            assert kept == [tx.tokens.get(t.token_id) for t in kept]

    def test_remove_all_of_app_spares_other_apps(self, storage: Storage) -> None:
        """``remove_all_of_app`` removes the app's tokens on every account, no others."""
        app, other = _add_app(storage), _add_app(storage)
        kept = make_token(other.key, "acme")
        for token in (make_token(app.key, "acme"), make_token(app.key, "beta"), kept):
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert 2 == tx.tokens.remove_all_of_app(app.key)
        with storage.transaction() as tx:
            assert kept == tx.tokens.get(kept.token_id)

    def test_count_live_excludes_tokens_expiring_now(self, storage: Storage) -> None:
        """A token is dead from ``expires_at`` on: counted before that instant, not at it."""
        app = _add_app(storage)
        expiry = T0 + HOUR
        for token in (
            make_token(app.key, expires_at=expiry),
            make_token(app.key, expires_at=expiry + timedelta(microseconds=1)),
            make_token(app.key, "beta", expires_at=expiry + HOUR),
        ):
            _add_token(storage, token)
        just_before = expiry - timedelta(microseconds=1)
        with storage.transaction() as tx:
            counts = [
                tx.tokens.count_live(app.key, "acme", now=when)
                for when in (just_before, expiry, expiry + timedelta(microseconds=1))
            ]
        assert [2, 1, 0] == counts

    def test_list_shows_live_tokens_by_expiry_then_id(self, storage: Storage) -> None:
        """Only live tokens of the app on the account, soonest expiry first, ties by id."""
        app = _add_app(storage)
        now = T0 + timedelta(minutes=10)
        late = T0 + 2 * HOUR
        tokens = [
            make_token(app.key, token_id="b", expires_at=late),
            make_token(app.key, token_id="a", expires_at=late),
            make_token(app.key, token_id="c", expires_at=T0 + HOUR),
            make_token(app.key, token_id="dead", expires_at=now),
            make_token(app.key, "beta", token_id="elsewhere"),
        ]
        for token in tokens:
            _add_token(storage, token)
        with storage.transaction() as tx:
            page = tx.tokens.list(app.key, "acme", EVERYTHING, now=now)
        assert (["c", "a", "b"], 3) == ([t.token_id for t in page.items], page.total)

    def test_list_searches_the_folded_user_agent_and_pages(self, storage: Storage) -> None:
        """Search matches the folded user agent (never a token without one); pages keep totals."""
        app = _add_app(storage)
        agents = ["libwww-perl 5.833", "LIBWWW-PERL 6", "Straße/1.0", None, "curl/8"]
        for n, agent in enumerate(agents):
            _add_token(
                storage,
                make_token(
                    app.key, token_id=f"t{n}", expires_at=T0 + (n + 1) * HOUR, user_agent=agent
                ),
            )
        with storage.transaction() as tx:
            perl = tx.tokens.list(app.key, "acme", ListQuery(search="libwww"), now=T0)
            folded = tx.tokens.list(app.key, "acme", ListQuery(search="strasse"), now=T0)
            second = tx.tokens.list(app.key, "acme", ListQuery(page=2, per_page=2), now=T0)
        assert (["t0", "t1"], 2) == ([t.token_id for t in perl.items], perl.total)
        assert ["t2"] == [t.token_id for t in folded.items]
        assert (["t2", "t3"], 5) == ([t.token_id for t in second.items], second.total)

    def test_purge_removes_at_most_limit_expired_tokens(self, storage: Storage) -> None:
        """``purge_expired`` removes only tokens dead at ``now``, at most ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + HOUR
        expired = [make_token(app.key, expires_at=now - timedelta(minutes=n)) for n in range(5)]
        live = make_token(app.key, expires_at=now + timedelta(microseconds=1))
        for token in [*expired, live]:
            _add_token(storage, token)
        with storage.transaction() as tx:
            batches = [tx.tokens.purge_expired(now=now, limit=2) for _ in range(4)]
        with storage.transaction() as tx:
            assert [None] * 5 == [tx.tokens.get(t.token_id) for t in expired]
            assert live == tx.tokens.get(live.token_id)
        assert [2, 2, 1, 0] == batches

    def test_get_by_digest_reads_the_token_with_its_family(self, storage: Storage) -> None:
        """``get_by_digest`` finds a token by its digest, ``family_id`` included."""
        app = _add_app(storage)
        token = make_token(app.key, family_id="fam-1", user_agent="agent")
        digest = _add_token(storage, token)
        with storage.transaction() as tx:
            found = tx.tokens.get_by_digest(digest)
            missing = tx.tokens.get_by_digest(new_digest())
            by_id = tx.tokens.get(token.token_id)
        assert (token, None, token) == (found, missing, by_id)

    def test_remove_family_takes_only_that_family(self, storage: Storage) -> None:
        """``remove_family`` removes the family's tokens, on any account, and no others."""
        app = _add_app(storage)
        family = [make_token(app.key, "acme", family_id="f1") for _ in range(2)]
        family.append(make_token(app.key, "beta", family_id="f1"))
        kept = [make_token(app.key, family_id="f2"), make_token(app.key)]
        for token in family + kept:
            _add_token(storage, token)
        with storage.transaction() as tx:
            assert [3, 0, 0] == [tx.tokens.remove_family(f) for f in ("f1", "f1", "none")]
        with storage.transaction() as tx:
            assert [None] * 3 == [tx.tokens.get(t.token_id) for t in family]
            assert kept == [tx.tokens.get(t.token_id) for t in kept]


def _add_code(storage: Storage, code: AuthorizationCode) -> bytes:
    digest = new_digest()
    with storage.transaction() as tx:
        tx.codes.add(code, digest)
    return digest


def _take(storage: Storage, digest: bytes) -> AuthorizationCode | None:
    with storage.transaction() as tx:
        return tx.codes.take(digest)


def _add_refresh(storage: Storage, token: RefreshToken) -> bytes:
    digest = new_digest()
    with storage.transaction() as tx:
        tx.refresh_tokens.add(token, digest)
    return digest


def _get_refresh(storage: Storage, digest: bytes) -> RefreshToken | None:
    with storage.transaction() as tx:
        return tx.refresh_tokens.get(digest)


class CodeRepositoryContract(StorageFixtures):
    """Authorization codes are stored by digest and read only by taking them, once.

    Removals report counts and spare other apps and accounts; purges are bounded.
    """

    def test_a_code_is_taken_exactly_once(self, storage: Storage) -> None:
        """``take`` returns the code, every field equal, then ``None`` ever after."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=-5))
        code = make_code(
            app.key,
            issued_at=datetime(2015, 4, 20, 4, 56, 40, 999999, tzinfo=offset),
            code_challenge=pkce_s256("v" * 43),
        )
        bare = make_code(app.key, "beta")
        digest, bare_digest = _add_code(storage, code), _add_code(storage, bare)
        with storage.transaction() as tx:
            first = tx.codes.take(digest)
            again = tx.codes.take(digest)
        assert (code, None) == (first, again)
        assert (bare, None) == (_take(storage, bare_digest), _take(storage, bare_digest))

    def test_an_unknown_digest_takes_nothing(self, storage: Storage) -> None:
        """``take`` of a digest no code has returns ``None``."""
        assert _take(storage, new_digest()) is None

    def test_adding_a_taken_digest_raises(self, storage: Storage) -> None:
        """A second code under the same digest raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        code = make_code(app.key)
        digest = _add_code(storage, code)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.codes.add(make_code(app.key, "beta"), digest)
        assert code == _take(storage, digest)

    def test_removals_count_and_spare_the_others(self, storage: Storage) -> None:
        """``remove_for`` takes one app on one account; ``remove_all_of_app`` the whole app."""
        app, other = _add_app(storage), _add_app(storage)
        acme = [_add_code(storage, make_code(app.key, "acme")) for _ in range(2)]
        beta = _add_code(storage, make_code(app.key, "beta"))
        kept = make_code(other.key, "acme")
        kept_digest = _add_code(storage, kept)
        with storage.transaction() as tx:
            assert [2, 0] == [tx.codes.remove_for(app.key, "acme") for _ in range(2)]
        assert _take(storage, beta) is not None  # beta's code survived the pair's removal
        _add_code(storage, make_code(app.key, "beta"))
        with storage.transaction() as tx:
            assert [1, 0] == [tx.codes.remove_all_of_app(app.key) for _ in range(2)]
        assert [None, None] == [_take(storage, d) for d in acme]
        assert kept == _take(storage, kept_digest)

    def test_purge_removes_at_most_limit_expired_codes(self, storage: Storage) -> None:
        """``purge_expired`` removes only codes dead at ``now``, at most ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + CODE_LIFETIME
        expired = [
            _add_code(storage, make_code(app.key, expires_at=now - timedelta(minutes=n)))
            for n in range(5)
        ]
        live = make_code(app.key, expires_at=now + timedelta(microseconds=1))
        live_digest = _add_code(storage, live)
        with storage.transaction() as tx:
            batches = [tx.codes.purge_expired(now=now, limit=2) for _ in range(4)]
        assert [2, 2, 1, 0] == batches
        assert [None] * 5 == [_take(storage, d) for d in expired]
        assert live == _take(storage, live_digest)


class RefreshTokenRepositoryContract(StorageFixtures):
    """Refresh tokens are stored by digest and read back exactly, rotated in place.

    Families, app+account pairs and apps are removed whole, with counts; purges are bounded.
    """

    def test_refresh_token_round_trips_exactly(self, storage: Storage) -> None:
        """Every field comes back equal, ``rotated_at`` and the grant included."""
        app = _add_app(storage)
        offset = timezone(timedelta(hours=3))
        rotated = make_refresh(
            app.key,
            issued_at=datetime(2015, 4, 20, 12, 56, 40, 1, tzinfo=offset),
            rotated_at=T0 + HOUR,
            grant=Grant.CLIENT_CREDENTIALS,
        )
        fresh = make_refresh(app.key, "beta", family_id="other")
        digests = [_add_refresh(storage, t) for t in (rotated, fresh)]
        assert [rotated, fresh] == [_get_refresh(storage, d) for d in digests]
        stored = _get_refresh(storage, digests[0])
        assert stored is not None
        assert Grant.CLIENT_CREDENTIALS is stored.grant

    def test_an_unknown_digest_is_none(self, storage: Storage) -> None:
        """``get`` of a digest no refresh token has returns ``None``."""
        assert _get_refresh(storage, new_digest()) is None

    def test_adding_a_taken_id_raises(self, storage: Storage) -> None:
        """A second refresh token with the same id raises `StorageError`; the first is kept."""
        app = _add_app(storage)
        token = make_refresh(app.key)
        digest = _add_refresh(storage, token)
        with pytest.raises(StorageError), storage.transaction() as tx:
            tx.refresh_tokens.add(attrs.evolve(token, account="other"), new_digest())
        assert token == _get_refresh(storage, digest)

    def test_mark_rotated_records_the_time(self, storage: Storage) -> None:
        """``mark_rotated`` sets ``rotated_at`` of that token only; an unknown id is a no-op."""
        app = _add_app(storage)
        token, other = make_refresh(app.key), make_refresh(app.key)
        digest, other_digest = _add_refresh(storage, token), _add_refresh(storage, other)
        when = T0 + timedelta(minutes=5, microseconds=7)
        with storage.transaction() as tx:
            tx.refresh_tokens.mark_rotated(token.token_id, when)
            tx.refresh_tokens.mark_rotated("no-such-token", when)
        assert attrs.evolve(token, rotated_at=when) == _get_refresh(storage, digest)
        assert other == _get_refresh(storage, other_digest)

    def test_removals_count_and_spare_the_others(self, storage: Storage) -> None:
        """Family, pair and app removals each take what they name, and report how many."""
        app, other = _add_app(storage), _add_app(storage)
        family = [make_refresh(app.key, "acme", family_id="f1") for _ in range(2)]
        pair = make_refresh(app.key, "acme", family_id="f2")
        beta = make_refresh(app.key, "beta", family_id="f3")
        kept = make_refresh(other.key, "acme", family_id="f4")
        digests = {t.token_id: _add_refresh(storage, t) for t in [*family, pair, beta, kept]}
        with storage.transaction() as tx:
            assert [2, 0] == [tx.refresh_tokens.remove_family("f1") for _ in range(2)]
            assert [1, 0] == [tx.refresh_tokens.remove_for(app.key, "acme") for _ in range(2)]
        assert beta == _get_refresh(storage, digests[beta.token_id])
        with storage.transaction() as tx:
            assert [1, 0] == [tx.refresh_tokens.remove_all_of_app(app.key) for _ in range(2)]
        assert [None] * 4 == [
            _get_refresh(storage, digests[t.token_id]) for t in [*family, pair, beta]
        ]
        assert kept == _get_refresh(storage, digests[kept.token_id])

    def test_purge_removes_at_most_limit_expired_tokens(self, storage: Storage) -> None:
        """``purge_expired`` removes only refresh tokens dead at ``now``, ``limit`` at a time."""
        app = _add_app(storage)
        now = T0 + 30 * DAY
        expired = [
            _add_refresh(storage, make_refresh(app.key, expires_at=now - timedelta(minutes=n)))
            for n in range(5)
        ]
        live = make_refresh(app.key, expires_at=now + timedelta(microseconds=1))
        live_digest = _add_refresh(storage, live)
        with storage.transaction() as tx:
            batches = [tx.refresh_tokens.purge_expired(now=now, limit=2) for _ in range(4)]
        assert [2, 2, 1, 0] == batches
        assert [None] * 5 == [_get_refresh(storage, d) for d in expired]
        assert live == _get_refresh(storage, live_digest)


class TokenContextContract(StorageFixtures):
    """``token_context`` gives a token with its app, installation and permission.

    It reads committed data in one call; an unknown digest gives ``None``.
    """

    def test_unknown_digest_is_none(self, storage: Storage) -> None:
        """A digest no token has gives ``None``."""
        assert storage.token_context(new_digest()) is None

    def test_token_without_installation_or_permission(self, storage: Storage) -> None:
        """Missing installation and permission come back as ``None``."""
        app = _add_app(storage)
        token = make_token(app.key, "acme", grant=Grant.CLIENT_CREDENTIALS)
        digest = _add_token(storage, token)
        assert TokenContext(token, app, None, None) == storage.token_context(digest)

    def test_full_context(self, storage: Storage) -> None:
        """App, installation and permission are those of the token's app and account."""
        app = _add_app(storage)
        other = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0, suspended=True)
        permission = AppsPermission("acme", "root", T0)
        token = make_token(app.key, "acme")
        with storage.transaction() as tx:
            tx.installations.put(installation)
            tx.installations.put(Installation(other.key, "acme", "admin", T0))
            tx.installations.put(Installation(app.key, "beta", "admin", T0))
            tx.permissions.put(permission)
            tx.permissions.put(AppsPermission("beta", "root", T0))
        digest = _add_token(storage, token)
        _add_token(storage, make_token(app.key, "beta"))
        assert TokenContext(token, app, installation, permission) == storage.token_context(digest)

    def test_context_follows_committed_changes(self, storage: Storage) -> None:
        """A committed disable, suspension or removal shows in the next ``token_context``."""
        app = _add_app(storage)
        installation = Installation(app.key, "acme", "admin", T0)
        with storage.transaction() as tx:
            tx.installations.put(installation)
        token = make_token(app.key)
        digest = _add_token(storage, token)
        disabled = attrs.evolve(app, enabled=False)
        suspended = attrs.evolve(installation, suspended=True)
        with storage.transaction() as tx:
            tx.apps.update(disabled)
            tx.installations.put(suspended)
        assert TokenContext(token, disabled, suspended, None) == storage.token_context(digest)
        with storage.transaction() as tx:
            tx.tokens.remove([token.token_id])
        assert storage.token_context(digest) is None


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
    # Taking is the only way to read a code: take it in a transaction that is rolled back.
    peeked: list[AuthorizationCode | None] = []
    with suppress(_Boom), storage.transaction() as tx:
        peeked.append(tx.codes.take(digest))
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
    tx.codes.take(world.code_digest)
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


# -- (b) the Registry end to end -------------------------------------------------------------


def _register(
    registry: Registry,
    owner: str = "acme",
    *,
    name: str = "MyApp",
    description: str | None = None,
    trusted: bool = False,
    credentials: ImportedCredentials | None = None,
) -> RegisteredApp:
    return registry.register_app(
        owner,
        name=name,
        description=description,
        homepage="http://bücher.example/MyApp",
        admin_email="myapp@example.com",
        redirect_url="https://example.com/MyApp/handler",
        trusted=trusted,
        credentials=credentials,
    )


def _denial(call: Callable[[], object]) -> str:
    with pytest.raises(Denied) as denied:
        call()
    return denied.value.decision.reason


#: The redirect URL `_register` gives every app.
REDIRECT: Final = "https://example.com/MyApp/handler"
#: RFC 7636's example PKCE verifier (appendix B).
VERIFIER: Final = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def _code(registry: Registry, new: RegisteredApp, account: str = "acme") -> str:
    """A code for ``new`` on ``account``, approved by alice, with an S256 challenge."""
    return registry.authorize(
        new.app.key,
        account,
        redirect_url=REDIRECT,
        approved_by="alice",
        code_challenge=pkce_s256(VERIFIER),
        code_challenge_method="S256",
    ).code


def _exchange(registry: Registry, new: RegisteredApp, code: str, **kw: Any) -> IssuedToken:
    return registry.exchange_code(
        new.app.key, code, redirect_url=REDIRECT, code_verifier=VERIFIER, **kw
    )


def _grant_refused(call: Callable[[], object]) -> bool:
    """Whether ``call`` raises `InvalidGrant` (any other outcome fails the test)."""
    with pytest.raises(InvalidGrant) as refused:
        call()
    return str(refused.value) == "invalid, expired or used grant"


_CASCADES: Final[Mapping[str, Callable[[Registry, str], object]]] = {
    "uninstall": lambda registry, key: registry.uninstall_app(key, "acme"),
    "remove_all_tokens": lambda registry, key: registry.remove_all_tokens(key, "acme"),
    "regenerate_secret": lambda registry, key: registry.regenerate_secret(key),
    "remove_app": lambda registry, key: registry.remove_app(key),
}
_Change: TypeAlias = Callable[[Registry, str], object]
# Each stops the grants through the policy (with that reason), and its undo lets them act.
_PAUSES: Final[Mapping[str, tuple[_Change, str, _Change]]] = {
    "disable": (
        lambda registry, key: registry.disable_app(key),
        Reason.APP_DISABLED,
        lambda registry, key: registry.enable_app(key),
    ),
    "forbid": (
        lambda registry, _key: registry.forbid_account("acme"),
        Reason.APPS_NOT_PERMITTED,
        lambda registry, _key: registry.permit_account("acme", by="admin"),
    ),
    "suspend": (
        lambda registry, key: registry.suspend_installation(key, "acme"),
        Reason.INSTALLATION_SUSPENDED,
        lambda registry, key: registry.resume_installation(key, "acme"),
    ),
}


class RegistryContract(StorageFixtures):
    """The Registry's rules hold on this storage, walked through end to end.

    Status, permission, installation and token rules: R7, R8, R11-R15, R19-R22, R26.
    """

    @pytest.fixture
    def events(self) -> EventRecorder:
        """Every event the registry emits."""
        return EventRecorder()

    @pytest.fixture
    def registry(self, storage: Storage, clock: ManualClock, events: EventRecorder) -> Registry:
        """A registry on the storage, with a manual clock and an event recorder."""
        # Registry's ``converter=tuple`` leaves the parameter typed Iterable[_T_co] to mypy.
        listeners: Any = (events,)
        return Registry(storage=storage, clock=clock, listeners=listeners)

    def test_registered_apps_read_back(self, registry: Registry) -> None:
        """A registered app reads back equal, and is listed with no Instances."""
        new = _register(registry, description="Bücher")
        assert new.app == registry.get_app(new.app.key)
        assert (AppListing(new.app, 0),) == registry.list_apps().items

    def test_disable_keeps_tokens_and_enable_revives_the_unexpired(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        """R11: disabled, no token acts or is issued; enabled, unexpired tokens act again."""
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        early = registry.issue_token(new.app.key, new.secret).token
        clock.advance(timedelta(minutes=30))
        late = registry.issue_token(new.app.key, new.secret).token
        registry.disable_app(new.app.key)
        assert [Reason.APP_DISABLED] * 2 == [registry.check_token(t).reason for t in (early, late)]
        assert Reason.APP_DISABLED == _denial(lambda: registry.issue_token(new.app.key, new.secret))
        clock.advance(timedelta(minutes=45))
        registry.enable_app(new.app.key)
        assert [Reason.TOKEN_EXPIRED, Reason.ALLOWED] == [
            registry.check_token(t).reason for t in (early, late)
        ]

    def test_forbid_stops_the_account_and_permit_revives(self, registry: Registry) -> None:
        """R14: without the permission nothing acts, installs or is issued; restored, it does."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        registry.install_app(new.app.key, "acme", by="user")
        token = registry.issue_token(new.app.key, new.secret, account="acme").token
        registry.forbid_account("acme")
        assert Reason.APPS_NOT_PERMITTED == registry.check_token(token).reason
        assert Reason.APPS_NOT_PERMITTED == _denial(
            lambda: registry.issue_token(new.app.key, new.secret, account="acme")
        )
        registry.permit_account("acme", by="root")
        assert Reason.ALLOWED == registry.check_token(token).reason
        permission = registry.get_permission("acme")
        assert permission is not None
        assert "root" == permission.granted_by

    def test_suspension_is_limited_to_its_account(self, registry: Registry) -> None:
        """R12: a suspended installation stops that account's tokens only, until resumed."""
        new = _register(registry, "dev")
        tokens = {}
        for account in ("acme", "beta"):
            registry.permit_account(account, by="admin")
            registry.install_app(new.app.key, account, by="user")
            tokens[account] = registry.issue_token(new.app.key, new.secret, account=account).token
        registry.suspend_installation(new.app.key, "acme")
        assert {"acme": Reason.INSTALLATION_SUSPENDED, "beta": Reason.ALLOWED} == {
            account: registry.check_token(token).reason for account, token in tokens.items()
        }
        assert Reason.INSTALLATION_SUSPENDED == _denial(
            lambda: registry.issue_token(new.app.key, new.secret, account="acme")
        )
        registry.resume_installation(new.app.key, "acme")
        assert Reason.ALLOWED == registry.check_token(tokens["acme"]).reason

    def test_uninstall_removes_that_accounts_tokens(self, registry: Registry) -> None:
        """R15: uninstalling removes the installation and the account's tokens, no others."""
        new = _register(registry, "dev")
        for account in ("acme", "beta"):
            registry.permit_account(account, by="admin")
            registry.install_app(new.app.key, account, by="user")
        gone = [registry.issue_token(new.app.key, new.secret, account="acme") for _ in range(2)]
        kept = registry.issue_token(new.app.key, new.secret, account="beta")
        assert 2 == registry.uninstall_app(new.app.key, "acme")
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t.token).reason for t in gone]
        assert Reason.ALLOWED == registry.check_token(kept.token).reason
        assert Reason.INSTALLATION_MISSING == _denial(
            lambda: registry.issue_token(new.app.key, new.secret, account="acme")
        )
        assert 0 == registry.list_installations("acme").total
        assert (AppListing(new.app, 1),) == registry.list_apps().items

    def test_regenerating_the_secret_removes_every_token(self, registry: Registry) -> None:
        """R8: the old secret stops working and every token of the app is gone."""
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        registry.install_app(new.app.key, "acme", by="user")
        tokens = [
            registry.issue_token(new.app.key, new.secret).token,
            registry.issue_token(new.app.key, new.secret, account="acme").token,
        ]
        fresh = registry.regenerate_secret(new.app.key)
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t).reason for t in tokens]
        assert Reason.BAD_CREDENTIALS == _denial(
            lambda: registry.issue_token(new.app.key, new.secret)
        )
        issued = registry.issue_token(new.app.key, fresh.secret)
        assert Reason.ALLOWED == registry.check_token(issued.token).reason

    def test_encrypted_secrets_can_be_revealed(self, storage: Storage, clock: ManualClock) -> None:
        """R7: with an encryption key, the current secret can be shown again."""
        registry = Registry(
            storage=storage, clock=clock, secret_encryption_key=Fernet.generate_key()
        )
        new = _register(registry)
        assert new.secret == registry.reveal_secret(new.app.key)
        fresh = registry.regenerate_secret(new.app.key)
        assert fresh.secret == registry.reveal_secret(new.app.key)

    def test_removing_an_app_removes_everything_of_it(self, registry: Registry) -> None:
        """R13: app, installations and tokens go; the key never authenticates again."""
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        registry.install_app(new.app.key, "acme", by="user")
        tokens = [
            registry.issue_token(new.app.key, new.secret).token,
            registry.issue_token(new.app.key, new.secret, account="acme").token,
        ]
        registry.remove_app(new.app.key)
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t).reason for t in tokens]
        with pytest.raises(AppNotFound):
            registry.get_app(new.app.key)
        assert Reason.APP_UNKNOWN == _denial(lambda: registry.issue_token(new.app.key, new.secret))
        assert (0, 0) == (registry.list_apps().total, registry.list_installations("acme").total)
        # The key is retired: it cannot be imported again, so nothing revives the old tokens.
        with pytest.raises(ValidationError) as refused:
            _register(registry, credentials=ImportedCredentials(new.app.key, new.secret))
        assert [("key", "taken")] == [(p.field, p.code) for p in refused.value.problems]
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t).reason for t in tokens]
        assert not registry.authenticate_client(new.app.key, new.secret).allowed

    def test_lists_show_instances_installations_and_tokens(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        """R21, R26: Instances, installations with Access Tokens counts, live tokens by expiry."""
        apps = [_register(registry, "dev", name=name) for name in ("beta", "Alpha", "alpha")]
        registry.permit_account("acme", by="admin")
        registry.permit_account("other", by="admin")
        for new in apps:
            registry.install_app(new.app.key, "acme", by="user")
        registry.install_app(apps[0].app.key, "other", by="user")
        first = apps[0]
        old = registry.issue_token(first.app.key, first.secret, account="acme", user_agent="old")
        clock.advance(timedelta(minutes=40))
        tokens = [
            registry.issue_token(first.app.key, first.secret, account="acme", user_agent=agent)
            for agent in ("libwww-perl 5.833", "curl/8")
        ]
        clock.advance(timedelta(minutes=30))  # the first token has expired

        ordered = sorted((new.app for new in apps), key=lambda a: (a.name.casefold(), a.key))
        listed = registry.list_apps(owner="dev", per_page=2, page=2)
        assert ([ordered[2].name], 3) == (_names(listed.items), listed.total)
        instances = {item.app.name: item.instances for item in registry.list_apps().items}
        assert {"beta": 2, "Alpha": 1, "alpha": 1} == instances

        installed = registry.list_installations("acme", search="BETA")
        assert 1 == installed.total
        (item,) = installed.items
        assert ("user", T0, 2) == (
            item.installation.installed_by,
            item.installation.installed_at,
            item.access_tokens,
        )

        live = registry.list_tokens(first.app.key, "acme")
        by_expiry = sorted((t.record for t in tokens), key=lambda t: (t.expires_at, t.token_id))
        assert by_expiry == list(live.items)
        found = registry.list_tokens(first.app.key, "acme", search="LIBWWW")
        assert [tokens[0].record] == list(found.items)
        assert Reason.TOKEN_EXPIRED == registry.check_token(old.token).reason

    def test_removed_tokens_die_and_new_ones_can_be_issued(self, registry: Registry) -> None:
        """R20: removal is all or nothing, scoped, immediate, and does not stop new tokens."""
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        tokens = [registry.issue_token(new.app.key, new.secret) for _ in range(3)]
        ids = [t.record.token_id for t in tokens]
        with pytest.raises(TokenNotFound):
            registry.remove_tokens([ids[0], "no-such-token"])
        with pytest.raises(TokenNotFound):
            registry.remove_tokens([ids[0]], key=new.app.key, account="other")
        assert Reason.ALLOWED == registry.check_token(tokens[0].token).reason
        assert 1 == registry.remove_tokens([ids[0]], key=new.app.key, account="acme")
        assert Reason.TOKEN_UNKNOWN == registry.check_token(tokens[0].token).reason
        assert 2 == registry.remove_all_tokens(new.app.key, "acme")
        assert [Reason.TOKEN_UNKNOWN] * 2 == [
            registry.check_token(t.token).reason for t in tokens[1:]
        ]
        fresh = registry.issue_token(new.app.key, new.secret)
        assert Reason.ALLOWED == registry.check_token(fresh.token).reason

    def test_expired_tokens_are_purged_in_batches(
        self, registry: Registry, clock: ManualClock, events: EventRecorder
    ) -> None:
        """R22: expired tokens go in bounded batches; live ones stay."""
        new = _register(registry, trusted=True)
        registry.permit_account("acme", by="admin")
        for _ in range(5):
            registry.issue_token(new.app.key, new.secret)
        clock.advance(2 * HOUR)
        live = [registry.issue_token(new.app.key, new.secret) for _ in range(2)]
        events.clear()
        assert 2 == registry.purge_expired_tokens(batch_size=2, max_batches=1)
        assert 3 == registry.purge_expired_tokens(batch_size=2)
        assert 0 == registry.purge_expired_tokens()
        assert [EventKind.TOKENS_PURGED] * 3 == events.kinds()
        by_expiry = sorted((t.record for t in live), key=lambda t: (t.expires_at, t.token_id))
        assert by_expiry == list(registry.list_tokens(new.app.key, "acme").items)

    def test_the_authorization_code_flow_end_to_end(
        self, registry: Registry, events: EventRecorder
    ) -> None:
        """Approve, exchange once with PKCE, refresh by rotation; reuse revokes the family."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        code = _code(registry, new)
        assert ["alice"] == [
            item.installation.installed_by for item in registry.list_installations("acme").items
        ]
        issued = _exchange(registry, new, code, user_agent="curl/8")
        assert _grant_refused(lambda: _exchange(registry, new, code))
        assert Reason.ALLOWED == registry.check_token(issued.token).reason
        assert (Grant.AUTHORIZATION_CODE, "acme", "curl/8") == (
            issued.record.grant,
            issued.record.account,
            issued.record.user_agent,
        )
        assert [issued.record] == list(registry.list_tokens(new.app.key, "acme").items)
        assert issued.refresh_token is not None

        rotated = registry.refresh(new.app.key, issued.refresh_token)
        assert issued.record.family_id == rotated.record.family_id
        assert [Reason.ALLOWED] * 2 == [
            registry.check_token(t.token).reason for t in (issued, rotated)
        ]
        events.clear()
        # The first refresh token again: it was rotated, so the whole family goes, committed.
        assert _grant_refused(lambda: registry.refresh(new.app.key, issued.refresh_token or ""))
        assert [EventKind.FAMILY_REVOKED] == events.kinds()
        assert [Reason.TOKEN_UNKNOWN] * 2 == [
            registry.check_token(t.token).reason for t in (issued, rotated)
        ]
        assert _grant_refused(lambda: registry.refresh(new.app.key, rotated.refresh_token or ""))

    def test_a_code_works_once_for_its_app_redirect_url_and_verifier(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        """A code fails for another app, URL or verifier, or once expired, and is then spent."""
        new, other = _register(registry, "dev"), _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        misuses: list[Callable[[str], object]] = [
            lambda code: _exchange(registry, other, code),
            lambda code: registry.exchange_code(
                new.app.key, code, redirect_url=REDIRECT + "/x", code_verifier=VERIFIER
            ),
            lambda code: registry.exchange_code(
                new.app.key, code, redirect_url=REDIRECT, code_verifier="w" * 43
            ),
        ]
        for misuse in misuses:
            code = _code(registry, new)
            assert _grant_refused(lambda: misuse(code))  # noqa: B023 - called at once
            assert _grant_refused(lambda: _exchange(registry, new, code))  # noqa: B023
        code = _code(registry, new)
        clock.advance(timedelta(minutes=10))
        assert _grant_refused(lambda: _exchange(registry, new, code))
        fresh = _code(registry, new)
        clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))
        assert Reason.ALLOWED == registry.check_token(_exchange(registry, new, fresh).token).reason

    def test_revoking_an_access_token_or_a_refresh_token(self, registry: Registry) -> None:
        """RFC 7009: an access token alone, or a refresh token with its family; junk is a no-op."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        issued = _exchange(registry, new, _code(registry, new))
        assert issued.refresh_token is not None
        assert [True, False] == [registry.revoke(issued.token) for _ in range(2)]
        assert Reason.TOKEN_UNKNOWN == registry.check_token(issued.token).reason
        rotated = registry.refresh(new.app.key, issued.refresh_token)
        assert rotated.refresh_token is not None
        assert [True, False] == [registry.revoke(rotated.refresh_token) for _ in range(2)]
        assert Reason.TOKEN_UNKNOWN == registry.check_token(rotated.token).reason
        assert _grant_refused(lambda: registry.refresh(new.app.key, rotated.refresh_token or ""))
        assert [False, False] == [registry.revoke(junk) for junk in ("", "no such token")]

    @pytest.mark.parametrize("cascade", sorted(_CASCADES))
    def test_cascades_remove_codes_and_refresh_tokens(
        self, registry: Registry, cascade: str
    ) -> None:
        """Uninstall, remove all tokens, regenerate and remove take the grants with them."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        issued = _exchange(registry, new, _code(registry, new))
        pending = _code(registry, new)
        _CASCADES[cascade](registry, new.app.key)
        assert Reason.TOKEN_UNKNOWN == registry.check_token(issued.token).reason
        assert _grant_refused(lambda: registry.refresh(new.app.key, issued.refresh_token or ""))
        assert _grant_refused(lambda: _exchange(registry, new, pending))

    @pytest.mark.parametrize("pause", sorted(_PAUSES))
    def test_disable_forbid_and_suspend_keep_the_grants(
        self, registry: Registry, pause: str
    ) -> None:
        """Paused, a refresh is denied and left unused; resumed, it works (R11, R12, R14)."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        issued = _exchange(registry, new, _code(registry, new))
        assert issued.refresh_token is not None
        stop, reason, resume = _PAUSES[pause]
        stop(registry, new.app.key)
        refresh_token = issued.refresh_token
        assert reason == _denial(lambda: registry.refresh(new.app.key, refresh_token))
        assert reason == registry.check_token(issued.token).reason
        resume(registry, new.app.key)
        rotated = registry.refresh(new.app.key, issued.refresh_token)
        assert [Reason.ALLOWED] * 2 == [
            registry.check_token(t.token).reason for t in (issued, rotated)
        ]

    def test_expired_codes_and_refresh_tokens_are_purged(
        self, registry: Registry, storage: Storage, clock: ManualClock
    ) -> None:
        """R22: expired codes and refresh tokens go with the tokens, in bounded batches."""
        new = _register(registry, "dev")
        registry.permit_account("acme", by="admin")
        digests = Credentials()  # the registry's digests: it has no pepper
        issued = _exchange(registry, new, _code(registry, new))
        stale = [_code(registry, new) for _ in range(2)]
        clock.advance(30 * DAY)
        live = _code(registry, new)
        # Two codes, an access token and a refresh token expired; batches of one.
        assert 4 == registry.purge_expired_tokens(batch_size=1)
        assert [None, None] == [_take(storage, digests.code_digest(c)) for c in stale]
        assert _get_refresh(storage, digests.refresh_digest(issued.refresh_token or "")) is None
        assert _take(storage, digests.code_digest(live)) is not None

    def test_clients_authenticate_alike_and_redirect_urls_match_exactly(
        self, registry: Registry
    ) -> None:
        """R25: unknown key and wrong secret decide alike; R4: exact match after normalizing."""
        new = _register(registry, "dev")
        assert Reason.ALLOWED == registry.authenticate_client(new.app.key, new.secret).reason
        unknown = registry.authenticate_client(new_key(), new.secret)
        wrong = registry.authenticate_client(new.app.key, "w" * 32)
        assert (Reason.BAD_CREDENTIALS, unknown) == (unknown.reason, wrong)
        matches = [
            registry.redirect_url_matches(new.app.key, url)
            for url in (
                REDIRECT,
                "https://EXAMPLE.com:443/MyApp/handler",
                REDIRECT + "/more",
                REDIRECT + "?x=1",
                "http://example.com/MyApp/handler",
                "https://example.com/MyApp/",
            )
        ]
        assert [True, True, False, False, False, False] == matches
        assert not registry.redirect_url_matches(new_key(), REDIRECT)


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
        registry.issue_token(other.app.key, imported.secret, account="acme"),
    ]
    for token in tokens:
        registry.check_token(token.token)
    rotated_secret = registry.rotate_secret(trusted.app.key, old_secret_valid_until=clock() + DAY)
    regenerated = registry.regenerate_secret(other.app.key)
    registry.reveal_secret(other.app.key)
    after = registry.issue_token(other.app.key, regenerated.secret, account="acme")
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
                    token = registry.issue_token(key, secret, account=self.account)
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


# -- the whole suite -------------------------------------------------------------------------


class StorageContract(
    AppRepositoryContract,
    PermissionRepositoryContract,
    InstallationRepositoryContract,
    TokenRepositoryContract,
    CodeRepositoryContract,
    RefreshTokenRepositoryContract,
    TokenContextContract,
    TransactionContract,
    PersistenceContract,
    RegistryContract,
    NoPlaintextContract,
    RotationContract,
    ConcurrencyContract,
):
    """The whole contract: subclass it and override ``storage_factory`` (see the module docs)."""

"""The domain rules R1-R27 (and S2, S6) shown on the Registry over in-memory storage.

Each class is named after the rule it proves (``TestR11DisableKeepsTokens``), so one rule's
tests are a ``pytest -k R11`` away. S3 and S4 need SQL storage; the storage tests show them.
"""

from __future__ import annotations

import base64
import copy
import hmac
import logging
import pickle
import socket
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from _support import HOUR, SEED_KEY, SEED_SECRET, denial, problems_of, register
from appregistry import (
    AccessRequest,
    AppNotFound,
    Decision,
    Denied,
    Event,
    EventKind,
    Grant,
    ImportedCredentials,
    InstallationNotFound,
    LimitExceeded,
    Policy,
    Reason,
    RegisteredApp,
    Registry,
    SecretNotRetrievable,
    StorageError,
    TokenCheck,
    TokenNotFound,
    ValidationError,
    display_url,
)
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock

# -- fixtures and helpers ---------------------------------------------------------------------


# The clock, recorder, storage and registry fixtures are in conftest.py.


def permit(registry: Registry, *accounts: str) -> None:
    for account in accounts:
        registry.permit_account(account, by="provider")


def installed(
    registry: Registry, *accounts: str, owner: str = "acme", trusted: bool = False
) -> RegisteredApp:
    """A new app, installed on each of ``accounts`` (which are permitted first)."""
    new = register(registry, owner, trusted=trusted)
    for account in accounts:
        permit(registry, account)
        registry.install_app(new.app.key, account, by=f"admin@{account}")
    return new


def issue(registry: Registry, new: RegisteredApp, account: str | None = None, **kw: Any) -> str:
    """A token of ``new``: by client credentials, or for ``account`` approved by its user."""
    if account is not None:
        kw.setdefault("approved_by", f"user@{account}")
    return registry.issue_token(new.app.key, new.secret, account=account, **kw).token


def reason(registry: Registry, token: str) -> str:
    return registry.check_token(token).reason


def snapshot(storage: MemoryStorage) -> dict[str, Any]:
    """A deep copy of everything the memory storage holds (read from its internals on purpose)."""
    return copy.deepcopy(vars(storage._data))


def stored_bytes(storage: MemoryStorage) -> bytes:
    """Every byte the memory storage holds, serialized, to search for plaintext in."""
    return pickle.dumps(vars(storage._data))


def raw_token_bytes(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def all_apps(registry: Registry) -> list[Any]:
    return list(registry.list_apps(per_page=1000).items)


class InstrumentedStorage:
    """A MemoryStorage whose repository calls are recorded; one of them can be made to fail.

    ``arm("tokens.remove", nth=2)`` makes the second later call of that method raise
    `StorageError` *after* it has written, as a driver failing mid-transaction would.
    """

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any], Any]] = []
        self._fail_on: str | None = None
        self._nth = 0

    def arm(self, method: str, *, nth: int = 1) -> None:
        self._fail_on, self._nth = method, nth
        self.calls.clear()

    def names(self) -> list[str]:
        return [name for name, *_ in self.calls]

    @contextmanager
    def transaction(self) -> Iterator[_InstrumentedUnit]:
        with self.inner.transaction() as tx:
            yield _InstrumentedUnit(tx, self)

    def token_context(self, digest: bytes) -> Any:
        return self.inner.token_context(digest)

    def close(self) -> None:
        self.inner.close()

    def _after_call(self, name: str, args: Any, kwargs: Any, result: Any) -> None:
        self.calls.append((name, args, kwargs, result))
        if name == self._fail_on and self.names().count(name) == self._nth:
            raise StorageError(f"injected failure in {name}")


class _InstrumentedUnit:
    def __init__(self, tx: Any, storage: InstrumentedStorage) -> None:
        self.apps = _InstrumentedRepository("apps", tx.apps, storage)
        self.permissions = _InstrumentedRepository("permissions", tx.permissions, storage)
        self.installations = _InstrumentedRepository("installations", tx.installations, storage)
        self.tokens = _InstrumentedRepository("tokens", tx.tokens, storage)
        self.codes = _InstrumentedRepository("codes", tx.codes, storage)
        self.refresh_tokens = _InstrumentedRepository("refresh_tokens", tx.refresh_tokens, storage)
        self.settings = _InstrumentedRepository("settings", tx.settings, storage)


class _InstrumentedRepository:
    def __init__(self, name: str, inner: Any, storage: InstrumentedStorage) -> None:
        self._name, self._inner, self._storage = name, inner, storage

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        method = getattr(self._inner, attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            self._storage._after_call(f"{self._name}.{attr}", args, kwargs, result)
            return result

        return call


@pytest.fixture
def instrumented() -> InstrumentedStorage:
    return InstrumentedStorage()


@pytest.fixture
def flaky_registry(
    instrumented: InstrumentedStorage, clock: ManualClock, recorder: EventRecorder
) -> Registry:
    return Registry(storage=instrumented, clock=clock, listeners=[recorder])  # type: ignore[arg-type]


# -- registration -----------------------------------------------------------------------------


class TestR1RequiredFields:
    """Name, homepage, admin email and redirect URL are required; the rest is optional."""

    def test_every_missing_required_field_is_reported(self, registry: Registry) -> None:
        with pytest.raises(ValidationError) as info:
            registry.register_app("acme", name="", homepage="", admin_email=" ", redirect_url="")

        assert {"name", "homepage", "admin_email", "redirect_url"} == info.value.fields
        assert {"required"} == {p.code for p in info.value.problems}

    def test_defaults(self, registry: Registry, clock: ManualClock) -> None:
        app = register(registry).app

        assert (None, None, None) == (app.description, app.image_url, app.admin_phone)
        assert app.trusted is False
        assert app.enabled is True
        assert ("acme", clock()) == (app.owner, app.created_at)

    def test_optional_fields_are_kept(self, registry: Registry) -> None:
        app = register(
            registry,
            description="I love my App!",
            image_url="http://example.com/logo.png",
            admin_phone="+40 21 312 0000",
            trusted=True,
        ).app

        assert ("I love my App!", "http://example.com/logo.png", "+40213120000", True) == (
            app.description,
            app.image_url,
            app.admin_phone,
            app.trusted,
        )
        assert app == registry.get_app(app.key)


class TestR2HomepageAndImageUrls:
    """Homepage and image URL: absolute http(s), IDN hosts in one canonical form."""

    def test_two_spellings_of_one_host_are_the_same_url(self, registry: Registry) -> None:
        unicode = register(registry, homepage="http://Bücher.Example/Shop").app
        ascii_ = register(registry, homepage="http://xn--bcher-kva.example/Shop").app

        assert unicode.homepage == ascii_.homepage
        assert "http://xn--bcher-kva.example/Shop" == unicode.homepage
        assert "http://bücher.example/Shop" == display_url(unicode.homepage)

    @pytest.mark.parametrize(
        ("url", "code"),
        [
            ("ftp://example.com/", "invalid_scheme"),
            ("/MyApp", "invalid_scheme"),
            ("http://user:pw@example.com/", "userinfo"),
            ("http://exa mple.com/", "invalid_url"),
            ("http://example.com/\x00", "invalid_url"),
            ("http:///path", "no_host"),
            ("http://example.com/" + "a" * 2000, "too_long"),
        ],
    )
    def test_bad_urls_are_refused(self, registry: Registry, url: str, code: str) -> None:
        with pytest.raises(ValidationError) as info:
            register(registry, homepage=url, image_url=url)

        assert {("homepage", code), ("image_url", code)} == {
            (p.field, p.code) for p in info.value.problems
        }


class TestR3AdminEmail:
    """Admin email: syntax only, no DNS; internationalized addresses accepted and normalized."""

    def test_internationalized_address_is_normalized(self, registry: Registry) -> None:
        assert (
            "Pelé@exämple.com" == register(registry, admin_email="Pelé@Exämple.COM").app.admin_email
        )

    def test_no_network_at_registration(
        self, registry: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_network(*args: object, **kwargs: object) -> None:
            raise AssertionError("registration must not touch the network")

        monkeypatch.setattr(socket, "getaddrinfo", no_network)
        monkeypatch.setattr(socket, "socket", no_network)

        app = register(registry, admin_email="admin@no-such-host-anywhere.example").app

        assert "admin@no-such-host-anywhere.example" == app.admin_email

    def test_bad_address_is_refused(self, registry: Registry) -> None:
        with pytest.raises(ValidationError) as info:
            register(registry, admin_email="not an address")

        assert [("admin_email", "invalid_email")] == [
            (p.field, p.code) for p in info.value.problems
        ]


class TestR4RedirectUrl:
    """The redirect URL is https only, with a host, no fragment and no user-info."""

    @pytest.mark.parametrize(
        ("url", "code"),
        [
            ("http://example.com/cb", "not_https"),
            ("https://example.com/cb#top", "fragment"),
            ("https://example.com/cb#", "fragment"),
            ("https://user@example.com/cb", "userinfo"),
            ("https:///cb", "no_host"),
        ],
    )
    def test_bad_redirect_urls_are_refused(self, registry: Registry, url: str, code: str) -> None:
        with pytest.raises(ValidationError) as info:
            register(registry, redirect_url=url)

        assert [("redirect_url", code)] == [(p.field, p.code) for p in info.value.problems]

    def test_host_is_normalized_and_path_kept_exactly(self, registry: Registry) -> None:
        app = register(registry, redirect_url="https://EXAMPLE.com:443/MyApp/Handler").app

        assert "https://example.com/MyApp/Handler" == app.redirect_url


class TestR5AdminPhone:
    """The admin phone, when given, is a valid international number stored as E.164."""

    def test_normalized(self, registry: Registry) -> None:
        assert "+40213120000" == register(registry, admin_phone="+40 (21) 312-0000").app.admin_phone

    @pytest.mark.parametrize("phone", ["12345", "021 312 0000", "+999 1234"])
    def test_invalid_refused(self, registry: Registry, phone: str) -> None:
        with pytest.raises(ValidationError) as info:
            register(registry, admin_phone=phone)

        assert [("admin_phone", "invalid_phone")] == [
            (p.field, p.code) for p in info.value.problems
        ]


class TestR6KeysAndSecrets:
    """Keys and secrets are 32 characters of [A-Za-z0-9], keys unique; both can be imported."""

    def test_generated_shape_and_alphabet(self, registry: Registry) -> None:
        made = [register(registry) for _ in range(100)]
        alphabet = set(string.ascii_letters + string.digits)
        keys = [m.app.key for m in made]
        secrets = [m.secret for m in made]

        assert {32} == {len(v) for v in keys + secrets}
        # 6400 uniform draws from 62 symbols miss one with probability about 62 * e**-103.
        assert alphabet == set("".join(keys + secrets))
        assert len(keys) == len(set(keys))
        assert len(secrets) == len(set(secrets))

    def test_imported_credentials_are_kept_and_work(self, registry: Registry) -> None:
        new = register(
            registry, trusted=True, credentials=ImportedCredentials(SEED_KEY, SEED_SECRET)
        )
        permit(registry, "acme")

        assert (SEED_KEY, SEED_SECRET) == (new.app.key, new.secret)
        token = registry.issue_token(SEED_KEY, SEED_SECRET).token
        assert Reason.ALLOWED == reason(registry, token)

    def test_imported_credentials_may_use_unreserved_punctuation(self, registry: Registry) -> None:
        key = "abc-def.ghi_jkl~" * 2
        assert key == register(registry, credentials=ImportedCredentials(key, SEED_SECRET)).app.key

    def test_malformed_imports_are_refused(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        with pytest.raises(ValidationError) as info:
            register(registry, credentials=ImportedCredentials("short", "x" * 31 + "/"))

        assert {("key", "invalid_credential"), ("secret", "invalid_credential")} == {
            (p.field, p.code) for p in info.value.problems
        }
        assert [] == all_apps(registry)
        assert [] == recorder.events

    def test_duplicate_imported_key_is_taken_and_nothing_written(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        first = register(registry, credentials=ImportedCredentials(SEED_KEY, SEED_SECRET))
        before = all_apps(registry)
        recorder.clear()

        with pytest.raises(ValidationError) as info:
            register(registry, "globex", credentials=ImportedCredentials(SEED_KEY, "S" * 32))

        assert [("key", "taken")] == [(p.field, p.code) for p in info.value.problems]
        assert before == all_apps(registry)
        assert first.app == registry.get_app(SEED_KEY)
        assert [] == recorder.events


class TestR7SecretShownOnce:
    """The secret is shown once; it is revealable again only with an encryption key."""

    def test_secret_only_in_the_registration_result(
        self, registry: Registry, storage: MemoryStorage
    ) -> None:
        new = register(registry)
        app = registry.get_app(new.app.key)

        assert not hasattr(app, "secret")
        assert new.secret not in repr(new)
        assert new.secret not in repr(app)
        assert new.secret.encode() not in stored_bytes(storage)

    def test_not_retrievable_without_encryption_key(self, registry: Registry) -> None:
        new = register(registry)

        with pytest.raises(SecretNotRetrievable) as info:
            registry.reveal_secret(new.app.key)
        assert new.secret not in str(info.value)

    def test_revealable_with_encryption_key(self, clock: ManualClock) -> None:
        key = Fernet.generate_key()
        storage = MemoryStorage()
        registry = Registry(storage=storage, clock=clock, secret_encryption_key=key)
        new = register(registry)

        assert new.secret == registry.reveal_secret(new.app.key)
        # It is real encryption: the ciphertext in storage opens with the key, and only so.
        stored = storage._data.secrets[new.app.key]
        assert stored.ciphertext is not None
        assert new.secret.encode() == Fernet(key).decrypt(stored.ciphertext)
        assert new.secret.encode() not in stored_bytes(storage)
        assert key not in repr(registry).encode()

        again = registry.regenerate_secret(new.app.key)
        assert again.secret == registry.reveal_secret(new.app.key)

    def test_secret_stored_before_the_key_was_configured(self, clock: ManualClock) -> None:
        storage = MemoryStorage()
        new = register(Registry(storage=storage, clock=clock))
        with_key = Registry(
            storage=storage, clock=clock, secret_encryption_key=Fernet.generate_key()
        )

        with pytest.raises(SecretNotRetrievable):
            with_key.reveal_secret(new.app.key)

    def test_unknown_app(self, registry: Registry) -> None:
        with pytest.raises(AppNotFound):
            registry.reveal_secret("K" * 32)


class TestR8RegenerateSecret:
    """Regenerating invalidates the old secret and removes every token of the app, atomically."""

    def test_old_secret_fails_new_works_tokens_gone(self, registry: Registry) -> None:
        new = installed(registry, "globex", trusted=True)
        permit(registry, "acme")
        other = installed(registry, "globex", trusted=True)
        tokens = [issue(registry, new), issue(registry, new, "globex")]
        other_token = issue(registry, other)

        again = registry.regenerate_secret(new.app.key)

        assert Reason.BAD_CREDENTIALS == denial(
            lambda: registry.issue_token(new.app.key, new.secret)
        )
        assert Reason.ALLOWED == reason(
            registry, registry.issue_token(new.app.key, again.secret).token
        )
        assert [Reason.TOKEN_UNKNOWN] * 2 == [reason(registry, t) for t in tokens]
        assert Reason.ALLOWED == reason(registry, other_token)
        assert new.secret != again.secret

    def test_one_transaction(
        self,
        flaky_registry: Registry,
        instrumented: InstrumentedStorage,
        recorder: EventRecorder,
    ) -> None:
        new = installed(flaky_registry, "globex", trusted=True)
        permit(flaky_registry, "acme")
        token = issue(flaky_registry, new)
        before = snapshot(instrumented.inner)
        recorder.clear()
        instrumented.arm("tokens.remove_all_of_app")

        with pytest.raises(StorageError):
            flaky_registry.regenerate_secret(new.app.key)

        assert "tokens.remove_all_of_app" in instrumented.names()
        assert before == snapshot(instrumented.inner)
        assert [] == recorder.events
        assert Reason.ALLOWED == reason(flaky_registry, token)
        assert Reason.ALLOWED == reason(flaky_registry, issue(flaky_registry, new))


class TestR9Limits:
    """One owner may register a configurable number of apps (1000 by default); fields are capped."""

    def test_configured_limit(
        self, storage: MemoryStorage, clock: ManualClock, recorder: EventRecorder
    ) -> None:
        registry = Registry(
            storage=storage, clock=clock, listeners=[recorder], max_apps_per_owner=2
        )
        register(registry)
        register(registry)
        before = all_apps(registry)
        recorder.clear()

        with pytest.raises(LimitExceeded):
            register(registry)

        assert before == all_apps(registry)
        assert [] == recorder.events
        assert "globex" == register(registry, "globex").app.owner

    def test_default_limit_is_1000(self, registry: Registry) -> None:
        for _ in range(1000):
            register(registry)

        with pytest.raises(LimitExceeded):
            register(registry)
        assert 1000 == registry.list_apps().total

    @pytest.mark.parametrize(("field", "longest"), [("name", 100), ("description", 1000)])
    def test_length_limits(self, registry: Registry, field: str, longest: int) -> None:
        assert "x" * longest == getattr(register(registry, **{field: "x" * longest}).app, field)

        with pytest.raises(ValidationError) as info:
            register(registry, **{field: "x" * (longest + 1)})
        assert [(field, "too_long")] == [(p.field, p.code) for p in info.value.problems]

    def test_limit_must_be_positive(self, storage: MemoryStorage) -> None:
        with pytest.raises(ValueError, match="max_apps_per_owner"):
            Registry(storage=storage, max_apps_per_owner=0)


class TestR10ValidationListsEveryProblem:
    """Bad input raises one ValidationError listing every problem; nothing is written."""

    def test_every_problem_at_once_and_nothing_written(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        register(registry)
        before = all_apps(registry)
        recorder.clear()

        with pytest.raises(ValidationError) as info:
            registry.register_app(
                "acme",
                name="x" * 101,
                homepage="ftp://example.com/",
                image_url="http://user@example.com/",
                admin_email="nobody",
                admin_phone="12",
                redirect_url="http://example.com/cb",
                description="bad \x00 byte",
            )

        problems = info.value.problems
        assert {
            "name",
            "homepage",
            "image_url",
            "admin_email",
            "admin_phone",
            "redirect_url",
            "description",
        } == info.value.fields
        assert all(p.code and p.message for p in problems)
        assert before == all_apps(registry)
        assert [] == recorder.events

    def test_update_with_bad_input_changes_nothing(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        app = register(registry).app
        recorder.clear()

        with pytest.raises(ValidationError) as info:
            registry.update_app(app.key, name="", redirect_url="http://example.com/")

        assert {"name", "redirect_url"} == info.value.fields
        assert app == registry.get_app(app.key)
        assert [] == recorder.events

    def test_update_changes_only_given_fields(self, registry: Registry) -> None:
        app = register(registry, description="old").app

        updated = registry.update_app(app.key, name="Renamed", description=None)

        assert ("Renamed", None, app.homepage) == (
            updated.name,
            updated.description,
            updated.homepage,
        )


# -- status ------------------------------------------------------------------------------------


class TestR11DisableKeepsTokens:
    """A disabled app cannot obtain or use tokens; on re-enable, unexpired tokens work again."""

    def test_disabled_app_can_neither_issue_nor_use(self, registry: Registry) -> None:
        new = installed(registry, "globex", trusted=True)
        permit(registry, "acme")
        tokens = [issue(registry, new), issue(registry, new, "globex")]

        registry.disable_app(new.app.key)

        assert [Reason.APP_DISABLED] * 2 == [reason(registry, t) for t in tokens]
        assert Reason.APP_DISABLED == denial(lambda: issue(registry, new))
        assert Reason.APP_DISABLED == denial(lambda: issue(registry, new, "globex"))
        assert Reason.APP_DISABLED == denial(
            lambda: registry.install_app(new.app.key, "acme", by="admin")
        )
        # The tokens are kept, only inert.
        assert 1 == registry.list_tokens(new.app.key, "globex").total

    def test_reenable_revives_unexpired_only(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        early = issue(registry, new, "globex")
        clock.advance(timedelta(minutes=30))
        late = issue(registry, new, "globex")
        registry.disable_app(new.app.key)
        clock.advance(timedelta(minutes=45))  # early expired meanwhile; late has 15 minutes

        registry.enable_app(new.app.key)

        assert Reason.TOKEN_EXPIRED == reason(registry, early)
        assert Reason.ALLOWED == reason(registry, late)
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "globex"))

    def test_unknown_app(self, registry: Registry) -> None:
        with pytest.raises(AppNotFound):
            registry.disable_app("K" * 32)


class TestR12SuspendPerAccount:
    """Suspending an installation stops the app on that account only; resuming revives it."""

    def test_suspension_is_limited_to_the_account(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        new = installed(registry, "globex", "initech")
        globex = issue(registry, new, "globex")
        initech = issue(registry, new, "initech")

        registry.suspend_installation(new.app.key, "globex")

        assert Reason.INSTALLATION_SUSPENDED == reason(registry, globex)
        assert Reason.ALLOWED == reason(registry, initech)
        assert Reason.INSTALLATION_SUSPENDED == denial(lambda: issue(registry, new, "globex"))
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "initech"))

        clock.advance(timedelta(minutes=30))
        fresh = issue(registry, new, "initech")
        clock.advance(timedelta(minutes=45))
        registry.resume_installation(new.app.key, "globex")

        assert Reason.TOKEN_EXPIRED == reason(registry, globex)
        assert Reason.ALLOWED == reason(registry, fresh)
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "globex"))

    def test_suspension_stops_the_owners_client_credentials_tokens(
        self, registry: Registry
    ) -> None:
        # The owner installed its own trusted app and suspended it there: the app must not
        # act on that account, whichever grant its token came from.
        new = installed(registry, "acme", trusted=True)
        token = issue(registry, new)

        registry.suspend_installation(new.app.key, "acme")

        assert Reason.INSTALLATION_SUSPENDED == reason(registry, token)
        assert Reason.INSTALLATION_SUSPENDED == denial(lambda: issue(registry, new))
        registry.resume_installation(new.app.key, "acme")
        assert Reason.ALLOWED == reason(registry, token)

    def test_installation_must_exist(self, registry: Registry) -> None:
        new = installed(registry, "globex")

        with pytest.raises(InstallationNotFound):
            registry.suspend_installation(new.app.key, "initech")
        with pytest.raises(InstallationNotFound):
            registry.resume_installation("K" * 32, "globex")

    def test_suspended_flag_is_listed(self, registry: Registry) -> None:
        new = installed(registry, "globex")

        registry.suspend_installation(new.app.key, "globex")

        listed = registry.list_installations("globex").items
        assert [(new.app.key, True)] == [(i.app.key, i.installation.suspended) for i in listed]


class TestR13RemoveApp:
    """Removing an app removes its installations and tokens; its key never works again."""

    def test_everything_goes(self, registry: Registry) -> None:
        new = installed(registry, "globex", "acme", trusted=True)
        tokens = [issue(registry, new), issue(registry, new, "globex")]

        registry.remove_app(new.app.key)

        with pytest.raises(AppNotFound):
            registry.get_app(new.app.key)
        assert [Reason.TOKEN_UNKNOWN] * 2 == [reason(registry, t) for t in tokens]
        # The key never authenticates again: as for any key unknown, R25.
        assert Reason.BAD_CREDENTIALS == denial(lambda: issue(registry, new))
        assert Reason.BAD_CREDENTIALS == denial(lambda: issue(registry, new, "globex"))
        assert 0 == registry.list_installations("globex").total
        assert [] == all_apps(registry)
        with pytest.raises(AppNotFound):
            registry.install_app(new.app.key, "globex", by="admin")
        with pytest.raises(AppNotFound):
            registry.remove_app(new.app.key)

    def test_one_transaction(
        self,
        flaky_registry: Registry,
        instrumented: InstrumentedStorage,
        recorder: EventRecorder,
    ) -> None:
        new = installed(flaky_registry, "globex", trusted=True)
        token = issue(flaky_registry, new, "globex")
        before = snapshot(instrumented.inner)
        recorder.clear()
        instrumented.arm("apps.remove")

        with pytest.raises(StorageError):
            flaky_registry.remove_app(new.app.key)

        assert before == snapshot(instrumented.inner)
        assert Reason.ALLOWED == reason(flaky_registry, token)
        assert 1 == flaky_registry.list_apps().items[0].instances
        assert [] == recorder.events


# -- accounts and installations ----------------------------------------------------------------


class TestR14AppsPermission:
    """Without the apps permission: no installation, no tokens, no acting; restoring revives."""

    def test_not_permitted_account(self, registry: Registry) -> None:
        new = register(registry, trusted=True)

        assert Reason.APPS_NOT_PERMITTED == denial(
            lambda: registry.install_app(new.app.key, "globex", by="admin")
        )
        # The owner itself needs it for client credentials (R19).
        assert Reason.APPS_NOT_PERMITTED == denial(lambda: issue(registry, new))

    def test_forbid_and_permit_again(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        old = issue(registry, new, "globex")
        clock.advance(timedelta(minutes=30))
        young = issue(registry, new, "globex")

        registry.forbid_account("globex")

        assert [Reason.APPS_NOT_PERMITTED] * 2 == [reason(registry, t) for t in (old, young)]
        assert Reason.APPS_NOT_PERMITTED == denial(lambda: issue(registry, new, "globex"))
        assert 2 == registry.list_tokens(new.app.key, "globex").total  # kept

        clock.advance(timedelta(minutes=45))
        permit(registry, "globex")

        assert Reason.TOKEN_EXPIRED == reason(registry, old)
        assert Reason.ALLOWED == reason(registry, young)

    def test_permission_records_who_and_when(self, registry: Registry, clock: ManualClock) -> None:
        first = registry.permit_account("globex", by="provider")
        clock.advance(HOUR)

        assert first == registry.permit_account("globex", by="someone-else")
        assert ("globex", "provider", clock() - HOUR) == (
            first.account,
            first.granted_by,
            first.granted_at,
        )
        registry.forbid_account("globex")
        assert registry.get_permission("globex") is None


class TestR15Installations:
    """An installation records when and by whom; Instances counts accounts; uninstall cleans up."""

    def test_records_when_and_by_whom(self, registry: Registry, clock: ManualClock) -> None:
        new = register(registry)
        permit(registry, "globex")
        clock.advance(timedelta(days=2))

        installation = registry.install_app(new.app.key, "globex", by="alice")

        assert ("alice", clock(), False) == (
            installation.installed_by,
            installation.installed_at,
            installation.suspended,
        )
        [listed] = registry.list_installations("globex").items
        assert installation == listed.installation

    def test_installing_again_keeps_the_first(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        first = registry.list_installations("globex").items[0].installation
        registry.suspend_installation(new.app.key, "globex")
        clock.advance(HOUR)

        again = registry.install_app(new.app.key, "globex", by="bob")

        assert ("admin@globex", first.installed_at, True) == (
            again.installed_by,
            again.installed_at,
            again.suspended,
        )

    def test_instances_count_accounts(self, registry: Registry) -> None:
        new = installed(registry, "globex", "initech")
        registry.install_app(new.app.key, "globex", by="again")

        assert [2] == [listing.instances for listing in all_apps(registry)]
        registry.uninstall_app(new.app.key, "initech")
        assert [1] == [listing.instances for listing in all_apps(registry)]

    def test_uninstall_removes_that_accounts_tokens_only(self, registry: Registry) -> None:
        new = installed(registry, "globex", "initech")
        globex = [issue(registry, new, "globex") for _ in range(2)]
        initech = issue(registry, new, "initech")

        assert 2 == registry.uninstall_app(new.app.key, "globex")

        assert [Reason.TOKEN_UNKNOWN] * 2 == [reason(registry, t) for t in globex]
        assert Reason.ALLOWED == reason(registry, initech)
        assert Reason.INSTALLATION_MISSING == denial(lambda: issue(registry, new, "globex"))
        with pytest.raises(InstallationNotFound):
            registry.uninstall_app(new.app.key, "globex")

    def test_uninstall_is_one_transaction(
        self, flaky_registry: Registry, instrumented: InstrumentedStorage
    ) -> None:
        new = installed(flaky_registry, "globex")
        token = issue(flaky_registry, new, "globex")
        before = snapshot(instrumented.inner)
        instrumented.arm("installations.remove")

        with pytest.raises(StorageError):
            flaky_registry.uninstall_app(new.app.key, "globex")

        assert before == snapshot(instrumented.inner)
        assert Reason.ALLOWED == reason(flaky_registry, token)


class TestR16HostRules:
    """Account hierarchy and activity are the host's: it adds rules, run after the built-ins."""

    @staticmethod
    def inactive_accounts(request: AccessRequest, now: datetime) -> Decision | None:
        if request.account == "dormant":
            return Decision.deny("account_inactive", "the account is inactive")
        return None

    def test_host_rule_applies_to_every_action(
        self, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        registry = Registry(
            storage=storage, clock=clock, policy=Policy(extra_rules=[self.inactive_accounts])
        )
        new = installed(registry, "globex")
        permit(registry, "dormant")

        assert "account_inactive" == denial(
            lambda: registry.install_app(new.app.key, "dormant", by="admin")
        )
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "globex"))

    def test_built_in_rules_come_first(self, storage: MemoryStorage, clock: ManualClock) -> None:
        registry = Registry(
            storage=storage, clock=clock, policy=Policy(extra_rules=[self.inactive_accounts])
        )
        new = register(registry)
        permit(registry, "dormant")
        registry.disable_app(new.app.key)

        assert Reason.APP_DISABLED == denial(
            lambda: registry.install_app(new.app.key, "dormant", by="admin")
        )


# -- tokens ------------------------------------------------------------------------------------


class TestR17Tokens:
    """Tokens: 256 random bits, stored only as a digest, a public id, a capped user agent."""

    def test_at_least_256_bits_and_distinct(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        tokens = [issue(registry, new, "globex") for _ in range(100)]

        assert min(len(raw_token_bytes(t)) for t in tokens) * 8 >= 256
        assert len(tokens) == len(set(tokens))

    def test_stored_only_as_digest(self, registry: Registry, storage: MemoryStorage) -> None:
        new = installed(registry, "globex", trusted=True)
        permit(registry, "acme")
        tokens = [issue(registry, new, "globex"), issue(registry, new)]

        blob = stored_bytes(storage)
        for token in tokens:
            assert token.encode() not in blob
            assert raw_token_bytes(token) not in blob
            assert token not in repr(storage)
        # And yet the digest finds them: the check works.
        assert [Reason.ALLOWED] * 2 == [reason(registry, t) for t in tokens]

    def test_record(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")

        issued = registry.issue_token(
            new.app.key,
            new.secret,
            account="globex",
            approved_by="alice",
            user_agent="libwww-perl 5.833",
        )

        record = issued.record
        assert (new.app.key, "globex", clock(), clock() + HOUR, "libwww-perl 5.833") == (
            record.app_key,
            record.account,
            record.issued_at,
            record.expires_at,
            record.user_agent,
        )
        assert Grant.USER_APPROVAL == record.grant
        assert issued.token not in repr(issued)
        assert issued.token not in record.token_id
        assert [record] == list(registry.list_tokens(new.app.key, "globex").items)
        assert record == registry.check_token(issued.token).token

    def test_user_agent_is_capped(self, registry: Registry, recorder: EventRecorder) -> None:
        new = installed(registry, "globex")
        assert (
            "u" * 512
            == registry.issue_token(
                new.app.key, new.secret, account="globex", approved_by="alice", user_agent="u" * 512
            ).record.user_agent
        )
        recorder.clear()

        with pytest.raises(ValidationError) as info:
            registry.issue_token(
                new.app.key, new.secret, account="globex", approved_by="alice", user_agent="u" * 513
            )

        assert [("user_agent", "too_long")] == [(p.field, p.code) for p in info.value.problems]
        assert 1 == registry.list_tokens(new.app.key, "globex").total
        assert [] == recorder.events

    @pytest.mark.parametrize("presented", ["", "x" * 10_000, "no such token", 42, None])
    def test_anything_else_is_unknown(self, registry: Registry, presented: Any) -> None:
        assert Reason.TOKEN_UNKNOWN == reason(registry, presented)


class TestR18Lifetime:
    """A token lives one hour by default; the lifetime is configurable."""

    def test_default_one_hour(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        token = issue(registry, new, "globex")

        clock.advance(HOUR - timedelta(microseconds=1))
        assert Reason.ALLOWED == reason(registry, token)
        clock.advance(timedelta(microseconds=1))
        assert Reason.TOKEN_EXPIRED == reason(registry, token)

    def test_configurable(self, storage: MemoryStorage, clock: ManualClock) -> None:
        registry = Registry(storage=storage, clock=clock, token_lifetime=timedelta(minutes=5))
        new = installed(registry, "globex")
        issued = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        )

        assert timedelta(minutes=5) == issued.record.expires_at - issued.record.issued_at
        assert 300 == issued.expires_in(clock())
        clock.advance(timedelta(minutes=5))
        assert Reason.TOKEN_EXPIRED == reason(registry, issued.token)

    @pytest.mark.parametrize("lifetime", [timedelta(0), timedelta(seconds=-1)])
    def test_lifetime_must_be_positive(self, storage: MemoryStorage, lifetime: timedelta) -> None:
        with pytest.raises(ValueError, match="token_lifetime"):
            Registry(storage=storage, token_lifetime=lifetime)


class TestR19Grants:
    """Trusted apps use client credentials for their owner; others need an installation."""

    def test_client_credentials_act_for_the_owner_without_installation(
        self, registry: Registry
    ) -> None:
        new = register(registry, trusted=True)
        permit(registry, "acme")

        issued = registry.issue_token(new.app.key, new.secret)

        assert ("acme", Grant.CLIENT_CREDENTIALS) == (issued.record.account, issued.record.grant)
        assert Reason.ALLOWED == reason(registry, issued.token)
        # Not installed, but listed on its owner's App Management for its tokens.
        (listed,) = registry.list_installations("acme").items
        assert (None, False, 1) == (listed.installation, listed.installed, listed.access_tokens)

    def test_client_credentials_need_the_owners_permission(self, registry: Registry) -> None:
        new = register(registry, trusted=True)
        permit(registry, "acme")
        token = issue(registry, new)

        registry.forbid_account("acme")

        assert Reason.APPS_NOT_PERMITTED == reason(registry, token)
        assert Reason.APPS_NOT_PERMITTED == denial(lambda: issue(registry, new))

    def test_untrusted_app_gets_no_client_credentials(self, registry: Registry) -> None:
        new = installed(registry, "acme")

        assert Reason.APP_NOT_TRUSTED == denial(lambda: issue(registry, new))

    def test_trust_withdrawn_stops_client_credentials_tokens(self, registry: Registry) -> None:
        new = register(registry, trusted=True)
        permit(registry, "acme")
        token = issue(registry, new)

        registry.update_app(new.app.key, trusted=False)

        assert Reason.APP_NOT_TRUSTED == reason(registry, token)

    @pytest.mark.parametrize("trusted", [False, True])
    def test_no_token_for_an_account_without_a_named_approval(
        self, registry: Registry, recorder: EventRecorder, trusted: bool
    ) -> None:
        """A token for an account names the user who approved it; nothing is written without."""
        new = installed(registry, "globex", trusted=trusted)
        recorder.clear()

        refused = problems_of(
            lambda: registry.issue_token(new.app.key, new.secret, account="globex")
        )
        blank = problems_of(
            lambda: registry.issue_token(new.app.key, new.secret, account="globex", approved_by="")
        )
        stray = problems_of(lambda: registry.issue_token(new.app.key, new.secret, approved_by="a"))

        assert [("approved_by", "required")] * 2 == refused + blank
        assert [("approved_by", "unexpected")] == stray
        assert ([], 0) == (recorder.events, registry.list_tokens(new.app.key, "globex").total)

    def test_an_approved_token_records_its_user_and_a_truthful_grant(
        self, registry: Registry, recorder: EventRecorder
    ) -> None:
        """Not ``authorization_code``: no code exists. The user is in the issue's event."""
        new = installed(registry, "globex")
        recorder.clear()

        issued = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        )

        (event,) = recorder.events
        assert (Grant.USER_APPROVAL, "globex") == (issued.record.grant, issued.record.account)
        assert {
            "token_id": issued.record.token_id,
            "grant": "user_approval",
            "approved_by": "alice",
        } == dict(event.details)
        assert Reason.ALLOWED == reason(registry, issued.token)
        registry.suspend_installation(new.app.key, "globex")
        assert Reason.INSTALLATION_SUSPENDED == reason(registry, issued.token)

    @pytest.mark.parametrize("trusted", [False, True])
    def test_acting_for_an_account_needs_its_installation(
        self, registry: Registry, trusted: bool
    ) -> None:
        new = register(registry, trusted=trusted)
        permit(registry, "globex")

        assert Reason.INSTALLATION_MISSING == denial(lambda: issue(registry, new, "globex"))

        registry.install_app(new.app.key, "globex", by="admin")
        issued = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        )
        assert ("globex", Grant.USER_APPROVAL) == (issued.record.account, issued.record.grant)
        assert Reason.ALLOWED == reason(registry, issued.token)


class TestR20RemoveTokens:
    """Removed tokens are dead at once, the app may get new ones; an unknown id removes none."""

    def test_remove_selected(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        issued = [
            registry.issue_token(new.app.key, new.secret, account="globex", approved_by="alice")
            for _ in range(3)
        ]

        removed = registry.remove_tokens([issued[0].record.token_id, issued[1].record.token_id])

        assert 2 == removed
        assert [Reason.TOKEN_UNKNOWN, Reason.TOKEN_UNKNOWN, Reason.ALLOWED] == [
            reason(registry, i.token) for i in issued
        ]
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "globex"))

    def test_unknown_id_removes_nothing(self, registry: Registry, recorder: EventRecorder) -> None:
        new = installed(registry, "globex")
        issued = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        )
        recorder.clear()

        with pytest.raises(TokenNotFound):
            registry.remove_tokens([issued.record.token_id, "no-such-id"])

        assert Reason.ALLOWED == reason(registry, issued.token)
        assert [] == recorder.events

    def test_scope_must_match(self, registry: Registry) -> None:
        new = installed(registry, "globex", "initech")
        other = installed(registry, "globex")
        token_id = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        ).record.token_id

        with pytest.raises(TokenNotFound):
            registry.remove_tokens([token_id], key=other.app.key)
        with pytest.raises(TokenNotFound):
            registry.remove_tokens([token_id], account="initech")
        assert 1 == registry.remove_tokens([token_id], key=new.app.key, account="globex")

    def test_remove_all_of_app_and_account(self, registry: Registry) -> None:
        new = installed(registry, "globex", "initech")
        globex = [issue(registry, new, "globex") for _ in range(3)]
        initech = issue(registry, new, "initech")

        assert 3 == registry.remove_all_tokens(new.app.key, "globex")

        assert [Reason.TOKEN_UNKNOWN] * 3 == [reason(registry, t) for t in globex]
        assert Reason.ALLOWED == reason(registry, initech)
        assert Reason.ALLOWED == reason(registry, issue(registry, new, "globex"))
        with pytest.raises(AppNotFound):
            registry.remove_all_tokens("K" * 32, "globex")

    @pytest.mark.parametrize("token_ids", ["a-single-string", [1, 2], ["x"] * 1001])
    def test_bad_selection(self, registry: Registry, token_ids: Any) -> None:
        with pytest.raises(ValidationError) as info:
            registry.remove_tokens(token_ids)
        assert {"token_ids"} == info.value.fields


class TestR21AccessTokensCount:
    """The Access Tokens count of an app and account is the number of its live tokens."""

    def test_counts_live_tokens_only(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        first = registry.issue_token(new.app.key, new.secret, account="globex", approved_by="alice")
        clock.advance(timedelta(minutes=30))
        issue(registry, new, "globex")
        issue(registry, new, "globex")
        registry.remove_tokens([first.record.token_id])

        def counts() -> tuple[int, int]:
            [listed] = registry.list_installations("globex").items
            return listed.access_tokens, registry.list_tokens(new.app.key, "globex").total

        assert (2, 2) == counts()
        clock.advance(timedelta(minutes=30))
        assert (2, 2) == counts()
        clock.advance(timedelta(minutes=30))
        assert (0, 0) == counts()


class TestR22Purge:
    """Expired tokens are purged in bounded batches, one transaction each."""

    def make_tokens(self, registry: Registry, clock: ManualClock, expired: int, live: int) -> Any:
        new = installed(registry, "globex")
        old = [issue(registry, new, "globex") for _ in range(expired)]
        clock.advance(timedelta(minutes=30))
        young = [issue(registry, new, "globex") for _ in range(live)]
        clock.advance(timedelta(minutes=31))
        return old, young

    def test_batches_respect_the_size_and_total_is_returned(
        self,
        flaky_registry: Registry,
        instrumented: InstrumentedStorage,
        clock: ManualClock,
        recorder: EventRecorder,
    ) -> None:
        old, young = self.make_tokens(flaky_registry, clock, expired=7, live=2)
        instrumented.calls.clear()
        recorder.clear()

        assert 7 == flaky_registry.purge_expired_tokens(batch_size=3).total

        purges = [
            (c[2]["limit"], c[3]) for c in instrumented.calls if c[0] == "tokens.purge_expired"
        ]
        assert [(3, 3), (3, 3), (3, 1)] == purges
        assert [3, 3, 1] == [e.details["count"] for e in recorder.events]
        assert {Reason.TOKEN_UNKNOWN} == {reason(flaky_registry, t) for t in old}
        assert {Reason.ALLOWED} == {reason(flaky_registry, t) for t in young}

    def test_max_batches(self, registry: Registry, clock: ManualClock) -> None:
        self.make_tokens(registry, clock, expired=7, live=1)

        assert 3 == registry.purge_expired_tokens(batch_size=3, max_batches=1).total
        assert 4 == registry.purge_expired_tokens(batch_size=10).total
        assert 0 == registry.purge_expired_tokens().total

    def test_nothing_to_purge_emits_nothing(
        self, registry: Registry, clock: ManualClock, recorder: EventRecorder
    ) -> None:
        self.make_tokens(registry, clock, expired=0, live=2)
        recorder.clear()

        assert 0 == registry.purge_expired_tokens().total
        assert [] == recorder.events

    @pytest.mark.parametrize(("batch_size", "max_batches"), [(0, None), (1, 0)])
    def test_bounds_must_be_positive(
        self, registry: Registry, batch_size: int, max_batches: int | None
    ) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            registry.purge_expired_tokens(batch_size=batch_size, max_batches=max_batches)


# -- policy ------------------------------------------------------------------------------------


class TestR23Decisions:
    """Checks return a Decision with an enum reason, never a bare bool; precedence is fixed."""

    def test_check_returns_a_decision(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        check = registry.check_token(issue(registry, new, "globex"))

        assert isinstance(check, TokenCheck)
        assert isinstance(check.decision, Decision)
        assert Reason.ALLOWED is check.decision.reason
        assert check.allowed is True
        denied = registry.check_token("not a token")
        assert (Reason.TOKEN_UNKNOWN, False) == (denied.reason, denied.allowed)
        assert denied.decision.detail

    def test_first_reason_in_order_is_reported(
        self, registry: Registry, clock: ManualClock
    ) -> None:
        new = installed(registry, "globex")
        old = issue(registry, new, "globex")
        clock.advance(timedelta(minutes=30))
        young = issue(registry, new, "globex")
        clock.advance(timedelta(minutes=31))
        registry.disable_app(new.app.key)
        registry.suspend_installation(new.app.key, "globex")
        registry.forbid_account("globex")

        assert Reason.TOKEN_EXPIRED == reason(registry, old)
        assert Reason.APP_DISABLED == reason(registry, young)
        registry.enable_app(new.app.key)
        assert Reason.INSTALLATION_SUSPENDED == reason(registry, young)
        registry.resume_installation(new.app.key, "globex")
        assert Reason.APPS_NOT_PERMITTED == reason(registry, young)

    def test_issue_precedence(self, registry: Registry) -> None:
        new = register(registry)
        wrong = RegisteredApp(new.app, "W" * 32)

        # A caller who does not authenticate hears bad_credentials whatever else applies.
        assert Reason.BAD_CREDENTIALS == denial(lambda: issue(registry, wrong))
        # One who does hears the first reason in order.
        assert Reason.APPS_NOT_PERMITTED == denial(lambda: issue(registry, new))
        permit(registry, "acme")
        assert Reason.APP_NOT_TRUSTED == denial(lambda: issue(registry, new))
        assert Reason.INSTALLATION_MISSING == denial(lambda: issue(registry, new, "acme"))
        registry.disable_app(new.app.key)
        assert Reason.APP_DISABLED == denial(lambda: issue(registry, new))
        assert Reason.BAD_CREDENTIALS == denial(lambda: issue(registry, wrong))

    def test_host_rules_run_in_the_order_given(
        self, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        def first(request: AccessRequest, now: datetime) -> Decision | None:
            return Decision.deny("first", "the first host rule")

        def second(request: AccessRequest, now: datetime) -> Decision | None:
            return Decision.deny("second", "the second host rule")

        registry = Registry(storage=storage, clock=clock, policy=Policy().with_rules(first, second))
        new = register(registry)
        permit(registry, "globex")

        assert "first" == denial(lambda: registry.install_app(new.app.key, "globex", by="a"))


class TestR24PurePolicy:
    """Policy is a pure function of records and ``now``; the Registry reads its clock once."""

    def test_same_records_different_times(self, registry: Registry, clock: ManualClock) -> None:
        new = installed(registry, "globex")
        issued = registry.issue_token(
            new.app.key, new.secret, account="globex", approved_by="alice"
        )
        context = registry.check_token(issued.token)
        request = AccessRequest.for_token(
            context.token,
            registry.get_app(new.app.key),
            registry.list_installations("globex").items[0].installation,
            registry.get_permission("globex"),
        )
        registry.close()  # no storage from here on: the policy needs none

        policy = Policy()
        assert Reason.ALLOWED == policy.evaluate(request, clock()).reason
        assert Reason.TOKEN_EXPIRED == policy.evaluate(request, clock() + HOUR).reason
        assert Reason.ALLOWED == policy.evaluate(request, clock()).reason

    def test_clock_read_once_per_operation(self, storage: MemoryStorage) -> None:
        manual = ManualClock()
        reads: list[datetime] = []

        def counting_clock() -> datetime:
            reads.append(manual())
            return manual()

        registry = Registry(storage=storage, clock=counting_clock)
        new = register(registry, trusted=True)
        permit(registry, "acme", "globex")
        token = issue(registry, new)
        operations: list[Callable[[], object]] = [
            lambda: registry.install_app(new.app.key, "globex", by="admin"),
            lambda: issue(registry, new),
            lambda: registry.check_token(token),
            lambda: registry.purge_expired_tokens(batch_size=1),
            lambda: registry.disable_app(new.app.key),
        ]
        for operation in operations:
            reads.clear()
            operation()
            assert 1 == len(reads)

    def test_unknown_token_check_reads_no_clock(self, storage: MemoryStorage) -> None:
        reads: list[datetime] = []
        manual = ManualClock()

        def counting_clock() -> datetime:
            reads.append(manual())
            return manual()

        registry = Registry(storage=storage, clock=counting_clock)

        assert not registry.check_token("unknown").allowed
        assert [] == reads

    def test_naive_clock_is_refused(self, storage: MemoryStorage) -> None:
        registry = Registry(storage=storage, clock=lambda: datetime(2015, 4, 20))  # noqa: DTZ001

        with pytest.raises(ValueError, match="aware"):
            register(registry)


class TestR25IndistinguishableCredentials:
    """An unknown key and a wrong secret look the same to the caller; secrets never echo."""

    def test_same_error_different_log_reason(self, registry: Registry) -> None:
        new = register(registry, trusted=True)
        permit(registry, "acme")
        presented = "P" * 32

        with pytest.raises(Denied) as wrong_secret:
            registry.issue_token(new.app.key, presented)
        with pytest.raises(Denied) as unknown_key:
            registry.issue_token("K" * 32, presented)

        assert str(wrong_secret.value) == str(unknown_key.value)
        assert wrong_secret.value.args == unknown_key.value.args
        for error in (wrong_secret.value, unknown_key.value):
            assert presented not in str(error)
            assert presented not in repr(error)
            assert presented not in repr(error.decision)
            assert new.secret not in repr(error.decision)

    def test_one_reason_for_every_failed_authentication(self, registry: Registry) -> None:
        """A wrong key, a wrong secret, and a wrong secret of a disabled, unpermitted,
        uninstalled or removed app: each is ``bad_credentials``, with one detail."""
        disabled = installed(registry, "globex", trusted=True)
        registry.disable_app(disabled.app.key)
        unpermitted = register(registry, "nobody", trusted=True)
        removed = installed(registry, "globex", trusted=True)
        registry.remove_app(removed.app.key)
        live = installed(registry, "globex", trusted=True)
        attempts: list[Callable[[], object]] = [
            lambda: registry.issue_token("K" * 32, "P" * 32),
            lambda: registry.issue_token("K" * 32, "P" * 32, account="globex", approved_by="a"),
            lambda: registry.issue_token(live.app.key, "P" * 32),
            lambda: registry.issue_token(
                live.app.key, "P" * 32, account="nowhere", approved_by="a"
            ),
        ]
        for new in (disabled, unpermitted, removed):
            attempts.append(lambda new=new: registry.issue_token(new.app.key, "P" * 32))
            attempts.append(
                lambda new=new: registry.issue_token(
                    new.app.key, "P" * 32, account="globex", approved_by="a"
                )
            )
        decisions = set()
        for attempt in attempts:
            with pytest.raises(Denied) as refused:
                attempt()
            decisions.add((refused.value.decision, str(refused.value)))

        (decision, _message), *others = decisions
        assert ([], Reason.BAD_CREDENTIALS) == (others, decision.reason)
        # With the right secret, the caller has authenticated and may hear why.
        assert Reason.APP_DISABLED == denial(lambda: issue(registry, disabled))
        assert Reason.APPS_NOT_PERMITTED == denial(lambda: issue(registry, unpermitted))

    def test_both_compare_a_digest(
        self, registry: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        new = register(registry, trusted=True)
        permit(registry, "acme")
        compared: list[int] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append(len(a))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)

        for key in (new.app.key, "K" * 32):
            compared.clear()
            with pytest.raises(Denied):
                registry.issue_token(key, "P" * 32)
            # The current secret's digest, and the previous one's (or a stand-in for it).
            assert [32, 32] == compared


# -- lists and events --------------------------------------------------------------------------


class TestR26Lists:
    """Lists search case-insensitively, page in any size up to 1000, with total and stable order."""

    def test_search_is_case_insensitive_including_unicode(self, registry: Registry) -> None:
        register(registry, name="Straße Planner")
        register(registry, name="ÉCOLE Tool")
        register(registry, name="Other", description="Für Bücher")
        register(registry, name="Plain")

        def names(search: str) -> list[str]:
            return [listing.app.name for listing in registry.list_apps(search=search).items]

        assert ["Straße Planner"] == names("STRASSE")
        assert ["Straße Planner"] == names("straße")
        assert ["ÉCOLE Tool"] == names("école")
        assert ["Other"] == names("BÜCHER")
        # Blank search is no search; the order is by case-folded name, code point by code point.
        assert ["Other", "Plain", "Straße Planner", "ÉCOLE Tool"] == names(" ")

    @pytest.mark.parametrize("per_page", [10, 25, 100, 1000])
    def test_page_sizes(self, registry: Registry, per_page: int) -> None:
        for i in range(120):
            register(registry, name=f"App {i:03}")

        first = registry.list_apps(per_page=per_page)
        last = registry.list_apps(per_page=per_page, page=first.pages)

        assert (min(per_page, 120), 120) == (len(first.items), first.total)
        assert 120 - (first.pages - 1) * per_page == len(last.items)

    @pytest.mark.parametrize(("page", "per_page"), [(1, 1001), (1, 0), (0, 10), (1, True)])
    def test_bad_paging_is_refused(self, registry: Registry, page: int, per_page: int) -> None:
        with pytest.raises(ValidationError):
            registry.list_apps(page=page, per_page=per_page)

    def test_stable_order_across_pages(self, registry: Registry) -> None:
        keys = sorted(register(registry, name="Same").app.key for _ in range(23))

        pages = [registry.list_apps(page=p, per_page=10) for p in (1, 2, 3)]

        assert keys == [listing.app.key for page in pages for listing in page.items]
        assert pages[0] == registry.list_apps(page=1, per_page=10)

    def test_page_beyond_the_end_is_empty(self, registry: Registry) -> None:
        for _ in range(3):
            register(registry)

        beyond = registry.list_apps(page=5, per_page=10)

        assert ((), 3) == (beyond.items, beyond.total)

    def test_owner_list_with_instances(self, registry: Registry) -> None:
        mine = installed(registry, "globex", "initech", owner="acme")
        installed(registry, "globex", owner="other")

        listed = registry.list_apps(owner="acme")

        assert [(mine.app.key, 2)] == [(a.app.key, a.instances) for a in listed.items]
        assert 2 == registry.list_apps().total

    def test_installation_and_token_lists(self, registry: Registry, clock: ManualClock) -> None:
        planner = installed(registry, "globex")
        registry.update_app(planner.app.key, name="Straße Planner")
        installed(registry, "globex")
        issue(registry, planner, "globex", user_agent="libwww-perl 5.833")
        clock.advance(timedelta(minutes=1))
        issue(registry, planner, "globex", user_agent="curl/8.5")

        found = registry.list_installations("globex", search="STRASSE")
        tokens = registry.list_tokens(planner.app.key, "globex")
        perl = registry.list_tokens(planner.app.key, "globex", search="LIBWWW")

        assert [(planner.app.key, 2)] == [(i.app.key, i.access_tokens) for i in found.items]
        assert 2 == registry.list_installations("globex").total
        assert ["libwww-perl 5.833", "curl/8.5"] == [t.user_agent for t in tokens.items]
        assert (1, "libwww-perl 5.833") == (perl.total, perl.items[0].user_agent)

    def test_big_pages_of_tokens(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        for _ in range(1001):
            issue(registry, new, "globex")

        page = registry.list_tokens(new.app.key, "globex", per_page=1000)
        rest = registry.list_tokens(new.app.key, "globex", per_page=1000, page=2)

        assert (1000, 1001, 2) == (len(page.items), page.total, page.pages)
        assert 1 == len(rest.items)
        assert not {t.token_id for t in page.items} & {t.token_id for t in rest.items}


class TestR27Events:
    """Every change emits an event after it commits; failures emit nothing; no secrets inside."""

    def test_every_change_emits_its_event(
        self, registry: Registry, recorder: EventRecorder, clock: ManualClock
    ) -> None:
        new = register(registry, trusted=True)
        key = new.app.key
        registry.update_app(key, name="Renamed")
        registry.update_app(key, name="Renamed")  # no change, no event
        permit(registry, "acme")
        registry.install_app(key, "acme", by="alice")
        token_id = registry.issue_token(key, new.secret).record.token_id
        registry.suspend_installation(key, "acme")
        registry.resume_installation(key, "acme")
        registry.disable_app(key)
        registry.enable_app(key)
        registry.remove_tokens([token_id])
        issue(registry, new)
        registry.remove_all_tokens(key, "acme")
        issue(registry, new)
        clock.advance(2 * HOUR)
        registry.purge_expired_tokens()
        new = registry.regenerate_secret(key)
        registry.uninstall_app(key, "acme")
        registry.forbid_account("acme")
        registry.remove_app(key)

        assert [
            EventKind.APP_REGISTERED,
            EventKind.APP_UPDATED,
            EventKind.ACCOUNT_PERMITTED,
            EventKind.APP_INSTALLED,
            EventKind.TOKEN_ISSUED,
            EventKind.INSTALLATION_SUSPENDED,
            EventKind.INSTALLATION_RESUMED,
            EventKind.APP_DISABLED,
            EventKind.APP_ENABLED,
            EventKind.TOKENS_REMOVED,
            EventKind.TOKEN_ISSUED,
            EventKind.TOKENS_REMOVED,
            EventKind.TOKEN_ISSUED,
            EventKind.TOKENS_PURGED,
            EventKind.APP_SECRET_REGENERATED,
            EventKind.APP_UNINSTALLED,
            EventKind.ACCOUNT_FORBIDDEN,
            EventKind.APP_REMOVED,
        ] == recorder.kinds()
        assert {key} == {e.app_key for e in recorder.events if e.app_key is not None}

    def test_listeners_run_after_commit(self, storage: MemoryStorage, clock: ManualClock) -> None:
        seen: list[object] = []

        def listener(event: Event) -> None:
            # Inside the transaction this would fail (transactions do not nest) or miss the app.
            seen.append(registry.get_app(event.app_key or ""))

        registry = Registry(storage=storage, clock=clock, listeners=[listener])
        new = register(registry)

        assert [new.app] == seen

    def test_failing_operations_emit_nothing(
        self,
        flaky_registry: Registry,
        instrumented: InstrumentedStorage,
        recorder: EventRecorder,
    ) -> None:
        new = installed(flaky_registry, "globex")
        recorder.clear()
        failures: list[Callable[[], object]] = [
            lambda: register(flaky_registry, name=""),
            lambda: issue(flaky_registry, new),
            lambda: flaky_registry.issue_token(
                new.app.key, "W" * 32, account="globex", approved_by="alice"
            ),
            lambda: flaky_registry.install_app(new.app.key, "nobody", by="x"),
            lambda: flaky_registry.remove_tokens(["no-such-id"]),
            lambda: flaky_registry.uninstall_app(new.app.key, "nobody"),
            lambda: flaky_registry.disable_app("K" * 32),
        ]
        for failure in failures:
            with pytest.raises(
                (Denied, ValidationError, TokenNotFound, AppNotFound, InstallationNotFound)
            ):
                failure()
        instrumented.arm("apps.update")
        with pytest.raises(StorageError):
            flaky_registry.disable_app(new.app.key)

        # No change is told of; only the wrong secret's failed authentication is counted.
        assert [EventKind.AUTHENTICATION_FAILED] == recorder.kinds()
        assert flaky_registry.get_app(new.app.key).enabled

    def test_a_raising_listener_is_logged_and_changes_nothing(
        self,
        storage: MemoryStorage,
        clock: ManualClock,
        recorder: EventRecorder,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def broken(event: Event) -> None:
            raise RuntimeError("audit sink down")

        registry = Registry(storage=storage, clock=clock, listeners=[broken, recorder])

        with caplog.at_level(logging.ERROR, logger="appregistry"):
            new = register(registry)

        assert new.app == registry.get_app(new.app.key)
        assert [EventKind.APP_REGISTERED] == recorder.kinds()
        [record] = caplog.records
        assert record.exc_info is not None
        assert RuntimeError is record.exc_info[0]

    def test_events_never_carry_secrets_or_tokens(
        self, registry: Registry, recorder: EventRecorder, clock: ManualClock
    ) -> None:
        new = installed(registry, "globex", "acme", trusted=True)
        plaintext = [new.secret]
        plaintext += [issue(registry, new), issue(registry, new, "globex", user_agent="ua")]
        new = registry.regenerate_secret(new.app.key)
        plaintext += [new.secret, issue(registry, new), issue(registry, new, "globex")]
        registry.remove_all_tokens(new.app.key, "globex")
        clock.advance(2 * HOUR)
        registry.purge_expired_tokens()
        registry.remove_app(new.app.key)

        text = "\n".join(repr(e) + repr(dict(e.details)) for e in recorder.events)
        assert len(recorder.events) > 10
        for value in plaintext:
            assert value not in text


# -- storage rules the Registry must keep --------------------------------------------------------


class TestS2Transactions:
    """Each operation is all or nothing; concurrent operations serialize."""

    @pytest.mark.parametrize(
        ("method", "operation"),
        [
            ("apps.add", "register"),
            ("tokens.add", "issue"),
            ("tokens.remove", "remove_tokens"),
            ("installations.remove_all_of_app", "remove_app"),
            ("tokens.remove_all_of_app", "remove_app"),
            ("installations.put", "install"),
            ("permissions.remove", "forbid"),
        ],
    )
    def test_failure_mid_operation_leaves_state_unchanged(
        self,
        flaky_registry: Registry,
        instrumented: InstrumentedStorage,
        recorder: EventRecorder,
        method: str,
        operation: str,
    ) -> None:
        new = installed(flaky_registry, "globex", "acme", trusted=True)
        tokens = [issue(flaky_registry, new), issue(flaky_registry, new, "globex")]
        ids = [
            t.token_id
            for account in ("acme", "globex")
            for t in flaky_registry.list_tokens(new.app.key, account).items
        ]
        operations: dict[str, Callable[[], object]] = {
            "register": lambda: register(flaky_registry),
            "issue": lambda: issue(flaky_registry, new),
            "remove_tokens": lambda: flaky_registry.remove_tokens(ids),
            "remove_app": lambda: flaky_registry.remove_app(new.app.key),
            "install": lambda: flaky_registry.install_app(new.app.key, "initech", by="x"),
            "forbid": lambda: flaky_registry.forbid_account("globex"),
        }
        permit(flaky_registry, "initech")
        before = snapshot(instrumented.inner)
        recorder.clear()
        instrumented.arm(method)

        with pytest.raises(StorageError, match="injected"):
            operations[operation]()

        assert method in instrumented.names()
        assert before == snapshot(instrumented.inner)
        assert [Reason.ALLOWED] * 2 == [reason(flaky_registry, t) for t in tokens]
        assert [] == recorder.events

    def test_concurrent_issues_are_not_lost(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        issued: list[str] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(25):
                token = issue(registry, new, "globex")
                with lock:
                    issued.append(token)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert 200 == len(set(issued))
        assert 200 == registry.list_tokens(new.app.key, "globex", per_page=1000).total

    def test_closed_storage_refuses_work(self, registry: Registry) -> None:
        new = installed(registry, "globex")
        token = issue(registry, new, "globex")

        registry.close()

        with pytest.raises(StorageError):
            registry.check_token(token)
        with pytest.raises(StorageError):
            registry.list_apps()


class TestS6NoPlaintext:
    """No plaintext secret or token reaches storage, logs, reprs or error messages."""

    def test_full_life_leaves_no_plaintext(
        self, storage: MemoryStorage, clock: ManualClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        pepper = b"server-side pepper"
        fernet_key = Fernet.generate_key()

        def broken(event: Event) -> None:
            raise RuntimeError("audit sink down")

        registry = Registry(
            storage=storage,
            clock=clock,
            pepper=pepper,
            secret_encryption_key=fernet_key,
            listeners=[broken],
        )
        with caplog.at_level(logging.DEBUG):
            new = installed(registry, "globex", "acme", trusted=True)
            plaintext = [new.secret, issue(registry, new), issue(registry, new, "globex")]
            for call in (
                lambda: registry.issue_token(new.app.key, plaintext[0] + "x"),
                lambda: registry.issue_token("K" * 32, plaintext[0]),
            ):
                with pytest.raises(Denied) as info:
                    call()
                assert plaintext[0] not in str(info.value)
            new = registry.regenerate_secret(new.app.key)
            plaintext += [new.secret, issue(registry, new)]

        assert caplog.records  # the broken listener was logged...
        logged = caplog.text
        blob = stored_bytes(storage)
        reprs = repr(registry) + repr(storage) + repr(new)
        for value in plaintext:
            assert value not in logged  # ...without any secret or token
            assert value.encode() not in blob
            assert value not in reprs
        for key_material in (pepper, fernet_key):
            assert key_material not in blob
            assert key_material.decode() not in reprs

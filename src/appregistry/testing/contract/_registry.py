"""The Registry's rules end to end: the storage contract suite's part on the Registry."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final, TypeAlias

import attrs
import pytest
from cryptography.fernet import Fernet

from ..._credentials import Credentials, pkce_s256
from ..._policy import Reason
from ..._records import (
    AppListing,
    EventKind,
    Grant,
    ImportedCredentials,
    IssuedToken,
    RegisteredApp,
)
from ..._registry import Registry
from ...errors import (
    AppNotFound,
    Denied,
    InvalidGrant,
    TokenNotFound,
    ValidationError,
)
from ...ports import Storage
from .. import EventRecorder, ManualClock
from ._support import DAY, HOUR, T0, StorageFixtures, _get_refresh, _names, _take, new_key

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
        token = registry.issue_token(
            new.app.key, new.secret, account="acme", approved_by="alice"
        ).token
        registry.forbid_account("acme")
        assert Reason.APPS_NOT_PERMITTED == registry.check_token(token).reason
        assert Reason.APPS_NOT_PERMITTED == _denial(
            lambda: registry.issue_token(
                new.app.key, new.secret, account="acme", approved_by="alice"
            )
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
            tokens[account] = registry.issue_token(
                new.app.key, new.secret, account=account, approved_by="alice"
            ).token
        registry.suspend_installation(new.app.key, "acme")
        assert {"acme": Reason.INSTALLATION_SUSPENDED, "beta": Reason.ALLOWED} == {
            account: registry.check_token(token).reason for account, token in tokens.items()
        }
        assert Reason.INSTALLATION_SUSPENDED == _denial(
            lambda: registry.issue_token(
                new.app.key, new.secret, account="acme", approved_by="alice"
            )
        )
        registry.resume_installation(new.app.key, "acme")
        assert Reason.ALLOWED == registry.check_token(tokens["acme"]).reason

    def test_uninstall_removes_that_accounts_tokens(self, registry: Registry) -> None:
        """R15: uninstalling removes the installation and the account's tokens, no others."""
        new = _register(registry, "dev")
        for account in ("acme", "beta"):
            registry.permit_account(account, by="admin")
            registry.install_app(new.app.key, account, by="user")
        gone = [
            registry.issue_token(new.app.key, new.secret, account="acme", approved_by="alice")
            for _ in range(2)
        ]
        kept = registry.issue_token(new.app.key, new.secret, account="beta", approved_by="alice")
        assert 2 == registry.uninstall_app(new.app.key, "acme")
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t.token).reason for t in gone]
        assert Reason.ALLOWED == registry.check_token(kept.token).reason
        assert Reason.INSTALLATION_MISSING == _denial(
            lambda: registry.issue_token(
                new.app.key, new.secret, account="acme", approved_by="alice"
            )
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
            registry.issue_token(
                new.app.key, new.secret, account="acme", approved_by="alice"
            ).token,
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
            registry.issue_token(
                new.app.key, new.secret, account="acme", approved_by="alice"
            ).token,
        ]
        registry.remove_app(new.app.key)
        assert [Reason.TOKEN_UNKNOWN] * 2 == [registry.check_token(t).reason for t in tokens]
        with pytest.raises(AppNotFound):
            registry.get_app(new.app.key)
        # R13 and R25: the key never authenticates again, and is told apart from no other.
        assert Reason.BAD_CREDENTIALS == _denial(
            lambda: registry.issue_token(new.app.key, new.secret)
        )
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
        old = registry.issue_token(
            first.app.key, first.secret, account="acme", approved_by="alice", user_agent="old"
        )
        clock.advance(timedelta(minutes=40))
        tokens = [
            registry.issue_token(
                first.app.key, first.secret, account="acme", approved_by="alice", user_agent=agent
            )
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
        assert item.installation is not None
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
        assert 2 == registry.purge_expired_tokens(batch_size=2, max_batches=1).tokens
        assert 3 == registry.purge_expired_tokens(batch_size=2).tokens
        assert 0 == registry.purge_expired_tokens().total
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
            getattr(item.installation, "installed_by", None)
            for item in registry.list_installations("acme").items
        ]
        issued = _exchange(registry, new, code, user_agent="curl/8")
        assert Reason.ALLOWED == registry.check_token(issued.token).reason
        assert (Grant.AUTHORIZATION_CODE, "acme", "curl/8", "alice") == (
            issued.record.grant,
            issued.record.account,
            issued.record.user_agent,
            issued.record.approved_by,
        )
        # The allowed check is the token's last use (see LastUse).
        listed = list(registry.list_tokens(new.app.key, "acme").items)
        assert [issued.record] == [attrs.evolve(t, last_used_at=None) for t in listed]
        assert None is not listed[0].last_used_at
        assert issued.refresh_token is not None

        rotated = registry.refresh(new.app.key, issued.refresh_token)
        assert issued.record.family_id == rotated.record.family_id
        # The rotation's token carries the approver the code had, as stored and as checked.
        assert ["alice"] * 2 == [
            rotated.record.approved_by,
            getattr(registry.check_token(rotated.token).token, "approved_by", None),
        ]
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
        # Three codes (one used), an access token and a refresh token expired; batches of one.
        assert 5 == registry.purge_expired_tokens(batch_size=1).total
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

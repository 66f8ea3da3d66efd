"""The OAuth 2.0 grants on the Registry, over in-memory storage: every rule of the contract.

Authorization codes (once, ten minutes, bound to app and redirect URL, PKCE S256), refresh
tokens (rotation, reuse revoking the family), revocation (RFC 7009), the cascades that take
codes and refresh tokens with them, purges, events, client authentication (R25) and retired
keys (R13). The contract suite runs the essentials on every backend; this file states each
rule on its own.
"""

from __future__ import annotations

import hmac
import string
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _support as support
import appregistry._credentials as cred
from _support import APP_FIELDS, DAY, HOUR, denial
from _support import problems_of as problems
from appregistry import (
    AuthorizationCode,
    Decision,
    EventKind,
    Grant,
    ImportedCredentials,
    InstallationNotFound,
    InvalidGrant,
    IssuedCode,
    IssuedToken,
    Reason,
    RefreshToken,
    RegisteredApp,
    Registry,
)
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock

TEN_MINUTES = timedelta(minutes=10)
MICROSECOND = timedelta(microseconds=1)
REDIRECT = APP_FIELDS["redirect_url"]
# RFC 7636, appendix B: a verifier and its S256 challenge.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
GENERIC = "invalid, expired or used grant"
USED = "the code was used before; the tokens it gave are revoked"
UNRESERVED = string.ascii_letters + string.digits + "-._~"


# -- fixtures and helpers ---------------------------------------------------------------------


# The clock, recorder, storage and registry fixtures are in conftest.py.


def register(registry: Registry, owner: str = "dev", **changes: Any) -> RegisteredApp:
    return support.register(registry, owner, **changes)


@pytest.fixture
def app(registry: Registry) -> RegisteredApp:
    """An untrusted app of ``dev``; the accounts acme and beta are permitted to use apps."""
    new = register(registry)
    for account in ("acme", "beta"):
        registry.permit_account(account, by="provider")
    return new


def authorize(
    registry: Registry, new: RegisteredApp, account: str = "acme", *, pkce: bool = True, **kw: Any
) -> IssuedCode:
    options: dict[str, Any] = {"redirect_url": REDIRECT, "approved_by": "alice"}
    if pkce:
        options |= {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
    return registry.authorize(new.app.key, account, **(options | kw))


def exchange(registry: Registry, new: RegisteredApp, code: str, **kw: Any) -> IssuedToken:
    options: dict[str, Any] = {"redirect_url": REDIRECT, "code_verifier": VERIFIER}
    return registry.exchange_code(new.app.key, code, **(options | kw))


def grant(registry: Registry, new: RegisteredApp, account: str = "acme") -> IssuedToken:
    """Tokens from a fresh authorization of ``new`` on ``account``."""
    return exchange(registry, new, authorize(registry, new, account).code)


def refresh_of(issued: IssuedToken) -> str:
    assert issued.refresh_token is not None
    return issued.refresh_token


def refused(call: Callable[[], object]) -> str:
    """The detail of the `InvalidGrant` that ``call`` raises; its message is always generic."""
    with pytest.raises(InvalidGrant) as info:
        call()
    assert GENERIC == str(info.value)
    return info.value.detail


def reason(registry: Registry, token: str) -> str:
    return registry.check_token(token).reason


# -- authorization --------------------------------------------------------------------------


class TestAuthorize:
    """Approving an app installs it (R15) and issues a code; it is refused as install is."""

    def test_approval_installs_the_app_and_issues_a_code(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        issued = authorize(registry, app)

        assert (
            AuthorizationCode(
                app.app.key,
                "acme",
                REDIRECT,
                "alice",
                clock(),
                clock() + TEN_MINUTES,
                CHALLENGE,
                "S256",
            )
            == issued.record
        )
        (listed,) = registry.list_installations("acme").items
        assert ("alice", clock()) == (
            listed.installation.installed_by,
            listed.installation.installed_at,
        )
        assert issued.code not in repr(issued)
        assert (cred.TOKEN_LENGTH, True) == (len(issued.code), issued.code.isalnum())

    def test_an_existing_installation_is_kept_as_it_is(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        installed = registry.install_app(app.app.key, "acme", by="bob")
        clock.advance(HOUR)

        authorize(registry, app, approved_by="carol")

        assert [installed] == [i.installation for i in registry.list_installations("acme").items]

    def test_a_suspended_installation_stays_suspended_and_is_denied(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        registry.install_app(app.app.key, "acme", by="bob")
        suspended = registry.suspend_installation(app.app.key, "acme")
        recorder.clear()

        assert Reason.INSTALLATION_SUSPENDED == denial(lambda: authorize(registry, app))

        assert [suspended] == [i.installation for i in registry.list_installations("acme").items]
        assert [] == recorder.events

    @pytest.mark.parametrize(
        ("setup", "expected"),
        [
            (lambda r, key: r.disable_app(key), Reason.APP_DISABLED),
            (lambda r, key: r.forbid_account("acme"), Reason.APPS_NOT_PERMITTED),
            (lambda r, key: r.remove_app(key), Reason.APP_UNKNOWN),
        ],
        ids=["disabled", "not-permitted", "unknown"],
    )
    def test_the_policy_refuses_as_for_an_install(
        self,
        registry: Registry,
        app: RegisteredApp,
        recorder: EventRecorder,
        setup: Callable[[Registry, str], object],
        expected: str,
    ) -> None:
        setup(registry, app.app.key)
        recorder.clear()

        assert expected == denial(lambda: authorize(registry, app))

        assert 0 == registry.list_installations("acme").total
        assert [] == recorder.events

    @pytest.mark.parametrize(
        "url",
        [
            REDIRECT + "/more",  # a prefix match is no match (R4)
            REDIRECT + "?next=1",
            "https://example.com/MyApp/",
            "http://example.com/MyApp/handler",
            "https://example.com.evil.example/MyApp/handler",
            "not a url",
        ],
    )
    def test_a_redirect_url_other_than_the_apps_is_refused(
        self, registry: Registry, app: RegisteredApp, url: str
    ) -> None:
        assert [("redirect_url", "mismatch")] == problems(
            lambda: authorize(registry, app, redirect_url=url)
        )
        assert 0 == registry.list_installations("acme").total

    def test_the_redirect_url_is_compared_after_normalizing(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        issued = authorize(registry, app, redirect_url="https://EXAMPLE.com:443/MyApp/handler")

        assert REDIRECT == issued.record.redirect_url
        assert registry.redirect_url_matches(app.app.key, "https://Example.COM/MyApp/handler")
        assert not registry.redirect_url_matches(app.app.key, REDIRECT + "/")
        assert not registry.redirect_url_matches("K" * 32, REDIRECT)

    @pytest.mark.parametrize(
        ("challenge", "method", "expected"),
        [
            (VERIFIER, "plain", [("code_challenge_method", "unsupported")]),
            (CHALLENGE, "plain", [("code_challenge_method", "unsupported")]),
            (CHALLENGE, "s256", [("code_challenge_method", "unsupported")]),
            (CHALLENGE, None, [("code_challenge_method", "required")]),
            (None, "S256", [("code_challenge", "required")]),
            (CHALLENGE + "=", "S256", [("code_challenge", "invalid")]),
            (CHALLENGE[:-1] + "+", "S256", [("code_challenge", "invalid")]),
        ],
    )
    def test_pkce_is_s256_only(
        self,
        registry: Registry,
        app: RegisteredApp,
        challenge: str | None,
        method: str | None,
        expected: list[tuple[str, str]],
    ) -> None:
        assert expected == problems(
            lambda: authorize(
                registry, app, pkce=False, code_challenge=challenge, code_challenge_method=method
            )
        )

    def test_every_problem_is_reported_at_once_and_nothing_is_written(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        recorder.clear()

        found = problems(
            lambda: registry.authorize(
                app.app.key,
                " acme",
                redirect_url=REDIRECT + "x",
                approved_by="",
                code_challenge_method="plain",
            )
        )

        fields = {
            "account",
            "approved_by",
            "code_challenge_method",
            "code_challenge",
            "redirect_url",
        }
        assert fields == {field for field, _ in found}
        assert [] == recorder.events


# -- codes ----------------------------------------------------------------------------------


class TestCodesWorkOnce:
    """A code is exchanged once; it is used up first, so a failed exchange spends it too.

    A second exchange is a replay: it is refused, and the tokens the first one issued are
    revoked (RFC 6749 sections 4.1.2, 10.5).
    """

    def test_a_second_exchange_is_refused_and_revokes_the_first(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app).code
        issued = exchange(registry, app, code)

        assert USED == refused(lambda: exchange(registry, app, code))
        assert Reason.TOKEN_UNKNOWN == reason(registry, issued.token)
        refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))

    @pytest.mark.parametrize(
        "misuse",
        [
            {"redirect_url": REDIRECT + "/other"},
            {"code_verifier": "x" * 43},
            {"code_verifier": None},
        ],
        ids=["redirect", "verifier", "no-verifier"],
    )
    def test_a_failed_exchange_spends_the_code(
        self, registry: Registry, app: RegisteredApp, misuse: dict[str, Any]
    ) -> None:
        code = authorize(registry, app).code

        refused(lambda: exchange(registry, app, code, **misuse))

        assert USED == refused(lambda: exchange(registry, app, code))

    @pytest.mark.parametrize("code", [None, 42, "", "x" * 10_000, "\udcff"])
    def test_malformed_or_unknown_codes_are_refused(
        self, registry: Registry, app: RegisteredApp, code: Any
    ) -> None:
        refused(lambda: exchange(registry, app, code))

    def test_a_code_is_never_stored_in_plaintext(
        self, registry: Registry, app: RegisteredApp, storage: MemoryStorage
    ) -> None:
        code = authorize(registry, app).code

        assert code.encode() not in repr(vars(storage._data)).encode()
        assert [cred.Credentials().code_digest(code)] == list(storage._data.codes)


class TestCodesLiveTenMinutes:
    """A code dies ten minutes after it was issued (configurable); expiry is exact."""

    def test_just_before_ten_minutes_it_works(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        code = authorize(registry, app).code
        clock.advance(TEN_MINUTES - MICROSECOND)

        assert Reason.ALLOWED == reason(registry, exchange(registry, app, code).token)

    def test_at_ten_minutes_it_is_dead(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        code = authorize(registry, app).code
        clock.advance(TEN_MINUTES)

        assert "the code has expired" == refused(lambda: exchange(registry, app, code))

    def test_the_lifetime_is_configurable(self, storage: MemoryStorage, clock: ManualClock) -> None:
        registry = Registry(storage=storage, clock=clock, code_lifetime=timedelta(minutes=1))
        new = register(registry)
        registry.permit_account("acme", by="provider")
        code = authorize(registry, new).code
        clock.advance(timedelta(minutes=1))

        assert "the code has expired" == refused(lambda: exchange(registry, new, code))

    @pytest.mark.parametrize("option", ["code_lifetime", "refresh_token_lifetime"])
    def test_lifetimes_must_be_positive(self, option: str) -> None:
        with pytest.raises(ValueError, match="positive"):
            Registry(storage=MemoryStorage(), **{option: timedelta(0)})


class TestCodesAreBound:
    """A code works only for the app it was issued to, and the same redirect URL, exactly."""

    def test_another_app_cannot_use_it(self, registry: Registry, app: RegisteredApp) -> None:
        other = register(registry)
        code = authorize(registry, app).code

        assert "the code was issued to another app" == refused(
            lambda: exchange(registry, other, code)
        )
        refused(lambda: exchange(registry, app, code))  # and it is spent

    def test_the_redirect_url_must_be_the_same(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app).code

        assert "the redirect URL is not the one the code was issued for" == refused(
            lambda: exchange(registry, app, code, redirect_url=REDIRECT + "/x")
        )

    def test_the_same_redirect_url_spelled_otherwise_is_the_same(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app).code

        issued = exchange(registry, app, code, redirect_url="https://EXAMPLE.com/MyApp/handler")

        assert Reason.ALLOWED == reason(registry, issued.token)

    def test_the_account_is_the_approved_one(self, registry: Registry, app: RegisteredApp) -> None:
        issued = grant(registry, app, "beta")

        assert ("beta", Grant.AUTHORIZATION_CODE) == (issued.record.account, issued.record.grant)
        assert [issued.record] == list(registry.list_tokens(app.app.key, "beta").items)


class TestPKCE:
    """RFC 7636 S256: the verifier must hash to the challenge; "plain" is never accepted."""

    def test_the_right_verifier_works(self, registry: Registry, app: RegisteredApp) -> None:
        code = authorize(registry, app).code

        assert Reason.ALLOWED == reason(registry, exchange(registry, app, code).token)

    @pytest.mark.parametrize(
        ("verifier", "detail"),
        [
            (VERIFIER[:-1] + "j", "the code_verifier does not match the code_challenge"),
            (CHALLENGE, "the code_verifier does not match the code_challenge"),
            (None, "the code was issued with PKCE: a code_verifier is required"),
            (VERIFIER[:42], "the code_verifier is malformed"),
            (VERIFIER + "!", "the code_verifier is malformed"),
            ("v" * 129, "the code_verifier is malformed"),
        ],
        ids=["wrong", "challenge-as-verifier", "missing", "short", "bad-char", "long"],
    )
    def test_a_wrong_or_missing_verifier_is_refused(
        self, registry: Registry, app: RegisteredApp, verifier: str | None, detail: str
    ) -> None:
        code = authorize(registry, app).code

        assert detail == refused(lambda: exchange(registry, app, code, code_verifier=verifier))

    def test_without_a_challenge_no_verifier_is_needed(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app, pkce=False).code

        issued = exchange(registry, app, code, code_verifier=None)

        assert Reason.ALLOWED == reason(registry, issued.token)

    def test_a_verifier_for_a_code_without_challenge_is_a_downgrade(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app, pkce=False).code

        assert "a code_verifier came for a code issued without PKCE" == refused(
            lambda: exchange(registry, app, code)
        )

    def test_plain_is_refused(self, registry: Registry, app: RegisteredApp) -> None:
        assert [("code_challenge_method", "unsupported")] == problems(
            lambda: authorize(
                registry, app, pkce=False, code_challenge=VERIFIER, code_challenge_method="plain"
            )
        )

    def test_the_verifier_is_compared_in_constant_time(
        self, registry: Registry, app: RegisteredApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        code = authorize(registry, app).code
        compared: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        refused(lambda: exchange(registry, app, code, code_verifier="w" * 43))

        assert [(cred.pkce_s256("w" * 43).encode(), CHALLENGE.encode())] == compared

    @settings(max_examples=30, deadline=None)
    @given(
        verifier=st.text(alphabet=UNRESERVED, min_size=43, max_size=128),
        other=st.text(alphabet=UNRESERVED, min_size=43, max_size=128),
    )
    def test_any_verifier_opens_only_its_own_challenge(self, verifier: str, other: str) -> None:
        registry = Registry(storage=MemoryStorage(), clock=ManualClock())
        new = register(registry)
        registry.permit_account("acme", by="provider")
        pkce = {"code_challenge": cred.pkce_s256(verifier), "code_challenge_method": "S256"}

        good = authorize(registry, new, pkce=False, **pkce).code
        issued = exchange(registry, new, good, code_verifier=verifier)
        assert Reason.ALLOWED == reason(registry, issued.token)
        if other != verifier:
            bad = authorize(registry, new, pkce=False, **pkce).code
            refused(lambda: exchange(registry, new, bad, code_verifier=other))


class TestExchangePolicy:
    """The exchange is judged as any token issued for the account (R11, R12, R14, R15)."""

    @pytest.mark.parametrize(
        ("pause", "expected"),
        [
            (lambda r, key: r.disable_app(key), Reason.APP_DISABLED),
            (lambda r, key: r.suspend_installation(key, "acme"), Reason.INSTALLATION_SUSPENDED),
            (lambda r, key: r.forbid_account("acme"), Reason.APPS_NOT_PERMITTED),
        ],
        ids=["disabled", "suspended", "forbidden"],
    )
    def test_a_paused_app_gets_no_tokens_and_the_code_is_spent(
        self,
        registry: Registry,
        app: RegisteredApp,
        pause: Callable[[Registry, str], object],
        expected: str,
    ) -> None:
        code = authorize(registry, app).code
        pause(registry, app.app.key)

        assert expected == denial(lambda: exchange(registry, app, code))

        assert [] == list(registry.list_tokens(app.app.key, "acme").items)
        refused(lambda: exchange(registry, app, code))

    def test_the_user_agent_is_recorded_and_checked(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        code = authorize(registry, app).code
        assert [("user_agent", "too_long")] == problems(
            lambda: exchange(registry, app, code, user_agent="u" * 513)
        )

        issued = exchange(registry, app, code, user_agent="libwww-perl 5.833")  # not spent yet

        assert "libwww-perl 5.833" == issued.record.user_agent

    def test_tokens_come_as_a_new_family_with_a_refresh_token(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        first, second = grant(registry, app), grant(registry, app)

        assert first.record.family_id is not None
        assert first.record.family_id != second.record.family_id
        assert (clock() + HOUR, 3600) == (first.record.expires_at, first.expires_in(clock()))
        assert first.refresh_token != first.token
        assert first.refresh_token not in repr(first)
        assert first.token not in repr(first)


# -- refresh tokens ---------------------------------------------------------------------------


class TestRefreshRotation:
    """A refresh token works once: it gives a new access token and a new refresh token."""

    def test_refresh_rotates_within_the_family(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        issued = grant(registry, app)
        clock.advance(2 * HOUR)  # the access token has expired; the refresh token has not
        assert Reason.TOKEN_EXPIRED == reason(registry, issued.token)

        rotated = registry.refresh(app.app.key, refresh_of(issued), user_agent="agent/2")

        assert Reason.ALLOWED == reason(registry, rotated.token)
        assert (issued.record.family_id, "acme", "agent/2", Grant.AUTHORIZATION_CODE) == (
            rotated.record.family_id,
            rotated.record.account,
            rotated.record.user_agent,
            rotated.record.grant,
        )
        assert refresh_of(rotated) not in {refresh_of(issued), issued.token, rotated.token}
        again = registry.refresh(app.app.key, refresh_of(rotated))
        assert Reason.ALLOWED == reason(registry, again.token)

    def test_refresh_tokens_live_thirty_days_from_their_issue(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        issued = grant(registry, app)
        clock.advance(30 * DAY - MICROSECOND)
        rotated = registry.refresh(app.app.key, refresh_of(issued))
        clock.advance(30 * DAY)

        assert "the refresh token has expired" == refused(
            lambda: registry.refresh(app.app.key, refresh_of(rotated))
        )

    def test_the_refresh_lifetime_is_configurable(
        self, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        registry = Registry(storage=storage, clock=clock, refresh_token_lifetime=HOUR)
        new = register(registry)
        registry.permit_account("acme", by="provider")
        issued = grant(registry, new)
        clock.advance(HOUR)

        refused(lambda: registry.refresh(new.app.key, refresh_of(issued)))

    def test_another_app_cannot_refresh(self, registry: Registry, app: RegisteredApp) -> None:
        other = register(registry)
        issued = grant(registry, app)

        assert "the refresh token was issued to another app" == refused(
            lambda: registry.refresh(other.app.key, refresh_of(issued))
        )
        # Nothing was spent or revoked: its own app still refreshes with it.
        assert Reason.ALLOWED == reason(
            registry, registry.refresh(app.app.key, refresh_of(issued)).token
        )

    @pytest.mark.parametrize("token", [None, 7, "", "r" * 10_000, "no such refresh token"])
    def test_malformed_or_unknown_refresh_tokens_are_refused(
        self, registry: Registry, app: RegisteredApp, token: Any
    ) -> None:
        refused(lambda: registry.refresh(app.app.key, token))

    def test_an_access_token_is_not_a_refresh_token(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        issued = grant(registry, app)

        refused(lambda: registry.refresh(app.app.key, issued.token))
        assert Reason.ALLOWED == reason(registry, issued.token)

    def test_a_denied_refresh_leaves_the_token_unused(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        issued = grant(registry, app)
        registry.disable_app(app.app.key)

        assert Reason.APP_DISABLED == denial(
            lambda: registry.refresh(app.app.key, refresh_of(issued))
        )
        registry.enable_app(app.app.key)
        rotated = registry.refresh(app.app.key, refresh_of(issued))

        assert [Reason.ALLOWED] * 2 == [reason(registry, t.token) for t in (issued, rotated)]

    def test_a_client_credentials_family_is_judged_as_client_credentials(
        self, registry: Registry, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        trusted = register(registry, "dev", trusted=True)
        registry.permit_account("dev", by="provider")
        token = "a-refresh-token-of-a-client-credentials-family"
        record = RefreshToken(
            "r1", "f1", trusted.app.key, "dev", Grant.CLIENT_CREDENTIALS, clock(), clock() + DAY
        )
        with storage.transaction() as tx:
            tx.refresh_tokens.add(record, cred.Credentials().refresh_digest(token))
        registry.update_app(trusted.app.key, trusted=False)

        assert Reason.APP_NOT_TRUSTED == denial(lambda: registry.refresh(trusted.app.key, token))
        registry.update_app(trusted.app.key, trusted=True)
        rotated = registry.refresh(trusted.app.key, token)
        assert (Grant.CLIENT_CREDENTIALS, "dev", Reason.ALLOWED) == (
            rotated.record.grant,
            rotated.record.account,
            reason(registry, rotated.token),
        )


class TestRefreshReuseRevokesTheFamily:
    """A rotated refresh token presented again revokes its whole family, and that sticks."""

    def test_reuse_revokes_access_and_refresh_tokens_of_the_family(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        issued = grant(registry, app)
        rotated = registry.refresh(app.app.key, refresh_of(issued))
        bystander = grant(registry, app)
        recorder.clear()

        detail = refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))

        assert "the refresh token was used before; its family is revoked" == detail
        assert [Reason.TOKEN_UNKNOWN] * 2 == [reason(registry, t.token) for t in (issued, rotated)]
        refused(lambda: registry.refresh(app.app.key, refresh_of(rotated)))
        assert Reason.ALLOWED == reason(registry, bystander.token)
        assert Reason.ALLOWED == reason(
            registry, registry.refresh(app.app.key, refresh_of(bystander)).token
        )
        (event,) = recorder.events[:1]
        assert (EventKind.FAMILY_REVOKED, app.app.key, "acme") == (
            event.kind,
            event.app_key,
            event.account,
        )
        assert {
            "family_id": issued.record.family_id,
            "cause": "reuse",
            "tokens_removed": 2,
            "refresh_tokens_removed": 2,
        } == dict(event.details)

    def test_the_revocation_is_committed_before_the_error(
        self, storage: MemoryStorage, clock: ManualClock
    ) -> None:
        # A second registry on the same storage sees the revocation: it was committed, though
        # the call that made it raised.
        registry, other = (Registry(storage=storage, clock=clock) for _ in range(2))
        new = register(registry)
        registry.permit_account("acme", by="provider")
        issued = grant(registry, new)
        rotated = registry.refresh(new.app.key, refresh_of(issued))

        refused(lambda: registry.refresh(new.app.key, refresh_of(issued)))

        assert [Reason.TOKEN_UNKNOWN] * 2 == [reason(other, t.token) for t in (issued, rotated)]
        assert [] == [*storage._data.refresh.values(), *storage._data.tokens.values()]

    def test_reuse_after_the_rotated_token_expired_still_revokes(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        issued = grant(registry, app)
        clock.advance(29 * DAY)
        rotated = registry.refresh(app.app.key, refresh_of(issued))
        clock.advance(2 * DAY)  # the first refresh token has expired, the second has not

        detail = refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))

        assert "the refresh token was used before; its family is revoked" == detail
        refused(lambda: registry.refresh(app.app.key, refresh_of(rotated)))


# -- revocation -------------------------------------------------------------------------------


class TestRevoke:
    """RFC 7009: an access token alone, a refresh token with its family; bad input: no-op."""

    def test_an_access_token_is_removed_alone(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        issued, other = grant(registry, app), grant(registry, app)
        recorder.clear()

        assert registry.revoke(issued.token)

        assert [Reason.TOKEN_UNKNOWN, Reason.ALLOWED] == [
            reason(registry, t.token) for t in (issued, other)
        ]
        assert [(EventKind.TOKENS_REMOVED, {"token_ids": [issued.record.token_id]})] == [
            (e.kind, dict(e.details)) for e in recorder.events
        ]
        # Its refresh token still works: revoking an access token leaves the family.
        assert Reason.ALLOWED == reason(
            registry, registry.refresh(app.app.key, refresh_of(issued)).token
        )

    def test_a_refresh_token_revokes_its_family(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        issued = grant(registry, app)
        rotated = registry.refresh(app.app.key, refresh_of(issued))
        other = grant(registry, app)
        recorder.clear()

        assert registry.revoke(refresh_of(rotated))

        assert [Reason.TOKEN_UNKNOWN] * 2 + [Reason.ALLOWED] == [
            reason(registry, t.token) for t in (issued, rotated, other)
        ]
        refused(lambda: registry.refresh(app.app.key, refresh_of(rotated)))
        assert [EventKind.FAMILY_REVOKED] == recorder.kinds()
        assert "revoked" == recorder.events[0].details["cause"]

    def test_revoking_twice_is_a_no_op(self, registry: Registry, app: RegisteredApp) -> None:
        issued = grant(registry, app)

        assert [True, False] == [registry.revoke(issued.token) for _ in range(2)]
        assert [True, False] == [registry.revoke(refresh_of(issued)) for _ in range(2)]

    @pytest.mark.parametrize("token", [None, 42, b"bytes", "", "x" * 100_000, "\udcff", "nope"])
    def test_bad_input_never_raises(
        self, registry: Registry, app: RegisteredApp, token: Any, recorder: EventRecorder
    ) -> None:
        issued = grant(registry, app)
        recorder.clear()

        assert registry.revoke(token) is False

        assert [] == recorder.events
        assert Reason.ALLOWED == reason(registry, issued.token)

    def test_with_a_key_only_that_apps_tokens_are_revoked(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        other = register(registry)
        issued = grant(registry, app)

        assert [False, False] == [
            registry.revoke(t, key=other.app.key) for t in (issued.token, refresh_of(issued))
        ]
        assert Reason.ALLOWED == reason(registry, issued.token)
        assert [True, True] == [
            registry.revoke(t, key=app.app.key) for t in (issued.token, refresh_of(issued))
        ]


# -- cascades and purges ------------------------------------------------------------------------


CASCADES: dict[str, Callable[[Registry, str], object]] = {
    "regenerate_secret": lambda r, key: r.regenerate_secret(key),
    "remove_app": lambda r, key: r.remove_app(key),
    "uninstall_app": lambda r, key: r.uninstall_app(key, "acme"),
    "remove_all_tokens": lambda r, key: r.remove_all_tokens(key, "acme"),
}
# Whether the cascade reaches beyond the account acme.
APP_WIDE = {"regenerate_secret": True, "remove_app": True}
# The event each cascade emits, with its details before the grants' counts.
CASCADE_EVENTS: dict[str, tuple[EventKind, dict[str, int]]] = {
    "regenerate_secret": (EventKind.APP_SECRET_REGENERATED, {"tokens_removed": 1}),
    "remove_app": (EventKind.APP_REMOVED, {"tokens_removed": 1, "installations_removed": 1}),
    "uninstall_app": (EventKind.APP_UNINSTALLED, {"tokens_removed": 1}),
    "remove_all_tokens": (EventKind.TOKENS_REMOVED, {"count": 1}),
}


class TestCascades:
    """Codes and refresh tokens go with the tokens; pausing keeps them, as it keeps tokens."""

    @pytest.mark.parametrize("cascade", sorted(CASCADES))
    def test_codes_and_refresh_tokens_go(
        self, registry: Registry, app: RegisteredApp, storage: MemoryStorage, cascade: str
    ) -> None:
        issued = grant(registry, app)
        pending = authorize(registry, app).code
        elsewhere = grant(registry, app, "beta")
        elsewhere_code = authorize(registry, app, "beta").code

        CASCADES[cascade](registry, app.app.key)

        refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))
        refused(lambda: exchange(registry, app, pending))
        left = {(t.account, t.family_id) for t in storage._data.refresh.values()}
        codes_left = {c.account for c in storage._data.codes.values()}
        if APP_WIDE.get(cascade):
            assert (set(), set()) == (left, codes_left)
        else:
            assert ({("beta", elsewhere.record.family_id)}, {"beta"}) == (left, codes_left)
            assert Reason.ALLOWED == reason(registry, exchange(registry, app, elsewhere_code).token)

    @pytest.mark.parametrize("cascade", sorted(CASCADES))
    def test_events_count_what_went(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder, cascade: str
    ) -> None:
        grant(registry, app)
        authorize(registry, app)
        authorize(registry, app)
        recorder.clear()

        CASCADES[cascade](registry, app.app.key)

        kind, details = CASCADE_EVENTS[cascade]
        # Two pending codes and the used one, kept until it expires.
        assert [{**details, "codes_removed": 3, "refresh_tokens_removed": 1}] == [
            dict(e.details) for e in recorder.events if e.kind is kind
        ]

    def test_without_grants_the_event_details_are_as_before(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        registry.install_app(app.app.key, "acme", by="bob")
        recorder.clear()

        registry.uninstall_app(app.app.key, "acme")
        registry.regenerate_secret(app.app.key)

        assert [{"tokens_removed": 0}] * 2 == [dict(e.details) for e in recorder.events]

    def test_remove_all_tokens_of_grants_alone_emits_an_event(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        authorize(registry, app)
        recorder.clear()

        assert 0 == registry.remove_all_tokens(app.app.key, "acme")

        assert [(EventKind.TOKENS_REMOVED, {"count": 0, "codes_removed": 1})] == [
            (e.kind, dict(e.details)) for e in recorder.events
        ]

    def test_uninstall_needs_an_installation(self, registry: Registry, app: RegisteredApp) -> None:
        with pytest.raises(InstallationNotFound):
            registry.uninstall_app(app.app.key, "acme")

    @pytest.mark.parametrize(
        ("pause", "resume"),
        [
            (lambda r, k: r.disable_app(k), lambda r, k: r.enable_app(k)),
            (lambda r, k: r.forbid_account("acme"), lambda r, k: r.permit_account("acme", by="p")),
            (
                lambda r, k: r.suspend_installation(k, "acme"),
                lambda r, k: r.resume_installation(k, "acme"),
            ),
        ],
        ids=["disable", "forbid", "suspend"],
    )
    def test_pausing_keeps_codes_and_refresh_tokens(
        self,
        registry: Registry,
        app: RegisteredApp,
        pause: Callable[[Registry, str], object],
        resume: Callable[[Registry, str], object],
    ) -> None:
        issued = grant(registry, app)
        pending = authorize(registry, app).code

        pause(registry, app.app.key)
        resume(registry, app.app.key)

        assert Reason.ALLOWED == reason(registry, exchange(registry, app, pending).token)
        assert Reason.ALLOWED == reason(
            registry, registry.refresh(app.app.key, refresh_of(issued)).token
        )


class TestPurge:
    """Expired codes and refresh tokens are purged with the tokens, in bounded batches (R22)."""

    def test_expired_codes_and_refresh_tokens_go_live_ones_stay(
        self,
        registry: Registry,
        app: RegisteredApp,
        storage: MemoryStorage,
        clock: ManualClock,
        recorder: EventRecorder,
    ) -> None:
        for _ in range(3):
            authorize(registry, app)
        old = [grant(registry, app) for _ in range(2)]
        clock.advance(30 * DAY)
        live_code = authorize(registry, app).code
        live = grant(registry, app)
        recorder.clear()

        # Expired: 3 + 2 codes (2 of them used); 2 access and 2 refresh tokens.
        assert 9 == registry.purge_expired_tokens(batch_size=2).total

        assert [
            {"count": 2, "codes": 2, "refresh_tokens": 2},
            {"count": 0, "codes": 2},
            {"count": 0, "codes": 1},
        ] == [dict(e.details) for e in recorder.events]
        assert {live.record.family_id} == {t.family_id for t in storage._data.refresh.values()}
        for issued in old:
            refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))  # noqa: B023
        assert Reason.ALLOWED == reason(registry, exchange(registry, app, live_code).token)

    def test_max_batches_bounds_the_work(
        self, registry: Registry, app: RegisteredApp, clock: ManualClock
    ) -> None:
        for _ in range(5):
            authorize(registry, app)
        clock.advance(TEN_MINUTES)

        assert [2, 2, 1, 0] == [
            registry.purge_expired_tokens(batch_size=2, max_batches=1).total for _ in range(4)
        ]


# -- events, client authentication, retired keys -----------------------------------------------


class TestEventsCarryNoSecrets:
    """R27: the grant events name apps, accounts, token ids and families, never a secret."""

    def test_no_code_token_refresh_token_or_verifier_in_any_event(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder, clock: ManualClock
    ) -> None:
        code = authorize(registry, app)
        issued = exchange(registry, app, code.code, user_agent="agent")
        rotated = registry.refresh(app.app.key, refresh_of(issued))
        refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))
        again = grant(registry, app)
        registry.revoke(again.token)
        registry.revoke(refresh_of(again))
        pending = authorize(registry, app).code
        clock.advance(TEN_MINUTES)
        registry.purge_expired_tokens()
        registry.remove_app(app.app.key)
        plaintext = [
            app.secret,
            code.code,
            pending,
            VERIFIER,
            *(t.token for t in (issued, rotated, again)),
            *(refresh_of(t) for t in (issued, rotated, again)),
        ]

        text = "\n".join(repr(e) + repr(dict(e.details)) for e in recorder.events)

        assert {
            EventKind.CODE_ISSUED,
            EventKind.TOKEN_ISSUED,
            EventKind.FAMILY_REVOKED,
            EventKind.TOKENS_REMOVED,
            EventKind.TOKENS_PURGED,
            EventKind.APP_REMOVED,
        } <= set(recorder.kinds())
        assert [] == [value for value in plaintext if value in text]

    def test_the_issue_events_name_ids_and_families(
        self, registry: Registry, app: RegisteredApp, recorder: EventRecorder
    ) -> None:
        recorder.clear()
        code = authorize(registry, app)
        issued = exchange(registry, app, code.code)

        assert [
            (EventKind.APP_INSTALLED, {"by": "alice"}),
            (EventKind.CODE_ISSUED, {"by": "alice", "pkce": "S256"}),
            (
                EventKind.TOKEN_ISSUED,
                {
                    "token_id": issued.record.token_id,
                    "grant": "authorization_code",
                    "family_id": issued.record.family_id,
                    "refresh_token_id": recorder.events[2].details["refresh_token_id"],
                },
            ),
        ] == [(e.kind, dict(e.details)) for e in recorder.events]


class TestR25AuthenticateClient:
    """An unknown key and a wrong secret get the same decision, after the same work."""

    def test_the_right_secret_is_allowed(self, registry: Registry, app: RegisteredApp) -> None:
        assert Decision.allow() == registry.authenticate_client(app.app.key, app.secret)

    def test_unknown_key_and_wrong_secret_are_identical(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        answers = [
            registry.authenticate_client(key, secret)
            for key, secret in [
                (app.app.key, "P" * 32),
                ("K" * 32, "P" * 32),
                ("K" * 32, app.secret),
                (app.app.key, app.secret[:-1]),
                (None, app.secret),
                (app.app.key, None),
                ("\x00", "\udcff"),
            ]
        ]

        assert [Decision(Reason.BAD_CREDENTIALS, "the key or secret is wrong")] == list(
            dict.fromkeys(answers)
        )
        assert [] == [s for s in (app.secret, "P" * 32) if s in repr(answers)]

    def test_both_compare_a_digest(
        self, registry: Registry, app: RegisteredApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        compared: list[int] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append(len(a))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        for key in (app.app.key, "K" * 32):
            compared.clear()
            registry.authenticate_client(key, "P" * 32)
            # The current secret's digest, and the previous one's (or a stand-in for it).
            assert [32, 32] == compared

    def test_status_and_trust_are_not_looked_at(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        registry.disable_app(app.app.key)

        assert registry.authenticate_client(app.app.key, app.secret).allowed


class TestR13RetiredKeys:
    """A removed app's key never authenticates again: it cannot be imported or generated."""

    def test_a_removed_key_cannot_be_imported_again(self, registry: Registry) -> None:
        credentials = ImportedCredentials("PVui7jiATDKcWhPOpAUkXAliGahUvEdf", "s" * 32)
        register(registry, credentials=credentials)
        registry.remove_app(credentials.key)

        assert [("key", "taken")] == problems(
            lambda: register(registry, "other", credentials=credentials)
        )
        assert (
            Reason.BAD_CREDENTIALS
            == registry.authenticate_client(credentials.key, credentials.secret).reason
        )

    def test_generated_keys_skip_retired_ones(
        self, registry: Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        removed = register(registry).app.key
        registry.remove_app(removed)
        fresh = "F" * 32
        offered = iter([removed, fresh])
        monkeypatch.setattr(cred, "generate_key", lambda: next(offered))

        assert fresh == register(registry).app.key

    def test_a_removed_apps_codes_and_refresh_tokens_are_dead(
        self, registry: Registry, app: RegisteredApp
    ) -> None:
        issued = grant(registry, app)
        pending = authorize(registry, app).code

        registry.remove_app(app.app.key)

        refused(lambda: exchange(registry, app, pending))
        refused(lambda: registry.refresh(app.app.key, refresh_of(issued)))
        assert not registry.revoke(refresh_of(issued))
        assert not registry.redirect_url_matches(app.app.key, REDIRECT)

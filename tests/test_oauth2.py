"""The OAuth 2.0 endpoints over real HTTP on loopback, driven by requests-oauthlib.

Every test runs on SQLite and on PostgreSQL. The server is `make_wsgi_app` in a ``wsgiref``
server on port 0, in a thread; the clients are requests-oauthlib, oauthlib's client and plain
`requests` for the original system's sample-client form post.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import attrs
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2 import BackendApplicationClient, WebApplicationClient
from requests_oauthlib import OAuth2Session

from _oauth import ACCOUNT, ALICE, OWNER, REDIRECT, ConsentForm, SignIn, new_state, register_apps
from _oauth import consent_form as form_of
from _support import serving
from appregistry import RegisteredApp, Registry, oauth2, open_registry
from appregistry._validation import MAX_USER_AGENT_LENGTH, Problems
from appregistry.oauth2 import SignedInUser, make_server, make_wsgi_app
from appregistry.oauth2._consent import CsrfSigner
from appregistry.oauth2._validator import client_credentials, user_agent
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

_state = new_state
_register = register_apps


@attrs.frozen
class World:
    """A running server and the apps registered on it."""

    registry: Registry
    clock: ManualClock
    base: str
    trusted: RegisteredApp
    partner: RegisteredApp
    sign_in: SignIn

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token.php"

    @property
    def authorize_url(self) -> str:
        return f"{self.base}/oauth/authorize.php"

    def me(self, token: str) -> requests.Response:
        return requests.get(
            f"{self.base}/uapi/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@pytest.fixture(autouse=True)
def _plain_http_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib's client refuses http:// unless told; the server here listens on loopback only.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'oauth.sqlite3'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    clock = ManualClock()
    registry = open_registry(database_url, clock=clock)
    trusted, partner = _register(registry)
    sign_in = SignIn()
    app = make_wsgi_app(
        registry, current_user=lambda _environ: sign_in.user, clock=clock, csrf_key=b"k" * 32
    )
    try:
        with serving(app) as base:
            yield World(registry, clock, base, trusted, partner, sign_in)
    finally:
        registry.close()


# -- browser-free consent ---------------------------------------------------------------------


def consent_form(page: requests.Response) -> ConsentForm:
    return form_of(page.text)


def consent(world: World, authorization_url: str, decision: str = "approve") -> requests.Response:
    """What a browser does: open the consent page, press a button, stop at the redirect."""
    page = requests.get(authorization_url, allow_redirects=False, timeout=10)
    assert 200 == page.status_code, page.text
    form = consent_form(page)
    assert form.action is not None
    return requests.post(
        urllib.parse.urljoin(page.url, form.action),
        data={**form.hidden, "decision": decision},
        allow_redirects=False,
        timeout=10,
    )


def redirect_params(response: requests.Response) -> dict[str, str]:
    location = response.headers["Location"]
    assert location.startswith(REDIRECT)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def authorized_session(world: World, *, pkce: bool = True) -> tuple[OAuth2Session, str]:
    """A requests-oauthlib session of the partner app, and the redirect after approval."""
    oauth = OAuth2Session(
        world.partner.app.key, redirect_uri=REDIRECT, state=_state(), pkce="S256" if pkce else None
    )
    url, _ = oauth.authorization_url(world.authorize_url)
    answer = consent(world, url)
    assert 302 == answer.status_code, answer.text
    return oauth, answer.headers["Location"]


def code_token(world: World) -> tuple[OAuth2Session, dict[str, Any]]:
    oauth, location = authorized_session(world)
    token = oauth.fetch_token(
        world.token_url, authorization_response=location, client_secret=world.partner.secret
    )
    return oauth, token


def trusted_token(world: World) -> dict[str, Any]:
    oauth = OAuth2Session(client=BackendApplicationClient(client_id=world.trusted.app.key))
    token: dict[str, Any] = oauth.fetch_token(
        world.token_url, client_id=world.trusted.app.key, client_secret=world.trusted.secret
    )
    return token


def post_token(world: World, data: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.post(world.token_url, data=data, timeout=10, **kwargs)


# -- client credentials -----------------------------------------------------------------------


class TestClientCredentials:
    """A trusted app gets a registry token by key and secret alone (R19)."""

    def test_basic_auth_gives_a_token_the_registry_accepts(self, world: World) -> None:
        token = trusted_token(world)
        check = world.registry.check_token(token["access_token"])
        assert "allowed" == check.reason
        assert (OWNER, "client_credentials") == (check.token.account, check.token.grant)
        assert "Bearer" == token["token_type"]
        assert 3600 == token["expires_in"]
        assert "refresh_token" not in token

    def test_form_body_credentials_work_too(self, world: World) -> None:
        oauth = OAuth2Session(client=BackendApplicationClient(client_id=world.trusted.app.key))
        token = oauth.fetch_token(
            world.token_url,
            client_id=world.trusted.app.key,
            client_secret=world.trusted.secret,
            include_client_id=True,
        )
        assert "allowed" == world.registry.check_token(token["access_token"]).reason

    def test_the_original_sample_client_form_post_works_unchanged(self, world: World) -> None:
        response = post_token(
            world,
            {
                "client_id": world.trusted.app.key,
                "client_secret": world.trusted.secret,
                "grant_type": "client_credentials",
                "type": "unifiedapi",
                "redirect_uri": REDIRECT,
            },
        )
        assert 200 == response.status_code
        assert "application/json" == response.headers["Content-Type"]
        assert "no-store" == response.headers["Cache-Control"]
        body = response.json()
        assert {"access_token", "expires_in", "token_type"} == set(body)
        assert (3600, "Bearer") == (body["expires_in"], body["token_type"])
        assert "allowed" == world.registry.check_token(body["access_token"]).reason

    def test_unknown_key_and_wrong_secret_are_the_same_401(self, world: World) -> None:
        def attempt(key: str, secret: str) -> requests.Response:
            return post_token(world, {"grant_type": "client_credentials"}, auth=(key, secret))

        unknown = attempt("K" * 32, world.trusted.secret)
        wrong = attempt(world.trusted.app.key, "S" * 32)
        for response in (unknown, wrong):
            assert 401 == response.status_code
            assert "invalid_client" == response.json()["error"]
            assert 'Basic realm="appregistry"' == response.headers["WWW-Authenticate"]
        assert unknown.content == wrong.content

    def test_missing_credentials_are_invalid_client(self, world: World) -> None:
        response = post_token(world, {"grant_type": "client_credentials"})
        assert (401, "invalid_client") == (response.status_code, response.json()["error"])

    def test_an_untrusted_app_is_an_unauthorized_client(self, world: World) -> None:
        response = post_token(
            world,
            {"grant_type": "client_credentials"},
            auth=(world.partner.app.key, world.partner.secret),
        )
        assert (400, "unauthorized_client") == (response.status_code, response.json()["error"])

    def test_a_disabled_app_is_refused_as_a_wrong_secret_is(self, world: World) -> None:
        world.registry.disable_app(world.trusted.app.key)
        disabled = post_token(
            world,
            {"grant_type": "client_credentials"},
            auth=(world.trusted.app.key, world.trusted.secret),
        )
        wrong = post_token(
            world, {"grant_type": "client_credentials"}, auth=(world.trusted.app.key, "S" * 32)
        )
        assert (401, wrong.content) == (disabled.status_code, disabled.content)

    def test_scopes_are_refused(self, world: World) -> None:
        response = post_token(
            world,
            {"grant_type": "client_credentials", "scope": "calls"},
            auth=(world.trusted.app.key, world.trusted.secret),
        )
        assert (400, "invalid_scope") == (response.status_code, response.json()["error"])

    def test_the_user_agent_is_recorded_and_truncated(self, world: World) -> None:
        agent = "sample-client/1.0 " + "x" * 600
        response = post_token(
            world,
            {"grant_type": "client_credentials"},
            auth=(world.trusted.app.key, world.trusted.secret),
            headers={"User-Agent": agent},
        )
        assert 200 == response.status_code
        [record] = world.registry.list_tokens(world.trusted.app.key, OWNER).items
        assert agent[:MAX_USER_AGENT_LENGTH] == record.user_agent


# -- the consent page and the authorization-code grant ----------------------------------------


class TestConsentFlow:
    """The user approves on a plain HTML page; the app exchanges the code for tokens (R15)."""

    def test_approval_installs_the_app_and_the_code_gives_tokens(self, world: World) -> None:
        oauth, token = code_token(world)
        check = world.registry.check_token(token["access_token"])
        assert (ACCOUNT, "authorization_code") == (check.token.account, check.token.grant)
        assert token["refresh_token"]
        [listing] = world.registry.list_installations(ACCOUNT).items
        assert (world.partner.app.key, "alice") == (
            listing.app.key,
            listing.installation.installed_by,
        )
        me = oauth.get(f"{world.base}/uapi/me", timeout=10)
        assert {"account": ACCOUNT, "app": world.partner.app.key} == {
            k: me.json()[k] for k in ("account", "app")
        }

    def test_the_page_names_the_app_escaped_with_both_buttons(self, world: World) -> None:
        oauth = OAuth2Session(world.partner.app.key, redirect_uri=REDIRECT, state=_state())
        url, _ = oauth.authorization_url(world.authorize_url)
        page = requests.get(url, timeout=10)
        assert 200 == page.status_code
        assert "Partner &lt;App&gt;" in page.text
        assert "bücher.example" in page.text
        assert "DENY" == page.headers["X-Frame-Options"]
        assert ["approve", "deny"] == consent_form(page).buttons

    def test_denial_redirects_with_access_denied_and_the_state(self, world: World) -> None:
        state = _state()
        oauth = OAuth2Session(world.partner.app.key, redirect_uri=REDIRECT, state=state)
        url, _ = oauth.authorization_url(world.authorize_url)
        params = redirect_params(consent(world, url, decision="deny"))
        assert {"error": "access_denied", "state": state} == {
            k: params[k] for k in ("error", "state")
        }
        assert 0 == world.registry.list_installations(ACCOUNT).total

    def test_a_visitor_who_is_not_signed_in_is_asked_to_sign_in(self, world: World) -> None:
        world.sign_in.user = None
        oauth = OAuth2Session(world.partner.app.key, redirect_uri=REDIRECT, state=_state())
        url, _ = oauth.authorization_url(world.authorize_url)
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert 401 == response.status_code
        assert "Location" not in response.headers

    def test_a_suspended_installation_refuses_the_approval(self, world: World) -> None:
        world.registry.install_app(world.partner.app.key, ACCOUNT, by="alice")
        world.registry.suspend_installation(world.partner.app.key, ACCOUNT)
        oauth = OAuth2Session(world.partner.app.key, redirect_uri=REDIRECT, state=_state())
        url, _ = oauth.authorization_url(world.authorize_url)
        page = requests.get(url, allow_redirects=False, timeout=10)
        form = consent_form(page)
        assert (403, ["deny"]) == (page.status_code, form.buttons)
        # An approval posted anyway, with the page's own fields, is refused all the same.
        answer = requests.post(
            urllib.parse.urljoin(page.url, form.action or ""),
            data={**form.hidden, "decision": "approve"},
            allow_redirects=False,
            timeout=10,
        )
        assert "access_denied" == redirect_params(answer)["error"]


class TestAuthorizationRequest:
    """state (16+ characters) and the exact redirect URL are required (R4)."""

    def _url(self, world: World, **params: str) -> str:
        query = {"response_type": "code", "client_id": world.partner.app.key}
        query.update(params)
        return f"{world.authorize_url}?{urllib.parse.urlencode(query)}"

    @pytest.mark.parametrize("state", [None, "", "s" * 15])
    def test_a_missing_or_short_state_is_refused(self, world: World, state: str | None) -> None:
        params = {"redirect_uri": REDIRECT}
        if state is not None:
            params["state"] = state
        response = requests.get(self._url(world, **params), allow_redirects=False, timeout=10)
        assert 302 == response.status_code
        assert "invalid_request" == redirect_params(response)["error"]

    def test_sixteen_characters_of_state_are_enough(self, world: World) -> None:
        url = self._url(world, redirect_uri=REDIRECT, state="s" * 16)
        assert 200 == requests.get(url, allow_redirects=False, timeout=10).status_code

    @pytest.mark.parametrize(
        "redirect",
        [
            f"{REDIRECT}/evil",
            f"{REDIRECT}evil",
            f"{REDIRECT}?next=https://evil.example/",
            "https://client.example.evil.example/MyApp/handler",
            REDIRECT.replace("https:", "http:"),
        ],
    )
    def test_only_the_registered_redirect_url_is_accepted(
        self, world: World, redirect: str
    ) -> None:
        url = self._url(world, redirect_uri=redirect, state=_state())
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert 400 == response.status_code
        assert "Location" not in response.headers

    def test_the_redirect_url_may_be_left_out(self, world: World) -> None:
        response = requests.get(self._url(world, state=_state()), allow_redirects=False, timeout=10)
        assert (200, ["approve", "deny"]) == (response.status_code, consent_form(response).buttons)

    def test_an_unknown_app_gets_an_error_page(self, world: World) -> None:
        url = self._url(world, client_id="K" * 32, redirect_uri=REDIRECT, state=_state())
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert (400, None) == (response.status_code, response.headers.get("Location"))

    def test_plain_pkce_is_refused(self, world: World) -> None:
        url = self._url(
            world,
            redirect_uri=REDIRECT,
            state=_state(),
            code_challenge="x" * 43,
            code_challenge_method="plain",
        )
        response = requests.get(url, allow_redirects=False, timeout=10)
        assert "invalid_request" == redirect_params(response)["error"]

    def test_a_post_from_the_app_shows_the_consent_page_too(self, world: World) -> None:
        response = requests.post(
            world.authorize_url,
            data={
                "response_type": "code",
                "client_id": world.partner.app.key,
                "redirect_uri": REDIRECT,
                "state": _state(),
            },
            allow_redirects=False,
            timeout=10,
        )
        assert ["approve", "deny"] == consent_form(response).buttons


class TestConsentCsrf:
    """Only the consent page's own form, for the same user, recently, can approve."""

    def _page(self, world: World) -> ConsentForm:
        oauth = OAuth2Session(world.partner.app.key, redirect_uri=REDIRECT, state=_state())
        url, _ = oauth.authorization_url(world.authorize_url)
        return consent_form(requests.get(url, timeout=10))

    def _post(self, world: World, fields: dict[str, str]) -> requests.Response:
        return requests.post(
            world.authorize_url,
            data={**fields, "decision": "approve"},
            allow_redirects=False,
            timeout=10,
        )

    def test_a_forged_form_is_refused(self, world: World) -> None:
        fields = self._page(world).hidden
        fields["csrf_token"] = fields["csrf_token"][:-2] + "AA"
        response = self._post(world, fields)
        assert (403, None) == (response.status_code, response.headers.get("Location"))
        assert 0 == world.registry.list_installations(ACCOUNT).total

    def test_a_form_without_its_token_is_refused(self, world: World) -> None:
        fields = self._page(world).hidden
        del fields["csrf_token"]
        assert 403 == self._post(world, fields).status_code

    def test_another_users_form_is_refused(self, world: World) -> None:
        fields = self._page(world).hidden
        world.sign_in.user = SignedInUser(ACCOUNT, "mallory")
        assert 403 == self._post(world, fields).status_code

    def test_a_changed_field_is_refused(self, world: World) -> None:
        fields = self._page(world).hidden
        fields["state"] = _state()
        assert 403 == self._post(world, fields).status_code

    def test_an_old_form_is_refused(self, world: World) -> None:
        fields = self._page(world).hidden
        world.clock.advance(timedelta(minutes=11))
        assert 403 == self._post(world, fields).status_code


class TestCodeExchange:
    """A code works once, within ten minutes, for its app, redirect URL and PKCE verifier."""

    def _code(self, world: World, *, pkce: bool = True) -> tuple[OAuth2Session, str]:
        oauth, location = authorized_session(world, pkce=pkce)
        return oauth, dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]

    def _exchange(self, world: World, code: str, **extra: str) -> requests.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        data.update(extra)
        return post_token(world, data, auth=(world.partner.app.key, world.partner.secret))

    def test_a_code_works_once(self, world: World) -> None:
        _, code = self._code(world, pkce=False)
        assert 200 == self._exchange(world, code).status_code
        again = self._exchange(world, code)
        assert (400, "invalid_grant") == (again.status_code, again.json()["error"])

    def test_a_wrong_pkce_verifier_is_refused(self, world: World) -> None:
        _, code = self._code(world)
        response = self._exchange(world, code, code_verifier="v" * 64)
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])

    def test_a_missing_pkce_verifier_is_refused(self, world: World) -> None:
        _, code = self._code(world)
        response = self._exchange(world, code)
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])

    def test_the_right_pkce_verifier_is_accepted(self, world: World) -> None:
        oauth, code = self._code(world)
        verifier = oauth._code_verifier  # the session keeps it between its two requests
        assert 200 == self._exchange(world, code, code_verifier=verifier).status_code

    def test_another_redirect_url_is_refused(self, world: World) -> None:
        _, code = self._code(world, pkce=False)
        response = self._exchange(world, code, redirect_uri=f"{REDIRECT}/evil")
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])

    def test_another_app_cannot_use_the_code(self, world: World) -> None:
        _, code = self._code(world, pkce=False)
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        response = post_token(world, data, auth=(world.trusted.app.key, world.trusted.secret))
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])

    def test_a_code_dies_after_ten_minutes(self, world: World) -> None:
        _, code = self._code(world, pkce=False)
        world.clock.advance(timedelta(minutes=10, seconds=1))
        response = self._exchange(world, code)
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])

    def test_a_suspended_installation_refuses_the_exchange(self, world: World) -> None:
        _, code = self._code(world, pkce=False)
        world.registry.suspend_installation(world.partner.app.key, ACCOUNT)
        response = self._exchange(world, code)
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])


# -- refresh, revocation, introspection -------------------------------------------------------


class TestRefresh:
    """Refresh tokens rotate on use; a reused one revokes its whole family."""

    def _refresh(self, world: World, refresh_token: str) -> requests.Response:
        return post_token(
            world,
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(world.partner.app.key, world.partner.secret),
        )

    def test_refreshing_rotates_both_tokens(self, world: World) -> None:
        oauth, first = code_token(world)
        second = oauth.refresh_token(
            world.token_url,
            client_id=world.partner.app.key,
            client_secret=world.partner.secret,
        )
        assert first["refresh_token"] != second["refresh_token"]
        assert first["access_token"] != second["access_token"]
        assert "allowed" == world.registry.check_token(second["access_token"]).reason

    def test_a_reused_refresh_token_revokes_the_family(self, world: World) -> None:
        _, first = code_token(world)
        second = self._refresh(world, first["refresh_token"]).json()
        reuse = self._refresh(world, first["refresh_token"])
        assert (400, "invalid_grant") == (reuse.status_code, reuse.json()["error"])
        assert 401 == world.me(second["access_token"]).status_code
        assert 401 == world.me(first["access_token"]).status_code
        assert "invalid_grant" == self._refresh(world, second["refresh_token"]).json()["error"]

    def test_a_garbage_refresh_token_is_an_invalid_grant(self, world: World) -> None:
        response = self._refresh(world, "not-a-refresh-token")
        assert (400, "invalid_grant") == (response.status_code, response.json()["error"])


class TestRevocation:
    """RFC 7009: an app revokes its own tokens; others' and unknown ones are a silent no-op."""

    def _revoke(
        self, world: World, app: RegisteredApp, token: str, hint: str = "access_token"
    ) -> requests.Response:
        url, headers, body = WebApplicationClient(app.app.key).prepare_token_revocation_request(
            f"{world.base}/oauth/revoke", token, token_type_hint=hint
        )
        return requests.post(
            url, data=body, headers=headers, auth=(app.app.key, app.secret), timeout=10
        )

    def test_a_revoked_access_token_is_dead(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        assert 200 == self._revoke(world, world.trusted, token).status_code
        assert 401 == world.me(token).status_code

    def test_revoking_a_refresh_token_ends_its_family(self, world: World) -> None:
        _, token = code_token(world)
        response = self._revoke(world, world.partner, token["refresh_token"], "refresh_token")
        assert 200 == response.status_code
        assert 401 == world.me(token["access_token"]).status_code

    def test_another_apps_token_is_left_alone(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        assert 200 == self._revoke(world, world.partner, token).status_code
        assert 200 == world.me(token).status_code

    def test_an_unknown_token_is_answered_as_revoked(self, world: World) -> None:
        assert 200 == self._revoke(world, world.trusted, "no-such-token").status_code

    def test_the_client_must_authenticate(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        response = requests.post(
            f"{world.base}/oauth/revoke",
            data={"token": token},
            auth=(world.trusted.app.key, "S" * 32),
            timeout=10,
        )
        assert 401 == response.status_code
        assert 200 == world.me(token).status_code


class TestIntrospection:
    """RFC 7662: an app learns about its own usable tokens; every denial is just inactive."""

    def _introspect(self, world: World, app: RegisteredApp, token: str) -> requests.Response:
        return requests.post(
            f"{world.base}/oauth/introspect",
            data={"token": token},
            auth=(app.app.key, app.secret),
            timeout=10,
        )

    def test_an_active_token_shows_its_app_account_and_expiry(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        record = world.registry.check_token(token).token
        body = self._introspect(world, world.trusted, token).json()
        assert {
            "active": True,
            "client_id": world.trusted.app.key,
            "sub": OWNER,
            "token_type": "Bearer",
            "iat": int(record.issued_at.timestamp()),
            "exp": int(record.expires_at.timestamp()),
            "jti": record.token_id,
        } == body

    def test_every_denial_is_inactive_without_a_reason(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        _, code = code_token(world)
        answers = [
            self._introspect(world, world.trusted, "no-such-token"),
            self._introspect(world, world.partner, token),  # another app's token
            self._introspect(world, world.partner, code["refresh_token"]),  # not an access token
        ]
        world.registry.disable_app(world.trusted.app.key)
        answers.append(self._introspect(world, world.trusted, token))
        world.registry.enable_app(world.trusted.app.key)
        world.clock.advance(timedelta(hours=1))
        answers.append(self._introspect(world, world.trusted, token))
        assert [(200, {"active": False})] * 5 == [(a.status_code, a.json()) for a in answers]

    def test_the_client_must_authenticate(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        response = requests.post(
            f"{world.base}/oauth/introspect",
            data={"token": token},
            auth=("K" * 32, "S" * 32),
            timeout=10,
        )
        assert (401, "invalid_client") == (response.status_code, response.json()["error"])


# -- the protected resource -------------------------------------------------------------------


class TestMe:
    """/uapi/me answers who the token acts for; every check goes through check_token."""

    def test_the_bearer_header(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        body = world.me(token).json()
        assert (OWNER, world.trusted.app.key, "client_credentials") == (
            body["account"],
            body["app"],
            body["grant"],
        )

    def test_the_original_query_parameter(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        response = requests.get(
            f"{world.base}/uapi/me", params={"accessRequestToken": f"Bearer {token}"}, timeout=10
        )
        assert (200, OWNER) == (response.status_code, response.json()["account"])

    def test_no_token_is_a_bare_challenge(self, world: World) -> None:
        response = requests.get(f"{world.base}/uapi/me", timeout=10)
        assert 401 == response.status_code
        assert 'Bearer realm="appregistry"' == response.headers["WWW-Authenticate"]

    def test_two_tokens_are_a_bad_request(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        response = requests.get(
            f"{world.base}/uapi/me",
            params={"accessRequestToken": f"Bearer {token}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert 400 == response.status_code

    def test_an_unknown_token_is_invalid(self, world: World) -> None:
        response = world.me("no-such-token")
        assert (401, "invalid_token") == (response.status_code, response.json()["error"])

    def test_disabling_refuses_and_reenabling_revives_an_unexpired_token(
        self, world: World
    ) -> None:
        token = trusted_token(world)["access_token"]
        world.registry.disable_app(world.trusted.app.key)
        refused = world.me(token)
        world.registry.enable_app(world.trusted.app.key)
        assert (401, 200) == (refused.status_code, world.me(token).status_code)

    def test_an_expired_token_stays_dead_after_reenabling(self, world: World) -> None:
        token = trusted_token(world)["access_token"]
        world.registry.disable_app(world.trusted.app.key)
        world.clock.advance(timedelta(hours=1))
        world.registry.enable_app(world.trusted.app.key)
        assert 401 == world.me(token).status_code


class TestHttpEdges:
    """Bodies are bounded and form-encoded; unknown paths and methods are refused."""

    def test_a_large_body_is_refused_unread(self, world: World) -> None:
        response = post_token(world, {"grant_type": "client_credentials", "pad": "x" * 20_000})
        assert 413 == response.status_code

    def test_a_json_body_is_refused(self, world: World) -> None:
        response = requests.post(world.token_url, json={"grant_type": "x"}, timeout=10)
        assert 415 == response.status_code

    def test_the_token_endpoint_takes_post_only(self, world: World) -> None:
        response = requests.get(world.token_url, timeout=10)
        assert (405, "POST") == (response.status_code, response.headers["Allow"])

    def test_secrets_in_the_url_are_refused(self, world: World) -> None:
        query = urllib.parse.urlencode(
            {"client_id": world.trusted.app.key, "client_secret": world.trusted.secret}
        )
        response = requests.post(
            f"{world.token_url}?{query}", data={"grant_type": "client_credentials"}, timeout=10
        )
        assert 400 == response.status_code

    def test_an_unknown_path_is_not_found(self, world: World) -> None:
        assert 404 == requests.get(f"{world.base}/oauth/other", timeout=10).status_code


class TestNoSecretsInLogs:
    """Even at DEBUG, neither oauthlib nor appregistry logs a secret, token or code (S6)."""

    def test_a_whole_session_logs_no_secret(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="oauthlib")
        caplog.set_level(logging.DEBUG, logger="appregistry")
        key, secret = world.partner.app.key, world.partner.secret
        oauth = OAuth2Session(key, redirect_uri=REDIRECT, state=_state())
        url, _ = oauth.authorization_url(world.authorize_url)
        code = redirect_params(consent(world, url))["code"]
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        first = post_token(world, exchange, auth=(key, secret)).json()
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        second = post_token(world, refresh, auth=(key, secret)).json()
        post_token(world, refresh, auth=(key, secret))  # reuse: refused, family revoked
        trusted = post_token(
            world,
            {"grant_type": "client_credentials"},
            auth=(world.trusted.app.key, world.trusted.secret),
        ).json()
        values = [
            secret,
            world.trusted.secret,
            code,
            first["access_token"],
            first["refresh_token"],
            second["access_token"],
            second["refresh_token"],
            trusted["access_token"],
        ]
        assert "<token response, redacted>" in caplog.text  # oauthlib did log the responses
        assert [] == [value for value in values if value in caplog.text]


# -- units ------------------------------------------------------------------------------------


class TestUserAgent:
    """Any User-Agent header becomes one the registry stores, or none."""

    @given(st.text())
    def test_the_result_is_always_storable(self, header: str) -> None:
        stored = user_agent(header)
        problems = Problems()
        checked = problems.text(
            "user_agent", stored, max_length=MAX_USER_AGENT_LENGTH, required=False
        )
        assert (False, stored) == (bool(problems), checked)

    @given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
    def test_a_printable_ascii_header_is_kept_up_to_the_limit(self, header: str) -> None:
        assert header[:MAX_USER_AGENT_LENGTH] == user_agent(header)


_CREDENTIAL = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64)


class TestClientCredentialParsing:
    """HTTP Basic credentials are form-urlencoded before base64 (RFC 6749 2.3.1)."""

    @given(_CREDENTIAL, _CREDENTIAL)
    def test_basic_credentials_round_trip(self, key: str, secret: str) -> None:
        pair = f"{urllib.parse.quote_plus(key)}:{urllib.parse.quote_plus(secret)}"
        header = "Basic " + base64.b64encode(pair.encode()).decode()
        request = OAuthRequest("https://h/oauth/token.php", "POST", "", {"Authorization": header})
        assert (key, secret) == client_credentials(request)

    def test_basic_and_body_secret_together_are_refused(self) -> None:
        header = "Basic " + base64.b64encode(b"key:secret").decode()
        request = OAuthRequest(
            "https://h/oauth/token.php", "POST", "client_secret=other", {"Authorization": header}
        )
        assert client_credentials(request) is None

    def test_a_body_client_id_that_differs_from_basic_is_refused(self) -> None:
        header = "Basic " + base64.b64encode(b"key:secret").decode()
        request = OAuthRequest(
            "https://h/oauth/token.php", "POST", "client_id=another", {"Authorization": header}
        )
        assert client_credentials(request) is None


class TestCsrfSigner:
    """A consent token verifies only for the user and fields it was made for."""

    @given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
    def test_a_token_is_bound_to_its_fields(self, state: str, other: str) -> None:
        signer = CsrfSigner(b"k" * 32)
        clock = ManualClock()
        token = signer.sign(ALICE, {"state": state}, clock())
        assert (state == other) == signer.verify(token, ALICE, {"state": other}, clock())


class TestServerForHosts:
    """Hosts routing requests themselves get the same decisions from `make_server`."""

    def test_verify_request_checks_bearer_tokens_with_the_registry(self) -> None:
        registry = Registry(storage=MemoryStorage())
        trusted, _ = _register(registry)
        server = make_server(registry)
        issued = registry.issue_token(trusted.app.key, trusted.secret)
        uri = "https://host.example/uapi/calls"
        valid, request = server.verify_request(
            uri, headers={"Authorization": f"Bearer {issued.token}"}
        )
        assert (True, OWNER, trusted.app.key) == (valid, request.user, request.client_id)
        registry.disable_app(trusted.app.key)
        valid, request = server.verify_request(
            uri, headers={"Authorization": f"Bearer {issued.token}"}
        )
        assert (False, "app_disabled") == (valid, request.token_check.reason)


class TestExportedMembers:
    """appregistry.oauth2 exports exactly its public API, and every name resolves."""

    def test_all_is_pinned(self) -> None:
        expected = [
            "AUTHORIZE_PATH",
            "AuthenticatedClient",
            "CONSENT_LIFETIME",
            "ConsentPage",
            "ConsentRequest",
            "CurrentUser",
            "DEFAULT_MAX_BODY_SIZE",
            "EscapeControlCharacters",
            "INTROSPECT_PATH",
            "MAX_STATE_LENGTH",
            "METADATA_PATH",
            "ME_PATH",
            "MIN_STATE_LENGTH",
            "REVOKE_PATH",
            "RegistryServer",
            "RegistryValidator",
            "SignedInUser",
            "TOKEN_PATH",
            "Throttling",
            "bearer_token",
            "default_consent_page",
            "endpoint_paths",
            "make_asgi_app",
            "make_server",
            "make_wsgi_app",
            "server_metadata",
        ]
        assert sorted(expected) == sorted(oauth2.__all__)
        assert [] == [name for name in oauth2.__all__ if not hasattr(oauth2, name)]


class TestOptionalImport:
    """``import appregistry`` (and its CLI) never imports oauthlib."""

    def test_oauthlib_is_not_imported(self) -> None:
        code = "import sys, appregistry, appregistry.cli; print('oauthlib' in sys.modules)"
        result = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "False" == result.stdout.strip()


# -- appregistry serve ------------------------------------------------------------------------


class _Lines:
    """Reads a stream in a thread, so a chatty server never blocks on a full pipe."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._stream = stream
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, text: str) -> str:
        while True:
            line = self._queue.get(timeout=60)
            if line is None:
                raise AssertionError(f"the server stopped: {''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line

    def close(self) -> None:
        """After the process ended: read the rest of the stream, then close it."""
        self._thread.join(timeout=60)
        self._stream.close()
        while (line := self._queue.get_nowait()) is not None:
            self.seen.append(line)


class TestServeCommand:
    """`appregistry serve --dev-account` serves both grants to a real client library.

    Its log shows each refusal's endpoint, status and error code, never a secret.
    """

    def test_a_client_gets_tokens_and_is_refused_while_the_app_is_disabled(
        self, tmp_path: Any
    ) -> None:
        url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
        with open_registry(url) as registry:
            trusted, partner = _register(registry)
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPREGISTRY_")}
        command = [sys.executable, "-m", "appregistry", "--database", url, "serve"]
        command += ["--port", "0", "--dev-account", ACCOUNT]
        process = subprocess.Popen(  # noqa: S603 - our own command line
            command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
        )
        lines = _Lines(process.stderr)
        try:
            banner = lines.until("OAuth 2.0 on ")
            warning = "".join(lines.seen)
            base = banner.split("OAuth 2.0 on ")[1].split()[0]
            assert "WARNING: --dev-account" in warning
            assert repr(ACCOUNT) in warning

            cc = OAuth2Session(client=BackendApplicationClient(client_id=trusted.app.key))
            cc.fetch_token(
                f"{base}/oauth/token.php",
                client_id=trusted.app.key,
                client_secret=trusted.secret,
            )
            oauth = OAuth2Session(
                partner.app.key, redirect_uri=REDIRECT, state=_state(), pkce="S256"
            )
            authorization_url, _ = oauth.authorization_url(f"{base}/oauth/authorize.php")
            page = requests.get(authorization_url, timeout=10)
            form = consent_form(page)
            answer = requests.post(
                urllib.parse.urljoin(page.url, form.action or ""),
                data={**form.hidden, "decision": "approve"},
                allow_redirects=False,
                timeout=10,
            )
            oauth.fetch_token(
                f"{base}/oauth/token.php",
                authorization_response=answer.headers["Location"],
                client_secret=partner.secret,
            )

            def me() -> list[Any]:
                answers = [s.get(f"{base}/uapi/me", timeout=10) for s in (cc, oauth)]
                return [a.json().get("account") if a.ok else a.status_code for a in answers]

            assert [OWNER, ACCOUNT] == me()
            with open_registry(url) as registry:
                registry.disable_app(trusted.app.key)
                registry.disable_app(partner.app.key)
            assert [401, 401] == me()
            with open_registry(url) as registry:
                registry.enable_app(trusted.app.key)
                registry.enable_app(partner.app.key)
            assert [OWNER, ACCOUNT] == me()
            token = cc.token["access_token"]
            by_query = requests.get(
                f"{base}/uapi/me", params={"accessRequestToken": f"Bearer {token}"}, timeout=10
            )
            assert OWNER == by_query.json()["account"]
            wrong = "W" * 32
            refused = requests.post(
                f"{base}/oauth/token.php",
                data={"grant_type": "client_credentials"},
                auth=(trusted.app.key, wrong),
                timeout=10,
            )
            assert 401 == refused.status_code
            lines.until("refused POST /oauth/token.php")
        finally:
            process.terminate()
            process.wait(timeout=30)
            lines.close()
        access_log = "".join(lines.seen)
        assert '"GET /uapi/me" 200' in access_log
        assert "refused POST /oauth/token.php: 401 invalid_client" in access_log
        assert "accessRequestToken" not in access_log
        assert [] == [secret for secret in (token, wrong, trusted.secret) if secret in access_log]

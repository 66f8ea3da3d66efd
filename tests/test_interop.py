"""Third-party OAuth 2.0 clients, written by others, against the endpoints over real HTTP.

Every test runs twice: on the WSGI app (wsgiref) and on the ASGI app (uvicorn).

Authlib and requests-oauthlib (Python), openid-client and simple-oauth2 (Node.js, from
``tests/interop``, installed by ``npm ci --prefix tests/interop``) each complete client
credentials (HTTP Basic and form post), the code flow under PKCE with and without ``state``
and ``redirect_uri``, refresh, revocation and introspection, as far as each client offers them.
The consent step is what a browser does: the consent page is fetched and its form posted.

The Node.js clients run as ``node`` processes that print JSON. Outside CI, their tests are
skipped when ``node`` or the installed packages are missing; under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from _oauth import (
    ACCOUNT,
    OWNER,
    REDIRECT,
    SignIn,
    asgi_mounted,
    consent_form,
    new_state,
    query_of,
    register_apps,
    serving_asgi,
    wsgi_mounted,
)
from _support import serving
from appregistry import RegisteredApp, Registry, open_registry
from appregistry.oauth2 import make_asgi_app, make_wsgi_app
from appregistry.testing import ManualClock

INTEROP = Path(__file__).parent / "interop"


@attrs.frozen
class Server:
    """The endpoints on a loopback port, and the apps registered there."""

    registry: Registry
    base: str
    trusted: RegisteredApp
    partner: RegisteredApp

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def acts_for(self, token: str) -> str | None:
        """The account a token acts for, or None when it is refused."""
        check = self.registry.check_token(token)
        return check.token.account if check.allowed and check.token is not None else None


@pytest.fixture(autouse=True)
def _plain_http_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Python clients refuse http:// unless told; the server listens on loopback only.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.fixture(params=["wsgi", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """The WSGI app on wsgiref, or the ASGI app on uvicorn: the clients see no difference."""
    registry = open_registry(f"sqlite:///{tmp_path / 'interop.sqlite3'}", clock=ManualClock())
    trusted, partner = register_apps(registry)
    sign_in = SignIn()
    if request.param == "wsgi":
        serve = serving(make_wsgi_app(registry, current_user=lambda _environ: sign_in.user))
    else:
        serve = serving_asgi(make_asgi_app(registry, current_user=lambda _request: sign_in.user))
    try:
        with serve as base:
            yield Server(registry, base, trusted, partner)
    finally:
        registry.close()


def browser_consent(authorization_url: str) -> str:
    """Open the consent page, press Allow; the redirect the browser gets back."""
    page = requests.get(authorization_url, timeout=10)
    assert 200 == page.status_code, page.text
    form = consent_form(page.text)
    answer = requests.post(
        urllib.parse.urljoin(page.url, form.action or ""),
        data={**form.hidden, "decision": "approve"},
        allow_redirects=False,
        timeout=10,
    )
    assert 302 == answer.status_code, answer.text
    location: str = answer.headers["Location"]
    assert location.startswith(f"{REDIRECT}?")
    return location


# -- Authlib ----------------------------------------------------------------------------------


class TestAuthlib:
    """Authlib's OAuth 2.0 client: every grant, revocation and introspection."""

    @pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
    def test_client_credentials(self, server: Server, method: str) -> None:
        app = server.trusted
        with AuthlibSession(app.app.key, app.secret, token_endpoint_auth_method=method) as client:
            token = client.fetch_token(
                server.url("/oauth/token.php"), grant_type="client_credentials"
            )
            introspection = client.introspect_token(
                server.url("/oauth/introspect"), token=token["access_token"]
            ).json()
        assert ("Bearer", OWNER) == (token["token_type"], server.acts_for(token["access_token"]))
        assert (True, app.app.key, OWNER) == (
            introspection["active"],
            introspection["client_id"],
            introspection["sub"],
        )

    @pytest.mark.parametrize("with_redirect_uri", [True, False], ids=["redirect", "no-redirect"])
    def test_the_code_flow_refresh_revocation_and_introspection(
        self, server: Server, with_redirect_uri: bool
    ) -> None:
        app = server.partner
        client = AuthlibSession(
            app.app.key,
            app.secret,
            redirect_uri=REDIRECT if with_redirect_uri else None,
            code_challenge_method="S256",
        )
        verifier = new_state() + new_state()
        url, state = client.create_authorization_url(
            server.url("/oauth/authorize.php"), code_verifier=verifier
        )
        assert with_redirect_uri == ("redirect_uri" in query_of(url))
        callback = browser_consent(url)
        with client:
            token = client.fetch_token(
                server.url("/oauth/token.php"),
                authorization_response=callback,
                code_verifier=verifier,
                state=state,
            )
            refreshed = client.refresh_token(
                server.url("/oauth/token.php"), refresh_token=token["refresh_token"]
            )
            active = client.introspect_token(
                server.url("/oauth/introspect"), token=refreshed["access_token"]
            ).json()
            acted_for = server.acts_for(refreshed["access_token"])
            client.revoke_token(
                server.url("/oauth/revoke"),
                token=refreshed["refresh_token"],
                token_type_hint="refresh_token",
            )
        assert (ACCOUNT, True) == (acted_for, active["active"])
        # Revoking the refresh token ended its family: both access tokens are dead.
        assert [None, None] == [
            server.acts_for(t) for t in (token["access_token"], refreshed["access_token"])
        ]


# -- requests-oauthlib --------------------------------------------------------------------------


class TestRequestsOAuthlib:
    """requests-oauthlib: client credentials both ways, the code flow with state, refresh."""

    @pytest.mark.parametrize("include_client_id", [False, True], ids=["basic", "post"])
    def test_client_credentials(self, server: Server, include_client_id: bool) -> None:
        app = server.trusted
        session = OAuth2Session(client=BackendApplicationClient(client_id=app.app.key))
        if include_client_id:
            token = session.fetch_token(
                server.url("/oauth/token.php"),
                client_id=app.app.key,
                client_secret=app.secret,
                include_client_id=True,
            )
        else:
            token = session.fetch_token(
                server.url("/oauth/token.php"), auth=(app.app.key, app.secret)
            )
        assert OWNER == session.get(server.url("/uapi/me"), timeout=10).json()["account"]
        assert OWNER == server.acts_for(token["access_token"])

    def test_the_code_flow_with_state_and_refresh(self, server: Server) -> None:
        app = server.partner
        session = OAuth2Session(app.app.key, redirect_uri=REDIRECT, state=new_state(), pkce="S256")
        url, _ = session.authorization_url(server.url("/oauth/authorize.php"))
        token = session.fetch_token(
            server.url("/oauth/token.php"),
            authorization_response=browser_consent(url),
            client_secret=app.secret,
        )
        refreshed = session.refresh_token(
            server.url("/oauth/token.php"), auth=(app.app.key, app.secret)
        )
        assert ACCOUNT == session.get(server.url("/uapi/me"), timeout=10).json()["account"]
        assert [ACCOUNT, ACCOUNT] == [
            server.acts_for(t["access_token"]) for t in (token, refreshed)
        ]
        # requests-oauthlib has no revocation call: a plain form post, as RFC 7009 describes.
        revoked = requests.post(
            server.url("/oauth/revoke"),
            data={"token": refreshed["refresh_token"]},
            auth=(app.app.key, app.secret),
            timeout=10,
        )
        assert 200 == revoked.status_code
        assert [None, None] == [server.acts_for(t["access_token"]) for t in (token, refreshed)]


# -- Node.js: openid-client and simple-oauth2 ----------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with ``tests/interop``'s packages installed."""
    executable = shutil.which("node")
    if executable is None:
        reason = "node is not installed"
    elif not (INTEROP / "node_modules").is_dir():
        reason = "the Node.js clients are not installed: npm ci --prefix tests/interop"
    else:
        return executable
    if _in_ci():
        pytest.fail(f"{reason}; under CI=true the Node.js interop tests must run", pytrace=False)
    pytest.skip(reason)


def run_node(node: str, script: str, step: str, **env: str) -> dict[str, Any]:
    """Run one step of a client script; the JSON object it prints."""
    result = subprocess.run(  # noqa: S603 - our own scripts, run by node
        [node, str(INTEROP / script), step],
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=INTEROP,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    data: dict[str, Any] = json.loads(lines[-1])
    assert 0 == result.returncode, (data, result.stderr)
    return data


def credentials(app: RegisteredApp, **env: str) -> dict[str, str]:
    return {"CLIENT_ID": app.app.key, "CLIENT_SECRET": app.secret, **env}


class TestOpenIdClient:
    """openid-client finds the endpoints in the RFC 8414 metadata and runs every flow."""

    @pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
    def test_client_credentials_introspection_and_revocation(
        self, server: Server, node: str, method: str
    ) -> None:
        env = credentials(server.trusted, SERVER=server.base, AUTH_METHOD=method)
        result = run_node(node, "openid_client.mjs", "client_credentials", **env)
        assert (server.base, "bearer") == (result["issuer"], result["token_type"].lower())
        assert {"active": True, "client_id": server.trusted.app.key, "sub": OWNER} == result[
            "introspection"
        ]
        assert {"active": False} == {
            k: v for k, v in result["after_revocation"].items() if v is not None
        }
        assert server.acts_for(result["access_token"]) is None

    @pytest.mark.parametrize(
        ("with_state", "with_redirect_uri", "method"),
        [
            (False, True, "client_secret_basic"),
            (True, True, "client_secret_post"),
            (False, False, "client_secret_post"),
            (True, False, "client_secret_basic"),
        ],
        ids=["pkce-only", "state", "no-redirect", "state-no-redirect"],
    )
    def test_the_code_flow_under_pkce(
        self,
        server: Server,
        node: str,
        with_state: bool,
        with_redirect_uri: bool,
        method: str,
    ) -> None:
        env = credentials(server.partner, SERVER=server.base, AUTH_METHOD=method)
        started = run_node(
            node,
            "openid_client.mjs",
            "authorize",
            REDIRECT_URI=REDIRECT,
            WITH_STATE="1" if with_state else "0",
            WITH_REDIRECT_URI="1" if with_redirect_uri else "0",
            **env,
        )
        params = query_of(started["url"])
        assert (with_state, with_redirect_uri, "S256") == (
            "state" in params,
            "redirect_uri" in params,
            params["code_challenge_method"],
        )
        callback = browser_consent(started["url"])
        if not with_redirect_uri:
            # openid-client names the redirect URL in the token request all the same.
            callback = f"{REDIRECT}?{urllib.parse.urlsplit(callback).query}"
        finished = run_node(
            node,
            "openid_client.mjs",
            "exchange",
            CALLBACK=callback,
            VERIFIER=started["verifier"],
            STATE=started["state"] or "",
            **env,
        )
        assert {"active": True, "client_id": server.partner.app.key, "sub": ACCOUNT} == finished[
            "introspection"
        ]
        assert False is finished["after_revocation"]["active"]
        tokens = [finished["access_token"], finished["refreshed_access_token"]]
        assert [None, None] == [server.acts_for(token) for token in tokens]


class TestMountedUnderAPrefix:
    """openid-client and Authlib against the endpoints mounted under /oauth in a host's site.

    The site is a plain WSGI dispatcher on wsgiref, or Starlette on uvicorn. RFC 8414 puts an
    issuer's metadata at the site's root; a mounted app cannot serve it there, so the client
    is given the metadata URL below the mount point, which names every endpoint.
    """

    @pytest.fixture(params=["wsgi", "asgi"])
    def site(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
        url = f"sqlite:///{tmp_path / 'mounted.sqlite3'}"
        registry = open_registry(url, clock=ManualClock())
        trusted, partner = register_apps(registry)
        sign_in = SignIn()
        if request.param == "wsgi":
            app = make_wsgi_app(registry, current_user=lambda _environ: sign_in.user)
            serve = serving(wsgi_mounted("/oauth", app))
        else:
            inner = make_asgi_app(registry, current_user=lambda _request: sign_in.user)
            serve = serving_asgi(asgi_mounted("/oauth", inner))
        try:
            with serve as base:
                yield Server(registry, f"{base}/oauth", trusted, partner)
        finally:
            registry.close()

    def test_openid_client_runs_the_code_flow(self, site: Server, node: str) -> None:
        env = credentials(
            site.partner,
            SERVER=site.base,
            METADATA_URL=f"{site.base}/.well-known/oauth-authorization-server",
            AUTH_METHOD="client_secret_basic",
        )
        started = run_node(
            node, "openid_client.mjs", "authorize", REDIRECT_URI=REDIRECT, WITH_STATE="0", **env
        )
        assert started["url"].startswith(f"{site.base}/authorize.php?")
        callback = browser_consent(started["url"])
        finished = run_node(
            node,
            "openid_client.mjs",
            "exchange",
            CALLBACK=callback,
            VERIFIER=started["verifier"],
            **env,
        )
        assert (True, ACCOUNT) == (
            finished["introspection"]["active"],
            finished["introspection"]["sub"],
        )

    def test_authlib_gets_a_token_at_the_mounted_path(self, site: Server) -> None:
        metadata = requests.get(
            f"{site.base}/.well-known/oauth-authorization-server", timeout=10
        ).json()
        assert f"{site.base}/token.php" == metadata["token_endpoint"]
        app = site.trusted
        with AuthlibSession(app.app.key, app.secret) as client:
            token = client.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        assert OWNER == site.acts_for(token["access_token"])


class TestSimpleOAuth2:
    """simple-oauth2: client credentials both ways (with its empty scope), code flow, refresh."""

    @pytest.mark.parametrize("method", ["header", "body"])
    def test_client_credentials(self, server: Server, node: str, method: str) -> None:
        env = credentials(server.trusted, SERVER=server.base, AUTH_METHOD=method)
        result = run_node(node, "simple_oauth2.cjs", "client_credentials", **env)
        assert (OWNER, 3600) == (server.acts_for(result["access_token"]), result["expires_in"])

    @pytest.mark.parametrize("pkce", [True, False], ids=["pkce", "state-only"])
    def test_the_code_flow_refresh_and_revocation(
        self, server: Server, node: str, pkce: bool
    ) -> None:
        env = credentials(server.partner, SERVER=server.base, AUTH_METHOD="body")
        verifier = new_state() + new_state()
        extra = {"CHALLENGE": _s256(verifier)} if pkce else {}
        started = run_node(
            node,
            "simple_oauth2.cjs",
            "authorize",
            REDIRECT_URI=REDIRECT,
            STATE=new_state(),
            **extra,
            **env,
        )
        code = query_of(browser_consent(started["url"]))["code"]
        finished = run_node(
            node,
            "simple_oauth2.cjs",
            "exchange",
            CODE=code,
            REDIRECT_URI=REDIRECT,
            VERIFIER=verifier if pkce else "",
            **env,
        )
        tokens = [finished["access_token"], finished["refreshed_access_token"]]
        assert [None, None] == [server.acts_for(token) for token in tokens]
        assert finished["refresh_token"] != finished["refreshed_refresh_token"]


def _s256(verifier: str) -> str:
    from appregistry._credentials import pkce_s256

    return pkce_s256(verifier)

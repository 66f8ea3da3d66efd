"""One implementation, two transports, any mount point.

The WSGI app and the ASGI app are the same endpoints (`test_oauth2_conformance` runs every
rule on both). Here: both mounted at the root, under ``/oauth``, under ``/api`` and under
``/auth/oauth``, in a plain WSGI dispatcher and in Starlette, with the paths, links, form
actions and metadata that follow; and what is the ASGI adapter's own: the body read on the
event loop within the limits, the endpoints run in a worker thread, the host's session read
by ``current_user``, lifespan, and Starlette imported only when asked for.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import Any

import anyio
import attrs
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from _oauth import (
    ACCOUNT,
    ALICE,
    AsgiClient,
    SignIn,
    WsgiClient,
    asgi_mounted,
    code_params,
    consent_form,
    query_of,
    register_apps,
    wsgi_mounted,
)
from appregistry import RegisteredApp, Registry
from appregistry.oauth2 import SignedInUser, endpoint_paths, make_asgi_app, make_wsgi_app
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

# Where a host mounts the endpoints, and where the token endpoint then is on its site.
MOUNTS = {
    "": "/oauth/token.php",
    "/oauth": "/oauth/token.php",
    "/api": "/api/oauth/token.php",
    "/auth/oauth": "/auth/oauth/token.php",
}


@attrs.frozen
class Site:
    """A host's site with the endpoints mounted in it, and the apps registered there."""

    client: WsgiClient | AsgiClient
    registry: Registry
    trusted: RegisteredApp
    partner: RegisteredApp

    def basic(self, app: RegisteredApp) -> dict[str, str]:
        pair = f"{app.app.key}:{app.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def make_site(transport: str, prefix: str) -> Site:
    registry = Registry(storage=MemoryStorage(), clock=ManualClock())
    trusted, partner = register_apps(registry)
    sign_in = SignIn()
    client: WsgiClient | AsgiClient
    if transport == "wsgi":
        app = make_wsgi_app(registry, current_user=lambda _environ: sign_in.user)
        client = WsgiClient(wsgi_mounted(prefix, app))
    else:
        inner = make_asgi_app(registry, current_user=lambda _request: sign_in.user)
        client = AsgiClient(asgi_mounted(prefix, inner) if prefix else inner)
    return Site(client, registry, trusted, partner)


@pytest.fixture(params=["wsgi", "asgi"])
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class TestMountPoints:
    """Paths follow the mount point; /oauth is not doubled when the mount point is /oauth."""

    @pytest.mark.parametrize(("prefix", "token_path"), MOUNTS.items())
    def test_the_token_endpoint_and_resource(
        self, transport: str, prefix: str, token_path: str
    ) -> None:
        site = make_site(transport, prefix)
        form = [("grant_type", "client_credentials")]
        answer = site.client.post(token_path, body=form, headers=site.basic(site.trusted))
        assert 200 == answer.status, answer.text
        token = answer.json()["access_token"]
        me = site.client.get(f"{prefix}/uapi/me", headers={"Authorization": f"Bearer {token}"})
        assert (200, "acme") == (me.status, me.json()["account"])

    @pytest.mark.parametrize(("prefix", "token_path"), MOUNTS.items())
    def test_the_metadata_names_the_mounted_urls(
        self, transport: str, prefix: str, token_path: str
    ) -> None:
        site = make_site(transport, prefix)
        data = site.client.get(f"{prefix}/.well-known/oauth-authorization-server").json()
        origin = "https://auth.example"
        authorize = token_path.replace("token.php", "authorize.php")
        assert (f"{origin}{prefix}", f"{origin}{token_path}", f"{origin}{authorize}") == (
            data["issuer"],
            data["token_endpoint"],
            data["authorization_endpoint"],
        )

    @pytest.mark.parametrize(("prefix", "token_path"), MOUNTS.items())
    def test_the_consent_form_posts_to_the_mounted_path(
        self, transport: str, prefix: str, token_path: str
    ) -> None:
        site = make_site(transport, prefix)
        authorize = token_path.replace("token.php", "authorize.php")
        page = site.client.get(authorize, query=code_params(site.partner.app.key))
        form = consent_form(page.text)
        assert (200, authorize) == (page.status, form.action)
        answer = site.client.post(authorize, body=[*form.hidden.items(), ("decision", "approve")])
        code = query_of(answer.headers["Location"])["code"]
        assert 36 < len(code)

    @pytest.mark.parametrize(
        ("prefix", "path"), [("/oauth", "/oauth/oauth/token.php"), ("", "/token.php")]
    )
    def test_other_spellings_are_not_found(self, transport: str, prefix: str, path: str) -> None:
        site = make_site(transport, prefix)
        answer = site.client.post(path, body=[("grant_type", "client_credentials")])
        assert (404, "not_found") == (answer.status, answer.json()["error"])

    def test_the_host_keeps_its_other_paths(self, transport: str) -> None:
        site = make_site(transport, "/oauth")
        page = site.client.get("/home" if transport == "asgi" else "/elsewhere")
        assert (200, "the host's own page") == (page.status, page.text)

    def test_sign_in_comes_back_to_the_mounted_consent_page(self, transport: str) -> None:
        registry = Registry(storage=MemoryStorage(), clock=ManualClock())
        _, partner = register_apps(registry)
        options: dict[str, Any] = {"current_user": lambda _native: None, "login_url": "/login"}
        client: WsgiClient | AsgiClient
        if transport == "wsgi":
            client = WsgiClient(wsgi_mounted("/api", make_wsgi_app(registry, **options)))
        else:
            client = AsgiClient(asgi_mounted("/api", make_asgi_app(registry, **options)))
        answer = client.get("/api/oauth/authorize.php", query=code_params(partner.app.key))
        back = query_of(answer.headers["Location"])["next"]
        assert back.startswith("/api/oauth/authorize.php?response_type=code")

    def test_endpoint_paths_states_the_rule(self) -> None:
        assert [
            "/oauth/token.php",
            "/token.php",
            "/oauth/token.php",
            "/token.php",
        ] == [endpoint_paths(p)["token"] for p in ("", "/oauth", "/api", "/auth/oauth/")]


# -- the ASGI adapter's own -------------------------------------------------------------------


def asgi_call(app: Any, scope: dict[str, Any], chunks: Iterable[bytes]) -> tuple[int, int]:
    """Call ``app`` with a body sent in ``chunks``; (status, messages received)."""
    pending = list(chunks)
    received = 0
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Any) -> None:
        sent.append(message)

    base = {"type": "http", "root_path": "", "scheme": "https", "query_string": b""}
    anyio.run(app, {**base, "server": ("auth.example", 443), **scope}, receive, send)
    return sent[0]["status"], received


class TestAsgiAdapter:
    """The body is read on the event loop within the limits; the endpoints run in a thread."""

    def make(self, **options: Any) -> tuple[Any, RegisteredApp, RegisteredApp]:
        registry = Registry(storage=MemoryStorage(), clock=ManualClock())
        trusted, partner = register_apps(registry)
        options.setdefault("current_user", lambda _request: ALICE)
        return make_asgi_app(registry, **options), trusted, partner

    def test_a_body_without_length_is_cut_off_past_the_limit(self) -> None:
        app, _, _ = self.make(max_body_size=1000)
        scope = {"method": "POST", "path": "/oauth/token.php", "headers": []}
        status, received = asgi_call(app, scope, [b"x" * 400] * 100)
        assert (413, 3) == (status, received)

    def test_a_body_in_chunks_within_the_limit_is_read_whole(self) -> None:
        app, trusted, _ = self.make()
        body = f"grant_type=client_credentials&client_id={trusted.app.key}"
        body += f"&client_secret={trusted.secret}"
        chunks = [body[i : i + 10].encode() for i in range(0, len(body), 10)]
        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        scope = {"method": "POST", "path": "/oauth/token.php", "headers": headers}
        assert 200 == asgi_call(app, scope, chunks)[0]

    def test_the_endpoints_never_run_on_the_event_loop(self) -> None:
        threads: dict[str, int] = {}

        def current_user(_request: Request) -> SignedInUser:
            threads["current_user"] = threading.get_ident()
            return ALICE

        inner, _, partner = self.make(current_user=current_user)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            threads["loop"] = threading.get_ident()
            await inner(scope, receive, send)

        page = AsgiClient(app).get("/oauth/authorize.php", query=code_params(partner.app.key))
        assert 200 == page.status
        assert threads["loop"] != threads["current_user"]

    def test_current_user_reads_the_hosts_session(self) -> None:
        registry = Registry(storage=MemoryStorage(), clock=ManualClock())
        _, partner = register_apps(registry)

        def current_user(request: Request) -> SignedInUser | None:
            account = request.session.get("account")
            return SignedInUser(account, request.session["user"]) if account else None

        async def login(request: Request) -> PlainTextResponse:
            request.session.update(account=ACCOUNT, user="alice")
            return PlainTextResponse("signed in")

        oauth = make_asgi_app(registry, current_user=current_user)
        host = Starlette(
            routes=[Route("/login", login), Mount("/oauth", app=oauth)],
            middleware=[Middleware(SessionMiddleware, secret_key="s" * 32)],
        )
        with TestClient(host, base_url="https://auth.example") as browser:
            url = "/oauth/authorize.php"
            params = dict(code_params(partner.app.key))
            assert 401 == browser.get(url, params=params).status_code
            browser.get("/login")
            page = browser.get(url, params=params)
            form = consent_form(page.text)
            answer = browser.post(
                url, data={**form.hidden, "decision": "approve"}, follow_redirects=False
            )
        assert "code" in query_of(answer.headers["location"])
        assert ["alice"] == [
            item.installation.installed_by for item in registry.list_installations(ACCOUNT).items
        ]

    def test_lifespan_starts_and_stops(self) -> None:
        app, _, _ = self.make()
        with TestClient(app, base_url="https://auth.example") as client:
            assert 404 == client.get("/nowhere").status_code

    def test_starlette_is_imported_only_for_the_asgi_app(self) -> None:
        code = (
            "import sys, appregistry.oauth2 as o; before = 'starlette' in sys.modules; "
            "from appregistry import Registry; from appregistry.storage.memory import "
            "MemoryStorage; o.make_asgi_app(Registry(storage=MemoryStorage()), "
            "current_user=lambda r: None); print(before, 'starlette' in sys.modules)"
        )
        result = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "False True" == result.stdout.strip()

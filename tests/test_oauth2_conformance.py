"""The OAuth 2.0 endpoints against the letter of RFC 6749, 6750, 8414 and 9700.

Each class is one rule that outside clients and a review found broken or missing: empty and
repeated parameters, code replay, an omitted ``redirect_uri``, the ``state`` rule, metadata,
error bodies, caching of redirects, body limits, CSRF tokens, log escaping, the consent page of
an account that may not use apps, and the log of refusals. The endpoints run in-process on
in-memory storage; `test_interop` drives them over HTTP with third-party clients.
"""

from __future__ import annotations

import base64
import io
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import anyio
import attrs
import pytest

from _oauth import (
    ACCOUNT,
    ALICE,
    CHALLENGE,
    REDIRECT,
    VERIFIER,
    Answer,
    AsgiClient,
    SignIn,
    WsgiClient,
    approve,
    code_params,
    consent_form,
    new_state,
    query_of,
    register_apps,
)
from appregistry import InvalidGrant, RegisteredApp, Registry
from appregistry.oauth2 import EscapeControlCharacters, make_asgi_app, make_wsgi_app
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock


@attrs.frozen
class World:
    """A registry, its endpoints in-process, and the apps registered on it."""

    registry: Registry
    client: WsgiClient | AsgiClient
    trusted: RegisteredApp
    partner: RegisteredApp
    sign_in: SignIn

    def basic(self, app: RegisteredApp | None = None) -> dict[str, str]:
        app = app or self.partner
        pair = f"{app.app.key}:{app.secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def token(self, *form: tuple[str, str], app: RegisteredApp | None = None) -> Answer:
        return self.client.post("/oauth/token.php", body=form, headers=self.basic(app))

    def code(self, params: list[tuple[str, str]]) -> str:
        answer = approve(self.client, params)
        assert 302 == answer.status, answer.text
        return query_of(answer.headers["Location"])["code"]

    def exchange(self, code: str, *extra: tuple[str, str]) -> Answer:
        form = [("grant_type", "authorization_code"), ("code", code), *extra]
        return self.token(*form)

    def me(self, token: str) -> int:
        answer = self.client.get("/uapi/me", headers={"Authorization": f"Bearer {token}"})
        return answer.status


def make_world(transport: str = "wsgi", **options: Any) -> World:
    registry = Registry(storage=MemoryStorage(), clock=ManualClock())
    trusted, partner = register_apps(registry)
    sign_in = SignIn()
    make = make_wsgi_app if transport == "wsgi" else make_asgi_app
    app = make(registry, current_user=lambda _native: sign_in.user, csrf_key=b"k" * 32, **options)
    client = WsgiClient(app) if transport == "wsgi" else AsgiClient(app)
    return World(registry, client, trusted, partner, sign_in)


@pytest.fixture(params=["wsgi", "asgi"])
def transport(request: pytest.FixtureRequest) -> str:
    """Each rule holds for the WSGI app and the ASGI app alike: one implementation."""
    name: str = request.param
    return name


@pytest.fixture
def world(transport: str) -> World:
    return make_world(transport)


def pkce_exchange(world: World, code: str) -> Answer:
    return world.exchange(code, ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER))


class TestEmptyParametersAreOmitted:
    """RFC 6749 3.1, 3.2: a parameter sent without a value is treated as if it were omitted."""

    def test_an_empty_scope_is_no_scope(self, world: World) -> None:
        answer = world.token(("grant_type", "client_credentials"), ("scope", ""), app=world.trusted)
        assert (200, "Bearer") == (answer.status, answer.json()["token_type"])

    def test_empty_client_credentials_beside_basic_are_ignored(self, world: World) -> None:
        form = [("grant_type", "client_credentials"), ("client_id", ""), ("client_secret", "")]
        assert 200 == world.token(*form, app=world.trusted).status

    def test_an_empty_pkce_challenge_is_no_pkce(self, world: World) -> None:
        params = [*code_params(world.partner.app.key, pkce=False)]
        params += [("code_challenge", ""), ("code_challenge_method", "")]
        code = world.code(params)
        assert 200 == world.exchange(code, ("redirect_uri", REDIRECT)).status

    def test_an_empty_state_is_no_state(self, world: World) -> None:
        params = [*code_params(world.partner.app.key, with_state=False), ("state", "")]
        answer = approve(world.client, params)
        assert "state" not in query_of(answer.headers["Location"])
        code = query_of(answer.headers["Location"])["code"]
        assert 200 == pkce_exchange(world, code).status


class TestRepeatedParametersAreRefused:
    """RFC 6749 3.1, 3.2: a parameter MUST NOT appear twice; the request is invalid."""

    @pytest.mark.parametrize(
        "name", ["client_id", "client_secret", "grant_type", "scope", "type", "redirect_uri"]
    )
    def test_at_the_token_endpoint(self, world: World, name: str) -> None:
        key, secret = world.trusted.app.key, world.trusted.secret
        form = [("grant_type", "client_credentials"), ("client_id", key)]
        form += [("client_secret", secret), (name, "x"), (name, "y")]
        answer = world.client.post("/oauth/token.php", body=form)
        assert (400, "invalid_request") == (answer.status, answer.json()["error"])
        assert f"{name} appears more than once" in answer.json()["error_description"]

    @pytest.mark.parametrize("name", ["code", "code_verifier", "redirect_uri"])
    def test_in_a_code_exchange_and_the_code_stays_usable(self, world: World, name: str) -> None:
        code = world.code(code_params(world.partner.app.key))
        form = {"code": code, "code_verifier": VERIFIER, "redirect_uri": REDIRECT}
        doubled = world.exchange(code, *form.items(), (name, form[name]))
        assert (400, "invalid_request") == (doubled.status, doubled.json()["error"])
        assert 200 == pkce_exchange(world, code).status

    def test_in_a_refresh(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key))
        refresh = pkce_exchange(world, code).json()["refresh_token"]
        form = [("grant_type", "refresh_token"), ("refresh_token", refresh)]
        doubled = world.token(*form, ("refresh_token", refresh))
        assert (400, "invalid_request") == (doubled.status, doubled.json()["error"])
        assert 200 == world.token(*form).status

    @pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
    def test_at_revocation_and_introspection(self, world: World, path: str) -> None:
        issued = world.registry.issue_token(world.trusted.app.key, world.trusted.secret)
        form = [("token", issued.token), ("token", "other")]
        answer = world.client.post(path, body=form, headers=world.basic(world.trusted))
        assert (400, "invalid_request") == (answer.status, answer.json()["error"])
        assert 200 == world.me(issued.token)

    @pytest.mark.parametrize("name", ["client_id", "state", "code_challenge", "redirect_uri"])
    def test_at_the_authorization_endpoint_without_redirecting(
        self, world: World, name: str
    ) -> None:
        params = code_params(world.partner.app.key)
        params.append((name, dict(params)[name]))
        answer = world.client.get("/oauth/authorize.php", query=params)
        assert 400 == answer.status
        assert "Location" not in answer.headers
        assert f"{name} appears more than once" in answer.text


class TestReusedCodes:
    """RFC 6749 4.1.2, 10.5: a code used twice revokes the tokens its first exchange gave."""

    def test_the_replay_is_refused_and_its_tokens_die(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key))
        first = pkce_exchange(world, code).json()
        replay = pkce_exchange(world, code)
        assert (400, "invalid_grant") == (replay.status, replay.json()["error"])
        assert 401 == world.me(first["access_token"])
        again = world.token(
            ("grant_type", "refresh_token"), ("refresh_token", first["refresh_token"])
        )
        assert (400, "invalid_grant") == (again.status, again.json()["error"])

    def test_other_grants_of_the_account_live_on(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key))
        other = pkce_exchange(world, world.code(code_params(world.partner.app.key))).json()
        pkce_exchange(world, code)
        pkce_exchange(world, code)
        assert 200 == world.me(other["access_token"])


class TestOmittedRedirectUri:
    """RFC 6749 3.1.2.3, 4.1.1, 4.1.3: an app's one redirect URL may go unnamed, both times."""

    def test_left_out_of_both_requests(self, world: World) -> None:
        params = code_params(world.partner.app.key, redirect=False)
        page = world.client.get("/oauth/authorize.php", query=params)
        assert "redirect_uri" not in consent_form(page.text).hidden
        assert "client.example" in page.text  # where the user goes back to
        answer = approve(world.client, params)
        assert answer.headers["Location"].startswith(f"{REDIRECT}?")
        code = query_of(answer.headers["Location"])["code"]
        token = world.exchange(code, ("code_verifier", VERIFIER))
        assert 200 == token.status, token.text

    def test_left_out_of_the_authorization_but_named_right_in_the_exchange(
        self, world: World
    ) -> None:
        code = world.code(code_params(world.partner.app.key, redirect=False))
        assert 200 == pkce_exchange(world, code).status

    def test_named_in_the_authorization_it_must_be_named_again(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key))
        answer = world.exchange(code, ("code_verifier", VERIFIER))
        assert (400, "invalid_grant") == (answer.status, answer.json()["error"])

    def test_a_wrong_one_is_refused_in_the_exchange(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key, redirect=False))
        answer = world.exchange(
            code, ("redirect_uri", f"{REDIRECT}/other"), ("code_verifier", VERIFIER)
        )
        assert (400, "invalid_grant") == (answer.status, answer.json()["error"])


class TestStateRule:
    """state (16 to 512 characters) is required without PKCE; with S256 it may be left out."""

    def refusal(self, world: World, params: list[tuple[str, str]]) -> dict[str, str]:
        answer = world.client.get("/oauth/authorize.php", query=params)
        assert 302 == answer.status, answer.text
        return query_of(answer.headers["Location"])

    def test_without_pkce_it_is_required(self, world: World) -> None:
        params = code_params(world.partner.app.key, with_state=False, pkce=False)
        refused = self.refusal(world, params)
        assert ("invalid_request", "state is required without PKCE") == (
            refused["error"],
            refused["error_description"].split(":")[0],
        )

    def test_with_s256_it_may_be_left_out(self, world: World) -> None:
        code = world.code(code_params(world.partner.app.key, with_state=False))
        assert 200 == pkce_exchange(world, code).status

    def test_with_plain_pkce_it_is_still_required(self, world: World) -> None:
        params = code_params(world.partner.app.key, with_state=False, pkce=False)
        params += [("code_challenge", CHALLENGE), ("code_challenge_method", "plain")]
        assert "error" in self.refusal(world, params)

    def test_when_given_it_has_bounds_even_with_pkce(self, world: World) -> None:
        refused = self.refusal(world, code_params(world.partner.app.key, state="short"))
        assert ("invalid_request", "short") == (refused["error"], refused["state"])

    def test_the_option_requires_it_always(self, transport: str) -> None:
        world = make_world(transport, always_require_state=True)
        refused = self.refusal(world, code_params(world.partner.app.key, with_state=False))
        assert "invalid_request" == refused["error"]
        assert 302 == approve(world.client, code_params(world.partner.app.key)).status


class TestMetadata:
    """RFC 8414: /.well-known/oauth-authorization-server says where everything is."""

    def test_the_document_at_the_root(self, world: World) -> None:
        answer = world.client.get("/.well-known/oauth-authorization-server")
        data = answer.json()
        assert (200, "application/json") == (answer.status, answer.headers["Content-Type"])
        assert {
            "issuer": "https://auth.example",
            "authorization_endpoint": "https://auth.example/oauth/authorize.php",
            "token_endpoint": "https://auth.example/oauth/token.php",
            "revocation_endpoint": "https://auth.example/oauth/revoke",
            "introspection_endpoint": "https://auth.example/oauth/introspect",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
        }.items() <= data.items()

    def test_the_host_and_mount_point_of_the_request(self, world: World) -> None:
        client = attrs.evolve(world.client, host="id.example:8443", script_name="/auth")
        data = client.get("/.well-known/oauth-authorization-server").json()
        assert ("https://id.example:8443/auth", "https://id.example:8443/auth/oauth/token.php") == (
            data["issuer"],
            data["token_endpoint"],
        )

    def test_a_configured_issuer_wins_over_the_host_header(self, transport: str) -> None:
        world = make_world(transport, issuer="https://login.example/")
        client = attrs.evolve(world.client, host="evil.example")
        data = client.get("/.well-known/oauth-authorization-server").json()
        assert ("https://login.example", "https://login.example/oauth/revoke") == (
            data["issuer"],
            data["revocation_endpoint"],
        )


class TestErrorBodies:
    """Every JSON error carries error and error_description (RFC 6749 5.2, RFC 6750 3)."""

    def requests(self, world: World) -> Iterator[Answer]:
        client = world.client
        yield client.get("/uapi/me", headers={"Authorization": "Bearer unknown"})
        yield client.get(
            "/uapi/me", query="accessRequestToken=a", headers={"Authorization": "Bearer b"}
        )
        yield client.get("/nowhere")
        yield client.get("/oauth/token.php")
        yield client.post("/oauth/token.php", body="grant_type=client_credentials")
        yield world.token(("grant_type", "client_credentials"))  # untrusted
        yield world.token(("grant_type", "password"))
        yield world.token(("grant_type", "authorization_code"), ("code", "nope"))
        yield client.post("/oauth/revoke", body="token=x")
        yield client.post("/oauth/token.php", body="x" * 20_000)

    def test_each_has_both(self, world: World) -> None:
        bodies = [(answer.status, answer.json()) for answer in self.requests(world)]
        assert [] == [
            (status, body)
            for status, body in bodies
            if not (isinstance(body.get("error"), str) and body.get("error_description"))
        ]
        assert [401, 400, 404, 405, 401, 400, 400, 400, 401, 413] == [s for s, _ in bodies]

    def test_no_token_has_a_description_and_no_code(self, world: World) -> None:
        """RFC 6750 3.1: a request without a token gets no error code, in body or challenge."""
        answer = world.client.get("/uapi/me")
        assert (401, None) == (answer.status, answer.json().get("error"))
        assert answer.json()["error_description"]
        assert 'Bearer realm="appregistry"' == answer.headers["WWW-Authenticate"]


class TestRedirectsAreNotCached:
    """The redirect carrying a code or an error has Cache-Control: no-store."""

    def test_code_denial_and_error_redirects(self, world: World) -> None:
        key = world.partner.app.key
        answers = [
            approve(world.client, code_params(key)),
            approve(world.client, code_params(key), decision="deny"),
            world.client.get("/oauth/authorize.php", query=code_params(key, state="short")),
        ]
        assert [(302, "no-store")] * 3 == [
            (a.status, a.headers.get("Cache-Control")) for a in answers
        ]
        assert [True, False, False] == ["code" in query_of(a.headers["Location"]) for a in answers]


class _Unread(io.RawIOBase):
    """A request body that counts what is read of it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.read_bytes += len(buffer)
        buffer[: len(buffer)] = b"x" * len(buffer)
        return len(buffer)


def unread_post(world: World, headers: dict[str, str]) -> tuple[int, int]:
    """POST to the token endpoint with a body that is never sent: (status, bytes read)."""
    if isinstance(world.client, WsgiClient):
        stream = _Unread()
        answer = world.client.post("/oauth/token.php", headers=headers, stream=stream)
        return answer.status, stream.read_bytes
    received = 0
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 65536
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/oauth/token.php",
        "root_path": "",
        "scheme": "https",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("auth.example", 443),
    }
    anyio.run(world.client.app, scope, receive, send)
    return sent[0]["status"], received


class TestOversizedBodies:
    """A Content-Length over the limit is refused with 413 before any of the body is read."""

    @pytest.mark.parametrize("length", [16 * 1024 + 1, 10**9])
    def test_nothing_is_read(self, world: World, length: int) -> None:
        assert (413, 0) == unread_post(world, {"Content-Length": str(length)})

    def test_a_wrong_content_type_is_not_read_either(self, world: World) -> None:
        headers = {"Content-Length": "100", "Content-Type": "application/json"}
        assert (415, 0) == unread_post(world, headers)


class TestCsrfTokens:
    """A forged CSRF token is refused with 403, whatever characters it holds."""

    @pytest.mark.parametrize("mac", ["é" * 43, "\u00ff", "ab\x00", "\U0001f600" * 10])
    def test_non_ascii_tokens_are_forgeries(self, world: World, mac: str) -> None:
        page = world.client.get("/oauth/authorize.php", query=code_params(world.partner.app.key))
        hidden = consent_form(page.text).hidden
        issued, _, _ = hidden["csrf_token"].partition(".")  # a fresh time, a forged MAC
        form = {**hidden, "csrf_token": f"{issued}.{mac}", "decision": "approve"}
        answer = world.client.post("/oauth/authorize.php", body=form.items())
        assert 403 == answer.status


class TestLogEscaping:
    """Values quoted in log lines cannot start a line of their own (no forged log lines)."""

    def test_a_newline_in_redirect_uri_stays_on_its_line(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="oauthlib")
        caplog.set_level(logging.DEBUG, logger="appregistry")
        forged = f"{REDIRECT}\n2015-04-20 INFO appregistry: admin signed in\r\x1b[2J"
        params = [*code_params(world.partner.app.key, redirect=False), ("redirect_uri", forged)]
        world.client.get("/oauth/authorize.php", query=params)
        messages = [record.getMessage() for record in caplog.records]
        assert any("\\n2015-04-20 INFO" in message for message in messages)
        assert [] == [m for m in messages if any(c in m for c in "\n\r\x1b")]

    def test_the_filter_escapes_mappings_and_objects_and_keeps_numbers(self) -> None:
        escape = EscapeControlCharacters()
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "%(a)s %(n)d", None, None)
        record.args = {"a": "1\n2", "n": 7}
        plain = logging.LogRecord("x", logging.INFO, __file__, 1, ValueError("a\u2028b"), (), None)
        assert (True, True) == (escape.filter(record), escape.filter(plain))
        assert ("1\\n2 7", "a\\u2028b") == (record.getMessage(), plain.getMessage())


class TestConsentWithoutThePermission:
    """An account that may not use apps is told so at once, with no Allow button."""

    def test_the_page_says_so_and_offers_only_to_go_back(self, world: World) -> None:
        world.registry.forbid_account(ACCOUNT)
        page = world.client.get("/oauth/authorize.php", query=code_params(world.partner.app.key))
        form = consent_form(page.text)
        assert (403, ["deny"]) == (page.status, form.buttons)
        assert f"The account {ACCOUNT} is not permitted to use apps." in page.text
        back = world.client.post(
            "/oauth/authorize.php", body=[*form.hidden.items(), ("decision", "deny")]
        )
        assert "access_denied" == query_of(back.headers["Location"])["error"]

    def test_a_suspended_installation_is_said_too(self, world: World) -> None:
        world.registry.install_app(world.partner.app.key, ACCOUNT, by=ALICE.user)
        world.registry.suspend_installation(world.partner.app.key, ACCOUNT)
        page = world.client.get("/oauth/authorize.php", query=code_params(world.partner.app.key))
        assert (403, ["deny"]) == (page.status, consent_form(page.text).buttons)
        assert "is suspended on the account" in page.text

    def test_a_permitted_account_gets_both_buttons(self, world: World) -> None:
        page = world.client.get("/oauth/authorize.php", query=code_params(world.partner.app.key))
        assert (200, ["approve", "deny"]) == (page.status, consent_form(page.text).buttons)


class TestRefusalsAreLogged:
    """Each refusal logs the endpoint, status and error code at INFO, never a secret."""

    def test_the_reason_is_logged_without_the_secret(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="appregistry.oauth2")
        secret = "S" * 32
        form = [("grant_type", "client_credentials"), ("client_id", world.trusted.app.key)]
        world.client.post("/oauth/token.php", body=[*form, ("client_secret", secret)])
        world.client.get(
            "/oauth/authorize.php", query=code_params(world.partner.app.key, state="x")
        )
        world.client.get(f"/{secret}")
        assert [
            "refused POST /oauth/token.php: 401 invalid_client",
            "refused GET /oauth/authorize.php: 302 invalid_request",
            "refused GET (another path): 404 not_found",
        ] == [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
        assert secret not in caplog.text

    def test_a_new_state_is_not_logged(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="appregistry.oauth2")
        state = new_state()
        approve(world.client, code_params(world.partner.app.key, state=state))
        assert state not in caplog.text


def _pending_code(registry: Registry) -> tuple[str, str]:
    """An untrusted app approved on ``acme`` and its unused code: (key, code)."""
    new = registry.register_app(
        "dev",
        name="Partner",
        homepage="https://partner.example/",
        admin_email="dev@partner.example",
        redirect_url=REDIRECT,
    )
    registry.permit_account("acme", by="provider")
    issued = registry.authorize(new.app.key, "acme", redirect_url=REDIRECT, approved_by="alice")
    return new.app.key, issued.code


def _exchange_twice(registry: Registry, key: str, code: str) -> tuple[str, str]:
    issued = registry.exchange_code(key, code, redirect_url=REDIRECT)
    with pytest.raises(InvalidGrant):
        registry.exchange_code(key, code, redirect_url=REDIRECT)
    return registry.check_token(issued.token).reason, "replayed"


class TestCodesAcrossTheMigration:
    """Codes issued before the schema kept used codes still work once, and replays are caught.

    The database is made at the current version, then put back as the version before the
    codes migration had it (codes without redirect_url_given, used_at, family_id; and
    without what the later migrations added) with that version's number: opening it
    migrates forward.
    """

    def test_sqlite_version_4(self, tmp_path: Any) -> None:
        from appregistry.storage.sqlite import SCHEMA_VERSION, SQLiteStorage

        path = tmp_path / "codes.sqlite3"
        with Registry(storage=SQLiteStorage(path), clock=ManualClock()) as registry:
            key, code = _pending_code(registry)
        connection = sqlite3.connect(path)
        for column in ("family_id", "used_at", "redirect_url_given"):
            connection.execute(f"ALTER TABLE codes DROP COLUMN {column}")
        # Undo version 6 too: the token approver and last use, the change log, the settings.
        for table, column in (
            ("tokens", "approved_by"),
            ("tokens", "last_used_at"),
            ("refresh_tokens", "approved_by"),
        ):
            connection.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        connection.execute("DROP TABLE change_log")
        connection.execute("DROP TABLE settings")
        connection.execute("PRAGMA user_version = 4")
        connection.commit()
        connection.close()
        with Registry(storage=SQLiteStorage(path), clock=ManualClock()) as registry:
            assert ("token_unknown", "replayed") == _exchange_twice(registry, key, code)
        connection = sqlite3.connect(path)
        version = connection.execute("PRAGMA user_version").fetchall()
        connection.close()
        assert [(SCHEMA_VERSION,)] == version

    def test_postgres_version_3(self, postgres_url: str, postgres_schema: str) -> None:
        import psycopg
        from psycopg import sql

        from appregistry.storage.postgres import SCHEMA_VERSION, PostgresStorage

        def table(name: str) -> sql.Identifier:
            return sql.Identifier(postgres_schema, name)

        storage = PostgresStorage.from_url(postgres_url, schema=postgres_schema)
        with Registry(storage=storage, clock=ManualClock()) as registry:
            key, code = _pending_code(registry)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL(
                    "ALTER TABLE {} DROP COLUMN family_id, DROP COLUMN used_at, "
                    "DROP COLUMN redirect_url_given"
                ).format(table("appregistry_codes"))
            )
            # Undo version 5 too: the token approver and last use, and the settings.
            admin.execute(
                sql.SQL(
                    "ALTER TABLE {} DROP COLUMN approved_by, DROP COLUMN last_used_at; "
                    "ALTER TABLE {} DROP COLUMN approved_by; DROP TABLE {}"
                ).format(
                    table("appregistry_tokens"),
                    table("appregistry_refresh_tokens"),
                    table("appregistry_settings"),
                )
            )
            admin.execute(
                sql.SQL("UPDATE {} SET version = 3").format(table("appregistry_schema_version"))
            )
            storage = PostgresStorage.from_url(postgres_url, schema=postgres_schema)
            with Registry(storage=storage, clock=ManualClock()) as registry:
                assert ("token_unknown", "replayed") == _exchange_twice(registry, key, code)
            version = admin.execute(
                sql.SQL("SELECT version FROM {}").format(table("appregistry_schema_version"))
            ).fetchall()
        assert [(SCHEMA_VERSION,)] == version

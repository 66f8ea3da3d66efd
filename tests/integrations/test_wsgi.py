"""The WSGI middleware, called as a WSGI server calls it, and the example app built on it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults

import wsgi_example
from _answers import Case, Expect, World

from appregistry.integrations import TokenIdentity
from appregistry.integrations.wsgi import ENVIRON_KEY, TokenMiddleware, identity_from


def call(
    app: WSGIApplication, path: str, authorization: str | None = None, query: str = ""
) -> tuple[int, list[tuple[str, str]], str]:
    """One request, as a WSGI server makes it: the status, headers and body."""
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query}
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    setup_testing_defaults(environ)
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.update(status=int(status.split(maxsplit=1)[0]), headers=headers)
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return started["status"], started["headers"], body.decode()


class TestAnswers:
    """Every row of the table gets its answer from the example app's middleware."""

    def test_answer(self, case: Case, world: World, expect: Expect) -> None:
        app = wsgi_example.create_app(world.guard)
        # A WSGI server joins repeated headers into one value, as CGI did.
        answer = call(app, "/api/me", case.joined(world.tokens), case.query_string(world.tokens))
        expect(case, *answer)

    def test_public_page_is_outside(self, world: World) -> None:
        status, _, body = call(wsgi_example.create_app(world.guard), "/")
        assert (200, "a public page") == (status, body)

    def test_content_length_of_a_refusal(self, world: World) -> None:
        _, headers, body = call(wsgi_example.create_app(world.guard), "/api/me")
        assert str(len(body.encode())) == dict(headers)["Content-Length"]


def echo(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answers with the identity the middleware stored, and a ``Vary`` of its own."""
    identity = identity_from(environ)
    start_response("200 OK", [("Content-Type", "application/json"), ("Vary", "Accept")])
    return [json.dumps(identity.as_json() if identity else None).encode()]


class TestMiddleware:
    """The identity goes in the environ; ``Vary`` is merged; ``optional`` lets no token in."""

    def test_identity_in_environ(self, world: World) -> None:
        seen: list[object] = []

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            seen.append(environ[ENVIRON_KEY])
            start_response("204 No Content", [])
            return []

        call(TokenMiddleware(app, world.guard), "/", f"Bearer {world.tokens['valid']}")
        assert isinstance(seen[0], TokenIdentity)
        assert "acme" == seen[0].account

    def test_vary_is_merged(self, world: World) -> None:
        app = TokenMiddleware(echo, world.guard)
        _, headers, _ = call(app, "/", f"Bearer {world.tokens['valid']}")
        assert [("Vary", "Accept, Authorization")] == [h for h in headers if h[0] == "Vary"]

    def test_optional_lets_no_token_in(self, world: World) -> None:
        app = TokenMiddleware(echo, world.guard, optional=True)
        assert (200, "null") == call(app, "/")[::2]

    def test_optional_still_refuses_a_bad_token(self, world: World) -> None:
        app = TokenMiddleware(echo, world.guard, optional=True)
        assert 401 == call(app, "/", f"Bearer {world.tokens['expired']}")[0]

    def test_identity_from_a_bare_environ(self) -> None:
        assert identity_from({}) is None

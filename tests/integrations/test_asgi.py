"""The pure ASGI middleware, called as an ASGI server calls it, and the example app."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import asgi_example
import pytest
from _answers import REALM, Case, Expect, World

from appregistry import Registry
from appregistry.integrations import IDENTITY_KEY, TokenGuard
from appregistry.integrations.asgi import TokenMiddleware, identity_from
from appregistry.storage.memory import MemoryStorage

Message = dict[str, Any]


def call(
    app: Any,
    scope_type: str = "http",
    authorization: list[str] = (),
    query: str = "",  # type: ignore[assignment]
) -> tuple[dict[str, Any], list[Message]]:
    """One connection, as an ASGI server opens it: the scope the app saw, and what it sent."""
    scope: dict[str, Any] = {
        "type": scope_type,
        "asgi": {"version": "3.0"},
        "path": "/",
        "query_string": query.encode(),
        "headers": [(b"authorization", value.encode("latin-1")) for value in authorization],
        "state": {},
    }
    sent: list[Message] = []
    first = {"http": "http.request", "websocket": "websocket.connect"}.get(scope_type)

    async def receive() -> Message:
        return {"type": first or "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return scope, sent


def http_answer(sent: list[Message]) -> tuple[int, list[tuple[str, str]], str]:
    start, *bodies = sent
    headers = [(name.decode(), value.decode()) for name, value in start["headers"]]
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies).decode()


class TestAnswers:
    """Every row of the table gets its answer from the example app's middleware."""

    def test_answer(self, case: Case, world: World, expect: Expect) -> None:
        app = asgi_example.create_app(world.guard)
        _, sent = call(app, "http", case.headers(world.tokens), case.query_string(world.tokens))
        expect(case, *http_answer(sent))


async def respond(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers HTTP with the identity the middleware stored and a ``Vary`` of its own."""
    if scope["type"] == "http":
        identity = identity_from(scope)
        body = json.dumps(identity.as_json() if identity else None).encode()
        headers = [(b"vary", b"Accept")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.accept"})


class TestMiddleware:
    """Identity in ``scope["state"]``, ``Vary`` merged, other scopes untouched."""

    def test_identity_in_state(self, world: World) -> None:
        scope, _ = call(
            TokenMiddleware(respond, world.guard), "http", [f"Bearer {world.tokens['valid']}"]
        )
        assert "acme" == scope["state"][IDENTITY_KEY].account

    def test_vary_is_merged(self, world: World) -> None:
        app = TokenMiddleware(respond, world.guard)
        _, sent = call(app, "http", [f"Bearer {world.tokens['valid']}"])
        assert [(b"vary", b"Accept, Authorization")] == sent[0]["headers"]

    def test_lifespan_passes_through(self, world: World) -> None:
        seen: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope["type"])

        scope, sent = call(TokenMiddleware(app, world.guard), "lifespan")
        assert (["lifespan"], [], {}) == (seen, sent, scope["state"])

    def test_websocket_with_a_valid_token_opens(self, world: World) -> None:
        scope, sent = call(
            TokenMiddleware(respond, world.guard), "websocket", [f"Bearer {world.tokens['valid']}"]
        )
        assert [{"type": "websocket.accept"}] == sent
        assert "acme" == identity_from(scope).account

    @pytest.mark.parametrize("authorization", [[], ["Bearer"], ["Bearer unknown-token"]])
    def test_websocket_refused_is_closed_before_it_opens(
        self, world: World, authorization: list[str]
    ) -> None:
        _, sent = call(TokenMiddleware(respond, world.guard), "websocket", authorization)
        assert [{"type": "websocket.close", "code": 1008}] == sent

    def test_optional_lets_no_token_in(self, world: World) -> None:
        _, sent = call(TokenMiddleware(respond, world.guard, optional=True), "http")
        assert (200, "null") == http_answer(sent)[::2]

    def test_identity_from_a_scope_without_state(self) -> None:
        assert identity_from({"type": "http"}) is None


class TestWorkerThread:
    """The token check, which may block on storage, never runs on the event loop's thread."""

    def test_check_runs_off_the_loop(self) -> None:
        threads: list[int] = []

        class RecordingStorage(MemoryStorage):
            def token_context(self, *digests: Any) -> Any:
                threads.append(threading.get_ident())
                return super().token_context(*digests)

        loop_threads: list[int] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            loop_threads.append(threading.get_ident())
            await respond(scope, receive, send)

        guard = TokenGuard(Registry(storage=RecordingStorage()), realm=REALM)
        call(TokenMiddleware(app, guard, optional=True), "http", ["Bearer some-token"])
        call(TokenMiddleware(app, guard, optional=True), "http")
        # The unknown token was checked, and refused; the request without one ran the app.
        assert (1, 1) == (len(threads), len(loop_threads))
        assert threads[0] != loop_threads[0]

"""The Starlette backend and ``require_token``, through Starlette's TestClient, on the example."""

from __future__ import annotations

from typing import Any

import pytest
import starlette_example
from _answers import Case, Expect, World
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from appregistry.integrations.starlette import (
    TokenAuthenticationMiddleware,
    TokenBackend,
    TokenUser,
    identity_from,
    on_error,
    require_token,
)


def get(client: TestClient, path: str, case: Case, world: World) -> Any:
    query = case.query_string(world.tokens)
    return client.get(
        f"{path}?{query}" if query else path,
        headers=[("Authorization", value) for value in case.headers(world.tokens)],
    )


class TestAnswers:
    """Every row of the table gets its answer, on a function and a class-based endpoint."""

    @pytest.mark.parametrize("path", ["/api/me", "/api/grant"])
    def test_answer(self, case: Case, world: World, expect: Expect, path: str) -> None:
        with TestClient(starlette_example.create_app(world.guard)) as client:
            response = get(client, path, case, world)
        if path == "/api/grant" and response.status_code == 200:
            grant = "user_approval" if case.account == "globex" else "client_credentials"
            assert {"grant": grant} == response.json()
            return
        expect(case, response.status_code, list(response.headers.multi_items()), response.text)


class TestBackend:
    """A token is read wherever it is sent; ``require_token`` decides where one is needed."""

    def test_public_page_without_token(self, world: World) -> None:
        with TestClient(starlette_example.create_app(world.guard)) as client:
            response = client.get("/")
        assert 200 == response.status_code
        assert "Authorization" == response.headers["Vary"]

    def test_public_page_with_a_refused_token(self, world: World) -> None:
        with TestClient(starlette_example.create_app(world.guard)) as client:
            response = client.get(
                "/", headers={"Authorization": f"Bearer {world.tokens['expired']}"}
            )
        assert 401 == response.status_code

    def test_optional(self, world: World) -> None:
        with TestClient(starlette_example.create_app(world.guard)) as client:
            assert {"hello": "stranger"} == client.get("/api/hello").json()
            valid = {"Authorization": f"Bearer {world.tokens['valid']}"}
            assert {"hello": "acme"} == client.get("/api/hello", headers=valid).json()

    def test_user_and_state(self, world: World) -> None:
        seen: list[Any] = []

        async def endpoint(request: Request) -> JSONResponse:
            seen.append((request.user, request.auth.scopes, request.state.token_identity))
            return JSONResponse({})

        app = Starlette(
            routes=[Route("/", endpoint)],
            middleware=[Middleware(TokenAuthenticationMiddleware, guard=world.guard)],
        )
        with TestClient(app) as client:
            client.get("/", headers={"Authorization": f"Bearer {world.tokens['valid']}"})
        user, scopes, identity = seen[0]
        assert isinstance(user, TokenUser)
        assert ("acme", "acme", True) == (user.identity, user.display_name, user.is_authenticated)
        assert ["authenticated"] == scopes
        assert identity is user.token_identity

    def test_with_the_stock_middleware(self, world: World) -> None:
        app = Starlette(
            routes=[Route("/", starlette_example.me)],
            middleware=[
                Middleware(
                    AuthenticationMiddleware, backend=TokenBackend(world.guard), on_error=on_error
                )
            ],
        )
        with TestClient(app) as client:
            assert 401 == client.get("/").status_code
            valid = {"Authorization": f"Bearer {world.tokens['valid']}"}
            assert "acme" == client.get("/", headers=valid).json()["account"]

    def test_websocket(self, world: World) -> None:
        @require_token()
        async def socket(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.send_json({"account": identity_from(websocket).account})
            await websocket.close()

        app = Starlette(
            routes=[WebSocketRoute("/ws", socket)],
            middleware=[Middleware(TokenAuthenticationMiddleware, guard=world.guard)],
        )
        with TestClient(app) as client:
            valid = {"Authorization": f"Bearer {world.tokens['valid']}"}
            with client.websocket_connect("/ws", headers=valid) as websocket:
                assert {"account": "acme"} == websocket.receive_json()
            for headers in ({"Authorization": "Bearer"}, {}):
                with (
                    pytest.raises(WebSocketDisconnect),
                    client.websocket_connect("/ws", headers=headers),
                ):
                    pass


class TestMisuse:
    """Without the backend, ``require_token`` fails loudly; other errors get Starlette's answer."""

    def test_without_middleware(self) -> None:
        app = Starlette(routes=[Route("/", starlette_example.me)])
        with (
            TestClient(app) as client,
            pytest.raises(RuntimeError, match="TokenAuthenticationMiddleware"),
        ):
            client.get("/")

    def test_other_authentication_errors(self) -> None:
        response = on_error(HTTPConnection({"type": "http"}), AuthenticationError("no"))
        assert (400, b"no") == (response.status_code, response.body)

    def test_identity_without_a_user(self) -> None:
        assert identity_from(HTTPConnection({"type": "http"})) is None

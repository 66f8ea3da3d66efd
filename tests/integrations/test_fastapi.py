"""The FastAPI dependency, through FastAPI's TestClient, on the example app of the docs."""

from typing import Annotated, Any

import fastapi_example
from _answers import Case, Expect, World
from fastapi import FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.testclient import TestClient

from appregistry.integrations import TokenIdentity
from appregistry.integrations.fastapi import DEFAULT_SCHEME_NAME, TokenBearer, require_token


def get(client: TestClient, path: str, case: Case, world: World) -> Any:
    query = case.query_string(world.tokens)
    return client.get(
        f"{path}?{query}" if query else path,
        headers=[("Authorization", value) for value in case.headers(world.tokens)],
    )


class TestAnswers:
    """Every row of the table gets its answer from an endpoint that depends on the token."""

    def test_answer(self, case: Case, world: World, expect: Expect) -> None:
        with TestClient(fastapi_example.create_app(world.guard)) as client:
            response = get(client, "/api/me", case, world)
        expect(case, response.status_code, list(response.headers.multi_items()), response.text)

    def test_refusal_body_is_fastapis(self, world: World) -> None:
        with TestClient(fastapi_example.create_app(world.guard)) as client:
            response = client.get("/api/me", headers={"Authorization": "Bearer"})
        assert {"detail": "The bearer token is empty."} == response.json()


class TestOptional:
    """``optional=True``: no token gives ``None``; a bad one is refused."""

    def test_no_token(self, world: World) -> None:
        with TestClient(fastapi_example.create_app(world.guard)) as client:
            response = client.get("/api/hello")
        assert {"hello": "stranger"} == response.json()
        assert "Authorization" == response.headers["Vary"]

    def test_bad_token(self, world: World) -> None:
        with TestClient(fastapi_example.create_app(world.guard)) as client:
            response = client.get(
                "/api/hello", headers={"Authorization": f"Bearer {world.tokens['disabled']}"}
            )
        assert 401 == response.status_code


class TestOpenAPI:
    """The scheme appears in ``openapi.json`` under its own name, once, on each endpoint."""

    def test_snapshot(self, world: World) -> None:
        with TestClient(fastapi_example.create_app(world.guard)) as client:
            document = client.get("/openapi.json").json()
        assert {
            "AppRegistryBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An access token from /oauth/token.php",
            }
        } == document["components"]["securitySchemes"]
        assert [{"AppRegistryBearer": []}] == document["paths"]["/api/me"]["get"]["security"]
        assert [{"AppRegistryBearer": []}] == document["paths"]["/api/hello"]["get"]["security"]
        assert "security" not in document["paths"]["/"]["get"]

    def test_beside_the_hosts_own_bearer(self, world: World) -> None:
        app = FastAPI()

        @app.get("/ours")
        def ours(identity: Annotated[TokenIdentity, Security(require_token(world.guard))]) -> None:
            return None

        @app.get("/theirs")
        def theirs(
            credentials: Annotated[HTTPAuthorizationCredentials, Security(HTTPBearer())],
        ) -> None:
            return None

        schemes = app.openapi()["components"]["securitySchemes"]
        assert {DEFAULT_SCHEME_NAME, "HTTPBearer"} == set(schemes)

    def test_scheme_name(self, world: World) -> None:
        assert "Partners" == TokenBearer(world.guard, scheme_name="Partners").scheme_name


class TestDependency:
    """The identity is the dependency's value and ``request.state.token_identity``."""

    def test_state_and_value(self, world: World) -> None:
        app = FastAPI()
        seen: list[Any] = []

        @app.get("/")
        async def endpoint(
            request: Request,
            identity: Annotated[TokenIdentity, Security(require_token(world.guard))],
        ) -> dict[str, str]:
            seen.append((identity, request.state.token_identity))
            return {}

        with TestClient(app) as client:
            response = client.get("/", headers={"Authorization": f"Bearer {world.tokens['valid']}"})
        assert 200 == response.status_code
        assert seen[0][0] is seen[0][1]
        assert "acme" == seen[0][0].account
        assert "Authorization" == response.headers["Vary"]

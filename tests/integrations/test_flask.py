"""The Flask extension, through Flask's own test client, on the example app of the docs."""

from __future__ import annotations

import asyncio

import flask_example
import pytest
from _answers import Case, Expect, World
from flask import Flask, g

from appregistry.integrations.flask import (
    EXTENSION_KEY,
    get_guard,
    identity_from,
    init_app,
    require_token,
)


def get(app: Flask, path: str, case: Case, world: World) -> tuple[int, list[tuple[str, str]], str]:
    """The example's answer to the case's request at ``path``."""
    response = app.test_client().get(
        path,
        headers=[("Authorization", value) for value in case.headers(world.tokens)],
        query_string=case.query_string(world.tokens),
    )
    return response.status_code, list(response.headers.items()), response.get_data(as_text=True)


class TestAnswers:
    """Every row of the table gets its answer from a view under ``require_token()``."""

    def test_answer(self, case: Case, world: World, expect: Expect) -> None:
        expect(case, *get(flask_example.create_app(world.guard), "/api/me", case, world))


class TestOptional:
    """``require_token(optional=True)``: no token runs the view; a bad token does not."""

    def test_no_token(self, world: World) -> None:
        client = flask_example.create_app(world.guard).test_client()
        response = client.get("/api/hello")
        assert (200, {"hello": "stranger"}) == (response.status_code, response.json)
        assert "Authorization" in response.headers["Vary"]

    def test_valid_token(self, world: World) -> None:
        client = flask_example.create_app(world.guard).test_client()
        response = client.get(
            "/api/hello", headers={"Authorization": f"Bearer {world.tokens['valid']}"}
        )
        assert {"hello": "acme"} == response.json

    def test_bad_token(self, world: World) -> None:
        client = flask_example.create_app(world.guard).test_client()
        response = client.get(
            "/api/hello", headers={"Authorization": f"Bearer {world.tokens['expired']}"}
        )
        assert 401 == response.status_code


class TestExtension:
    """State lives in ``app.extensions`` and ``g``; async views and other apps work."""

    def test_guard_in_extensions(self, world: World) -> None:
        app = init_app(Flask("test"), world.guard)
        assert world.guard is app.extensions[EXTENSION_KEY]
        assert world.guard is get_guard(app)

    def test_identity_in_g(self, world: World) -> None:
        app = init_app(Flask("test"), world.guard)
        seen = []

        @app.get("/")
        @require_token()
        def view() -> str:
            seen.append((g.token_identity, identity_from()))
            return "ok"

        app.test_client().get("/", headers={"Authorization": f"Bearer {world.tokens['valid']}"})
        assert seen[0][0] is seen[0][1]
        assert "acme" == seen[0][0].account

    def test_async_view(self, world: World) -> None:
        app = init_app(Flask("test"), world.guard)

        @app.get("/")
        @require_token()
        async def view() -> dict[str, str]:
            await asyncio.sleep(0)
            return {"account": identity_from().account}

        response = app.test_client().get(
            "/", headers={"Authorization": f"Bearer {world.tokens['valid']}"}
        )
        assert {"account": "acme"} == response.json

    def test_without_init_app_fails_loudly(self) -> None:
        app = Flask("test")

        @app.get("/")
        @require_token()
        def view() -> str:
            return "never"

        app.testing = True  # the error propagates out of the test client
        with pytest.raises(RuntimeError, match="init_app"):
            app.test_client().get("/")

    def test_vary_kept_from_the_view(self, world: World) -> None:
        app = init_app(Flask("test"), world.guard)

        @app.get("/")
        @require_token()
        def view() -> tuple[str, dict[str, str]]:
            return "ok", {"Vary": "Accept-Language"}

        response = app.test_client().get(
            "/", headers={"Authorization": f"Bearer {world.tokens['valid']}"}
        )
        assert {"accept-language", "authorization"} == {v.lower() for v in response.vary}

"""The OAuth 2.0 endpoints mounted under ``/oauth`` beside a host's own routes, in each framework.

A client gets a token from the mounted token endpoint (``/oauth/token.php``, as the original
system had it) and calls the host's protected view with it. Flask and Django mount the WSGI
endpoints through WSGI dispatch; Starlette and FastAPI mount the ASGI ones with ``Mount``.
"""

from __future__ import annotations

from typing import Any

import fastapi_example
import flask_example
import pytest
import starlette_example
from _answers import World
from starlette.routing import Mount
from starlette.testclient import TestClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from appregistry.oauth2 import endpoint_paths, make_asgi_app, make_wsgi_app

MOUNT = "/oauth"
TOKEN_URL = MOUNT + endpoint_paths(MOUNT)["token"]


def trusted_app(world: World) -> tuple[str, str]:
    new = world.registry.register_app(
        "acme",
        name="Mounted",
        homepage="https://example.com/",
        admin_email="admin@example.com",
        redirect_url="https://example.com/callback",
        trusted=True,
    )
    return new.app.key, new.secret


def json_of(response: Any) -> Any:
    """The JSON body: a property of Werkzeug's responses, a method of httpx's."""
    body = response.json
    return body() if callable(body) else body


def token_and_me(world: World, client: Any) -> tuple[int, str]:
    """Fetch a token as the sample clients do, then call ``/api/me`` with it."""
    key, secret = trusted_app(world)
    response = client.post(
        TOKEN_URL,
        data={"client_id": key, "client_secret": secret, "grant_type": "client_credentials"},
    )
    assert 200 == response.status_code
    token = json_of(response)["access_token"]
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return me.status_code, json_of(me)["account"]


class TestMountPath:
    """Mounted at ``/oauth``, the token endpoint is ``/oauth/token.php``, as it always was."""

    def test_url(self) -> None:
        assert "/oauth/token.php" == TOKEN_URL


class TestFlask:
    """Flask, with the WSGI endpoints in a ``DispatcherMiddleware`` at ``/oauth``."""

    def test_token_then_api(self, world: World) -> None:
        app = flask_example.create_app(world.guard)
        oauth = make_wsgi_app(world.registry, current_user=lambda environ: None)
        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {MOUNT: oauth})  # type: ignore[method-assign]
        assert (200, "acme") == token_and_me(world, app.test_client())


@pytest.mark.usefixtures("django_settings")
class TestDjango:
    """Django's WSGI application, with the WSGI endpoints dispatched at ``/oauth``."""

    def test_token_then_api(self, world: World) -> None:
        from django.core.wsgi import get_wsgi_application
        from django.test import override_settings

        oauth = make_wsgi_app(world.registry, current_user=lambda environ: None)
        with override_settings(APPREGISTRY_TOKEN_GUARD=world.guard):
            site = DispatcherMiddleware(get_wsgi_application(), {MOUNT: oauth})
            assert (200, "acme") == token_and_me(world, Client(site))


class TestStarlette:
    """Starlette, with the ASGI endpoints in ``Mount("/oauth", ...)``."""

    def test_token_then_api(self, world: World) -> None:
        app = starlette_example.create_app(world.guard)
        oauth = make_asgi_app(world.registry, current_user=lambda request: None)
        app.router.routes.append(Mount(MOUNT, app=oauth))
        with TestClient(app) as client:
            assert (200, "acme") == token_and_me(world, client)


class TestFastAPI:
    """FastAPI, with the ASGI endpoints mounted at ``/oauth``."""

    def test_token_then_api(self, world: World) -> None:
        app = fastapi_example.create_app(world.guard)
        app.mount(MOUNT, make_asgi_app(world.registry, current_user=lambda request: None))
        with TestClient(app) as client:
            assert (200, "acme") == token_and_me(world, client)

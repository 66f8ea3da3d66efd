"""A Starlette application whose API answers only requests with a valid access token.

Run it on the registry that ``APPREGISTRY_DATABASE`` names::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 uvicorn --factory starlette_example:create_app
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appregistry.integrations import TokenGuard
from appregistry.integrations.starlette import (
    TokenAuthenticationMiddleware,
    identity_from,
    require_token,
)


def guard_from_environment() -> TokenGuard:
    """A guard on the registry ``APPREGISTRY_DATABASE`` names, opened on first use."""
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    return TokenGuard.from_url(
        os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
        realm="example",
        pepper=pepper.encode() if pepper else None,
    )


async def index(request: Request) -> JSONResponse:
    """A public page: requests without a token reach it."""
    return JSONResponse({"page": "public", "path": request.url.path})


@require_token()
def me(request: Request) -> JSONResponse:
    """Who the request's token acts for (a sync endpoint: it runs in the threadpool)."""
    return JSONResponse(identity_from(request).as_json())


@require_token(optional=True)
async def hello(request: Request) -> JSONResponse:
    """Greets the token's account, or anyone without a token."""
    identity = identity_from(request)
    return JSONResponse({"hello": identity.account if identity else "stranger"})


class Grant(HTTPEndpoint):
    """A class-based endpoint: decorate each method."""

    @require_token()
    async def get(self, request: Request) -> JSONResponse:
        """How the request's token was obtained."""
        return JSONResponse({"grant": str(identity_from(request).grant)})


def create_app(guard: TokenGuard | None = None) -> Starlette:
    """The application; tests pass a guard of their own."""
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/me", me),
            Route("/api/hello", hello),
            Route("/api/grant", Grant),
        ],
        middleware=[
            Middleware(TokenAuthenticationMiddleware, guard=guard or guard_from_environment())
        ],
    )

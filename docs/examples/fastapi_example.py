"""A FastAPI application whose API answers only requests with a valid access token.

Run it on the registry that ``APPREGISTRY_DATABASE`` names, then open ``/docs``: the API
declares its bearer scheme, and the page offers to send a token::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 uvicorn --factory fastapi_example:create_app
"""

import os
from typing import Annotated

from fastapi import FastAPI, Security

from appregistry.integrations import TokenGuard, TokenIdentity
from appregistry.integrations.fastapi import require_token


def guard_from_environment() -> TokenGuard:
    """A guard on the registry ``APPREGISTRY_DATABASE`` names, opened on first use."""
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    return TokenGuard.from_url(
        os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
        realm="example",
        pepper=pepper.encode() if pepper else None,
    )


def create_app(guard: TokenGuard | None = None) -> FastAPI:
    """The application; tests pass a guard of their own.

    The annotations name local dependencies, so this module does without
    ``from __future__ import annotations``: FastAPI reads them at run time.
    """
    guard = guard or guard_from_environment()
    app = FastAPI(title="Example")
    # Two dependencies, one scheme: OpenAPI lists it once, so they describe it alike.
    described = "An access token from /oauth/token.php"
    token = require_token(guard, description=described)
    maybe_token = require_token(guard, optional=True, description=described)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"page": "public"}

    @app.get("/api/me")
    def me(identity: Annotated[TokenIdentity, Security(token)]) -> dict[str, str]:
        return identity.as_json()

    @app.get("/api/hello")
    async def hello(
        identity: Annotated[TokenIdentity | None, Security(maybe_token)],
    ) -> dict[str, str]:
        return {"hello": identity.account if identity else "stranger"}

    return app

"""A bare ASGI application whose every request needs a valid access token.

Run it with any ASGI server, on the registry that ``APPREGISTRY_DATABASE`` names::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 uvicorn --factory asgi_example:create_app
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from appregistry.integrations import TokenGuard
from appregistry.integrations.asgi import TokenMiddleware, identity_from

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def guard_from_environment() -> TokenGuard:
    """A guard on the registry ``APPREGISTRY_DATABASE`` names, opened on first use."""
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    return TokenGuard.from_url(
        os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
        realm="example",
        pepper=pepper.encode() if pepper else None,
    )


async def me(scope: dict[str, Any], receive: Receive, send: Send) -> None:  # noqa: ARG001 - ASGI
    """Answers every HTTP request with who its token acts for."""
    if scope["type"] != "http":
        return
    body = json.dumps(identity_from(scope).as_json()).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(guard: TokenGuard | None = None) -> TokenMiddleware:
    """The application: `me` behind the token middleware."""
    return TokenMiddleware(me, guard or guard_from_environment())

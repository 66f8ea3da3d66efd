"""Pure ASGI middleware: every HTTP request and WebSocket to the wrapped app presents a token.

Needs ``anyio``: ``pip install 'appregistry[asgi]'``. The token check reads
the storage, which blocks, so it runs in a worker thread (`anyio.to_thread.run_sync`), never
on the event loop: ``docs/embedding.md`` says what that costs. The `TokenIdentity` of an
accepted request is in ``scope["state"]["token_identity"]`` (Starlette and FastAPI show it as
``request.state.token_identity``); read it with `identity_from`.

>>> from appregistry.integrations import TokenGuard
>>> async def hello(scope, receive, send):
...     ...  # reached only with a valid token
>>> app = TokenMiddleware(hello, TokenGuard.from_url("memory:"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from ._asgi import (
    Receive,
    Scope,
    Send,
    authorization_values,
    query_string,
    send_refusal,
    with_vary,
)
from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity

__all__ = ["TokenMiddleware", "identity_from"]

_PROTECTED = frozenset({"http", "websocket"})


def identity_from(scope: Mapping[str, Any]) -> TokenIdentity | None:
    """The `TokenIdentity` `TokenMiddleware` accepted for this request, or ``None``.

    >>> identity_from({"type": "http", "state": {}}) is None
    True
    """
    identity = (scope.get("state") or {}).get(IDENTITY_KEY)
    return identity if isinstance(identity, TokenIdentity) else None


class TokenMiddleware:
    """Wraps an ASGI application so that only requests with a valid bearer token reach it.

    HTTP requests and WebSocket handshakes are checked; anything else (``lifespan``) passes
    through untouched. A refused HTTP request gets the RFC 6750 answer (see
    `appregistry.integrations.BearerError`); a refused WebSocket is closed before it opens
    (the server answers the handshake with 403). An accepted one reaches the application with
    its identity in ``scope["state"]``, and its HTTP answer gets ``Vary: Authorization``.

    Args:
        app: The application to protect.
        guard: Checks the tokens.
        optional: Let requests without a token through too (their identity is ``None``); a
            token that is presented must still be valid.
    """

    def __init__(self, app: Any, guard: TokenGuard, *, optional: bool = False) -> None:
        self.app = app
        self.guard = guard
        self.optional = optional

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refused request here; pass an accepted one on, with its identity."""
        if scope["type"] not in _PROTECTED:
            await self.app(scope, receive, send)
            return
        try:
            # Parsing reads only the scope: it stays on the loop. The check may block.
            token = self.guard.token_of(authorization_values(scope), query_string(scope))
            if token is None:
                if not self.optional:
                    raise self.guard.challenge()
                identity = None
            else:
                identity = await anyio.to_thread.run_sync(self.guard.verify, token)
        except BearerError as error:
            await send_refusal(error, scope, send)
            return
        # The server gives each request a copy of the lifespan state (ASGI spec): ours to add to.
        scope.setdefault("state", {})[IDENTITY_KEY] = identity
        await self.app(scope, receive, with_vary(send) if scope["type"] == "http" else send)

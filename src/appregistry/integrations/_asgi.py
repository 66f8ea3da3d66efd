"""ASGI plumbing shared by the ASGI, Starlette and FastAPI adapters; no framework imported."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._core import BearerError, add_vary

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def authorization_values(scope: Scope) -> list[str]:
    """Every ``Authorization`` header of the request, decoded as ASGI says (latin-1)."""
    return [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"authorization"
    ]


def query_string(scope: Scope) -> bytes:
    """The raw query string of the request."""
    query = scope.get("query_string") or b""
    return query if isinstance(query, bytes) else bytes(query)


def with_vary(send: Send) -> Send:
    """``send``, adding ``Vary: Authorization`` to the start of the response."""

    async def send_varied(message: Message) -> None:
        if message.get("type") == "http.response.start":
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers") or ()
            ]
            message["headers"] = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in add_vary(headers)
            ]
        await send(message)

    return send_varied


async def send_refusal(error: BearerError, scope: Scope, send: Send) -> None:
    """Answer ``error``: as an HTTP response, or by closing a WebSocket before it opens."""
    if scope["type"] == "websocket":
        # Closing before accepting makes the server answer the handshake with 403; 1008 is
        # "policy violation". The reason stays out: a close frame reaches the client as-is.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error.body
    headers = [*error.headers, ("Content-Length", str(len(body)))]
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

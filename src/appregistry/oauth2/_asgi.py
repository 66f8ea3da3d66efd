"""The endpoints as an ASGI application: a thin adapter around `Endpoints`, on Starlette.

Starlette comes with the ``web`` extra and is imported when the app is made, not before.
The body is read on the event loop, within the endpoints' limits; the endpoints themselves,
which call the registry and block, run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .._registry import Clock, Registry, system_clock
from ..metrics import Metrics
from ._consent import ConsentPage, default_consent_page
from ._endpoints import Endpoints, make_endpoints
from ._http import DEFAULT_MAX_BODY_SIZE, READ_HEADERS, _Request, _Response, content_length
from ._throttle import DEFAULT_THROTTLING, Throttling
from ._validator import SignedInUser

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["make_asgi_app"]


def make_asgi_app(
    registry: Registry,
    *,
    current_user: Callable[[Request], SignedInUser | None],
    consent_page: ConsentPage = default_consent_page,
    stylesheet_url: str | None = None,
    login_url: str | None = None,
    csrf_key: bytes | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    clock: Clock = system_clock,
    realm: str = "appregistry",
    always_require_state: bool = False,
    issuer: str | None = None,
    throttling: Throttling | None = DEFAULT_THROTTLING,
    metrics: Metrics | None = None,
) -> ASGIApp:
    """The OAuth 2.0 endpoints on ``registry``, as one ASGI application (Starlette).

    The same endpoints as `make_wsgi_app`, with the same options and answers: one
    implementation behind two transports. Mount it in Starlette or FastAPI
    (``Mount("/oauth", app=...)``), or serve it alone with any ASGI server; the paths follow
    the mount point (``root_path``) as `endpoint_paths` says. Needs the ``web`` extra
    (``pip install 'appregistry[web]'``).

    Request bodies are read on the event loop, within the same limits, before anything else
    sees them; then the endpoints, which call the registry and block, run in a worker thread
    (``starlette.concurrency.run_in_threadpool``), never on the event loop. The options
    other than ``current_user`` are `make_wsgi_app`'s, with the same meaning (the client
    address the throttle counts is the ASGI ``client``, or behind a trusted proxy, from
    ``X-Forwarded-For``).

    Args:
        current_user: Says who is signed in to the host in this request (or ``None``), from
            the Starlette ``Request``: ``request.session`` (with Starlette's
            ``SessionMiddleware``), a cookie or a header. It runs in the worker thread: it
            may block, and may not await.

    Raises:
        ImportError: Starlette is not installed.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> app = make_asgi_app(Registry(storage=MemoryStorage()), current_user=lambda request: None)
    >>> callable(app)
    True
    """
    try:
        import starlette  # noqa: F401, PLC0415 - only checks that the extra is there
    except ImportError as exc:
        raise ImportError("make_asgi_app needs Starlette: pip install 'appregistry[web]'") from exc
    endpoints = make_endpoints(
        registry,
        current_user=current_user,
        consent_page=consent_page,
        stylesheet_url=stylesheet_url,
        login_url=login_url,
        csrf_key=csrf_key,
        max_body_size=max_body_size,
        clock=clock,
        realm=realm,
        always_require_state=always_require_state,
        issuer=issuer,
        throttling=throttling,
        metrics=metrics,
    )
    return _AsgiApp(endpoints)


@attrs.frozen
class _AsgiApp:
    endpoints: Endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.concurrency import run_in_threadpool  # noqa: PLC0415 - the web extra
        from starlette.requests import ClientDisconnect, Request  # noqa: PLC0415

        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        native = Request(scope, receive)
        request = _request(scope, native)
        response = self.endpoints.refusal(request)
        if response is None:
            limit = self.endpoints.max_body_size
            try:
                body = await _read_body(native, limit, content_length(request))
            except ClientDisconnect:
                return
            if body is None:
                response = self.endpoints.too_large(request)
            else:
                request = attrs.evolve(request, body=body)
                response = await run_in_threadpool(self.endpoints.respond, request)
        await _send(send, response)


def _request(scope: Scope, native: Request) -> _Request:
    root = str(scope.get("root_path", "")).rstrip("/")
    path = str(scope["path"])
    # Starlette and uvicorn keep the mount point in "path" too; the endpoints want what
    # lies below it (as Starlette's own routing does).
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in {"", "/"}:
        path = path[len(root) :] or "/"
    headers = {name: native.headers[name] for name in READ_HEADERS if name in native.headers}
    if len(native.headers.getlist("Authorization")) > 1:
        # Repeated headers are joined, as a WSGI server joins them: two tokens stay two.
        headers["Authorization"] = ", ".join(native.headers.getlist("Authorization"))
    host = native.headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return _Request(
        method=str(scope["method"]).upper(),
        root=root,
        path=path,
        scheme=str(scope.get("scheme", "http")),
        host=host,
        query=bytes(scope.get("query_string", b"")).decode("latin-1"),
        headers=headers,
        content_length=native.headers.get("content-length"),
        native=native,
        client=client[0] if (client := scope.get("client")) else None,
        # Every header line: a client's own line must not hide the one its proxy added.
        forwarded_for=", ".join(native.headers.getlist("x-forwarded-for")) or None,
    )


async def _read_body(native: Request, limit: int, declared: int) -> bytes | None:
    # Read until the declared length or the end, whichever comes first; None once past the
    # limit (a body sent without Content-Length, or longer than it said).
    chunks: list[bytes] = []
    size = 0
    async for chunk in native.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if declared and size >= declared:
            break
    return b"".join(chunks)


async def _send(send: Send, response: _Response) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Served alone, the app has nothing to start or stop; it says so.
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

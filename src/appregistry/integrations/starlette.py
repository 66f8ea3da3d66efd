"""Starlette: an authentication backend for bearer tokens, and ``require_token`` for endpoints.

``pip install 'appregistry[starlette]'``. `TokenAuthenticationMiddleware` is Starlette's
``AuthenticationMiddleware`` with a `TokenBackend`, the RFC 6750 answers (`on_error`) and
``Vary: Authorization``. A request that presents a token that is refused gets the answer at
once, on any route; one without a token goes on as ``request.user`` unauthenticated, and
`require_token` refuses it to the endpoints that need a token (with 401 and a challenge,
where Starlette's own ``requires`` answers 403). The check runs in a worker thread, never on
the event loop.

>>> from starlette.applications import Starlette
>>> from starlette.middleware import Middleware
>>> from appregistry.integrations import TokenGuard
>>> guard = TokenGuard.from_url("memory:")
>>> app = Starlette(middleware=[Middleware(TokenAuthenticationMiddleware, guard=guard)])
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.concurrency import run_in_threadpool
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ._asgi import with_vary
from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity

__all__ = [
    "TokenAuthenticationMiddleware",
    "TokenBackend",
    "TokenRefused",
    "TokenUser",
    "identity_from",
    "on_error",
    "require_token",
]

EndpointT = TypeVar("EndpointT", bound=Callable[..., Any])
#: The scope entry where `TokenBackend` leaves the guard, for `require_token`'s challenge.
_GUARD_KEY = "appregistry.guard"
# The WebSocket close code for "policy violation" (RFC 6455 section 7.4.1).
_POLICY_VIOLATION = 1008


class TokenUser(BaseUser):
    """``request.user`` for a request with an accepted token: the account it acts for."""

    def __init__(self, identity: TokenIdentity) -> None:
        self.token_identity = identity

    @property
    def is_authenticated(self) -> bool:
        """Always: the token was accepted."""
        return True

    @property
    def display_name(self) -> str:
        """The account the token acts for."""
        return self.token_identity.account

    @property
    def identity(self) -> str:
        """The account the token acts for."""
        return self.token_identity.account


class TokenRefused(AuthenticationError):
    """Raised by `TokenBackend` for a refused token; `on_error` answers its `BearerError`."""

    def __init__(self, error: BearerError) -> None:
        super().__init__(error.description)
        self.error = error


class TokenBackend(AuthenticationBackend):
    """Authenticates a request by its bearer token, with a `TokenGuard`.

    No token: ``None`` (the user is unauthenticated). A valid one: the ``authenticated``
    scope and a `TokenUser`. A refused one: `TokenRefused`, which `on_error` answers.
    """

    def __init__(self, guard: TokenGuard) -> None:
        self.guard = guard

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """The credentials and user of ``conn``'s token, or ``None`` when it has none."""
        conn.scope[_GUARD_KEY] = self.guard
        try:
            # Parsing reads only the request: it stays on the loop. The check may block.
            token = self.guard.token_of(
                conn.headers.getlist("Authorization"), conn.scope.get("query_string", b"")
            )
            if token is None:
                return None
            identity = await run_in_threadpool(self.guard.verify, token)
        except BearerError as error:
            raise TokenRefused(error) from None
        conn.scope.setdefault("state", {})[IDENTITY_KEY] = identity
        return AuthCredentials(["authenticated"]), TokenUser(identity)


def _response(error: BearerError) -> Response:
    return Response(error.body, status_code=error.status, headers=dict(error.headers))


def on_error(conn: HTTPConnection, exc: Exception) -> Response:  # noqa: ARG001 - Starlette's signature
    """The answer to a refused token: RFC 6750's, where Starlette's default is a plain 400."""
    if isinstance(exc, TokenRefused):
        return _response(exc.error)
    return Response(str(exc), status_code=400, media_type="text/plain")


class TokenAuthenticationMiddleware(AuthenticationMiddleware):
    """``AuthenticationMiddleware`` with a `TokenBackend`, `on_error` and ``Vary``.

    Add it with ``Middleware(TokenAuthenticationMiddleware, guard=guard)``.
    """

    def __init__(self, app: ASGIApp, guard: TokenGuard) -> None:
        super().__init__(app, backend=TokenBackend(guard), on_error=on_error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then answer; HTTP answers get ``Vary: Authorization``."""
        if scope["type"] == "http":
            send = with_vary(send)
        await super().__call__(scope, receive, send)


def identity_from(conn: HTTPConnection) -> TokenIdentity | None:
    """The `TokenIdentity` of the request's accepted token, or ``None``."""
    user = conn.scope.get("user")
    return user.token_identity if isinstance(user, TokenUser) else None


def _refusal_for(conn: HTTPConnection) -> Response:
    guard: TokenGuard | None = conn.scope.get(_GUARD_KEY)
    if guard is None:
        raise RuntimeError("require_token needs TokenAuthenticationMiddleware (or TokenBackend)")
    return _response(guard.challenge())


def require_token(*, optional: bool = False) -> Callable[[EndpointT], EndpointT]:
    """Protect an endpoint: only a request with a valid bearer token reaches it.

    For function endpoints (sync or async: a sync one still runs in the threadpool), the
    methods of an ``HTTPEndpoint`` and WebSocket endpoints (a refused socket is closed before
    it opens). The endpoint's ``request`` or ``websocket`` argument is found by name, as
    Starlette's ``requires`` does.

    Args:
        optional: Let requests without a token through too; a token that is presented must
            still be valid (the middleware refuses a bad one).
    """

    def decorate(endpoint: EndpointT) -> EndpointT:
        names = list(inspect.signature(endpoint).parameters)
        name = next((n for n in ("request", "websocket") if n in names), names[0])
        index = names.index(name)

        def refusal(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response | WebSocket | None:
            """The answer to give instead of running the endpoint (the socket to close)."""
            conn = kwargs.get(name, args[index] if index < len(args) else None)
            if not isinstance(conn, HTTPConnection):
                raise TypeError("require_token: the endpoint was not given a request")
            if optional or isinstance(conn.scope.get("user"), TokenUser):
                return None
            response = _refusal_for(conn)
            return conn if isinstance(conn, WebSocket) else response

        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def protected_async(*args: Any, **kwargs: Any) -> Any:
                refused = refusal(args, kwargs)
                if refused is None:
                    return await endpoint(*args, **kwargs)
                if isinstance(refused, WebSocket):
                    # Closed before it opens: the handshake is answered with 403.
                    await refused.close(code=_POLICY_VIOLATION)
                    return None
                return refused

            return protected_async  # type: ignore[return-value]

        @functools.wraps(endpoint)
        def protected(*args: Any, **kwargs: Any) -> Any:
            refused = refusal(args, kwargs)
            return refused if refused is not None else endpoint(*args, **kwargs)

        return protected  # type: ignore[return-value]

    return decorate

"""WSGI middleware: every request to the wrapped application presents a valid bearer token.

No dependencies beyond the standard library. The `TokenIdentity` of an accepted request is
in the environ, under ``"appregistry.token_identity"``; read it with `identity_from`.

>>> from appregistry.integrations import TokenGuard
>>> def hello(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [f"hello {identity_from(environ).account}".encode()]
>>> app = TokenMiddleware(hello, TokenGuard.from_url("memory:"))
>>> answer = {}
>>> body = app({"REQUEST_METHOD": "GET"}, lambda status, headers: answer.update(status=status))
>>> answer["status"], b"".join(body)
('401 Unauthorized', b'{"error_description": "This resource needs a bearer token."}')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity, add_vary

__all__ = ["ENVIRON_KEY", "TokenMiddleware", "identity_from"]

#: Where the middleware puts the `TokenIdentity` (``None`` for no token when optional).
ENVIRON_KEY: Final = f"appregistry.{IDENTITY_KEY}"


def identity_from(environ: WSGIEnvironment) -> TokenIdentity | None:
    """The `TokenIdentity` `TokenMiddleware` accepted for this request, or ``None``."""
    identity = environ.get(ENVIRON_KEY)
    return identity if isinstance(identity, TokenIdentity) else None


def _refusal(error: BearerError, start_response: StartResponse) -> list[bytes]:
    """Answer ``error`` through ``start_response``; the body to return from the application."""
    body = error.body
    start_response(
        f"{error.status} {HTTPStatus(error.status).phrase}",
        [*error.headers, ("Content-Length", str(len(body)))],
    )
    return [body]


class TokenMiddleware:
    """Wraps a WSGI application so that only requests with a valid bearer token reach it.

    The token comes from ``Authorization: Bearer T`` or ``?accessRequestToken=Bearer T``. A
    refused request gets the RFC 6750 answer (see `appregistry.integrations.BearerError`);
    an accepted one reaches the application with its identity in the environ, and its answer
    gets ``Vary: Authorization``.

    Args:
        app: The application to protect.
        guard: Checks the tokens.
        optional: Let requests without a token through too (their identity is ``None``); a
            token that is presented must still be valid.
    """

    def __init__(self, app: WSGIApplication, guard: TokenGuard, *, optional: bool = False):
        self.app = app
        self.guard = guard
        self.optional = optional

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer a refused request here; pass an accepted one on, with its identity."""
        header = environ.get("HTTP_AUTHORIZATION")
        try:
            identity = self.guard.authenticate(
                None if header is None else [header],
                environ.get("QUERY_STRING") or "",
                optional=self.optional,
            )
        except BearerError as error:
            return _refusal(error, start_response)
        environ[ENVIRON_KEY] = identity

        def start_varied(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
        ) -> Callable[[bytes], object]:
            return start_response(status, add_vary(headers), exc_info)

        return self.app(environ, start_varied)

"""The endpoints as a WSGI application: a thin adapter around `Endpoints`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import attrs

from .._registry import Clock, Registry, system_clock
from ..integrations import DEFAULT_REALM, BearerError, read_bearer_token
from ..metrics import Metrics
from ._consent import ConsentPage, default_consent_page
from ._endpoints import Endpoints, make_endpoints
from ._http import (
    DEFAULT_MAX_BODY_SIZE,
    MAX_FORM_FIELDS,
    MAX_HEADER_LENGTH,
    MAX_QUERY_LENGTH,
    READ_HEADERS,
    _Request,
    content_length,
)
from ._throttle import DEFAULT_THROTTLING, Throttling
from ._validator import SignedInUser

# The limits are re-exported: they bound what this app reads (see make_wsgi_app).
__all__ = [
    "MAX_FORM_FIELDS",
    "MAX_HEADER_LENGTH",
    "MAX_QUERY_LENGTH",
    "CurrentUser",
    "bearer_token",
    "make_wsgi_app",
]

#: Who is signed in to the host in this request, or ``None``.
CurrentUser = Callable[[WSGIEnvironment], SignedInUser | None]

# The headers the endpoints read, as WSGI names them.
_ENVIRON_HEADERS: Final = {
    name: "CONTENT_TYPE" if name == "Content-Type" else f"HTTP_{name.upper().replace('-', '_')}"
    for name in READ_HEADERS
}


def bearer_token(environ: WSGIEnvironment, *, realm: str = DEFAULT_REALM) -> str | None:
    """The bearer token of a request, as the original system's clients send it.

    Accepted: the header ``Authorization: Bearer T``, or the query parameter
    ``accessRequestToken=Bearer T`` (``accessRequestToken=T`` too). Check what it returns with
    `Registry.check_token`. The parsing is `appregistry.integrations.read_bearer_token`'s, so
    a request is refused here exactly as the framework adapters and ``/uapi/me`` refuse it.

    Args:
        environ: The request's WSGI environ.
        realm: Named in the challenge of the error raised.

    Raises:
        appregistry.integrations.BearerError: The answer to send instead: 400
            ``invalid_request`` when the token is empty or malformed, or presented more than
            once; its ``status``, ``headers`` and ``body`` are the response. It is also a
            `ValueError`, which earlier versions raised, so existing handlers keep working.

    >>> bearer_token({"HTTP_AUTHORIZATION": "Bearer abc"})
    'abc'
    >>> bearer_token({"QUERY_STRING": "accessRequestToken=Bearer%20abc"})
    'abc'
    >>> bearer_token({}) is None
    True
    >>> try:
    ...     bearer_token({"HTTP_AUTHORIZATION": "Bearer "})
    ... except BearerError as error:
    ...     print(error.status, error.error, error.description)
    400 invalid_request The bearer token is empty.
    """
    authorization = environ.get("HTTP_AUTHORIZATION")
    query = environ.get("QUERY_STRING")
    try:
        return read_bearer_token(
            authorization if isinstance(authorization, str) else None,
            query if isinstance(query, str) else "",
            realm=realm,
        )
    except BearerError as error:
        raise _MalformedBearer(
            error.status, error.error, error.description, reason=error.reason, realm=error.realm
        ) from None


class _MalformedBearer(BearerError, ValueError):
    """A `BearerError` that earlier versions' ``except ValueError`` handlers still catch."""


def make_wsgi_app(
    registry: Registry,
    *,
    current_user: CurrentUser,
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
) -> WSGIApplication:
    """The OAuth 2.0 endpoints on ``registry``, as one WSGI application.

    Paths (under wherever the host mounts it): ``/oauth/authorize.php`` (the consent page),
    ``/oauth/token.php``, ``/oauth/revoke``, ``/oauth/introspect`` and ``/uapi/me`` (who the
    bearer token acts for).

    Args:
        current_user: Says who is signed in to the host in this request (or ``None``), from
            the WSGI environ: the host's session, cookie or header.
        consent_page: Renders the consent page; `default_consent_page` by default.
        stylesheet_url: A stylesheet for the default pages.
        login_url: Where to send a visitor who is not signed in; the page to come back to is
            passed as ``next``. Without it, such a visitor gets a 401 page.
        csrf_key: The key of the consent form's CSRF tokens. Several processes serving the
            same site must share one; by default each app makes its own.
        max_body_size: The largest request body accepted (413 beyond). Query strings
            (`MAX_QUERY_LENGTH`, 414), the headers read (`MAX_HEADER_LENGTH`, 431) and form
            fields (`MAX_FORM_FIELDS`, 400) are bounded too.
        clock: The time, for the consent form's CSRF tokens.
        realm: The realm of ``WWW-Authenticate`` challenges.
        always_require_state: Require ``state`` in every authorization request, even with
            PKCE (see `make_server` for the rule).
        issuer: The server's issuer URL in the metadata (RFC 8414), such as
            ``https://example.com``; the endpoints' URLs there are built on it. By default
            each request's scheme, host and mount point give it. Set it in production, so
            that a forged ``Host`` header cannot change what the metadata says.
        throttling: How failed client authentications are throttled (429 with
            ``Retry-After``): per app key and per client address, in memory by default, in
            Redis when `Throttling` names one; behind a reverse proxy, set its
            ``trusted_proxies``. ``None`` turns throttling off. See docs/operations.md.
        metrics: Count grants, throttled requests, ``/uapi/me`` checks and latency on these
            `appregistry.metrics.Metrics` (the ``metrics`` extra); ``None``: none.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> app = make_wsgi_app(Registry(storage=MemoryStorage()), current_user=lambda environ: None)
    >>> callable(app)
    True
    """
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
    return _WsgiApp(endpoints)


@attrs.frozen
class _WsgiApp:
    endpoints: Endpoints

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = _request(environ)
        response = self.endpoints.refusal(request)
        if response is None:
            body = _read(environ["wsgi.input"], content_length(request))
            response = self.endpoints.respond(attrs.evolve(request, body=body))
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status, list(response.headers))
        return [response.body]


def _request(environ: WSGIEnvironment) -> _Request:
    headers = {}
    for name, key in _ENVIRON_HEADERS.items():
        value = environ.get(key)
        if isinstance(value, str):
            headers[name] = value
    host = environ.get("HTTP_HOST")
    if not isinstance(host, str) or not host:
        scheme, port = environ.get("wsgi.url_scheme", "http"), str(environ.get("SERVER_PORT"))
        default = {"http": "80", "https": "443"}.get(scheme)
        host = str(environ.get("SERVER_NAME", "localhost"))
        host = host if port == default else f"{host}:{port}"
    length = environ.get("CONTENT_LENGTH")
    return _Request(
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        root=str(environ.get("SCRIPT_NAME") or "").rstrip("/"),
        path=str(environ.get("PATH_INFO") or "/"),
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        host=host,
        query=str(environ.get("QUERY_STRING") or ""),
        headers=headers,
        content_length=length if isinstance(length, str) else None,
        native=environ,
        client=_text(environ.get("REMOTE_ADDR")),
        forwarded_for=_text(environ.get("HTTP_X_FORWARDED_FOR")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _read(stream: Any, length: int) -> bytes:
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)

"""The pages' ASGI middleware: security headers, request bounds, sessions and CSRF.

Each is a small pure-ASGI wrapper, outermost first in `appregistry.web.make_app`:

- `SecurityHeaders`: CSP without ``unsafe-inline``, no framing, no sniffing, no referrer.
- `RequestGuard`: a form body is bounded (413), ``application/x-www-form-urlencoded``
  (415) and UTF-8 (400) before anything parses it.
- `SessionIfMissing`: Starlette's signed-cookie session, unless the host already has one.
- `Csrf`: ``asgi-csrf`` (a signed double-submit cookie and the ``csrftoken`` form field),
  made to protect every unsafe request, cookie or not, to answer with a proper page, and to
  keep its cookie away from scripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from asgi_csrf import asgi_csrf
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_FIELD",
    "ErrorPage",
    "RequestGuard",
    "SecurityHeaders",
    "SessionIfMissing",
    "csrf_middleware",
]

#: Scripts and styles come from the app's own static files only: no inline code at all.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
#: The form field that carries the CSRF token.
CSRF_FIELD: Final = "csrftoken"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FORM: Final = b"application/x-www-form-urlencoded"
# A signed token is URL-safe base64 and dots; anything else in the cookie is not ours.
_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")
_ORIGINAL_HEADERS: Final = "appregistry.web.headers"

#: Renders an error page for a request that never reached a view: (scope, status, title,
#: message) -> response.
ErrorPage = Callable[[Scope, int, str, str], Response]


class SecurityHeaders:
    """Adds the security headers to every response, error pages and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestGuard:
    """Bounds and checks an unsafe request's body before the CSRF check or a view parses it.

    The pages post only URL-encoded forms, so anything else is refused: a body over
    ``max_body_size`` (413, before it is read when ``Content-Length`` says so), another
    content type (415), or bytes that are not UTF-8 (400). The body, once read, is replayed
    to the app as one message.
    """

    def __init__(self, app: ASGIApp, *, max_body_size: int, error_page: ErrorPage) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"0").strip()
        if not declared.isdigit():
            await self._refuse(scope, receive, send, 400, "The request's length is malformed.")
            return
        if int(declared) > self.max_body_size:
            await self._refuse(scope, receive, send, 413, "The form is too large.")
            return
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if content_type != _FORM:
            await self._refuse(scope, receive, send, 415, "The request is not a form.")
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(scope, receive, send, 413, "The form is too large.")
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            await self._refuse(scope, receive, send, 400, "The form is not valid UTF-8.")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str
    ) -> None:
        titles = {400: "Bad request", 413: "Too large", 415: "Not a form"}
        response = self.error_page(scope, status, titles.get(status, "Refused"), message)
        await response(scope, receive, send)


class SessionIfMissing:
    """Starlette's `SessionMiddleware`, unless a session is in the scope already.

    A host that runs its own ``SessionMiddleware`` in front of the pages shares its session
    with them (so its sign-in and theirs are one); otherwise the pages keep their own cookie.
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.with_session = SessionMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "session" in scope:
            await self.app(scope, receive, send)
        else:
            await self.with_session(scope, receive, send)


class _Everywhere:
    """asgi-csrf skips requests without cookies unless their path is in ``always_protect``.

    Every page here is protected, so every path is "in" it: a forged form cannot slip through
    by arriving without cookies (a browser that blocks them, or a first visit).
    """

    def __contains__(self, path: object) -> bool:
        return True


def csrf_middleware(
    app: ASGIApp,
    *,
    secret: str,
    cookie_name: str,
    https_only: bool,
    error_page: ErrorPage,
) -> ASGIApp:
    """``app`` behind asgi-csrf: every unsafe request needs the signed token of its cookie.

    asgi-csrf reads the ``Cookie`` header with the standard library's strict parser, which
    fails on cookies other sites on the same host may set; it is shown only its own cookie
    (found with Starlette's lenient parser), and ``app`` gets the request's headers back.
    Its cookie gets ``HttpOnly``: no script here reads it, the token travels in the form.
    asgi-csrf lets a request with an ``Authorization: Bearer`` header through unchecked; a
    page of another site cannot send one (a browser asks the server first), so a forged form
    cannot either.
    """

    async def restore_headers(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "headers": scope[_ORIGINAL_HEADERS]}, receive, send)

    async def refuse(scope: Scope, send: Send, _reason: object) -> None:
        response = error_page(
            scope,
            403,
            "This form has expired",
            "The form is too old or did not come from this site. "
            "Go back, reload the page and try again.",
        )
        await response(scope, _no_body, send)

    protected = asgi_csrf(
        restore_headers,
        cookie_name=cookie_name,
        signing_secret=secret,
        always_protect=_Everywhere(),
        cookie_secure=https_only,
        cookie_samesite="Lax",
        send_csrf_failed=refuse,
    )
    prefix = f"{cookie_name}=".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        original = list(scope.get("headers") or [])
        headers = [(name, value) for name, value in original if name != b"cookie"]
        raw = b"; ".join(value for name, value in original if name == b"cookie")
        token = cookie_parser(raw.decode("latin-1")).get(cookie_name, "")
        if _TOKEN_SHAPE.fullmatch(token):
            headers.append((b"cookie", prefix + token.encode()))

        async def send_http_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        (name, value + b"; HttpOnly")
                        if name.lower() == b"set-cookie" and value.startswith(prefix)
                        else (name, value)
                        for name, value in message.get("headers", [])
                    ],
                }
            await send(message)

        await protected(
            {**scope, "headers": headers, _ORIGINAL_HEADERS: original}, receive, send_http_only
        )

    return guarded


async def _no_body() -> Message:  # pragma: no cover - a page answer never reads the body
    return {"type": "http.disconnect"}

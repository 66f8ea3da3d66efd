"""HTTP for the endpoints, whatever the transport: requests in, responses out, their limits.

`_Request` is what an adapter (WSGI, ASGI) hands the endpoints; `_Response` what it sends
back. The paths, the limits and the parsing every transport shares live here.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from ._server import with_description

__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_MAX_BODY_SIZE",
    "INTROSPECT_PATH",
    "MAX_FORM_FIELDS",
    "MAX_HEADER_LENGTH",
    "MAX_QUERY_LENGTH",
    "METADATA_PATH",
    "ME_PATH",
    "READ_HEADERS",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "endpoint_paths",
]

#: The authorization endpoint (the consent page), as the original system named it, at the
#: site's root (see `endpoint_paths` for other mount points).
AUTHORIZE_PATH: Final = "/oauth/authorize.php"
#: The token endpoint, as the original system named it, at the site's root.
TOKEN_PATH: Final = "/oauth/token.php"
#: RFC 7009 token revocation, at the site's root.
REVOKE_PATH: Final = "/oauth/revoke"
#: RFC 7662 token introspection, at the site's root.
INTROSPECT_PATH: Final = "/oauth/introspect"
#: The example protected resource: who the token acts for (below the mount point).
ME_PATH: Final = "/uapi/me"
#: RFC 8414 authorization server metadata (below the mount point).
METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
#: The largest request body read; a bigger one is refused with 413 before it is read.
DEFAULT_MAX_BODY_SIZE: Final = 16 * 1024
#: The longest query string accepted (room for a 2000-character redirect URL, encoded); a
#: longer one is refused with 414.
MAX_QUERY_LENGTH: Final = 8 * 1024
#: The longest value accepted in each header the endpoints read (``Authorization``,
#: ``User-Agent``, ``Origin``, ``Content-Type``); a longer one is refused with 431.
MAX_HEADER_LENGTH: Final = 8 * 1024
#: The most ``&``-separated fields a form body or a query string may have; more get 400.
MAX_FORM_FIELDS: Final = 64
#: The request headers the endpoints read, by their usual names.
READ_HEADERS: Final = ("Authorization", "User-Agent", "Origin", "Content-Type")

FORM: Final = "application/x-www-form-urlencoded"
SECURITY_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
# The consent page must not be framed: a framing page could trick the click on "Allow".
_PAGE_HEADERS: Final = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
)
# The OAuth endpoints' own names, below "/oauth" at the root (the original system's paths).
_OAUTH_NAMES: Final = {
    "authorize": "/authorize.php",
    "token": "/token.php",
    "revoke": "/revoke",
    "introspect": "/introspect",
}
_OAUTH_DIRECTORY: Final = "/oauth"


def endpoint_paths(mount_point: str) -> dict[str, str]:
    """Each endpoint's path below ``mount_point`` (the ``SCRIPT_NAME`` or ``root_path``).

    The OAuth endpoints sit in ``/oauth`` below the mount point, as the original system had
    them at the site's root, unless the mount point already ends with ``/oauth``: mounted
    there, the token endpoint is ``/oauth/token.php``, not ``/oauth/oauth/token.php``. The
    metadata and ``/uapi/me`` are right below the mount point.

    >>> endpoint_paths("")["token"], endpoint_paths("/api")["token"]
    ('/oauth/token.php', '/oauth/token.php')
    >>> endpoint_paths("/oauth")["token"], endpoint_paths("/oauth")["metadata"]
    ('/token.php', '/.well-known/oauth-authorization-server')
    """
    directory = "" if mount_point.rstrip("/").endswith(_OAUTH_DIRECTORY) else _OAUTH_DIRECTORY
    paths = {name: f"{directory}{path}" for name, path in _OAUTH_NAMES.items()}
    return {**paths, "me": ME_PATH, "metadata": METADATA_PATH}


@attrs.frozen
class _Request:
    """One request, as any transport gives it to the endpoints.

    Attributes:
        method: The HTTP method, upper case.
        root: The mount point (``SCRIPT_NAME``, ``root_path``), without a trailing slash.
        path: The path below the mount point.
        scheme, host: The URL's scheme, and its host (with the port) as the client sent it.
        query: The raw query string.
        headers: The headers the endpoints read (`READ_HEADERS`), by those names.
        content_length: The ``Content-Length`` header as sent, or ``None``.
        body: The body, once read; empty before.
        native: The transport's own request (a WSGI environ, a Starlette request), for the
            host's ``current_user``.
        client: The connection's peer address (``REMOTE_ADDR``), if the server says.
        forwarded_for: Every ``X-Forwarded-For`` header, joined with commas; read only when
            the peer is a trusted proxy (see `Throttling`).
    """

    method: str
    root: str
    path: str
    scheme: str
    host: str
    query: str
    headers: Mapping[str, str]
    content_length: str | None = None
    body: bytes = b""
    native: Any = None
    client: str | None = None
    forwarded_for: str | None = None

    def uri(self, *, query: bool = True) -> str:
        """The request's full URL (what oauthlib parses the query from)."""
        base = f"{self.scheme}://{self.host}{self.root}{self.path}"
        return f"{base}?{self.query}" if query and self.query else base

    @property
    def origin(self) -> str:
        """The scheme and host, as ``https://example.com``."""
        return f"{self.scheme}://{self.host}"


@attrs.frozen
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


class _Refused(Exception):
    """A request refused before it reaches oauthlib: bad body, size or method."""

    def __init__(self, status: int, description: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


def json_response(status: int, data: object, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    """A JSON answer that no cache keeps."""
    return _Response(
        status,
        (("Content-Type", "application/json"), ("Cache-Control", "no-store"), *headers),
        json.dumps(data).encode(),
    )


def html_response(status: int, page: str) -> _Response:
    """An HTML page that no cache keeps and no other site frames."""
    return _Response(
        status,
        (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            *_PAGE_HEADERS,
        ),
        page.encode(),
    )


def redirect_response(location: str) -> _Response:
    """A redirect that no cache keeps: it carries a code or an error."""
    return _Response(302, (("Location", location), ("Cache-Control", "no-store")))


def oauthlib_response(response: tuple[Mapping[str, str], str | None, int]) -> _Response:
    """Oauthlib's ``(headers, body, status)`` as a `_Response`."""
    headers, body, status = response
    if "Location" in headers:
        # The redirect carries a code or an error: no cache may keep it.
        headers = {**headers, "Cache-Control": "no-store"}
    return _Response(status, tuple(headers.items()), (body or "").encode())


def described(response: _Response) -> _Response:
    """``response`` with an ``error_description`` beside its ``error`` (RFC 6749 5.2)."""
    if response.status < 400 or not response.body.startswith(b"{"):
        return response
    try:
        data = json.loads(response.body)
    except ValueError:
        return response
    with_it = with_description(data)
    if with_it is data:
        return response
    return attrs.evolve(response, body=json.dumps(with_it).encode())


def error_code(response: _Response) -> str | None:
    """The OAuth error code a response carries: in its JSON body or its redirect, else None."""
    location = dict(response.headers).get("Location")
    if location is not None:
        query = urllib.parse.urlsplit(location).query
        errors = [v for k, v in urllib.parse.parse_qsl(query) if k == "error"]
        return errors[0] if errors else None
    # An error in a JSON body comes with 400 or 401 (RFC 6749 section 5.2): a success's body,
    # a token response say, is not parsed for one.
    if response.status >= 400 and response.body.startswith(b"{"):
        try:
            data = json.loads(response.body)
        except ValueError:
            return None
        error = data.get("error") if isinstance(data, dict) else None
        return error if isinstance(error, str) else None
    return None


def check_limits(request: _Request, max_body_size: int) -> None:
    """Refuse what a request brings beyond its bounds, before anything parses or reads it.

    oauthlib, the bearer-token parser and the user-agent clean-up read the query and these
    headers; the body is checked by its declared length and type, and never read here.

    Raises:
        _Refused: 414, 431, 400 (too many fields, a bad ``Content-Length``), 413 or 415.
    """
    if len(request.query) > MAX_QUERY_LENGTH:
        raise _Refused(414, f"The query string is longer than {MAX_QUERY_LENGTH} characters.")
    if request.query.count("&") >= MAX_FORM_FIELDS:
        raise _Refused(400, f"The query string has more than {MAX_FORM_FIELDS} fields.")
    for value in request.headers.values():
        if len(value) > MAX_HEADER_LENGTH:
            raise _Refused(431, f"A header is longer than {MAX_HEADER_LENGTH} characters.")
    if request.method != "POST":
        return
    length = content_length(request)
    # Refused bodies are never read: the server closes the connection instead of draining
    # what the client sends (RFC 9110 section 15.5.14).
    if length > max_body_size:
        raise _Refused(413, f"The body is larger than {max_body_size} bytes.")
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if length and content_type not in {FORM, ""}:
        raise _Refused(415, f"The body must be {FORM}.")


def content_length(request: _Request) -> int:
    """The declared body length (0 when not declared).

    Raises:
        _Refused: 400, the header is not a length.
    """
    text = (request.content_length or "").strip()
    if not text:
        return 0
    if not text.isascii() or not text.isdigit():
        raise _Refused(400, "Content-Length is not a number.")
    return int(text)


def form_text(body: bytes) -> str:
    """The body as form-encoded text: ASCII only, with a bounded number of fields.

    Raises:
        _Refused: 400.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused(400, f"The body must be {FORM}.") from None
    if text.count("&") >= MAX_FORM_FIELDS:
        raise _Refused(400, f"The form has more than {MAX_FORM_FIELDS} fields.")
    return text

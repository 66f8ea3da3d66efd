"""A WSGI application: the OAuth 2.0 endpoints and an example protected resource."""

from __future__ import annotations

import json
import logging
import secrets
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import request_uri

import attrs
from oauthlib.common import add_params_to_uri
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from .._registry import Clock, Registry, system_clock
from ..errors import AppNotFound, StorageError
from ._consent import (
    CONSENT_FIELDS,
    ConsentPage,
    ConsentRequest,
    CsrfSigner,
    default_consent_page,
    message_page,
)
from ._server import RegistryServer, make_server
from ._validator import SignedInUser

__all__ = [
    "AUTHORIZE_PATH",
    "DEFAULT_MAX_BODY_SIZE",
    "INTROSPECT_PATH",
    "MAX_FORM_FIELDS",
    "MAX_HEADER_LENGTH",
    "MAX_QUERY_LENGTH",
    "ME_PATH",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "CurrentUser",
    "bearer_token",
    "make_wsgi_app",
]

logger = logging.getLogger("appregistry.oauth2")

#: The authorization endpoint (the consent page), as the original system named it.
AUTHORIZE_PATH: Final = "/oauth/authorize.php"
#: The token endpoint, as the original system named it.
TOKEN_PATH: Final = "/oauth/token.php"
#: RFC 7009 token revocation.
REVOKE_PATH: Final = "/oauth/revoke"
#: RFC 7662 token introspection.
INTROSPECT_PATH: Final = "/oauth/introspect"
#: The example protected resource: who the token acts for.
ME_PATH: Final = "/uapi/me"
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
#: The query parameter the original system's clients send their bearer token in.
QUERY_TOKEN_PARAMETER: Final = "accessRequestToken"

#: Who is signed in to the host in this request, or ``None``.
CurrentUser = Callable[[WSGIEnvironment], SignedInUser | None]

_FORM: Final = "application/x-www-form-urlencoded"
# The most of an oversized body read (and dropped) before answering 413.
_DRAIN_LIMIT: Final = 256 * 1024
_SECURITY_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
# The consent page must not be framed: a framing page could trick the click on "Allow".
_PAGE_HEADERS: Final = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
)


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


def _json(status: int, data: object, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    return _Response(
        status,
        (("Content-Type", "application/json"), ("Cache-Control", "no-store"), *headers),
        json.dumps(data).encode(),
    )


def _html(status: int, page: str) -> _Response:
    return _Response(
        status,
        (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            *_PAGE_HEADERS,
        ),
        page.encode(),
    )


def _redirect(location: str) -> _Response:
    return _Response(302, (("Location", location), ("Cache-Control", "no-store")))


def _oauthlib(response: tuple[Mapping[str, str], str | None, int]) -> _Response:
    headers, body, status = response
    return _Response(status, tuple(headers.items()), (body or "").encode())


def bearer_token(environ: WSGIEnvironment) -> str | None:
    """The bearer token of a request, as the original system's clients send it.

    Accepted: the header ``Authorization: Bearer T``, or the query parameter
    ``accessRequestToken=Bearer T`` (``accessRequestToken=T`` too). Check what it returns with
    `Registry.check_token`.

    Raises:
        ValueError: A token is presented more than once, or the bearer header is empty.

    >>> bearer_token({"HTTP_AUTHORIZATION": "Bearer abc"})
    'abc'
    >>> bearer_token({"QUERY_STRING": "accessRequestToken=Bearer%20abc"})
    'abc'
    >>> bearer_token({}) is None
    True
    """
    found: list[str] = []
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str):
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            if not value.strip():
                raise ValueError("the bearer token is empty")
            found.append(value.strip())
    query = environ.get("QUERY_STRING") or ""
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == QUERY_TOKEN_PARAMETER:
            scheme, space, rest = value.strip().partition(" ")
            found.append(rest.strip() if space and scheme.lower() == "bearer" else value.strip())
    if len(found) > 1:
        raise ValueError("a request must present one bearer token, in one place")
    return found[0] if found else None


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

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> app = make_wsgi_app(Registry(storage=MemoryStorage()), current_user=lambda environ: None)
    >>> callable(app)
    True
    """
    if max_body_size < 1:
        raise ValueError("max_body_size must be at least 1")
    return _OAuthApp(
        registry=registry,
        server=make_server(registry, realm=realm),
        current_user=current_user,
        consent_page=consent_page,
        stylesheet_url=stylesheet_url,
        login_url=login_url,
        signer=CsrfSigner(csrf_key if csrf_key is not None else secrets.token_bytes(32)),
        max_body_size=max_body_size,
        clock=clock,
        realm=realm,
    )


@attrs.define(kw_only=True)
class _OAuthApp:
    registry: Registry
    server: RegistryServer
    current_user: CurrentUser
    consent_page: ConsentPage
    stylesheet_url: str | None
    login_url: str | None
    signer: CsrfSigner
    max_body_size: int
    clock: Clock
    realm: str

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._route(environ)
        except StorageError:
            logger.exception("storage failed while serving %s", environ.get("PATH_INFO"))
            response = _json(503, {"error": "temporarily_unavailable"})
        except Exception:
            logger.exception("failed while serving %s", environ.get("PATH_INFO"))
            response = _json(500, {"error": "server_error"})
        headers = [*response.headers, *_SECURITY_HEADERS]
        headers.append(("Content-Length", str(len(response.body))))
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body]

    def _route(self, environ: WSGIEnvironment) -> _Response:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        routes: dict[str, tuple[tuple[str, ...], Callable[[WSGIEnvironment], _Response]]] = {
            AUTHORIZE_PATH: (("GET", "POST"), self._authorize),
            TOKEN_PATH: (("POST",), self._token),
            REVOKE_PATH: (("POST",), self._revoke),
            INTROSPECT_PATH: (("POST",), self._introspect),
            ME_PATH: (("GET",), self._me),
        }
        if path not in routes:
            return _json(404, {"error": "not_found"})
        methods, handler = routes[path]
        if method not in methods:
            return _json(
                405,
                {"error": "invalid_request", "error_description": "Method not allowed."},
                [("Allow", ", ".join(methods))],
            )
        try:
            _check_limits(environ)
            return handler(environ)
        except _Refused as refused:
            if path == AUTHORIZE_PATH:
                return _html(refused.status, self._message("Request refused", refused.description))
            return _json(
                refused.status,
                {"error": "invalid_request", "error_description": refused.description},
                refused.headers,
            )

    # -- plumbing ---------------------------------------------------------------------------

    def _read_form(self, environ: WSGIEnvironment) -> str:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise _Refused(400, "Content-Length is not a number.") from None
        if length < 0:
            raise _Refused(400, "Content-Length is not a number.")
        stream = environ["wsgi.input"]
        if length > self.max_body_size:
            # Read (and drop) a little, so that a client that sent a somewhat large body reads
            # the 413 rather than a connection reset; a huge one is never read.
            _read(stream, min(length, _DRAIN_LIMIT))
            raise _Refused(413, f"The body is larger than {self.max_body_size} bytes.")
        content_type = str(environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if length and content_type not in {_FORM, ""}:
            _read(stream, length)
            raise _Refused(415, f"The body must be {_FORM}.")
        try:
            body = _read(stream, length).decode("ascii")
        except UnicodeDecodeError:
            raise _Refused(400, f"The body must be {_FORM}.") from None
        if body.count("&") >= MAX_FORM_FIELDS:
            raise _Refused(400, f"The form has more than {MAX_FORM_FIELDS} fields.")
        return body

    @staticmethod
    def _uri(environ: WSGIEnvironment, *, query: bool = True) -> str:
        return request_uri(environ, include_query=query)

    @staticmethod
    def _headers(environ: WSGIEnvironment) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, name in (
            ("HTTP_AUTHORIZATION", "Authorization"),
            ("HTTP_USER_AGENT", "User-Agent"),
            ("HTTP_ORIGIN", "Origin"),
            ("CONTENT_TYPE", "Content-Type"),
        ):
            value = environ.get(key)
            if isinstance(value, str):
                headers[name] = value
        if "User-Agent" in headers:
            # WSGI hands headers over as Latin-1; clients send their user agent in UTF-8.
            raw = headers["User-Agent"].encode("latin-1", errors="replace")
            headers["User-Agent"] = raw.decode("utf-8", errors="replace")
        return headers

    def _message(self, title: str, message: str) -> str:
        return message_page(title, message, stylesheet_url=self.stylesheet_url)

    # -- the consent page -------------------------------------------------------------------

    def _authorize(self, environ: WSGIEnvironment) -> _Response:
        if environ.get("REQUEST_METHOD", "GET").upper() == "GET":
            query = str(environ.get("QUERY_STRING") or "")
            return self._ask(environ, self._uri(environ), "GET", None, query)
        body = self._read_form(environ)
        try:
            params = urllib.parse.parse_qsl(body, keep_blank_values=True, strict_parsing=bool(body))
        except ValueError:
            raise _Refused(400, "The form is malformed.") from None
        if any(name == "decision" for name, _ in params):
            return self._answer(environ, params)
        return self._ask(environ, self._uri(environ), "POST", body, body)

    def _ask(
        self, environ: WSGIEnvironment, uri: str, method: str, body: str | None, query: str
    ) -> _Response:
        user = self.current_user(environ)
        if user is None:
            return self._sign_in(environ, query)
        try:
            _, info = self.server.validate_authorization_request(
                uri, method, body, self._headers(environ)
            )
        except oauth_errors.FatalClientError as exc:
            return self._invalid_request(exc)
        except oauth_errors.OAuth2Error as exc:
            # Only errors after the client and redirect URL were found valid get here.
            return _redirect(exc.in_uri(exc.redirect_uri))
        except ValueError:
            return _html(400, self._message("Request refused", "The request is malformed."))
        request = info["request"]
        try:
            app = self.registry.get_app(request.client_id)
        except AppNotFound:
            return self._invalid_request(oauth_errors.InvalidClientIdError())
        fields = _consent_fields(request)
        token = self.signer.sign(user, fields, self.clock())
        consent = ConsentRequest(
            app=app,
            user=user,
            action=f"{environ.get('SCRIPT_NAME', '')}{AUTHORIZE_PATH}",
            fields=(*fields.items(), ("csrf_token", token)),
            stylesheet_url=self.stylesheet_url,
        )
        return _html(200, self.consent_page(consent))

    def _answer(self, environ: WSGIEnvironment, params: list[tuple[str, str]]) -> _Response:
        user = self.current_user(environ)
        if user is None:
            return self._sign_in(environ, None)
        names = [name for name, _ in params]
        if len(names) != len(set(names)):
            raise _Refused(400, "The form repeats a field.")
        form = dict(params)
        fields: dict[str, str] = {name: form[name] for name in CONSENT_FIELDS if name in form}
        if not self.signer.verify(form.get("csrf_token"), user, fields, self.clock()):
            return _html(
                403,
                self._message(
                    "This form has expired",
                    "The form is too old or did not come from this site. "
                    "Go back to the app and start again.",
                ),
            )
        uri = self._uri(environ, query=False)
        body = urllib.parse.urlencode(fields)
        headers = self._headers(environ)
        decision = form["decision"]
        try:
            if decision == "approve":
                response = self.server.create_authorization_response(
                    uri, "POST", body, headers, scopes=[], credentials={"user": user}
                )
                return _oauthlib(response)
            if decision != "deny":
                raise _Refused(400, "The decision must be approve or deny.")
            _, info = self.server.validate_authorization_request(uri, "POST", body, headers)
        except oauth_errors.FatalClientError as exc:
            return self._invalid_request(exc)
        except oauth_errors.OAuth2Error as exc:
            return _redirect(exc.in_uri(exc.redirect_uri))
        denied = oauth_errors.AccessDeniedError(request=info["request"])
        return _redirect(denied.in_uri(denied.redirect_uri))

    def _sign_in(self, environ: WSGIEnvironment, query: str | None) -> _Response:
        if self.login_url is None or query is None:
            return _html(
                401,
                self._message("Sign in first", "Sign in, then open the app's link again."),
            )
        back = f"{environ.get('SCRIPT_NAME', '')}{AUTHORIZE_PATH}"
        if query:
            back = f"{back}?{query}"
        return _redirect(add_params_to_uri(self.login_url, [("next", back)]))

    def _invalid_request(self, exc: Any) -> _Response:
        # Never redirect here: the client or its redirect URL is what is wrong (RFC 6749 4.1.2.1).
        return _html(
            400,
            self._message(
                "This link to authorize an app is not valid",
                f"{exc.description or 'The request is not valid.'} Tell the app's makers.",
            ),
        )

    # -- the JSON endpoints -----------------------------------------------------------------

    def _token(self, environ: WSGIEnvironment) -> _Response:
        body = self._read_form(environ)
        return _oauthlib(
            self.server.create_token_response(
                self._uri(environ), "POST", body, self._headers(environ)
            )
        )

    def _revoke(self, environ: WSGIEnvironment) -> _Response:
        body = self._read_form(environ)
        headers, text, status = self.server.create_revocation_response(
            self._uri(environ), "POST", body, self._headers(environ)
        )
        return _oauthlib(({"Cache-Control": "no-store", **headers}, text, status))

    def _introspect(self, environ: WSGIEnvironment) -> _Response:
        body = self._read_form(environ)
        return _oauthlib(
            self.server.create_introspect_response(
                self._uri(environ), "POST", body, self._headers(environ)
            )
        )

    def _me(self, environ: WSGIEnvironment) -> _Response:
        try:
            token = bearer_token(environ)
        except ValueError as exc:
            challenge = f'Bearer realm="{self.realm}", error="invalid_request"'
            raise _Refused(400, str(exc), (("WWW-Authenticate", challenge),)) from None
        if token is None:
            return _json(
                401,
                {"error_description": "A bearer token is required."},
                [("WWW-Authenticate", f'Bearer realm="{self.realm}"')],
            )
        check = self.registry.check_token(token)
        record = check.token
        if not check.allowed or record is None:
            logger.info("bearer token refused: %s", check.reason)
            return _json(
                401,
                {"error": "invalid_token"},
                [("WWW-Authenticate", f'Bearer realm="{self.realm}", error="invalid_token"')],
            )
        return _json(
            200,
            {
                "account": record.account,
                "app": record.app_key,
                "grant": str(record.grant),
                "expires_at": record.expires_at.isoformat(),
            },
        )


# The request headers the endpoints read, as WSGI names them.
_READ_HEADERS: Final = ("HTTP_AUTHORIZATION", "HTTP_USER_AGENT", "HTTP_ORIGIN", "CONTENT_TYPE")


def _check_limits(environ: WSGIEnvironment) -> None:
    # The bounds on what a request brings besides its body, checked before anything parses
    # it: oauthlib, the bearer-token parser and the user-agent clean-up all read these.
    query = str(environ.get("QUERY_STRING") or "")
    if len(query) > MAX_QUERY_LENGTH:
        raise _Refused(414, f"The query string is longer than {MAX_QUERY_LENGTH} characters.")
    if query.count("&") >= MAX_FORM_FIELDS:
        raise _Refused(400, f"The query string has more than {MAX_FORM_FIELDS} fields.")
    for name in _READ_HEADERS:
        value = environ.get(name)
        if isinstance(value, str) and len(value) > MAX_HEADER_LENGTH:
            raise _Refused(431, f"A header is longer than {MAX_HEADER_LENGTH} characters.")


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


def _consent_fields(request: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in CONSENT_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str):
            fields[name] = value
    if "code_challenge" not in fields:
        fields.pop("code_challenge_method", None)
    return fields

"""From the parts of a request to a decision: the bearer token's identity, or the answer.

Nothing here knows a web framework. The adapters hand `TokenGuard` the values of the
``Authorization`` header and the query string, and turn a `BearerError` into their own
response; the status, the body and the ``WWW-Authenticate`` header are decided here, once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, Literal, overload

import attrs

from .._open import open_registry
from .._policy import Decision
from .._records import Grant
from .._registry import Registry, TokenCheck
from ..errors import AppRegistryError, StorageError
from ..metrics import Metrics

__all__ = [
    "DEFAULT_REALM",
    "IDENTITY_KEY",
    "QUERY_TOKEN_PARAMETER",
    "BearerError",
    "TokenGuard",
    "TokenIdentity",
    "add_vary",
    "read_bearer_token",
]

logger = logging.getLogger("appregistry.integrations")

#: The realm named in ``WWW-Authenticate`` unless the guard is given another.
DEFAULT_REALM: Final = "api"
#: The query parameter the original system's clients send their token in:
#: ``accessRequestToken=Bearer T`` (``accessRequestToken=T`` is accepted too).
QUERY_TOKEN_PARAMETER: Final = "accessRequestToken"
#: The name under which each adapter stores the `TokenIdentity` of a request (an attribute
#: of Flask's ``g`` and of a Django request, a key of ``scope["state"]`` in ASGI; WSGI
#: middleware uses ``"appregistry." + IDENTITY_KEY`` in the environ, as PEP 3333 asks).
IDENTITY_KEY: Final = "token_identity"

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# A realm is written inside a quoted string: printable ASCII without the quote and backslash.
_REALM: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,100}")
_BEARER: Final = "bearer"
# Far longer than any token this library issues; past it, the value is not parsed at all.
_MAX_VALUE: Final = 4096

#: What a caller is told; the reason behind a refusal goes to the log only.
_MISSING: Final = "This resource needs a bearer token."
_INVALID_TOKEN: Final = "The access token is not valid."
_EMPTY: Final = "The bearer token is empty."
_DOUBLED: Final = "Send one bearer token, in one place."
_MALFORMED: Final = "The bearer token is malformed."
_UNAVAILABLE: Final = "The access token cannot be checked right now; try again later."


def add_vary(
    headers: Iterable[tuple[str, str]], field: str = "Authorization"
) -> list[tuple[str, str]]:
    """``headers`` with ``field`` named in ``Vary``: an answer that depends on it says so.

    Caches must not hand one client's answer to a request with another ``Authorization``.

    >>> add_vary([("Content-Type", "text/plain")])
    [('Content-Type', 'text/plain'), ('Vary', 'Authorization')]
    >>> add_vary([("Vary", "Accept-Encoding")])
    [('Vary', 'Accept-Encoding, Authorization')]
    >>> add_vary([("vary", "authorization")])
    [('vary', 'authorization')]
    """
    result: list[tuple[str, str]] = []
    found = False
    for name, value in headers:
        if name.lower() == "vary" and not found:
            found = True
            named = {part.strip().lower() for part in value.split(",")}
            if field.lower() not in named and "*" not in named:
                result.append((name, f"{value}, {field}" if value.strip() else field))
                continue
        result.append((name, value))
    if not found:
        result.append(("Vary", field))
    return result


class BearerError(AppRegistryError):
    """A request refused: the HTTP answer it gets, decided once for every adapter.

    Per RFC 6750 section 3: 401 with ``error="invalid_token"`` for a token that is unknown,
    expired or denied; 400 ``invalid_request`` for an empty, malformed or doubled one; 401
    without an error code when no token was sent (section 3.1). A storage that cannot be
    reached gives 503, so the client keeps its token and tries again. The description is the
    same for every kind of invalid token: why it was refused is in `reason`, for logs only.
    The message never contains the token.

    Attributes:
        status: The HTTP status.
        error: The RFC 6750 error code, or ``None`` (no token sent; storage unavailable).
        description: Safe to show the caller; also ``str(error)``.
        reason: Why, for logs: a `appregistry.Reason` value (``token_expired``,
            ``app_disabled``, ...) or ``missing``, ``empty``, ``doubled``, ``malformed``,
            ``storage_unavailable``.
        realm: The protection space named in the challenge.
    """

    def __init__(
        self, status: int, error: str | None, description: str, *, reason: str, realm: str
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.reason = reason
        self.realm = realm

    def __repr__(self) -> str:
        return f"BearerError({self.status}, {self.error!r}, reason={self.reason!r})"

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers of the answer: the challenge (not on 503), no caching, ``Vary``.

        >>> error = BearerError(401, "invalid_token", "The access token is not valid.",
        ...                     reason="token_expired", realm="api")
        >>> for part in dict(error.headers)["WWW-Authenticate"].split(", "):
        ...     print(part)
        Bearer realm="api"
        error="invalid_token"
        error_description="The access token is not valid."
        """
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("Vary", "Authorization"),
        ]
        if self.status in {400, 401}:
            headers.append(("WWW-Authenticate", self.challenge))
        return headers

    @property
    def challenge(self) -> str:
        """The value of ``WWW-Authenticate``: with the error only when a token was sent."""
        if self.error is None:
            return f'Bearer realm="{self.realm}"'
        return (
            f'Bearer realm="{self.realm}", error="{self.error}", '
            f'error_description="{self.description}"'
        )

    def as_json(self) -> dict[str, str]:
        """The body of the answer, as a mapping: ``error`` (when there is one) and a description.

        >>> BearerError(400, "invalid_request", "The bearer token is empty.",
        ...             reason="empty", realm="api").as_json()
        {'error': 'invalid_request', 'error_description': 'The bearer token is empty.'}
        """
        body = {"error_description": self.description}
        return body if self.error is None else {"error": self.error, **body}

    @property
    def body(self) -> bytes:
        """The body of the answer, JSON-encoded."""
        return json.dumps(self.as_json()).encode()


@attrs.frozen
class TokenIdentity:
    """Who an accepted token acts for, and the decision that let it in.

    Attributes:
        account: The account the token acts for (a client-credentials token: the app's owner).
        app_key: The app that obtained the token.
        grant: How the token was obtained.
        expires_at: When it stops working.
        token_id: The token's public id (for listing and removal; not the token).
        decision: The policy's decision (``allowed``), host rules included.
    """

    account: str
    app_key: str
    grant: Grant
    expires_at: datetime
    token_id: str
    decision: Decision

    @classmethod
    def of(cls, check: TokenCheck) -> TokenIdentity:
        """The identity of an allowed `TokenCheck`.

        Raises:
            ValueError: The check did not allow the token.
        """
        if not check.allowed or check.token is None:
            raise ValueError(f"the token was not allowed ({check.reason})")
        token = check.token
        return cls(
            token.account, token.app_key, token.grant, token.expires_at, token.token_id,
            check.decision,
        )  # fmt: skip

    def as_json(self) -> dict[str, str]:
        """A JSON-ready summary: account, app key, grant and expiry (ISO 8601)."""
        return {
            "account": self.account,
            "app": self.app_key,
            "grant": str(self.grant),
            "expires_at": self.expires_at.isoformat(),
        }


def _check_realm(_: object, __: object, realm: str) -> None:
    if not isinstance(realm, str) or not _REALM.fullmatch(realm):  # type: ignore[redundant-expr]
        raise ValueError("realm must be 1 to 100 printable ASCII characters without '\"' or '\\'")


@attrs.define(eq=False)
class TokenGuard:
    """Turns the parts of a request into a `TokenIdentity`, or a `BearerError` to answer with.

    Safe to share between threads. Give it an open `Registry`, or a function that opens one:
    then the registry is opened on first use in each process, so a server that forks its
    workers (gunicorn, uWSGI) gives every worker its own pools (see `from_url`).

    Args:
        registry: The registry that checks tokens, or a function with no arguments that
            opens it.
        realm: Named in ``WWW-Authenticate``; printable ASCII, no quotes.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> guard = TokenGuard(Registry(storage=MemoryStorage()), realm="example")
    >>> guard.authenticate([], "", optional=True) is None
    True
    >>> try:
    ...     guard.authenticate(["Bearer not-a-token-we-issued"])
    ... except BearerError as error:
    ...     print(error.status, error.error, error.reason)
    401 invalid_token token_unknown
    """

    _source: Registry | Callable[[], Registry] = attrs.field(alias="registry")
    realm: str = attrs.field(default=DEFAULT_REALM, kw_only=True, validator=_check_realm)
    _opened: Registry | None = attrs.field(default=None, init=False, repr=False)
    _pid: int = attrs.field(default=0, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    #: Counts each check's decision (`appregistry.metrics.Metrics.token_checked`), if set.
    metrics: Metrics | None = attrs.field(default=None, kw_only=True, repr=False)

    @classmethod
    def from_url(cls, url: str, *, realm: str = DEFAULT_REALM, **options: Any) -> TokenGuard:
        """A guard that opens ``open_registry(url, **options)`` on first use in each process.

        Nothing is opened here, so it is safe to build at import time, before a server forks.

        >>> guard = TokenGuard.from_url("memory:", realm="example")
        >>> guard.registry.list_apps().total
        0
        """
        return cls(lambda: open_registry(url, **options), realm=realm)

    @property
    def registry(self) -> Registry:
        """The registry, opened now if it is opened on first use (again after a fork)."""
        if isinstance(self._source, Registry):
            return self._source
        opened = self._opened
        if opened is not None and self._pid == os.getpid():
            return opened
        with self._lock:
            if self._opened is None or self._pid != os.getpid():
                # After a fork, the parent's registry is dropped, not closed: closing would
                # end connections the parent still uses.
                self._opened = self._source()
                self._pid = os.getpid()
            return self._opened

    def token_of(
        self, authorization: Sequence[str] | str | None, query: str | bytes = ""
    ) -> str | None:
        """The bearer token a request presents, or ``None``: `read_bearer_token` in this realm.

        Raises:
            BearerError: 400 ``invalid_request``: the token is empty or malformed, or more
                than one is presented (two headers, header and query, two query values).

        >>> guard = TokenGuard.from_url("memory:")
        >>> guard.token_of(["Bearer abc"]), guard.token_of(None, "accessRequestToken=Bearer%20abc")
        ('abc', 'abc')
        >>> guard.token_of(["Basic dXNlcjpwYXNz"]) is None
        True
        """
        return read_bearer_token(authorization, query, realm=self.realm)

    def verify(self, token: str) -> TokenIdentity:
        """Check ``token`` with the registry (one storage round trip; it may block).

        Host policy rules apply, as in every `Registry.check_token`.

        Raises:
            BearerError: 401 ``invalid_token`` (unknown, expired or denied), or 503 when the
                storage cannot be reached.
        """
        try:
            check = self.registry.check_token(token)
        except StorageError:
            logger.exception("bearer token not checked: the storage failed")
            if self.metrics is not None:
                self.metrics.token_checked("storage_unavailable")
            raise BearerError(
                503, None, _UNAVAILABLE, reason="storage_unavailable", realm=self.realm
            ) from None
        if self.metrics is not None:
            # Counted here, once per HTTP request, rather than in Registry.check_token.
            self.metrics.token_checked(
                check.reason, check.token.app_key if check.token is not None else None
            )
        if not check.allowed or check.token is None:
            if check.token is None:
                logger.info("bearer token refused: %s", check.reason)
            else:
                logger.info("bearer token %s refused: %s", check.token.token_id, check.reason)
            raise BearerError(
                401, "invalid_token", _INVALID_TOKEN, reason=str(check.reason), realm=self.realm
            )
        return TokenIdentity.of(check)

    @overload
    def authenticate(
        self,
        authorization: Sequence[str] | str | None,
        query: str | bytes = ...,
        *,
        optional: Literal[False] = ...,
    ) -> TokenIdentity: ...

    @overload
    def authenticate(
        self, authorization: Sequence[str] | str | None, query: str | bytes = ..., *, optional: bool
    ) -> TokenIdentity | None: ...

    def authenticate(
        self,
        authorization: Sequence[str] | str | None,
        query: str | bytes = "",
        *,
        optional: bool = False,
    ) -> TokenIdentity | None:
        """`token_of` then `verify`: the identity, or ``None`` for no token when ``optional``.

        Raises:
            BearerError: The answer to give instead (see `token_of`, `verify` and
                `challenge`).
        """
        token = self.token_of(authorization, query)
        if token is None:
            if optional:
                return None
            raise self.challenge()
        return self.verify(token)

    def challenge(self) -> BearerError:
        """The answer to a request that sent no token: 401, a challenge with no error code."""
        return BearerError(401, None, _MISSING, reason="missing", realm=self.realm)


def read_bearer_token(
    authorization: Sequence[str] | str | None,
    query: str | bytes = "",
    *,
    realm: str = DEFAULT_REALM,
) -> str | None:
    """The bearer token a request presents, or ``None``. Reads only; no I/O, no registry.

    The one parser behind every adapter, `TokenGuard.token_of` and the OAuth endpoints'
    ``/uapi/me``, so that a request gets the same answer wherever it is sent.

    Args:
        authorization: The values of the ``Authorization`` header (one per header sent; a
            WSGI server's ``"Bearer a, Bearer b"`` is two). Other schemes (``Basic ...``)
            are not bearer tokens and are ignored.
        query: The raw query string (``QUERY_STRING`` in WSGI, ``scope["query_string"]``
            in ASGI), for ``accessRequestToken=Bearer T`` (or ``accessRequestToken=T``).
        realm: Named in the challenge of the error raised.

    Raises:
        BearerError: 400 ``invalid_request``: the token is empty or malformed, or more
            than one is presented (two headers, header and query, two query values).

    >>> read_bearer_token(["Bearer abc"]), read_bearer_token(None, "accessRequestToken=abc")
    ('abc', 'abc')
    >>> try:
    ...     read_bearer_token("Bearer abc, Bearer abc")
    ... except BearerError as error:
    ...     print(error.status, error.error, error.reason)
    400 invalid_request doubled
    """
    if isinstance(authorization, str):
        authorization = [authorization]
    found: list[str] = []
    values = list(authorization or ())
    if len(values) > 1:
        raise _bad_request("doubled", realm)
    for value in values:
        token = _from_header(value, realm)
        if token is not None:
            found.append(token)
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if QUERY_TOKEN_PARAMETER in query:
        found.extend(_from_query(query, realm))
    if len(found) > 1:
        raise _bad_request("doubled", realm)
    return found[0] if found else None


def _bad_request(reason: str, realm: str) -> BearerError:
    logger.info("bearer token refused: %s", reason)
    description = {"empty": _EMPTY, "doubled": _DOUBLED}.get(reason, _MALFORMED)
    return BearerError(400, "invalid_request", description, reason=reason, realm=realm)


def _from_header(value: str, realm: str) -> str | None:
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != _BEARER:
        return None
    return _credential(rest, realm)


def _from_query(query: str, realm: str) -> list[str]:
    found = []
    try:
        fields = urllib.parse.parse_qsl(query, keep_blank_values=True)
    except ValueError:  # an odd query that the parser refuses outright
        raise _bad_request("malformed", realm) from None
    for name, value in fields:
        if name != QUERY_TOKEN_PARAMETER:
            continue
        scheme, space, rest = value.strip().partition(" ")
        if space and scheme.lower() == _BEARER:
            found.append(_credential(rest, realm))
        elif value.strip().lower() == _BEARER:
            raise _bad_request("empty", realm)
        else:
            found.append(_credential(value, realm))
    return found


def _credential(value: str, realm: str) -> str:
    value = value.strip()
    if not value:
        raise _bad_request("empty", realm)
    if len(value) > _MAX_VALUE or not _B64TOKEN.fullmatch(value):
        # "Bearer a, Bearer b": two headers, joined by the server into one.
        if "," in value and _BEARER in value.lower():
            raise _bad_request("doubled", realm)
        raise _bad_request("malformed", realm)
    return value

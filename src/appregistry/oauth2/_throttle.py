"""Throttling of failed client authentication at the OAuth endpoints, on `limits`.

A client that keeps failing to authenticate is refused with 429 before its credentials are
checked again. Failures are counted per presented app key (at the token, revocation and
introspection endpoints) and per client address (there and at the authorization endpoint,
where an invalid client or redirect URL counts), each in a moving window: a key or address
over its budget is refused until its oldest failure leaves the window, which is what
``Retry-After`` says. Successful requests cost nothing but one look-up; refused ones are not
counted again, so one app's attacker never spends another app's budget.

The counters live in process memory unless a Redis URL is configured; then every worker
process, on every host that uses that Redis, draws on one budget.

If Redis cannot be reached, the throttle counts in its process's memory until Redis answers
again (it retries every `REDIS_RETRY_SECONDS`), and logs a warning. Neither fail-closed
(refusing every client while Redis is down would turn a Redis outage, which an attacker
may cause, into an outage of every app's token endpoint) nor fail-open (which would drop
the defence exactly when it is under strain): each worker keeps its own budget meanwhile,
so the bound is the budget times the number of workers.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from .._credentials import is_importable_credential
from ._http import _Refused, _Request, _Response, error_code

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.strategies import MovingWindowRateLimiter

    from ..metrics import Metrics

__all__ = [
    "DEFAULT_ADDRESS_FAILURES",
    "DEFAULT_KEY_FAILURES",
    "REDIS_RETRY_SECONDS",
    "Throttle",
    "Throttling",
    "client_address",
]

logger = logging.getLogger("appregistry.oauth2.throttle")

#: Failed authentications one app key may have in the window before it is throttled.
DEFAULT_KEY_FAILURES: Final = "20/10 minutes"
#: Failures one client address may have: enough for a few clients behind one NAT to get
#: their secrets wrong now and then, few enough to stop a scan of keys.
DEFAULT_ADDRESS_FAILURES: Final = "100/10 minutes"
#: Seconds between attempts to reach Redis again after it failed.
REDIS_RETRY_SECONDS: Final = 5.0
#: Seconds Redis has to connect and to answer each command.
REDIS_TIMEOUT_SECONDS: Final = 0.5
# The endpoints whose clients authenticate with a key and secret.
_CLIENT_ENDPOINTS: Final = frozenset({"token", "revoke", "introspect"})
_THROTTLED_ENDPOINTS: Final = _CLIENT_ENDPOINTS | {"authorize"}
# X-Forwarded-For hops looked at, from the right, at most.
_MAX_HOPS: Final = 32
# IPv6 clients are counted per /64: one host usually has a whole /64 to pick from.
_IPV6_PREFIX: Final = 64

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _key_limit(value: str | None) -> str | None:
    return _limit(value, "key_failures")


def _address_limit(value: str | None) -> str | None:
    return _limit(value, "address_failures")


def _limit(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    from limits import parse  # noqa: PLC0415 - the oauth2 extra

    try:
        item = parse(value)
    except ValueError:
        raise ValueError(f"{field} must read like '20/10 minutes', not {value!r}") from None
    if item.amount < 1:
        raise ValueError(f"{field} must allow at least one failure")
    return value


def _networks(values: Iterable[str | _Network]) -> tuple[_Network, ...]:
    try:
        return tuple(ipaddress.ip_network(value, strict=False) for value in values)
    except ValueError as exc:
        raise ValueError(f"trusted_proxies: {exc}") from None


def _redacted(url: object) -> str:
    # The URL may carry Redis' password: a repr shows its scheme and host only.
    if not isinstance(url, str):
        return repr(url)
    parts = urllib.parse.urlsplit(url)
    return repr(f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}")


@attrs.frozen(kw_only=True)
class Throttling:
    """How the OAuth endpoints throttle failed client authentication (``throttling=``).

    `make_wsgi_app` and `make_asgi_app` throttle with ``Throttling()`` unless told otherwise;
    ``throttling=None`` turns it off.

    Attributes:
        key_failures: Failed authentications one app key may have per window, as
            `limits` reads it (``"20/10 minutes"``, ``"5 per minute"``); ``None``: no
            per-key budget. Anyone who knows a key (it is in authorization links) can spend
            its budget and hold that app's token requests off until the window passes:
            raise it, or turn it off, if that matters more than slowing a guesser down.
        address_failures: The same, per client address (IPv6 per /64); ``None``: none.
        redis_url: ``redis://host:6379/0`` (``rediss://`` for TLS): count in Redis, shared by
            every process that uses it. ``None``: in this process's memory. Needs the
            ``redis`` extra. Never shown in a repr (it may hold a password).
        key_prefix: Prefix of the throttle's Redis keys.
        trusted_proxies: Networks of reverse proxies in front of the server, such as
            ``["10.0.0.0/8"]``. Only a request from one of them has its ``X-Forwarded-For``
            read: from the right, skipping trusted hops, the first other address is the
            client's. Empty (the default): the connection's peer is the client.

    >>> Throttling(key_failures="5/minute", trusted_proxies=["10.0.0.0/8"]).key_failures
    '5/minute'
    >>> Throttling(redis_url="redis://:hunter2@cache:6379/0")
    Throttling(key_failures='20/10 minutes', ..., redis_url='redis://cache:6379', ...)
    """

    key_failures: str | None = attrs.field(default=DEFAULT_KEY_FAILURES, converter=_key_limit)
    address_failures: str | None = attrs.field(
        default=DEFAULT_ADDRESS_FAILURES, converter=_address_limit
    )
    redis_url: str | None = attrs.field(default=None, repr=_redacted)
    key_prefix: str = "appregistry-throttle"
    trusted_proxies: tuple[_Network, ...] = attrs.field(default=(), converter=_networks)


@attrs.frozen
class _Over:
    """A refusal: what was over budget and how many seconds until it is not."""

    scope: str
    retry_after: int


class Throttle:
    """The running throttle of one set of endpoints: `Throttling` with its counters."""

    def __init__(self, settings: Throttling, metrics: Metrics | None = None) -> None:
        from limits import parse  # noqa: PLC0415 - the oauth2 extra
        from limits.storage import MemoryStorage  # noqa: PLC0415
        from limits.strategies import MovingWindowRateLimiter  # noqa: PLC0415

        self.settings = settings
        self._metrics = metrics
        self._key_item: RateLimitItem | None = None
        self._address_item: RateLimitItem | None = None
        if settings.key_failures is not None:
            self._key_item = parse(settings.key_failures)
            self._key_item.namespace = "key"
        if settings.address_failures is not None:
            self._address_item = parse(settings.address_failures)
            self._address_item.namespace = "address"
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if settings.redis_url is not None:
            from limits.storage import RedisStorage  # noqa: PLC0415 - the redis extra

            storage = RedisStorage(
                settings.redis_url,
                key_prefix=settings.key_prefix,
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._shared = MovingWindowRateLimiter(storage)
        self._lock = threading.Lock()
        self._down_until = 0.0

    # -- the two hooks the endpoints call --------------------------------------------------

    def refusal(self, endpoint: str, request: _Request) -> _Refused | None:
        """The 429 refusal when ``request``'s address or presented key is over budget."""
        if endpoint not in _THROTTLED_ENDPOINTS:
            return None
        address = self.address_of(request)
        over = self._over(self._address_item, address, "address")
        if over is None and endpoint in _CLIENT_ENDPOINTS:
            for key in presented_keys(request):
                over = self._over(self._key_item, key, "key")
                if over is not None:
                    break
        if over is None:
            return None
        if self._metrics is not None:
            self._metrics.throttled(endpoint, over.scope)
        keys = [key for key in presented_keys(request) if endpoint in _CLIENT_ENDPOINTS]
        logger.warning(
            "throttled %s for app %s from %s: too many failures per %s; retry after %d s",
            endpoint,
            ", ".join(keys) or "-",
            address or "-",
            over.scope,
            over.retry_after,
        )
        # 429 (RFC 6585) with Retry-After is what every HTTP client understands; the JSON
        # endpoints answer it with "invalid_request" (RFC 6749 5.2), an error every OAuth
        # client parses. Not "slow_down" (RFC 8628's device-flow polling code, which tells a
        # device-flow client to keep polling), nor "temporarily_unavailable", registered for
        # the authorization endpoint's redirects only. The consent page answers a page.
        plural = "s" if over.retry_after != 1 else ""
        return _Refused(
            429,
            f"Too many failed attempts; retry after {over.retry_after} second{plural}.",
            (("Retry-After", str(over.retry_after)),),
        )

    def record(self, endpoint: str, request: _Request, response: _Response) -> bool:
        """Count ``response`` against the request's key and address if it is a failure.

        Returns:
            Whether it was a failure: a 401 at the client endpoints (``invalid_client``), a
            400 at the authorization endpoint (an unknown client or redirect URL).
        """
        if endpoint in _CLIENT_ENDPOINTS:
            failed = response.status == 401 or error_code(response) == "invalid_client"
        else:
            failed = endpoint == "authorize" and response.status == 400
        if not failed:
            return False
        if self._metrics is not None:
            self._metrics.authentication_failed(endpoint)
        address = self.address_of(request)
        self._hit(self._address_item, address)
        if endpoint in _CLIENT_ENDPOINTS:
            for key in presented_keys(request):
                self._hit(self._key_item, key)
        return True

    def address_of(self, request: _Request) -> str | None:
        """The address ``request`` is counted under (an IPv6 client's /64)."""
        address = client_address(
            request.client, request.forwarded_for, self.settings.trusted_proxies
        )
        if address is None:
            return None
        parsed = ipaddress.ip_address(address)
        if parsed.version == 6:
            return str(ipaddress.ip_network(f"{parsed}/{_IPV6_PREFIX}", strict=False))
        return address

    # -- counting --------------------------------------------------------------------------

    def _limiter(self) -> tuple[MovingWindowRateLimiter, bool]:
        if self._shared is not None and time.monotonic() >= self._down_until:
            return self._shared, True
        return self._local, False

    def _failed_over(self) -> None:
        with self._lock:
            first = time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if self._metrics is not None:
            self._metrics.throttle_storage_failed()
        if first:
            logger.warning(
                "throttle: Redis at %s cannot be reached; counting in this process's memory "
                "for %.0f s",
                _redacted(self.settings.redis_url),
                REDIS_RETRY_SECONDS,
            )

    def _over(self, item: RateLimitItem | None, name: str | None, scope: str) -> _Over | None:
        if item is None or name is None:
            return None
        from limits.errors import StorageError  # noqa: PLC0415

        limiter, shared = self._limiter()
        try:
            if limiter.test(item, name):
                return None
            reset, _ = limiter.get_window_stats(item, name)
        except StorageError:
            if not shared:
                raise
            self._failed_over()
            return self._over(item, name, scope)
        return _Over(scope, max(1, math.ceil(reset - time.time())))

    def _hit(self, item: RateLimitItem | None, name: str | None) -> None:
        if item is None or name is None:
            return
        from limits.errors import StorageError  # noqa: PLC0415

        limiter, shared = self._limiter()
        try:
            limiter.hit(item, name)
        except StorageError:
            if not shared:
                raise
            self._failed_over()
            self._hit(item, name)

    def clear(self) -> None:
        """Forget every count (in Redis, every key under the prefix): for tests and resets."""
        self._local.storage.reset()
        if self._shared is not None:
            self._shared.storage.reset()


def presented_keys(request: _Request) -> list[str]:
    """The well-formed app keys a request presents: by HTTP Basic, in the form, or both.

    Only well-formed keys (the alphabet and length keys have) are counted or logged; a
    malformed one names no app and is counted by address only.
    """
    keys: list[str] = []
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        key = urllib.parse.unquote(decoded.partition(":")[0])
        keys.append(key)
    if request.body:
        try:
            form = urllib.parse.parse_qsl(request.body.decode("ascii"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            form = []
        keys.extend(value for name, value in form if name == "client_id")
    seen: list[str] = []
    for key in keys:
        if is_importable_credential(key) and key not in seen:
            seen.append(key)
    return seen[:2]


def _hop(text: str) -> _Address | None:
    # One X-Forwarded-For entry: an address, or "[v6]:port" / "v4:port" as some proxies write.
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[_Network]
) -> str | None:
    """The client's address: the peer, or behind trusted proxies, from ``X-Forwarded-For``.

    The header is read only when the peer is a trusted proxy, from the right (each proxy
    appends the address it got the request from), skipping trusted hops: the first address
    that is not a trusted proxy's is the client's. What lies left of it was written by the
    client, and is never used. When every hop is trusted, the leftmost valid one is the
    client; a malformed hop ends the walk at the last trusted address seen.

    >>> proxies = [ipaddress.ip_network("10.0.0.0/8")]
    >>> client_address("10.0.0.1", "1.2.3.4, 203.0.113.9, 10.0.0.2", proxies)
    '203.0.113.9'
    >>> client_address("198.51.100.7", "1.2.3.4", proxies)
    '198.51.100.7'
    """
    address = _hop(peer) if peer is not None else None
    if address is None:
        return None
    if not forwarded_for or not any(address in network for network in trusted_proxies):
        return str(address)
    for text in reversed(forwarded_for.rsplit(",", _MAX_HOPS)[-_MAX_HOPS:]):
        hop = _hop(text)
        if hop is None:
            break
        address = hop
        if not any(hop in network for network in trusted_proxies):
            break
    return str(address)


#: The endpoints' default: failed authentications throttled in memory, per key and address.
DEFAULT_THROTTLING: Final = Throttling()

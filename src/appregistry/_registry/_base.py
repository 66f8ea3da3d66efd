"""The Registry's shared plumbing: settings, clock, transactions, events, common checks."""

from __future__ import annotations

import enum
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple, Self, TypeAlias, cast

import attrs

from .. import _credentials as cred
from .._policy import Decision, Policy
from .._records import AccessToken, App, Event, EventKind, Grant, Installation, StoredSecret
from .._validation import MAX_ACCOUNT_LENGTH, Problems
from ..errors import AppNotFound, InstallationNotFound
from ..ports import ListQuery, Storage, UnitOfWork
from ._cache import CheckCache, attach
from ._fingerprints import check_fingerprints
from ._last_use import LastUse, _Recorder, recorder

logger = logging.getLogger("appregistry")

#: A clock returns the current time as an aware datetime. Injected so tests control time.
Clock: TypeAlias = Callable[[], datetime]
#: A listener receives each `Event` after its transaction has committed.
Listener: TypeAlias = Callable[[Event], None]

#: Default lifetime of an access token (R18).
DEFAULT_TOKEN_LIFETIME: Final = timedelta(hours=1)
#: Default lifetime of an authorization code, as in the original system.
DEFAULT_CODE_LIFETIME: Final = timedelta(minutes=10)
#: Default lifetime of a refresh token; each rotation issues one that lives this long.
DEFAULT_REFRESH_TOKEN_LIFETIME: Final = timedelta(days=30)
#: Default number of apps one owner may register (R9).
DEFAULT_MAX_APPS_PER_OWNER: Final = 1000
#: Most token ids one removal may name.
MAX_TOKEN_IDS_PER_REMOVAL: Final = 1000
#: Presented tokens longer than this are unknown without being digested.
_MAX_PRESENTED_TOKEN: Final = 512
_KEY_ATTEMPTS: Final = 5
# Tokens per purge transaction. Each deleted token dirties pages that no other in its batch
# shares, so the commits, not the rows, set a purge's pace: 10 000 a batch runs at half the
# speed of one DELETE of everything or better, on every backend (docs/performance.md), and
# holds SQLite's write lock for about half a second at a time.
_DEFAULT_PURGE_BATCH: Final = 10_000
#: Larger purge batches are cut to this: a batch must stay short, and its LIMIT must fit SQL.
_MAX_PURGE_BATCH: Final = 100_000
#: How long after a secret rotation the previous secret may keep authenticating, at most.
MAX_SECRET_GRACE: Final = timedelta(days=30)
#: Default window over which failed authentications of one key are counted.
DEFAULT_FAILURE_WINDOW: Final = timedelta(minutes=15)
#: Most presented keys whose failures are counted at once; the least recent are forgotten.
_MAX_COUNTED_KEYS: Final = 100_000
_DEFAULT_REENCRYPT_BATCH: Final = 100


class _Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


#: The default of `Registry.update_app` arguments: "leave this field as it is".
UNSET: Final = _Unset.UNSET


#: The wall clock, in UTC: ``datetime.now(UTC)``. A `functools.partial` rather than a
#: function, so that a token check, which reads the clock every time, runs no Python frame
#: for it.
system_clock: Final[Callable[[], datetime]] = functools.partial(datetime.now, UTC)


class TokenCheck(NamedTuple):
    """The answer to a token check: the decision, and the token's record when it is known.

    Show callers outside only whether it is ``allowed``; ``reason`` is for logs.
    Every API request gets one, so it is an immutable named tuple, made in half the time of
    an attrs class.
    """

    decision: Decision
    token: AccessToken | None = None

    @property
    def allowed(self) -> bool:
        """Whether the token may act now."""
        return self.decision.allowed

    @property
    def reason(self) -> str:
        """The decision's reason code."""
        return self.decision.reason


class _FailureCounter:
    """Failed client authentications per presented key, counted in a window from the first.

    A key's window opens at its first failure and lasts ``window``; a failure after it opens a
    new window, counted from 1. At most ``max_keys`` keys are counted at once: past that, the
    key whose latest failure is the oldest is forgotten, so memory stays bounded however many
    keys a client invents.
    """

    def __init__(self, window: timedelta, max_keys: int) -> None:
        self._window = window
        self._max_keys = max_keys
        # In the order of each key's latest failure, so the first entry is the one to forget.
        self._counts: dict[str | None, tuple[datetime, int]] = {}
        self._lock = threading.Lock()

    def add(self, key: str | None, now: datetime) -> int:
        """Count a failure of ``key`` at ``now``; return the key's count in its window."""
        with self._lock:
            opened, count = self._counts.pop(key, (now, 0))
            # A clock that went back also opens a new window, rather than extending one.
            if not opened <= now < opened + self._window:
                opened, count = now, 0
            self._counts[key] = (opened, count + 1)
            if len(self._counts) > self._max_keys:
                del self._counts[next(iter(self._counts))]
        return count + 1


@attrs.define
class _RegistryBase:
    """What every part of `Registry` stands on: its settings, storage, clock and events.

    The parts of the domain (`_apps`, `_accounts`, `_tokens`, `_grants`) derive from it,
    and `Registry` composes them; the fields, its constructor's arguments, are documented
    there.
    """

    _storage: Storage = attrs.field(alias="storage")
    _clock: Clock = attrs.field(default=system_clock, alias="clock", kw_only=True)
    _policy: Policy = attrs.field(factory=Policy, alias="policy", kw_only=True)
    _token_lifetime: timedelta = attrs.field(
        default=DEFAULT_TOKEN_LIFETIME, alias="token_lifetime", kw_only=True
    )
    _code_lifetime: timedelta = attrs.field(
        default=DEFAULT_CODE_LIFETIME, alias="code_lifetime", kw_only=True
    )
    _refresh_token_lifetime: timedelta = attrs.field(
        default=DEFAULT_REFRESH_TOKEN_LIFETIME, alias="refresh_token_lifetime", kw_only=True
    )
    _max_apps_per_owner: int = attrs.field(
        default=DEFAULT_MAX_APPS_PER_OWNER, alias="max_apps_per_owner", kw_only=True
    )
    _pepper: bytes | Sequence[bytes | None] | None = attrs.field(
        default=None, alias="pepper", kw_only=True, repr=False
    )
    _secret_encryption_key: bytes | str | Sequence[bytes | str] | None = attrs.field(
        default=None, alias="secret_encryption_key", kw_only=True, repr=False
    )
    _failure_window: timedelta = attrs.field(
        default=DEFAULT_FAILURE_WINDOW, alias="failure_window", kw_only=True
    )
    _listeners: tuple[Listener, ...] = attrs.field(
        default=(), alias="listeners", kw_only=True, converter=tuple
    )
    _check_cache: CheckCache | None = attrs.field(default=None, alias="check_cache", kw_only=True)
    _last_use_options: LastUse | None = attrs.field(factory=LastUse, alias="last_use", kw_only=True)
    _credentials: cred.Credentials = attrs.field(init=False, repr=False)
    # Whether token checks look under older peppers too; with one pepper they cost nothing.
    _rotating_peppers: bool = attrs.field(init=False, repr=False)
    _failures: _FailureCounter = attrs.field(init=False, repr=False)
    # Records allowed checks' uses (see _last_use); None when last use is off.
    _last_use: _Recorder | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self._token_lifetime <= timedelta(0):
            raise ValueError("token_lifetime must be positive")
        if self._code_lifetime <= timedelta(0) or self._refresh_token_lifetime <= timedelta(0):
            raise ValueError("code_lifetime and refresh_token_lifetime must be positive")
        if self._max_apps_per_owner < 1:
            raise ValueError("max_apps_per_owner must be at least 1")
        if self._failure_window <= timedelta(0):
            raise ValueError("failure_window must be positive")
        self._credentials = cred.Credentials(
            pepper=self._pepper, encryption_key=self._secret_encryption_key
        )
        self._rotating_peppers = self._credentials.rotating_peppers
        self._failures = _FailureCounter(self._failure_window, _MAX_COUNTED_KEYS)
        # Before anything else touches the storage: refuse a pepper or key that is not its own.
        check_fingerprints(self._storage, self._credentials)
        # From here on, every transaction publishes what may refuse a token (see _cache).
        self._storage = attach(self._storage, self._check_cache)
        self._last_use = recorder(self._storage, self._last_use_options)

    # -- plumbing ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(_NAIVE_CLOCK)
        return now

    @contextmanager
    def _transaction(self) -> Iterator[tuple[UnitOfWork, list[Event]]]:
        events: list[Event] = []
        with self._storage.transaction() as tx:
            yield tx, events
        # Only now is the change durable: listeners never hear of a rolled-back change.
        self._emit(events)

    def _emit(self, events: Sequence[Event]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    # The change is committed; a failing audit sink must not make it look
                    # failed to the caller. It is logged loudly instead.
                    logger.exception("event listener failed on %s", event.kind)

    @staticmethod
    def _app(tx: UnitOfWork, key: str) -> App:
        app = tx.apps.get(key) if _is_id(key) else None
        if app is None:
            raise AppNotFound(str(key))
        return app

    @staticmethod
    def _installation(tx: UnitOfWork, key: str, account: str) -> Installation:
        installation = (
            tx.installations.get(key, account) if _is_id(key) and _is_id(account) else None
        )
        if installation is None:
            raise InstallationNotFound(str(key), str(account))
        return installation

    def close(self) -> None:
        """Write the pending last uses of tokens, then close the storage (and its feed)."""
        if self._last_use is not None:
            self._last_use.flush()
        self._storage.close()

    def sync_check_cache(self, timeout: float = 5.0) -> bool:
        """Wait until the check cache has seen every change committed before this call.

        For tests and benchmarks that change the registry through another process and then
        expect this one's checks to follow without waiting for the cache's bound. Without a
        check cache there is nothing to wait for.

        Returns:
            Whether the cache caught up within ``timeout`` seconds.
        """
        cache = getattr(self._storage, "cache", None)
        return True if cache is None else bool(cache.sync(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- shared by several parts ----------------------------------------------------------

    @staticmethod
    def _query(problems: Problems, search: object, page: object, per_page: object) -> ListQuery:
        folded = problems.search(search)
        good_page, good_size = problems.paging(page, per_page)
        problems.raise_if_any()
        return ListQuery(page=good_page, per_page=good_size, search=folded)

    def _secret_valid(self, stored: StoredSecret | None, secret: str, now: datetime) -> bool:
        # Whether the credentials match: the current secret, or the previous one until its
        # deadline. Decided here with the clock's ``now``; the policy hears only the answer.
        previous_valid = stored is not None and stored.previous_valid(now)
        return self._credentials.secret_matches(stored, secret, previous_valid=previous_valid)

    def _authentication_failed(self, key: object, now: datetime) -> None:
        """Count a failed client authentication of ``key`` and emit its event.

        The `EventKind.AUTHENTICATION_FAILED` event carries the presented key as
        ``app_key`` when it is well formed (32 characters of the key alphabet), else
        ``None``, and ``details={"failures": n}``: how many times that key (all malformed
        keys together, for ``None``) failed in the current window of ``failure_window``,
        counted in this process since the window opened at its first failure. A host can
        rate-limit on it. The secret is never in it.

        An unknown key and a wrong secret give the very same event, as they give the caller
        the same answer: logs shipped elsewhere must not tell which keys exist either.
        The event is emitted after the (read-only) transaction, like every other.
        """
        presented = key if isinstance(key, str) and cred.is_importable_credential(key) else None
        failures = self._failures.add(presented, now)
        details = {"failures": failures}
        self._emit([Event(EventKind.AUTHENTICATION_FAILED, now, presented, None, details)])

    def _new_access_token(
        self,
        app_key: str,
        account: str,
        grant: Grant,
        now: datetime,
        *,
        user_agent: str | None,
        family_id: str | None = None,
        approved_by: str | None = None,
    ) -> AccessToken:
        return AccessToken(
            token_id=cred.generate_token_id(),
            app_key=app_key,
            account=account,
            grant=grant,
            issued_at=now,
            expires_at=now + self._token_lifetime,
            user_agent=user_agent,
            family_id=family_id,
            approved_by=approved_by,
        )


_NAIVE_CLOCK: Final = "the clock must return an aware datetime (with a tzinfo)"


def _identifiers(**values: object) -> list[str]:
    # The ids, checked as `Problems.identifier` checks them; every problem raised at once.
    problems = Problems()
    checked = [problems.identifier(field, value) for field, value in values.items()]
    problems.raise_if_any()
    return cast(list[str], checked)


def _nonzero(**counts: int) -> dict[str, int]:
    return {name: count for name, count in counts.items() if count}


def _remove_grants(
    tx: UnitOfWork, key: str, account: str | None = None
) -> tuple[int, dict[str, int]]:
    """Remove the app's access tokens, codes and refresh tokens (on ``account`` only, if given).

    Returns how many access tokens went, and the event details for the codes and refresh
    tokens: only those there were, so the details of hosts that use no OAuth grants stay as
    they were.
    """
    if account is None:
        tokens = tx.tokens.remove_all_of_app(key)
        codes = tx.codes.remove_all_of_app(key)
        refresh = tx.refresh_tokens.remove_all_of_app(key)
    else:
        tokens = tx.tokens.remove_for(key, account)
        codes = tx.codes.remove_for(key, account)
        refresh = tx.refresh_tokens.remove_for(key, account)
    return tokens, _nonzero(codes_removed=codes, refresh_tokens_removed=refresh)


def _is_text(value: object) -> bool:
    # Public entry points check types at run time too: hosts pass through outside input.
    return isinstance(value, str)


def _is_id(value: object) -> bool:
    # What storage can hold and look up: text that encodes as UTF-8 (no lone surrogates) and
    # has no NUL (PostgreSQL refuses it), no longer than the longest id stored (accounts, at
    # MAX_ACCOUNT_LENGTH; keys and token ids are shorter). Anything else names nothing, and
    # must not reach a driver, which would fail with its own error instead of NotFound.
    if not isinstance(value, str) or len(value) > MAX_ACCOUNT_LENGTH or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

"""The token-check cache, and the change feed every Registry publishes into.

A token check reads one row set from storage (S3). With `CheckCache`, a Registry keeps what
it read in process memory, keyed by the token's digest, and answers the next check of the
same token from there: the policy still runs on every check, against the clock of that
moment, so expiry is never cached. What can make an allowed token refused (a disabled or
removed app, a new secret, a suspension, a withdrawn permission, removed tokens) is published
by whichever process commits it on the storage's `appregistry.ports.ChangeFeed`, and every
cache drops what the change touches.

Every Registry on a storage with a feed publishes, with a cache or without, so that a CLI
run or an admin page in another process is seen by the servers that cache. The publishing
is done here, generically, by watching the repository calls of each transaction: a backend
only carries the messages (`ChangeFeed`), it decides nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias, cast

import attrs

from .._records import AccessToken, AppsPermission, Installation, StoredSecret, TokenContext
from ..ports import ChangeFeed, ChangeSubscription, Scope, Storage, UnitOfWork

logger = logging.getLogger("appregistry.cache")

ALL: Final[Scope] = ("all",)
#: What an entry is found by: the token's digest, or its digests under every pepper.
_Key: TypeAlias = bytes | tuple[bytes, ...]
_monotonic: Final = time.monotonic


def _positive(_: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class CheckCache:
    """Keep token checks' storage reads in process memory; pass one as ``check_cache``.

    A check answered from the cache costs a dictionary lookup and the policy instead of a
    storage round trip. The cache never changes an answer beyond its bound: the longest a
    token can still be allowed after a change that refuses it has committed in any process
    is the feed's delivery time (PostgreSQL: a few milliseconds; SQLite: ``poll_interval``),
    and never more than ``max_age``, even if the feed went silent without a sign. Unknown
    tokens are never cached, so a token issued anywhere is accepted everywhere at once.
    While the feed is lost (PostgreSQL's listening connection dropped), the cache is
    emptied and bypassed until it is back.

    Args:
        max_entries: How many tokens' reads are kept; the oldest go first.
        max_age: The backstop: a read older than this is read again.
        poll_interval: For a polled feed (SQLite), the longest time between two looks at
            the change log; each look costs a few microseconds.

    >>> CheckCache(max_entries=10_000).max_age
    datetime.timedelta(seconds=60)
    """

    max_entries: int = attrs.field(default=100_000)
    max_age: timedelta = attrs.field(default=timedelta(seconds=60), validator=_positive)
    poll_interval: timedelta = attrs.field(default=timedelta(milliseconds=5), validator=_positive)

    @max_entries.validator
    def _check_entries(self, _: object, value: int) -> None:
        if value < 1:
            raise ValueError("max_entries must be at least 1")


def attach(storage: Storage, cache: CheckCache | None) -> Storage:
    """``storage`` as the Registry uses it: publishing changes, and caching if asked."""
    factory = getattr(storage, "change_feed", None)
    if factory is None:
        if cache is not None:
            raise TypeError(
                f"check_cache needs a storage with a change feed; {type(storage).__name__} "
                "has none (see appregistry.ports.ChangeFeed)"
            )
        return storage
    return _ChangeAwareStorage(storage, cast(ChangeFeed, factory()), cache)


class _ChangeAwareStorage:
    """A `Storage` that publishes each transaction's changes, and serves checks from a cache."""

    def __init__(self, storage: Storage, feed: ChangeFeed, options: CheckCache | None) -> None:
        self._storage = storage
        self._feed = feed
        self.cache = None if options is None else _Cache(storage, feed, options)
        # Without a cache a check goes straight to the backend: not even a frame is added.
        self.token_context: Callable[..., TokenContext | None] = (
            storage.token_context if self.cache is None else self.cache.token_context
        )

    def __repr__(self) -> str:
        return repr(self._storage)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        scopes: set[Scope] = set()
        with self._storage.transaction() as tx:
            yield cast(UnitOfWork, _RecordingUnit(tx, scopes))
            if scopes:
                self._feed.publish(tx, scopes)
        if scopes and self.cache is not None:
            # This process's own change is dropped at once, not when the feed brings it back.
            self.cache.deliver(scopes)

    def __getattr__(self, name: str) -> Any:
        # The backend's own attributes (``path``, ``change_feed``...), for hosts and tests.
        return getattr(self._storage, name)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self._storage.close()


class _Cache:
    """Token contexts by digest, with the indexes a change's scopes are dropped by."""

    def __init__(self, storage: Storage, feed: ChangeFeed, options: CheckCache) -> None:
        self._read = storage.token_context
        self._max_entries = options.max_entries
        self._max_age = options.max_age.total_seconds()
        self._entries: OrderedDict[_Key, tuple[TokenContext, float]] = OrderedDict()
        self._by_app: dict[str, set[_Key]] = {}
        self._by_account: dict[str, set[_Key]] = {}
        self._by_token: dict[str, _Key] = {}
        self._by_family: dict[str, set[_Key]] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        # Bumped by every delivery: a read that started before one is not kept (see _miss).
        self._generation = 0
        self._live = False
        self._subscription: ChangeSubscription = feed.subscribe(self.deliver)
        self._polled = self._subscription.polled
        self._poll_every = options.poll_interval.total_seconds()
        self._next_poll = 0.0 if self._polled else math.inf

    # -- the check ----------------------------------------------------------------------------

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        now = _monotonic()
        if now >= self._next_poll:
            self._poll(now)
        # Keyed by every digest looked under: a read under several peppers is not the answer
        # for a registry that knows only the newest (one cache may serve several registries).
        key = (digest, *older) if older else digest
        entry = self._entries.get(key)
        if entry is not None and now < entry[1]:
            return entry[0]
        return self._miss(key, digest, older, now)

    def _miss(
        self, key: _Key, digest: bytes, older: Sequence[bytes], now: float
    ) -> TokenContext | None:
        generation = self._generation
        context = self._read(digest, *older)
        # Only what is known is kept: an unknown token may be issued a moment later.
        if context is not None and self._live:
            with self._lock:
                # A change delivered while reading may have come after the read's snapshot:
                # keep the read only if nothing was delivered meanwhile.
                if generation == self._generation and self._live:
                    self._insert(key, context, now + self._max_age)
        return context

    def read_through(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """Read from storage, dropping what the cache held for these digests."""
        key = (digest, *older) if older else digest
        with self._lock:
            self._generation += 1  # a read of the old entry in flight must not come back
            self._drop(key)
        return self._read(digest, *older)

    def _poll(self, now: float) -> None:
        with self._poll_lock:
            if now < self._next_poll:
                return  # another thread polled meanwhile
            try:
                self._subscription.poll()
            except Exception:
                logger.exception("reading the change feed failed; the check cache is bypassed")
                self.deliver(None)
            self._next_poll = _monotonic() + self._poll_every

    def sync(self, timeout: float) -> bool:
        if not self._subscription.sync(timeout):
            return False
        if self._polled:
            self._next_poll = 0.0
        return True

    # -- what changes deliver -------------------------------------------------------------------

    def deliver(self, scopes: Collection[Scope] | None) -> None:
        with self._lock:
            self._generation += 1
            if scopes is None:
                self._live = False
                self._clear()
                return
            for scope in scopes:
                self._drop_scope(scope)

    def _drop_scope(self, scope: Scope) -> None:
        kind = scope[0]
        if kind == "all":
            self._clear()
            self._live = True
        elif kind == "app":
            self._drop_all(self._by_app.get(scope[1], ()))
        elif kind == "account":
            self._drop_all(self._by_account.get(scope[1], ()))
        elif kind == "installation":
            entries = self._entries
            for digest in list(self._by_app.get(scope[1], ())):
                if entries[digest][0].token.account == scope[2]:
                    self._drop(digest)
        elif kind == "token":
            found = self._by_token.get(scope[1])
            if found is not None:
                self._drop(found)
        elif kind == "family":
            self._drop_all(self._by_family.get(scope[1], ()))
        else:
            # A scope from a newer version: drop everything rather than guess.
            self._clear()

    # -- the entries and their indexes (under the lock) ----------------------------------------

    def _insert(self, digest: _Key, context: TokenContext, deadline: float) -> None:
        if digest in self._entries:
            self._drop(digest)
        elif len(self._entries) >= self._max_entries:
            self._drop(next(iter(self._entries)))
        self._entries[digest] = (context, deadline)
        token = context.token
        self._by_app.setdefault(token.app_key, set()).add(digest)
        self._by_account.setdefault(token.account, set()).add(digest)
        self._by_token[token.token_id] = digest
        if token.family_id is not None:
            self._by_family.setdefault(token.family_id, set()).add(digest)

    def _drop_all(self, digests: Collection[_Key]) -> None:
        for digest in list(digests):
            self._drop(digest)

    def _drop(self, digest: _Key) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        token = entry[0].token
        _discard(self._by_app, token.app_key, digest)
        _discard(self._by_account, token.account, digest)
        if self._by_token.get(token.token_id) == digest:
            del self._by_token[token.token_id]
        if token.family_id is not None:
            _discard(self._by_family, token.family_id, digest)

    def _clear(self) -> None:
        self._entries.clear()
        self._by_app.clear()
        self._by_account.clear()
        self._by_token.clear()
        self._by_family.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._subscription.close()
        with self._lock:
            self._live = False
            self._clear()


def _discard(index: dict[str, set[_Key]], name: str, digest: _Key) -> None:
    digests = index.get(name)
    if digests is not None:
        digests.discard(digest)
        if not digests:
            del index[name]


# -- recording a transaction's changes ----------------------------------------------------------


class _RecordingUnit:
    """A unit of work whose writes that may refuse a token add their scopes to ``scopes``.

    Writes that cannot refuse one (a new app or token, a code, a refresh token, a purge of
    expired rows: expiry is judged at each check; a previous secret cleared past its grace
    deadline: no token check reads it, and client authentication is never cached; the last
    uses of tokens) pass through unrecorded.
    """

    def __init__(self, tx: UnitOfWork, scopes: set[Scope]) -> None:
        self._tx = tx
        self.apps = _Apps(tx.apps, scopes)
        self.permissions = _Permissions(tx.permissions, scopes)
        self.installations = _Installations(tx.installations, scopes)
        self.tokens = _Tokens(tx.tokens, scopes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


class _Recording:
    def __init__(self, inner: Any, scopes: set[Scope]) -> None:
        self._inner = inner
        self._scopes = scopes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Apps(_Recording):
    def update(self, app: Any) -> None:
        self._scopes.add(("app", app.key))
        self._inner.update(app)

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        self._scopes.add(("app", key))
        self._inner.set_secret(key, secret)

    def remove(self, key: str) -> None:
        self._scopes.add(("app", key))
        self._inner.remove(key)


class _Permissions(_Recording):
    def put(self, permission: AppsPermission) -> None:
        self._scopes.add(("account", permission.account))
        self._inner.put(permission)

    def remove(self, account: str) -> None:
        self._scopes.add(("account", account))
        self._inner.remove(account)


class _Installations(_Recording):
    def put(self, installation: Installation) -> None:
        self._scopes.add(("installation", installation.app_key, installation.account))
        self._inner.put(installation)

    def remove(self, app_key: str, account: str) -> None:
        self._scopes.add(("installation", app_key, account))
        self._inner.remove(app_key, account)

    def remove_all_of_app(self, app_key: str) -> int:
        self._scopes.add(("app", app_key))
        return cast(int, self._inner.remove_all_of_app(app_key))


class _Tokens(_Recording):
    def remove(self, token_ids: Collection[str]) -> int:
        self._scopes.update(("token", token_id) for token_id in token_ids)
        return cast(int, self._inner.remove(token_ids))

    def remove_family(self, family_id: str) -> int:
        self._scopes.add(("family", family_id))
        return cast(int, self._inner.remove_family(family_id))

    def remove_for(self, app_key: str, account: str) -> int:
        self._scopes.add(("installation", app_key, account))
        return cast(int, self._inner.remove_for(app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        self._scopes.add(("app", app_key))
        return cast(int, self._inner.remove_all_of_app(app_key))

    def add(self, token: AccessToken, digest: bytes) -> None:
        # Not a refusing change; spelled out because every issue comes through here.
        self._inner.add(token, digest)

    def record_uses(self, uses: Mapping[str, datetime]) -> None:
        # Not a refusing change either (no scope, so nothing is published): a last use
        # refuses nothing, and the caches' stale copies of it are harmless (see _last_use).
        self._inner.record_uses(uses)

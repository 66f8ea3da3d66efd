"""The in-memory backend: for tests, demos and hosts that keep nothing across restarts.

It honours the same contract as the SQL backends: one lock serializes transactions and token
checks (so nobody sees another transaction half done), and every change is journaled so a
transaction that raises is undone completely.

It stays one module of about 850 lines on purpose: it is the reference a third-party backend is
read against, port by port, beside `appregistry.testing.contract`, and its repositories share
one lock and one undo journal that a split would have to pass between modules.

>>> storage = MemoryStorage()
>>> with storage.transaction() as tx:
...     tx.permissions.get("acme") is None
True
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, cast

import attrs

from .._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Installation,
    InstallationListing,
    Page,
    RefreshToken,
    StoredSecret,
    TokenContext,
)
from .._validation import search_text
from ..errors import StorageError
from ..ports import NEVER_USED, ListQuery, Position, TokenOrder
from ._changes import InProcessFeed

__all__ = ["MemoryStorage"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_MISSING: Final[Any] = object()

Pair = tuple[str, str]

# Builds a TokenContext from a tuple in C: the named tuple's own __new__ is a Python
# function, and every token check makes one.
_token_context: Final[Callable[[tuple[Any, ...]], TokenContext]] = functools.partial(
    tuple.__new__, TokenContext
)


#: A journal entry: a key's old value in a mapping (`_MISSING`: it had none), or an undo function.
_Undo = tuple[MutableMapping[Any, Any], object, object] | Callable[[], object]


class _Journal:
    """Records the old value of every key a transaction touches, to undo them on rollback.

    Bulk changes record one undo function instead (`on_rollback`): an entry per key written
    would cost more than the writes themselves.
    """

    def __init__(self) -> None:
        self._entries: list[_Undo] = []

    def set(self, mapping: MutableMapping[K, V], key: K, value: V) -> None:
        self._entries.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def delete(self, mapping: MutableMapping[K, V], key: K) -> V | None:
        old = mapping.get(key, _MISSING)
        if old is _MISSING:
            return None
        self._entries.append((mapping, key, old))
        del mapping[key]
        return old  # type: ignore[no-any-return]

    def on_rollback(self, undo: Callable[[], object]) -> None:
        """Call ``undo`` on rollback, in its turn: after undoing what was journaled later."""
        self._entries.append(undo)

    def rollback(self) -> None:
        for entry in reversed(self._entries):
            if callable(entry):
                entry()
                continue
            mapping, key, old = entry
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        self._entries.clear()

    def commit(self) -> None:
        self._entries.clear()


class _Data:
    """All the state, with the indexes the queries need."""

    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        self.secrets: dict[str, StoredSecret] = {}
        self.owned: dict[str, dict[str, None]] = {}  # owner -> app keys
        self.permissions: dict[str, AppsPermission] = {}
        self.installations: dict[Pair, Installation] = {}
        self.installed: dict[str, dict[str, None]] = {}  # app key -> accounts
        self.tokens: dict[str, AccessToken] = {}  # token id -> token
        self.digests: dict[str, bytes] = {}  # token id -> digest
        self.by_digest: dict[bytes, AccessToken] = {}
        self.by_pair: dict[Pair, dict[str, None]] = {}  # (app, account) -> token ids
        # Whole second of expiry -> token ids: a purge finds expired tokens without looking
        # at the live ones.
        self.by_expiry: dict[int, dict[str, None]] = {}
        self.by_family: dict[str, dict[str, None]] = {}  # family id -> token ids
        self.retired: dict[str, None] = {}  # keys of removed apps (R13)
        self.codes: dict[bytes, AuthorizationCode] = {}  # digest -> code
        self.refresh: dict[str, RefreshToken] = {}  # token id -> refresh token
        self.refresh_digests: dict[str, bytes] = {}  # token id -> digest
        self.refresh_by_digest: dict[bytes, str] = {}  # digest -> token id
        # As for access tokens: refresh tokens live for weeks, so there are many of them, and
        # neither a purge nor a family's revocation should look at them all.
        self.refresh_by_expiry: dict[int, dict[str, None]] = {}
        self.refresh_by_family: dict[str, dict[str, None]] = {}
        self.settings: dict[str, bytes] = {}  # name -> value (see ports.SettingsRepository)


def _second(when: datetime) -> int:
    return math.floor(when.timestamp())


def _discard(index: dict[K, dict[str, None]], key: K, member: str) -> None:
    """Take ``member`` out of ``index[key]``, and the key too once it has no members."""
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]


def _restore_tokens(data: _Data, removed: list[tuple[AccessToken, bytes]]) -> None:
    """Put back tokens that `_Unit.drop_tokens` removed, indexes and all (a rollback)."""
    for token, digest in removed:
        token_id = token.token_id
        data.tokens[token_id] = token
        data.digests[token_id] = digest
        data.by_digest[digest] = token
        data.by_pair.setdefault((token.app_key, token.account), {})[token_id] = None
        data.by_expiry.setdefault(_second(token.expires_at), {})[token_id] = None
        if token.family_id is not None:
            data.by_family.setdefault(token.family_id, {})[token_id] = None


def _page(items: list[T], query: ListQuery, position: Callable[[T], Position]) -> Page[T]:
    """The page ``query`` asks for of ``items``, which are sorted by ``position``."""
    if query.after is not None:
        start = bisect.bisect_right(items, query.after, key=position)
        chosen = items[start : start + query.per_page]
    elif query.before is not None:
        end = bisect.bisect_left(items, query.before, key=position)
        chosen = items[max(0, end - query.per_page) : end]
    else:
        chosen = items[query.offset : query.offset + query.per_page]
    return Page(tuple(chosen), len(items), query.page, query.per_page)


def _matches(query: ListQuery, *texts: str | None) -> bool:
    return query.search is None or query.search in search_text(*texts)


def _matches_id(query: ListQuery, account: str) -> bool:
    # Account ids are matched ignoring the case of ASCII letters only, as SQL's lower() in
    # the "C" locale does: ids are the host's, not prose.
    return query.search is None or _ascii_lower(query.search) in _ascii_lower(account)


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _app_order(app: App) -> tuple[str, str]:
    return (app.name.casefold(), app.key)


def _listing_order(listing: AppListing | InstallationListing) -> tuple[str, str]:
    return _app_order(listing.app)


def _used(token: AccessToken, at: datetime) -> AccessToken:
    """``token`` last used ``at``: `attrs.evolve`, at 40% of its cost (a use is a check's)."""
    # Positional, every field: tests/test_memory.py checks this against attrs.evolve with
    # every field set, so a new field cannot be dropped here unnoticed.
    return AccessToken(
        token.token_id,
        token.app_key,
        token.account,
        token.grant,
        token.issued_at,
        token.expires_at,
        token.user_agent,
        token.family_id,
        token.approved_by,
        at,
    )


def _token_order(token: AccessToken) -> tuple[datetime, str]:
    return (token.expires_at, token.token_id)


def _account_token_order(token: AccessToken) -> tuple[str, datetime, str]:
    return (token.account, token.expires_at, token.token_id)


# TokenOrder.LAST_USED sorts on time before _LATEST: ascending, as bisect needs, for a list
# whose times descend. Positions are turned the same way (`_by_use`).
_LATEST: Final = datetime.max.replace(tzinfo=UTC)


def _use_order(token: AccessToken) -> Position:
    return cast(Position, (_LATEST - (token.last_used_at or NEVER_USED), token.token_id))


def _account_use_order(token: AccessToken) -> Position:
    return (token.account, *_use_order(token))


def _by_use(position: Position | None) -> Position | None:
    if position is None:
        return None
    return cast(Position, tuple(_LATEST - v if isinstance(v, datetime) else v for v in position))


class _Unit:
    """One transaction's view: every write goes through the journal."""

    def __init__(self, data: _Data, journal: _Journal) -> None:
        self._data = data
        self._journal = journal

    # The repositories are made when first used: most transactions use one or two.

    @functools.cached_property
    def apps(self) -> _Apps:
        return _Apps(self)

    @functools.cached_property
    def permissions(self) -> _Permissions:
        return _Permissions(self)

    @functools.cached_property
    def installations(self) -> _Installations:
        return _Installations(self)

    @functools.cached_property
    def tokens(self) -> _Tokens:
        return _Tokens(self)

    @functools.cached_property
    def codes(self) -> _Codes:
        return _Codes(self)

    @functools.cached_property
    def refresh_tokens(self) -> _RefreshTokens:
        return _RefreshTokens(self)

    @functools.cached_property
    def settings(self) -> _Settings:
        return _Settings(self)

    def add_to_index(self, index: dict[K, dict[str, None]], key: K, member: str) -> None:
        members = index.get(key)
        if members is None:
            members = {}
            self._journal.set(index, key, members)
        self._journal.set(members, member, None)

    def drop_from_index(self, index: dict[K, dict[str, None]], key: K, member: str) -> None:
        members = index.get(key)
        if members is not None:
            self._journal.delete(members, member)
            if not members:
                self._journal.delete(index, key)

    def drop_tokens(self, token_ids: Iterable[str], *, whole_seconds: Collection[int] = ()) -> int:
        """Remove these access tokens (unknown and repeated ids are skipped); how many went.

        ``whole_seconds`` are expiry seconds all of whose tokens are in ``token_ids``, and
        none of their other ones: their buckets go whole, rather than token by token. One
        journal entry undoes all the tokens (a purge removes up to 100 000 in a
        transaction), and one more each bucket.
        """
        data = self._data
        tokens, digests, by_digest = data.tokens, data.digests, data.by_digest
        by_pair, by_expiry, by_family = data.by_pair, data.by_expiry, data.by_family
        removed: list[tuple[AccessToken, bytes]] = []
        for token_id in token_ids:
            token = tokens.pop(token_id, None)
            if token is None:
                continue
            digest = digests.pop(token_id)
            del by_digest[digest]
            removed.append((token, digest))
            _discard(by_pair, (token.app_key, token.account), token_id)
            if not whole_seconds:
                _discard(by_expiry, _second(token.expires_at), token_id)
            if token.family_id is not None:
                _discard(by_family, token.family_id, token_id)
        if removed:
            self._journal.on_rollback(functools.partial(_restore_tokens, data, removed))
        for second in whole_seconds:
            self._journal.delete(by_expiry, second)
        return len(removed)

    def drop_refresh(self, token_id: str) -> bool:
        data, journal = self._data, self._journal
        token = journal.delete(data.refresh, token_id)
        if token is None:
            return False
        digest = journal.delete(data.refresh_digests, token_id)
        if digest is not None:
            journal.delete(data.refresh_by_digest, digest)
        self.drop_from_index(data.refresh_by_expiry, _second(token.expires_at), token_id)
        self.drop_from_index(data.refresh_by_family, token.family_id, token_id)
        return True


class _Apps:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._data = unit._data
        self._journal = unit._journal

    def get(self, key: str) -> App | None:
        return self._data.apps.get(key)

    def get_secret(self, key: str) -> StoredSecret | None:
        return self._data.secrets.get(key)

    def get_context(self, key: str, account: str | None) -> AppContext | None:
        data = self._data
        app = data.apps.get(key)
        if app is None:
            return None
        acting_for = app.owner if account is None else account
        return AppContext(
            app,
            data.secrets[key],
            acting_for,
            data.installations.get((key, acting_for)),
            data.permissions.get(acting_for),
        )

    def add(self, app: App, secret: StoredSecret) -> None:
        if app.key in self._data.apps:
            raise StorageError(f"an app with key {app.key!r} already exists")
        self._journal.set(self._data.apps, app.key, app)
        self._journal.set(self._data.secrets, app.key, secret)
        self._unit.add_to_index(self._data.owned, app.owner, app.key)

    def update(self, app: App) -> None:
        old = self._data.apps.get(app.key)
        if old is None:
            return
        self._journal.set(self._data.apps, app.key, app)
        if old.owner != app.owner:
            self._unit.drop_from_index(self._data.owned, old.owner, app.key)
            self._unit.add_to_index(self._data.owned, app.owner, app.key)

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        if key in self._data.apps:
            self._journal.set(self._data.secrets, key, secret)

    def list_secrets(self, *, after: str | None, limit: int) -> list[tuple[str, StoredSecret]]:
        secrets = self._data.secrets
        keys = heapq.nsmallest(limit, (k for k in secrets if after is None or k > after))
        return [(key, secrets[key]) for key in keys]

    def count_expired_grace(self, *, now: datetime) -> int:
        return sum(1 for _ in self._expired_grace(now))

    def purge_expired_grace(self, *, now: datetime, limit: int) -> int:
        secrets = self._data.secrets
        keys = list(itertools.islice(self._expired_grace(now), limit))
        for key in keys:
            cleared = attrs.evolve(secrets[key], previous_digest=None, previous_valid_until=None)
            self._journal.set(secrets, key, cleared)
        return len(keys)

    def _expired_grace(self, now: datetime) -> Iterator[str]:
        # Apps are few, so every secret is looked at; the SQL backends use an index.
        for key, secret in self._data.secrets.items():
            until = secret.previous_valid_until
            if until is not None and until <= now:
                yield key

    def remove(self, key: str) -> None:
        app = self._journal.delete(self._data.apps, key)
        if app is not None:
            self._journal.delete(self._data.secrets, key)
            self._unit.drop_from_index(self._data.owned, app.owner, key)
            self._journal.set(self._data.retired, key, None)

    def key_retired(self, key: str) -> bool:
        return key in self._data.retired

    def count_owned(self, owner: str) -> int:
        return len(self._data.owned.get(owner, ()))

    def list(self, query: ListQuery, *, owner: str | None = None) -> Page[AppListing]:
        data = self._data
        if owner is None:
            candidates: Collection[str] = data.apps.keys()
        else:
            candidates = data.owned.get(owner, {}).keys()
        found = sorted(
            (
                data.apps[key]
                for key in candidates
                if _matches(query, data.apps[key].name, data.apps[key].description)
            ),
            key=_app_order,
        )
        page = _page(found, query, _app_order)
        items = [AppListing(app, len(data.installed.get(app.key, ()))) for app in page.items]
        return Page(tuple(items), page.total, query.page, query.per_page)


class _Permissions:
    def __init__(self, unit: _Unit) -> None:
        self._data = unit._data
        self._journal = unit._journal

    def get(self, account: str) -> AppsPermission | None:
        return self._data.permissions.get(account)

    def put(self, permission: AppsPermission) -> None:
        self._journal.set(self._data.permissions, permission.account, permission)

    def remove(self, account: str) -> None:
        self._journal.delete(self._data.permissions, account)

    def list(self, query: ListQuery) -> Page[AppsPermission]:
        found = sorted(
            (p for p in self._data.permissions.values() if _matches_id(query, p.account)),
            key=lambda p: p.account,
        )
        return _page(found, query, lambda p: (p.account,))


class _Installations:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._data = unit._data
        self._journal = unit._journal

    def get(self, app_key: str, account: str) -> Installation | None:
        return self._data.installations.get((app_key, account))

    def put(self, installation: Installation) -> None:
        pair = (installation.app_key, installation.account)
        self._journal.set(self._data.installations, pair, installation)
        self._unit.add_to_index(self._data.installed, installation.app_key, installation.account)

    def remove(self, app_key: str, account: str) -> None:
        if self._journal.delete(self._data.installations, (app_key, account)) is not None:
            self._unit.drop_from_index(self._data.installed, app_key, account)

    def remove_all_of_app(self, app_key: str) -> int:
        accounts = list(self._data.installed.get(app_key, ()))
        for account in accounts:
            self.remove(app_key, account)
        return len(accounts)

    def list(self, account: str, query: ListQuery, *, now: datetime) -> Page[InstallationListing]:
        data = self._data
        tokens = self._unit.tokens
        # The access-token counts are made for the page's entries only; 0 stands in.
        rows: list[InstallationListing] = []
        for (app_key, holder), installation in data.installations.items():
            app = data.apps.get(app_key)
            if holder == account and app is not None:
                rows.append(InstallationListing(installation, app, 0))
        # The account's own apps, not installed on it, with live (client-credentials) tokens.
        rows.extend(
            InstallationListing(None, data.apps[app_key], 0)
            for app_key in data.owned.get(account, ())
            if (app_key, account) not in data.installations
            and any(tokens._live(app_key, account, now))
        )
        found = sorted(
            (row for row in rows if _matches(query, row.app.name, row.app.description)),
            key=_listing_order,
        )
        page = _page(found, query, _listing_order)
        items = [
            attrs.evolve(row, access_tokens=tokens.count_live(row.app.key, account, now=now))
            for row in page.items
        ]
        return Page(tuple(items), page.total, query.page, query.per_page)

    def list_for_app(self, app_key: str, query: ListQuery) -> Page[Installation]:
        data = self._data
        found = sorted(
            (
                data.installations[app_key, account]
                for account in data.installed.get(app_key, ())
                if _matches_id(query, account)
            ),
            key=lambda installation: installation.account,
        )
        return _page(found, query, lambda installation: (installation.account,))


class _Tokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._data = unit._data
        self._journal = unit._journal

    def add(self, token: AccessToken, digest: bytes) -> None:
        data = self._data
        if token.token_id in data.tokens or digest in data.by_digest:
            raise StorageError(f"an access token with id {token.token_id!r} already exists")
        self._journal.set(data.tokens, token.token_id, token)
        self._journal.set(data.digests, token.token_id, digest)
        self._journal.set(data.by_digest, digest, token)
        self._unit.add_to_index(data.by_pair, (token.app_key, token.account), token.token_id)
        self._unit.add_to_index(data.by_expiry, _second(token.expires_at), token.token_id)
        if token.family_id is not None:
            self._unit.add_to_index(data.by_family, token.family_id, token.token_id)

    def get(self, token_id: str) -> AccessToken | None:
        return self._data.tokens.get(token_id)

    def get_by_digest(self, digest: bytes) -> AccessToken | None:
        return self._data.by_digest.get(digest)

    def remove(self, token_ids: Collection[str]) -> int:
        return self._unit.drop_tokens(token_ids)

    def remove_family(self, family_id: str) -> int:
        return self.remove(list(self._data.by_family.get(family_id, ())))

    def remove_for(self, app_key: str, account: str) -> int:
        return self.remove(list(self._data.by_pair.get((app_key, account), ())))

    def remove_all_of_app(self, app_key: str) -> int:
        ids = [tid for tid, token in self._data.tokens.items() if token.app_key == app_key]
        return self.remove(ids)

    def _live(self, app_key: str, account: str, now: datetime) -> Iterator[AccessToken]:
        data = self._data
        for token_id in data.by_pair.get((app_key, account), ()):
            token = data.tokens[token_id]
            if not token.is_expired(now):
                yield token

    def count_live(self, app_key: str, account: str, *, now: datetime) -> int:
        return sum(1 for _ in self._live(app_key, account, now))

    def list(
        self,
        app_key: str,
        account: str | None,
        query: ListQuery,
        *,
        now: datetime,
        order: TokenOrder = TokenOrder.EXPIRES,
    ) -> Page[AccessToken]:
        position: Callable[[AccessToken], Position] = _token_order
        if account is None:
            accounts = [pair[1] for pair in self._data.by_pair if pair[0] == app_key]
            position = _account_token_order
        else:
            accounts = [account]
        if order == TokenOrder.LAST_USED:
            position = _use_order if account is not None else _account_use_order
            query = attrs.evolve(query, after=_by_use(query.after), before=_by_use(query.before))
        found = sorted(
            (
                token
                for holder in accounts
                for token in self._live(app_key, holder, now)
                if _matches(query, token.user_agent)
            ),
            key=position,
        )
        return _page(found, query, position)

    def record_uses(self, uses: Mapping[str, datetime]) -> None:
        data, journal = self._data, self._journal
        for token_id, at in uses.items():
            token = data.tokens.get(token_id)
            if token is None or (token.last_used_at is not None and token.last_used_at >= at):
                continue
            used = _used(token, at)
            journal.set(data.tokens, token_id, used)
            journal.set(data.by_digest, data.digests[token_id], used)

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        # Only the seconds that have begun are looked in, soonest first: the cost grows with
        # the batch, not with the live tokens. A second that has passed holds only expired
        # tokens, and goes whole when the batch has room for it.
        data = self._data
        whole: list[str] = []
        whole_seconds: list[int] = []
        some: list[str] = []
        cutoff = now.timestamp()
        for second in sorted(s for s in data.by_expiry if s <= cutoff):
            room = limit - len(whole) - len(some)
            if room <= 0:
                break
            bucket = data.by_expiry[second]
            # Timestamps are floats, but rounding keeps their order: a token in a second
            # that has wholly passed has expired.
            if second + 1 <= cutoff and len(bucket) <= room:
                whole.extend(bucket)
                whole_seconds.append(second)
            elif second + 1 <= cutoff:
                some.extend(itertools.islice(bucket, room))
            else:
                tokens = data.tokens
                expired = (tid for tid in bucket if tokens[tid].is_expired(now))
                some.extend(itertools.islice(expired, room))
        unit = self._unit
        return unit.drop_tokens(whole, whole_seconds=whole_seconds) + unit.drop_tokens(some)

    def count_expired(self, *, now: datetime) -> int:
        return _count_expired(self._data.by_expiry, self._data.tokens, now)


class _Codes:
    def __init__(self, unit: _Unit) -> None:
        self._data = unit._data
        self._journal = unit._journal

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        if digest in self._data.codes:
            raise StorageError("an authorization code with this digest already exists")
        self._journal.set(self._data.codes, digest, code)

    def redeem(self, digest: bytes, *, at: datetime, family_id: str) -> AuthorizationCode | None:
        # The storage lock serializes transactions, so only one of them finds it unused.
        code = self._data.codes.get(digest)
        if code is not None and code.used_at is None:
            used = attrs.evolve(code, used_at=at, family_id=family_id)
            self._journal.set(self._data.codes, digest, used)
        return code

    def _remove_where(self, wanted: Callable[[AuthorizationCode], bool], limit: int) -> int:
        doomed: list[bytes] = []
        for digest, code in self._data.codes.items():
            if len(doomed) >= limit:
                break
            if wanted(code):
                doomed.append(digest)
        for digest in doomed:
            self._journal.delete(self._data.codes, digest)
        return len(doomed)

    def remove_for(self, app_key: str, account: str) -> int:
        return self._remove_where(
            lambda c: c.app_key == app_key and c.account == account, len(self._data.codes)
        )

    def remove_all_of_app(self, app_key: str) -> int:
        return self._remove_where(lambda c: c.app_key == app_key, len(self._data.codes))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._remove_where(lambda c: c.is_expired(now), limit)

    def count_expired(self, *, now: datetime) -> int:
        return sum(1 for code in self._data.codes.values() if code.is_expired(now))


class _RefreshTokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._data = unit._data
        self._journal = unit._journal

    def add(self, token: RefreshToken, digest: bytes) -> None:
        data = self._data
        if token.token_id in data.refresh or digest in data.refresh_by_digest:
            raise StorageError(f"a refresh token with id {token.token_id!r} already exists")
        self._journal.set(data.refresh, token.token_id, token)
        self._journal.set(data.refresh_digests, token.token_id, digest)
        self._journal.set(data.refresh_by_digest, digest, token.token_id)
        self._unit.add_to_index(data.refresh_by_expiry, _second(token.expires_at), token.token_id)
        self._unit.add_to_index(data.refresh_by_family, token.family_id, token.token_id)

    def get(self, digest: bytes) -> RefreshToken | None:
        token_id = self._data.refresh_by_digest.get(digest)
        return None if token_id is None else self._data.refresh[token_id]

    def mark_rotated(self, token_id: str, at: datetime) -> None:
        token = self._data.refresh.get(token_id)
        if token is not None:
            self._journal.set(self._data.refresh, token_id, attrs.evolve(token, rotated_at=at))

    def _remove_where(self, wanted: Callable[[RefreshToken], bool], limit: int) -> int:
        doomed: list[str] = []
        for token_id, token in self._data.refresh.items():
            if len(doomed) >= limit:
                break
            if wanted(token):
                doomed.append(token_id)
        return sum(self._unit.drop_refresh(token_id) for token_id in doomed)

    def remove_family(self, family_id: str) -> int:
        family = list(self._data.refresh_by_family.get(family_id, ()))
        return sum(self._unit.drop_refresh(token_id) for token_id in family)

    def remove_for(self, app_key: str, account: str) -> int:
        return self._remove_where(
            lambda t: t.app_key == app_key and t.account == account, len(self._data.refresh)
        )

    def remove_all_of_app(self, app_key: str) -> int:
        return self._remove_where(lambda t: t.app_key == app_key, len(self._data.refresh))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        data = self._data
        doomed: list[str] = []
        cutoff = now.timestamp()
        for second in sorted(s for s in data.refresh_by_expiry if s <= cutoff):
            refresh = data.refresh
            expired = (t for t in data.refresh_by_expiry[second] if refresh[t].is_expired(now))
            doomed.extend(itertools.islice(expired, limit - len(doomed)))
            if len(doomed) >= limit:
                break
        return sum(self._unit.drop_refresh(token_id) for token_id in doomed)

    def count_expired(self, *, now: datetime) -> int:
        return _count_expired(self._data.refresh_by_expiry, self._data.refresh, now)


def _count_expired(
    by_expiry: Mapping[int, Mapping[str, None]],
    records: Mapping[str, AccessToken] | Mapping[str, RefreshToken],
    now: datetime,
) -> int:
    """How many of ``records`` are expired at ``now``, from their index by second of expiry."""
    cutoff = now.timestamp()
    count = 0
    for second, bucket in by_expiry.items():
        if second + 1 <= cutoff:
            count += len(bucket)  # a second that has wholly passed
        elif second <= cutoff:
            count += sum(1 for token_id in bucket if records[token_id].is_expired(now))
    return count


class _Settings:
    def __init__(self, unit: _Unit) -> None:
        self._data = unit._data
        self._journal = unit._journal

    def get(self, name: str) -> bytes | None:
        return self._data.settings.get(name)

    def put(self, name: str, value: bytes) -> None:
        self._journal.set(self._data.settings, name, bytes(value))


class MemoryStorage:
    """Thread-safe, transactional storage in this process's memory.

    Transactions do not nest: opening one inside another from the same thread raises
    `appregistry.errors.StorageError` rather than deadlocking or sharing a journal.
    """

    def __init__(self) -> None:
        self._data = _Data()
        self._lock = threading.Lock()
        self._holder: int | None = None  # thread id inside a transaction, to refuse nesting
        self._closed = False
        self._feed = InProcessFeed()

    def __repr__(self) -> str:
        return f"MemoryStorage(apps={len(self._data.apps)}, tokens={len(self._data.tokens)})"

    @contextmanager
    def transaction(self) -> Iterator[_Unit]:
        """A transaction; see `appregistry.ports.Storage.transaction`."""
        self._check_open()
        if self._holder == threading.get_ident():
            raise StorageError("transactions do not nest")
        if not self._lock.acquire(timeout=60):
            raise StorageError("timed out waiting for the memory storage lock")
        self._holder = threading.get_ident()
        journal = _Journal()
        try:
            yield _Unit(self._data, journal)
        except BaseException:
            journal.rollback()
            raise
        else:
            journal.commit()
        finally:
            self._holder = None
            self._lock.release()

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """See `appregistry.ports.Storage.token_context`."""
        if self._closed:  # `_check_open`, inlined: every token check comes here
            self._check_open()
        data = self._data
        with self._lock:
            token = data.by_digest.get(digest)
            for other in older:
                if token is not None:
                    break
                token = data.by_digest.get(other)
            if token is None:
                return None
            key, account = token.app_key, token.account
            return _token_context(
                (
                    token,
                    data.apps.get(key),
                    data.installations.get((key, account)),
                    data.permissions.get(account),
                )
            )

    def change_feed(self) -> InProcessFeed:
        """The storage's `appregistry.ports.ChangeFeed`: Registries sharing it in-process."""
        return self._feed

    def close(self) -> None:
        """Drop the data; the storage cannot be used afterwards."""
        self._closed = True
        self._data = _Data()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the memory storage is closed")

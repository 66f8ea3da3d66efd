"""The storage ports: what the Registry needs from a backend.

A backend is a `Storage`. The Registry opens one `Storage.transaction` per operation and works
through its seven narrow repositories; the token check, the hot path, is a single call,
`Storage.token_context`, that a SQL backend answers with one query.

Rules every backend follows (the contract suite in `appregistry.testing.contract` checks them):

- A transaction commits when its block exits normally and rolls back entirely when it raises.
  Write transactions are serialized with respect to the rows they read, so a disable and
  an issue racing never leave a usable token of a disabled app.
- Repositories store what they are given; they make no policy decisions and validate nothing:
  the Registry has done that. Missing ids on ``remove`` are a no-op; ``get`` returns ``None``.
- Nothing here ever receives a plaintext secret, token or code: only digests and ciphertext.
- Driver errors are raised as `appregistry.errors.StorageError` with the driver error chained.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Final, Protocol, TypeAlias

import attrs

from ._records import (
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

__all__ = [
    "NEVER_USED",
    "AppRepository",
    "ChangeFeed",
    "ChangeSubscription",
    "CodeRepository",
    "InstallationRepository",
    "ListQuery",
    "PermissionRepository",
    "Position",
    "RefreshTokenRepository",
    "Scope",
    "SettingsRepository",
    "Storage",
    "TokenOrder",
    "TokenRepository",
    "UnitOfWork",
]


#: An entry's place in a list: the values the list is ordered by, in that order (each
#: list says which). Texts are compared by code point, as Python compares ``str``.
Position: TypeAlias = tuple[str | datetime, ...]


class TokenOrder(enum.StrEnum):
    """The orders a list of access tokens comes in (see `TokenRepository`)."""

    #: Soonest expiry first, then ``token_id``.
    EXPIRES = "expires"
    #: Most recently used first, never-used tokens last, then ``token_id``.
    LAST_USED = "last_used"


#: Where a never-used token stands in `TokenOrder.LAST_USED`: as if last used at the
#: earliest time a datetime holds, 0001-01-01 UTC, after every token that was used.
NEVER_USED: Final = datetime(1, 1, 1, tzinfo=UTC)


@attrs.frozen
class ListQuery:
    """One page of a list, already validated.

    ``search`` is folded with `appregistry.search_text` (or ``None`` for everything); an entry
    matches when it occurs as a substring of the entry's folded search text.

    Without ``after`` or ``before``, the page is the ``per_page`` matching entries from
    ``offset`` on. With ``after``, it is the first ``per_page`` matching entries whose
    position is greater than ``after``; with ``before``, the last ``per_page`` whose position
    is less than ``before``, in list order. ``page`` is then only the page's number, for the
    `Page` returned. A backend reads such a page from its index at the position, without
    stepping over the entries before it. At most one of them is given.

    >>> ListQuery(page=3, per_page=25).offset
    50
    """

    page: int = 1
    per_page: int = 10
    search: str | None = None
    after: Position | None = None
    before: Position | None = None

    @property
    def offset(self) -> int:
        """How many matching entries come before this page."""
        return (self.page - 1) * self.per_page


class AppRepository(Protocol):
    """Apps and their stored secrets.

    List order is ``name`` case-folded, then ``key``: an app's position is
    ``(app.name.casefold(), app.key)``. Search matches the folded ``name`` and
    ``description`` (see `appregistry.search_text`).
    """

    def get(self, key: str) -> App | None:
        """The app with ``key``, or ``None``."""
        ...

    def get_secret(self, key: str) -> StoredSecret | None:
        """What is stored of the app's secret, or ``None`` if there is no such app.

        Every field of the `StoredSecret` comes back as it was stored, the previous
        (grace) secret's digest and deadline included.
        """
        ...

    def get_context(self, key: str, account: str | None) -> AppContext | None:
        """The app with ``key``, its stored secret, and one account's installation and permission.

        ``account`` is the account the app would act for; ``None`` means the app's owner. The
        answer is ``None`` when no app has ``key``. A SQL backend answers with one query, and
        the app's row is then locked as a `get`'s is: issuing a token reads this, and a
        concurrent disable or removal must wait for the issue's transaction.
        """
        ...

    def add(self, app: App, secret: StoredSecret) -> None:
        """Store a new app. Its key is not in use (the Registry checked, in this transaction)."""
        ...

    def update(self, app: App) -> None:
        """Replace the stored app that has ``app.key``; a missing key is a no-op."""
        ...

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        """Replace what is stored of the app's secret, whole; a missing key is a no-op.

        A ``secret`` without a previous digest clears the one stored before.
        """
        ...

    def list_secrets(self, *, after: str | None, limit: int) -> Sequence[tuple[str, StoredSecret]]:
        """Up to ``limit`` apps' keys with their stored secrets, in key order.

        Only keys greater than ``after`` (all keys when ``None``), so a caller walks every
        app in bounded batches. The rows read are locked like a ``get_secret``'s until the
        transaction ends, so no other transaction changes them meanwhile.
        """
        ...

    def count_expired_grace(self, *, now: datetime) -> int:
        """How many apps keep a previous secret whose grace deadline is at or before ``now``."""
        ...

    def purge_expired_grace(self, *, now: datetime, limit: int) -> int:
        """Forget at most ``limit`` previous secrets whose deadline is at or before ``now``.

        Returns how many apps changed. The previous secret's digest and deadline become
        empty, as a `set_secret` without a previous digest leaves them; nothing else of the
        app changes. A previous secret past its deadline authenticates nothing already
        (`StoredSecret.previous_valid`), so this only frees its columns. A SQL backend chooses
        the apps from an index on the deadline, never by reading every app.
        """
        ...

    def remove(self, key: str) -> None:
        """Remove the app and its secret, and retire its key; a missing key is a no-op."""
        ...

    def key_retired(self, key: str) -> bool:
        """Whether an app with ``key`` was ever removed (its key never works again)."""
        ...

    def count_owned(self, owner: str) -> int:
        """How many apps ``owner`` has registered."""
        ...

    def list(self, query: ListQuery, *, owner: str | None = None) -> Page[AppListing]:
        """A page of apps (all, or ``owner``'s), each with its Instances count."""
        ...


class PermissionRepository(Protocol):
    """The accounts the provider permits to use apps.

    List order is the account: a permission's position is ``(account,)``. Search matches
    the account id, ignoring the case of ASCII letters (ids are the host's, not prose).
    """

    def get(self, account: str) -> AppsPermission | None:
        """The account's permission, or ``None`` when it has none."""
        ...

    def put(self, permission: AppsPermission) -> None:
        """Store the permission, replacing any earlier one of the account."""
        ...

    def remove(self, account: str) -> None:
        """Withdraw the account's permission; a missing one is a no-op."""
        ...

    def list(self, query: ListQuery) -> Page[AppsPermission]:
        """A page of the permitted accounts, each with who permitted it and when."""
        ...


class InstallationRepository(Protocol):
    """Apps installed on accounts.

    An account's list is ordered as the app list is, by the app's position
    ``(app.name.casefold(), app.key)``; its search matches the app's folded name and
    description. An app's list (`list_for_app`) is ordered by account, position
    ``(account,)``; its search matches the account id, ignoring the case of ASCII letters.
    """

    def get(self, app_key: str, account: str) -> Installation | None:
        """The installation of ``app_key`` on ``account``, or ``None``."""
        ...

    def put(self, installation: Installation) -> None:
        """Store the installation, replacing any earlier one of the same app and account."""
        ...

    def remove(self, app_key: str, account: str) -> None:
        """Remove one installation; a missing one is a no-op."""
        ...

    def remove_all_of_app(self, app_key: str) -> int:
        """Remove every installation of the app; return how many there were."""
        ...

    def list(self, account: str, query: ListQuery, *, now: datetime) -> Page[InstallationListing]:
        """A page of the account's App Management, each app with its live Access Tokens count.

        The entries are the account's installations, and the apps the account owns that are
        not installed on it but have tokens for it unexpired at ``now`` (listed with
        ``installation=None``; client credentials).
        """
        ...

    def list_for_app(self, app_key: str, query: ListQuery) -> Page[Installation]:
        """A page of the app's installations: the accounts it is installed on."""
        ...


class TokenRepository(Protocol):
    """Access tokens, stored by digest.

    One account's list is ordered by ``expires_at``, then ``token_id``: a token's position
    is ``(expires_at, token_id)``. Every account's list of an app is ordered by account
    first: position ``(account, expires_at, token_id)``. Search matches the folded user
    agent.

    In `TokenOrder.LAST_USED`, ``last_used_at`` (`NEVER_USED` when ``None``) comes first
    instead of ``expires_at``, *descending*, and ``token_id`` still ascending: position
    ``(last_used_at or NEVER_USED, token_id)``, or ``(account, last_used_at or NEVER_USED,
    token_id)``. "After" a position then means later in that order: used less recently, or
    as recently with a greater ``token_id``.
    """

    def add(self, token: AccessToken, digest: bytes) -> None:
        """Store a new token under ``digest``."""
        ...

    def get(self, token_id: str) -> AccessToken | None:
        """The token with this public id, or ``None``."""
        ...

    def get_by_digest(self, digest: bytes) -> AccessToken | None:
        """The token stored under ``digest``, or ``None``; read inside the transaction."""
        ...

    def remove(self, token_ids: Collection[str]) -> int:
        """Remove the tokens with these ids; unknown ids are skipped. Return how many went."""
        ...

    def remove_family(self, family_id: str) -> int:
        """Remove every token of the grant family; return how many went."""
        ...

    def remove_for(self, app_key: str, account: str) -> int:
        """Remove every token of the app on the account; return how many went."""
        ...

    def remove_all_of_app(self, app_key: str) -> int:
        """Remove every token of the app; return how many went."""
        ...

    def count_live(self, app_key: str, account: str, *, now: datetime) -> int:
        """How many unexpired tokens the app has on the account."""
        ...

    def list(
        self,
        app_key: str,
        account: str | None,
        query: ListQuery,
        *,
        now: datetime,
        order: TokenOrder = TokenOrder.EXPIRES,
    ) -> Page[AccessToken]:
        """A page of the app's tokens unexpired at ``now``: on ``account``, or on every one."""
        ...

    def record_uses(self, uses: Mapping[str, datetime]) -> None:
        """Set each token's ``last_used_at`` to its time in ``uses`` (token id -> time).

        A time never moves ``last_used_at`` backwards: a token last used later keeps its
        time. Unknown ids (removed or purged tokens) are skipped. The Registry calls it with
        batches of up to a few thousand tokens, in a transaction of their own; a SQL backend
        writes them in one statement, or one prepared statement run for each, and takes no
        lock beyond the rows it updates. It may skip a token whose row another transaction
        holds rather than wait for it (PostgreSQL does): a last use is a hint, not a record.
        """
        ...

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        """Remove at most ``limit`` tokens expired at ``now``; return how many went."""
        ...

    def count_expired(self, *, now: datetime) -> int:
        """How many tokens are expired at ``now``: what ``purge_expired`` would take, in all.

        Counted from the expiry index, without reading the live tokens.
        """
        ...


class CodeRepository(Protocol):
    """Authorization codes, stored by digest; a code is read only by redeeming it.

    A redeemed code stays stored, marked used, until it expires and is purged: a second
    redemption finds it used and learns which grant family the first one issued.
    """

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        """Store a new code under ``digest`` (``used_at`` and ``family_id`` as given)."""
        ...

    def redeem(self, digest: bytes, *, at: datetime, family_id: str) -> AuthorizationCode | None:
        """Mark the code under ``digest`` used at ``at`` by ``family_id``; return it as it was.

        The record returned is the one stored *before* this call: ``used_at`` is ``None``
        when this call used the code; otherwise the code had been used before (a replay),
        and it is returned with the ``used_at`` and ``family_id`` of that first use, which
        stay unchanged. ``None`` when no code is stored under ``digest``.

        At most one caller ever gets the code unused, however many redeem it at once.
        """
        ...

    def remove_for(self, app_key: str, account: str) -> int:
        """Remove every code of the app on the account, used or not; return how many went."""
        ...

    def remove_all_of_app(self, app_key: str) -> int:
        """Remove every code of the app, used or not; return how many went."""
        ...

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        """Remove at most ``limit`` codes expired at ``now``, used or not; return how many."""
        ...

    def count_expired(self, *, now: datetime) -> int:
        """How many codes, used or not, are expired at ``now``."""
        ...


class RefreshTokenRepository(Protocol):
    """Refresh tokens, stored by digest, in grant families."""

    def add(self, token: RefreshToken, digest: bytes) -> None:
        """Store a new refresh token under ``digest``."""
        ...

    def get(self, digest: bytes) -> RefreshToken | None:
        """The refresh token stored under ``digest``, or ``None``."""
        ...

    def mark_rotated(self, token_id: str, at: datetime) -> None:
        """Record that the token was used (and replaced) at ``at``; a missing id is a no-op."""
        ...

    def remove_family(self, family_id: str) -> int:
        """Remove every refresh token of the family; return how many went."""
        ...

    def remove_for(self, app_key: str, account: str) -> int:
        """Remove every refresh token of the app on the account; return how many went."""
        ...

    def remove_all_of_app(self, app_key: str) -> int:
        """Remove every refresh token of the app; return how many went."""
        ...

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        """Remove at most ``limit`` refresh tokens expired at ``now``; return how many went."""
        ...

    def count_expired(self, *, now: datetime) -> int:
        """How many refresh tokens are expired at ``now``."""
        ...


class SettingsRepository(Protocol):
    """A few named values the Registry keeps about the storage itself, as bytes.

    The Registry stores there the fingerprints of the pepper and of the secret encryption
    key the storage's digests and ciphertexts were made with (never the pepper or key), and
    checks them when it is constructed. Names are short ASCII words; values are small.
    """

    def get(self, name: str) -> bytes | None:
        """The value stored under ``name``, or ``None`` when there is none."""
        ...

    def put(self, name: str, value: bytes) -> None:
        """Store ``value`` under ``name``, replacing any value stored before."""
        ...


class UnitOfWork(Protocol):
    """The repositories of one transaction."""

    @property
    def apps(self) -> AppRepository:
        """Apps and their secrets."""
        ...

    @property
    def permissions(self) -> PermissionRepository:
        """Accounts' apps permissions."""
        ...

    @property
    def installations(self) -> InstallationRepository:
        """Installations."""
        ...

    @property
    def tokens(self) -> TokenRepository:
        """Access tokens."""
        ...

    @property
    def codes(self) -> CodeRepository:
        """Authorization codes."""
        ...

    @property
    def refresh_tokens(self) -> RefreshTokenRepository:
        """Refresh tokens."""
        ...

    @property
    def settings(self) -> SettingsRepository:
        """The storage's own settings (the configuration fingerprints)."""
        ...


class Storage(Protocol):
    """A storage backend."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """A transaction: commit when the block exits normally, roll back when it raises."""
        ...

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """The token stored under ``digest`` with its app, installation and permission.

        ``older`` are the same token's digests under older peppers, while the pepper is
        being rotated: the token stored under any of the digests is the answer (a token is
        stored under one digest only). The Registry passes them only when older peppers are
        configured; with one pepper it is called with ``digest`` alone.

        ``None`` if there is no such token. One storage round trip whatever the number
        of digests, outside any transaction; it sees only committed data.
        """
        ...

    def close(self) -> None:
        """Release connections and files. Using the storage afterwards is an error."""
        ...


#: What a committed change may have made a token check refuse, as published on a
#: `ChangeFeed`: ``("app", key)``, ``("account", account)``, ``("installation", key,
#: account)``, ``("token", token_id)``, ``("family", family_id)``, or ``("all",)``.
Scope: TypeAlias = tuple[str, ...]


class ChangeSubscription(Protocol):
    """One process's subscription to a `ChangeFeed`: see `ChangeFeed.subscribe`."""

    #: Whether changes arrive only through `poll` (SQLite); ``False`` when the feed delivers
    #: them from a thread of its own (PostgreSQL) or as they commit (memory).
    polled: bool

    def poll(self) -> None:
        """Deliver the changes committed since the last poll (a polled feed); else nothing."""
        ...

    def sync(self, timeout: float) -> bool:
        """Wait until every change committed before this call has been delivered.

        Returns whether it was, within ``timeout`` seconds. For tests and benchmarks.
        """
        ...

    def close(self) -> None:
        """Stop delivering and release the subscription's connection or thread."""
        ...


class ChangeFeed(Protocol):
    """Tells every process sharing a storage which committed changes may refuse a token.

    Optional: a storage offers it by a ``change_feed()`` method. The Registry publishes into
    it from every transaction that changes what a token check reads (disabling or removing
    an app, a new secret, a suspension, a withdrawn permission, removed tokens...), whether
    or not it caches checks itself, so that the processes that do (`appregistry.CheckCache`)
    drop what they hold. The built-in backends publish with PostgreSQL's ``NOTIFY``, through
    a change log table polled with SQLite's ``PRAGMA data_version``, and in process for the
    memory backend.
    """

    def publish(self, tx: UnitOfWork, scopes: Collection[Scope]) -> None:
        """Publish ``scopes`` from inside ``tx``: delivered if, and once, it commits."""
        ...

    def subscribe(self, deliver: Callable[[Collection[Scope] | None], None]) -> ChangeSubscription:
        """Deliver every change published from now on, by any process, to ``deliver``.

        ``deliver(scopes)`` is called once per committed change (in commit order, or with
        ``[("all",)]`` when changes may have been missed). ``deliver(None)`` means the feed
        is lost (a dropped connection): nothing it would have delivered can be trusted until
        it calls ``deliver([("all",)])`` again, once it is back. The first call after
        subscribing is ``deliver([("all",)])``, when the subscription is live.
        """
        ...

"""The Registry: every operation on apps, installations and tokens, one transaction each."""

from __future__ import annotations

import enum
import functools
import hmac
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar, cast

import attrs

from . import _credentials as cred
from ._policy import AccessRequest, Action, Decision, Policy, Reason
from ._records import (
    AccessToken,
    App,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Event,
    EventKind,
    Grant,
    ImportedCredentials,
    Installation,
    InstallationListing,
    IssuedCode,
    IssuedToken,
    Page,
    RefreshToken,
    RegisteredApp,
    StoredSecret,
)
from ._validation import (
    MAX_ACCOUNT_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_USER_AGENT_LENGTH,
    Problems,
)
from .errors import (
    AppNotFound,
    AppRegistryError,
    Denied,
    FieldProblem,
    InstallationNotFound,
    InvalidGrant,
    LimitExceeded,
    SecretNotRetrievable,
    TokenNotFound,
    ValidationError,
)
from .ports import ListQuery, Storage, UnitOfWork

__all__ = ["UNSET", "Clock", "Listener", "Registry", "TokenCheck"]

logger = logging.getLogger("appregistry")
T = TypeVar("T")

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

    Show callers outside only whether it is ``allowed``; ``reason`` is for logs (R23).
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


# What register_app and update_app accept, and how each field is checked.
_APP_FIELDS: Final[Mapping[str, Callable[[Problems, str, object], object]]] = {
    "name": lambda p, f, v: p.text(f, v, max_length=MAX_NAME_LENGTH),
    "description": lambda p, f, v: p.multiline(f, v, max_length=MAX_DESCRIPTION_LENGTH),
    "homepage": lambda p, f, v: p.url(f, v),
    "image_url": lambda p, f, v: p.url(f, v, required=False),
    "admin_email": lambda p, f, v: p.email(f, v),
    "admin_phone": lambda p, f, v: p.phone(f, v),
    "redirect_url": lambda p, f, v: p.url(f, v, https_only=True),
    "trusted": lambda p, f, v: _boolean(p, f, v),  # noqa: PLW0108 - one shape for all
}


def _boolean(problems: Problems, field: str, value: object) -> bool | None:
    if not isinstance(value, bool):
        problems.add(field, "not_boolean", f"{field} must be true or false")
        return None
    return value


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
class Registry:
    """The one composition root: apps, installations, access tokens and their policy.

    Args:
        storage: A `appregistry.ports.Storage`, such as
            `appregistry.storage.memory.MemoryStorage`.
        clock: Returns the current time (aware). Read once per operation.
        policy: The rules; `Policy()` holds the built-in ones, hosts add theirs.
        token_lifetime: How long an access token lives (R18).
        code_lifetime: How long an authorization code lives (ten minutes).
        refresh_token_lifetime: How long a refresh token lives (30 days); a rotation issues
            a new one that lives as long again.
        max_apps_per_owner: How many apps one owner may register (R9).
        pepper: A server-side key for token and secret digests, kept outside the database;
            or a sequence of them, newest first, to rotate it: the newest digests everything
            new, and tokens, codes, refresh tokens and secrets digested under an older one
            keep working (until they expire) while it stays in the sequence. ``None`` in the
            sequence stands for the built-in default: a registry that ran without a pepper
            moves to one with ``pepper=[new, None]``.
        secret_encryption_key: A Fernet key. With it, secrets are stored encrypted and
            `reveal_secret` works (R7); without it, a secret is shown only once. A sequence
            of keys, newest first, rotates it (`cryptography.fernet.MultiFernet`): the newest
            encrypts, every one decrypts; `reencrypt_secrets` moves everything to the newest.
        failure_window: The window over which failed client authentications of one key are
            counted in `EventKind.AUTHENTICATION_FAILED` events (15 minutes).
        listeners: Called with every `Event` after its transaction commits (R27).

    >>> from appregistry.storage.memory import MemoryStorage
    >>> registry = Registry(storage=MemoryStorage())
    >>> registry.permit_account("acme", by="admin").account
    'acme'
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
    _credentials: cred.Credentials = attrs.field(init=False, repr=False)
    # Whether token checks look under older peppers too; with one pepper they cost nothing.
    _rotating_peppers: bool = attrs.field(init=False, repr=False)
    _failures: _FailureCounter = attrs.field(init=False, repr=False)

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
        """Close the storage."""
        self._storage.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- apps -------------------------------------------------------------------------------

    def register_app(
        self,
        owner: str,
        *,
        name: str,
        homepage: str,
        admin_email: str,
        redirect_url: str,
        description: str | None = None,
        image_url: str | None = None,
        admin_phone: str | None = None,
        trusted: bool = False,
        credentials: ImportedCredentials | None = None,
    ) -> RegisteredApp:
        """Register an app and make its key and secret (R1-R10).

        Args:
            owner: The account registering the app.
            credentials: An existing key and secret to keep, when migrating (R6).

        Returns:
            The app and its secret. The secret is shown this once, unless the registry has a
            ``secret_encryption_key``.

        Raises:
            ValidationError: Any field is invalid, or an imported key is taken; every
                problem is listed.
            LimitExceeded: The owner has ``max_apps_per_owner`` apps already.
        """
        problems = Problems()
        owner = problems.identifier("owner", owner)  # type: ignore[assignment]
        fields = self._check_app_fields(
            problems,
            {
                "name": name,
                "description": description,
                "homepage": homepage,
                "image_url": image_url,
                "admin_email": admin_email,
                "admin_phone": admin_phone,
                "redirect_url": redirect_url,
                "trusted": trusted,
            },
        )
        if credentials is not None:
            for field in ("key", "secret"):
                if not cred.is_importable_credential(getattr(credentials, field, None)):
                    problems.add(
                        field,
                        "invalid_credential",
                        f"an imported {field} must be 32 characters of A-Z a-z 0-9 - . _ ~",
                    )
        problems.raise_if_any()

        now = self._now()
        secret = credentials.secret if credentials is not None else cred.generate_secret()
        stored = self._credentials.store_secret(secret)
        with self._transaction() as (tx, events):
            if tx.apps.count_owned(owner) >= self._max_apps_per_owner:
                raise LimitExceeded(
                    f"owner {owner!r} already has {self._max_apps_per_owner} apps, the limit"
                )
            key = self._new_key(tx, credentials)
            app = App(key=key, owner=owner, created_at=now, **fields)
            tx.apps.add(app, stored)
            events.append(Event(EventKind.APP_REGISTERED, now, key, owner))
        return RegisteredApp(app, secret)

    @staticmethod
    def _new_key(tx: UnitOfWork, credentials: ImportedCredentials | None) -> str:
        if credentials is not None:
            # A removed app's key never authenticates again (R13), not even imported anew.
            if tx.apps.get(credentials.key) is not None or tx.apps.key_retired(credentials.key):
                raise ValidationError(
                    [FieldProblem("key", "taken", "an app with this key exists or was removed")]
                )
            return credentials.key
        # 190 random bits make a collision practically impossible; checking costs one look-up.
        for _ in range(_KEY_ATTEMPTS):
            key = cred.generate_key()
            if tx.apps.get(key) is None and not tx.apps.key_retired(key):
                return key
        raise RuntimeError("could not generate an unused app key")  # pragma: no cover

    @staticmethod
    def _check_app_fields(problems: Problems, values: Mapping[str, object]) -> dict[str, Any]:
        return {field: _APP_FIELDS[field](problems, field, v) for field, v in values.items()}

    def update_app(
        self,
        key: str,
        *,
        name: str | _Unset = UNSET,
        description: str | _Unset | None = UNSET,
        homepage: str | _Unset = UNSET,
        image_url: str | _Unset | None = UNSET,
        admin_email: str | _Unset = UNSET,
        admin_phone: str | _Unset | None = UNSET,
        redirect_url: str | _Unset = UNSET,
        trusted: bool | _Unset = UNSET,
    ) -> App:
        """Change an app's fields; those left `UNSET` stay, optional ones set to ``None`` clear.

        Raises:
            ValidationError: Any given field is invalid (all are listed); nothing changes.
            AppNotFound: No app has ``key``.
        """
        given = {
            "name": name,
            "description": description,
            "homepage": homepage,
            "image_url": image_url,
            "admin_email": admin_email,
            "admin_phone": admin_phone,
            "redirect_url": redirect_url,
            "trusted": trusted,
        }
        problems = Problems()
        changes = self._check_app_fields(
            problems, {field: v for field, v in given.items() if v is not UNSET}
        )
        problems.raise_if_any()
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            changed = sorted(f for f, v in changes.items() if getattr(app, f) != v)
            if changed:
                app = attrs.evolve(app, **changes)
                tx.apps.update(app)
                events.append(
                    Event(EventKind.APP_UPDATED, now, key, app.owner, {"fields": changed})
                )
        return app

    def get_app(self, key: str) -> App:
        """The app with ``key``.

        Raises:
            AppNotFound: No app has ``key``.
        """
        with self._transaction() as (tx, _):
            return self._app(tx, key)

    def regenerate_secret(self, key: str) -> RegisteredApp:
        """Replace the app's secret and remove all its tokens, in one transaction (R8).

        Its access tokens, refresh tokens and authorization codes all go.

        Returns:
            The app and its new secret, shown this once (unless secrets are kept encrypted).

        Raises:
            AppNotFound: No app has ``key``.
        """
        now = self._now()
        secret = cred.generate_secret()
        stored = self._credentials.store_secret(secret)
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            tx.apps.set_secret(key, stored)
            removed, grants = _remove_grants(tx, key)
            events.append(
                Event(
                    EventKind.APP_SECRET_REGENERATED,
                    now,
                    key,
                    app.owner,
                    {"tokens_removed": removed, **grants},
                )
            )
        return RegisteredApp(app, secret)

    def rotate_secret(self, key: str, *, old_secret_valid_until: datetime) -> RegisteredApp:
        """Give the app a new secret while the current one keeps working until a deadline.

        Unlike `regenerate_secret` (R8), nothing is revoked. The new secret authenticates at
        once; the one it replaces keeps authenticating until ``old_secret_valid_until``, so
        the app's servers can move to the new secret one at a time; every access token,
        refresh token and code is kept. Only one previous secret is kept: rotating again
        replaces it with the secret that was current, and the one before that stops at
        once. `regenerate_secret` ends a grace window as well.

        Args:
            key: The app.
            old_secret_valid_until: When the previous secret stops authenticating: an
                aware datetime after now and at most 30 days ahead.

        Returns:
            The app and its new secret, shown this once (unless secrets are kept encrypted).

        Raises:
            ValidationError: The deadline is not an aware datetime, not after now, or more
                than 30 days ahead (field ``old_secret_valid_until``); nothing is written.
            AppNotFound: No app has ``key``.

        >>> from datetime import timedelta
        >>> from appregistry.storage.memory import MemoryStorage
        >>> from appregistry.testing import ManualClock
        >>> clock = ManualClock()
        >>> registry = Registry(storage=MemoryStorage(), clock=clock)
        >>> old = registry.register_app("acme", name="MyApp", homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb")
        >>> new = registry.rotate_secret(
        ...     old.app.key, old_secret_valid_until=clock() + timedelta(days=7))
        >>> [registry.authenticate_client(old.app.key, s).allowed for s in (old.secret, new.secret)]
        [True, True]
        >>> clock.advance(timedelta(days=7))
        >>> [registry.authenticate_client(old.app.key, s).allowed for s in (old.secret, new.secret)]
        [False, True]
        """
        now = self._now()
        until = _grace_deadline(old_secret_valid_until, now)
        secret = cred.generate_secret()
        fresh = self._credentials.store_secret(secret)
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            current = tx.apps.get_secret(key)
            if current is None:  # pragma: no cover - the app was just read in this transaction
                raise AppNotFound(str(key))
            replaced = current.previous_valid(now)
            tx.apps.set_secret(
                key,
                attrs.evolve(fresh, previous_digest=current.digest, previous_valid_until=until),
            )
            details: dict[str, object] = {"old_secret_valid_until": until.isoformat()}
            if replaced:
                details["grace_secret_replaced"] = True
            events.append(Event(EventKind.APP_SECRET_ROTATED, now, key, app.owner, details))
        return RegisteredApp(app, secret)

    def reencrypt_secrets(self, *, batch_size: int = _DEFAULT_REENCRYPT_BATCH) -> int:
        """Re-encrypt every stored secret with the newest encryption key, in bounded batches.

        Run it after putting a new key first in ``secret_encryption_key``; once it has
        returned, no secret needs the older keys, and they can be dropped. Apps are walked
        in key order, ``batch_size`` per transaction, each ciphertext re-encrypted with
        `MultiFernet.rotate`. Secrets already under the newest key are left alone, so a
        second run rewrites nothing and returns 0; it may run while the registry serves.

        When older peppers are configured as well, each encrypted secret's digest is made
        again under the newest pepper. A secret stored without ciphertext cannot be (it was
        never kept in a readable form) and keeps its digest; so do grace-window secrets.

        Args:
            batch_size: Most apps read, and rewritten, per transaction.

        Returns:
            How many secrets were rewritten.

        Raises:
            ValueError: No ``secret_encryption_key`` is configured, or ``batch_size`` < 1.
            AppRegistryError: A stored secret decrypts with none of the configured keys.
                The batches before it stay committed; its own batch is not written.
        """
        if not self._credentials.can_reveal:
            raise ValueError("reencrypt_secrets needs a secret_encryption_key")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        batch_size = min(batch_size, _MAX_PURGE_BATCH)
        now = self._now()
        total = 0
        after: str | None = None
        while True:
            with self._transaction() as (tx, events):
                batch = tx.apps.list_secrets(after=after, limit=batch_size)
                changed = 0
                for key, stored in batch:
                    try:
                        refreshed = self._credentials.refresh_secret(stored)
                    except AppRegistryError as exc:
                        raise AppRegistryError(
                            f"the secret of app {key!r} decrypts with none of the configured "
                            "encryption keys; this batch was not written"
                        ) from exc
                    if refreshed is not None:
                        tx.apps.set_secret(key, refreshed)
                        changed += 1
                if changed:
                    events.append(
                        Event(EventKind.SECRETS_REENCRYPTED, now, details={"count": changed})
                    )
            total += changed
            if len(batch) < batch_size:
                return total
            after = batch[-1][0]

    def reveal_secret(self, key: str) -> str:
        """The app's current secret, when the registry keeps secrets encrypted (R7).

        Raises:
            AppNotFound: No app has ``key``.
            SecretNotRetrievable: No ``secret_encryption_key`` is configured, or the secret
                was stored before one was.
        """
        with self._transaction() as (tx, _):
            self._app(tx, key)
            stored = tx.apps.get_secret(key)
        revealed = self._credentials.reveal_secret(stored) if stored is not None else None
        if revealed is None:
            raise SecretNotRetrievable(
                f"the secret of app {key!r} is stored only as a digest; it cannot be shown again"
            )
        return revealed

    def enable_app(self, key: str) -> App:
        """Enable the app: its unexpired tokens work again (R11).

        Raises:
            AppNotFound: No app has ``key``.
        """
        return self._set_enabled(key, enabled=True)

    def disable_app(self, key: str) -> App:
        """Disable the app: it can neither obtain nor use tokens; they are kept (R11).

        Raises:
            AppNotFound: No app has ``key``.
        """
        return self._set_enabled(key, enabled=False)

    def _set_enabled(self, key: str, *, enabled: bool) -> App:
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            if app.enabled != enabled:
                app = attrs.evolve(app, enabled=enabled)
                tx.apps.update(app)
                kind = EventKind.APP_ENABLED if enabled else EventKind.APP_DISABLED
                events.append(Event(kind, now, key, app.owner))
        return app

    def remove_app(self, key: str) -> None:
        """Remove the app with its installations and tokens, in one transaction (R13).

        Its refresh tokens and authorization codes go too, and its key is retired: it never
        authenticates again, and cannot be registered (imported) again.

        Raises:
            AppNotFound: No app has ``key``.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            tokens, grants = _remove_grants(tx, key)
            installations = tx.installations.remove_all_of_app(key)
            tx.apps.remove(key)
            events.append(
                Event(
                    EventKind.APP_REMOVED,
                    now,
                    key,
                    app.owner,
                    {
                        "tokens_removed": tokens,
                        "installations_removed": installations,
                        **grants,
                    },
                )
            )

    def list_apps(
        self,
        *,
        owner: str | None = None,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
    ) -> Page[AppListing]:
        """A page of registered apps (all, or one owner's), each with its Instances (R26).

        Ordered by name (case-insensitive), then key; ``search`` matches name and description,
        case-insensitively.

        Raises:
            ValidationError: Bad paging or search text.
        """
        problems = Problems()
        if owner is not None:
            owner = problems.identifier("owner", owner)
        query = self._query(problems, search, page, per_page)
        with self._transaction() as (tx, _):
            return tx.apps.list(query, owner=owner)

    @staticmethod
    def _query(problems: Problems, search: object, page: object, per_page: object) -> ListQuery:
        folded = problems.search(search)
        good_page, good_size = problems.paging(page, per_page)
        problems.raise_if_any()
        return ListQuery(page=good_page, per_page=good_size, search=folded)

    # -- accounts and installations ---------------------------------------------------------

    def permit_account(self, account: str, *, by: str) -> AppsPermission:
        """Grant the account the apps permission; tokens it had work again (R14).

        Args:
            account: The account that may use apps.
            by: Who granted it (a user id of the host).
        """
        account, by = _identifiers(account=account, by=by)
        now = self._now()
        with self._transaction() as (tx, events):
            permission = tx.permissions.get(account)
            if permission is None:
                permission = AppsPermission(account, by, now)
                tx.permissions.put(permission)
                events.append(Event(EventKind.ACCOUNT_PERMITTED, now, None, account, {"by": by}))
        return permission

    def forbid_account(self, account: str) -> None:
        """Withdraw the account's apps permission: its tokens stop acting, but are kept (R14)."""
        (account,) = _identifiers(account=account)
        now = self._now()
        with self._transaction() as (tx, events):
            if tx.permissions.get(account) is not None:
                tx.permissions.remove(account)
                events.append(Event(EventKind.ACCOUNT_FORBIDDEN, now, None, account))

    def get_permission(self, account: str) -> AppsPermission | None:
        """The account's apps permission, or ``None`` if it has none."""
        with self._transaction() as (tx, _):
            return tx.permissions.get(account) if _is_id(account) else None

    def install_app(self, key: str, account: str, *, by: str) -> Installation:
        """Install (authorize) the app on the account (R15).

        Installing again returns the existing installation unchanged (suspended or not).

        Args:
            by: The user who authorized it, holding the account's apps permission.

        Raises:
            AppNotFound: No app has ``key``.
            Denied: The app is disabled or the account is not permitted to use apps.
        """
        account, by = _identifiers(account=account, by=by)
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            existing = tx.installations.get(key, account)
            request = AccessRequest(
                Action.INSTALL, app=app, account=account, permission=tx.permissions.get(account)
            )
            decision = self._policy.evaluate(request, now)
            if not decision.allowed:
                raise Denied(decision, f"cannot install the app: {decision.detail}")
            if existing is not None:
                return existing
            installation = Installation(key, account, by, now)
            tx.installations.put(installation)
            events.append(Event(EventKind.APP_INSTALLED, now, key, account, {"by": by}))
        return installation

    def suspend_installation(self, key: str, account: str) -> Installation:
        """Suspend the app on this account only; its tokens there stop acting (R12).

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        return self._set_suspended(key, account, suspended=True)

    def resume_installation(self, key: str, account: str) -> Installation:
        """Resume a suspended installation; unexpired tokens work again (R12).

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        return self._set_suspended(key, account, suspended=False)

    def _set_suspended(self, key: str, account: str, *, suspended: bool) -> Installation:
        now = self._now()
        with self._transaction() as (tx, events):
            installation = self._installation(tx, key, account)
            if installation.suspended != suspended:
                installation = attrs.evolve(installation, suspended=suspended)
                tx.installations.put(installation)
                kind = (
                    EventKind.INSTALLATION_SUSPENDED
                    if suspended
                    else EventKind.INSTALLATION_RESUMED
                )
                events.append(Event(kind, now, key, account))
        return installation

    def uninstall_app(self, key: str, account: str) -> int:
        """Remove the installation and the account's tokens for the app (R15).

        The account's refresh tokens and authorization codes for the app go too.

        Returns:
            How many access tokens were removed.

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            self._installation(tx, key, account)
            removed, grants = _remove_grants(tx, key, account)
            tx.installations.remove(key, account)
            events.append(
                Event(
                    EventKind.APP_UNINSTALLED,
                    now,
                    key,
                    account,
                    {"tokens_removed": removed, **grants},
                )
            )
        return removed

    def list_installations(
        self, account: str, *, search: str | None = None, page: int = 1, per_page: int = 10
    ) -> Page[InstallationListing]:
        """A page of the apps installed on the account, with live Access Tokens counts (R26).

        Raises:
            ValidationError: Bad account, paging or search text.
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        query = self._query(problems, search, page, per_page)
        now = self._now()
        with self._transaction() as (tx, _):
            return tx.installations.list(account, query, now=now)

    # -- tokens -----------------------------------------------------------------------------

    def issue_token(
        self,
        key: str,
        secret: str,
        *,
        account: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedToken:
        """Authenticate the app by key and secret and issue an access token (R19).

        Without ``account``, a trusted app gets a client-credentials token acting for its
        owner. With ``account``, the token acts for that account, which must have the app
        installed (the authorization-code flow ends here).

        Raises:
            Denied: Any reason at all. Its message is the same for every reason, so a caller
                cannot tell an unknown key from a wrong secret (R25); ``error.decision`` says
                why, for logs.
            ValidationError: ``account`` or ``user_agent`` is malformed, or ``key`` or
                ``secret`` is not text or longer than 512 characters.
        """
        problems = Problems()
        if account is not None:
            account = problems.identifier("account", account)
        user_agent = problems.text(
            "user_agent", user_agent, max_length=MAX_USER_AGENT_LENGTH, required=False
        )
        for field, value in (("key", key), ("secret", secret)):
            if not _is_text(value):
                problems.add(field, "not_text", f"{field} must be text")
            elif len(value) > _MAX_PRESENTED_TOKEN:
                # Says nothing about the app (R25): no key or secret is that long.
                problems.add(field, "too_long", f"{field} is longer than any {field}")
        problems.raise_if_any()

        now = self._now()
        token = cred.generate_token()
        digest = self._credentials.token_digest(token)
        with self._transaction() as (tx, events):
            # One read: the app, its secret, and the installation and permission of the
            # account it would act for (the owner's for client credentials: suspending the
            # owner's installation stops the app there too, R12).
            context = tx.apps.get_context(key, account) if _is_id(key) else None
            app = context.app if context is not None else None
            # Always compare, even for an unknown key, so both take the same time (R25).
            credentials_valid = self._secret_valid(
                context.secret if context is not None else None, secret, now
            )
            client_credentials = account is None
            acting_for = context.account if context is not None else account
            request = AccessRequest(
                Action.ISSUE_TOKEN,
                app=app,
                account=acting_for,
                installation=context.installation if context is not None else None,
                permission=context.permission if context is not None else None,
                needs_installation=not client_credentials,
                needs_trust=client_credentials,
                credentials_valid=credentials_valid,
            )
            decision = self._policy.evaluate(request, now)
            grant = Grant.CLIENT_CREDENTIALS if client_credentials else Grant.AUTHORIZATION_CODE
            if decision.allowed and app is not None and acting_for is not None:
                record = self._new_access_token(
                    app.key, acting_for, grant, now, user_agent=user_agent
                )
                tx.tokens.add(record, digest)
                events.append(
                    Event(
                        EventKind.TOKEN_ISSUED,
                        now,
                        app.key,
                        acting_for,
                        {"token_id": record.token_id, "grant": str(record.grant)},
                    )
                )
                return IssuedToken(token, record)
        # Denied, and nothing written. A failed authentication is counted and told first.
        if not credentials_valid:
            self._authentication_failed(key, now)
        raise Denied(decision, "invalid client credentials, or the app may not act")

    def check_token(self, token: str) -> TokenCheck:
        """May this access token act now? One storage round trip, then the pure policy.

        Anything that is not a token this registry issued (wrong type, absurd length, removed,
        purged) is ``token_unknown``; it never raises for bad input.

        >>> from appregistry.storage.memory import MemoryStorage
        >>> Registry(storage=MemoryStorage()).check_token("no such token").reason
        <Reason.TOKEN_UNKNOWN: 'token_unknown'>
        """
        # Every API request runs this: no work is done twice or in vain, and no Python call
        # is made that can be saved (the clock and type checks are inlined, the result is
        # built without one: see `_token_check`). The policy's fast path skips building an
        # AccessRequest for the common, allowed case (see Policy._evaluate_token).
        # Typed as text, but hosts pass request headers through: check at run time.
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_PRESENTED_TOKEN:  # type: ignore[redundant-expr]
            return _UNKNOWN_TOKEN
        creds = self._credentials
        context = (
            self._storage.token_context(*creds.token_digests(token))
            if self._rotating_peppers
            else self._storage.token_context(creds.token_digest(token))
        )
        if context is None:
            return _UNKNOWN_TOKEN
        # The clock is read only when there is a token to judge: an unknown one needs none.
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(_NAIVE_CLOCK)
        return _token_check((self._policy._evaluate_token(context, now), context.token))

    def list_tokens(
        self,
        key: str,
        account: str,
        *,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
    ) -> Page[AccessToken]:
        """A page of the live tokens of the app on the account, soonest expiry first (R26).

        ``search`` matches the user agent, case-insensitively.

        Raises:
            AppNotFound: No app has ``key``.
            ValidationError: Bad account, paging or search text.
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        query = self._query(problems, search, page, per_page)
        now = self._now()
        with self._transaction() as (tx, _):
            self._app(tx, key)
            return tx.tokens.list(key, account, query, now=now)

    def remove_tokens(
        self, token_ids: Collection[str], *, key: str | None = None, account: str | None = None
    ) -> int:
        """Remove the selected tokens; they are dead at once (R20). All or nothing.

        Args:
            token_ids: Public token ids (at most 1000).
            key, account: When given, every token must belong to this app / account, as in
                the seeds' "Manage Access Tokens for App" window.

        Returns:
            How many tokens were removed.

        Raises:
            TokenNotFound: An id names no token (in the given scope); nothing is removed.
            ValidationError: ``token_ids`` is not a collection of strings, has more than
                1000 ids, or an id longer than any token id.
        """
        # Typed as a collection, but hosts pass outside input through: check at run time,
        # counting first so that a huge collection is refused without a look at its items.
        collection = not _is_text(token_ids) and isinstance(cast(object, token_ids), Collection)
        if collection and len(token_ids) > MAX_TOKEN_IDS_PER_REMOVAL:
            raise ValidationError(
                [
                    FieldProblem(
                        "token_ids",
                        "too_many",
                        f"at most {MAX_TOKEN_IDS_PER_REMOVAL} tokens can be removed at once",
                    )
                ]
            )
        if not collection or not all(_is_text(t) for t in token_ids):
            raise ValidationError(
                [FieldProblem("token_ids", "invalid", "token_ids must be a list of token ids")]
            )
        if any(len(t) > MAX_ACCOUNT_LENGTH for t in token_ids):
            raise ValidationError(
                [FieldProblem("token_ids", "too_long", "a token id is longer than any token id")]
            )
        now = self._now()
        with self._transaction() as (tx, events):
            found = []
            for token_id in dict.fromkeys(token_ids):
                record = tx.tokens.get(token_id) if _is_id(token_id) else None
                if record is None or (key is not None and record.app_key != key):
                    raise TokenNotFound(token_id)
                if account is not None and record.account != account:
                    raise TokenNotFound(token_id)
                found.append(record)
            removed = tx.tokens.remove([t.token_id for t in found])
            for (app_key, owner), ids in _group_ids(found).items():
                events.append(
                    Event(EventKind.TOKENS_REMOVED, now, app_key, owner, {"token_ids": ids})
                )
        return removed

    def remove_all_tokens(self, key: str, account: str) -> int:
        """Remove every token of the app on the account (R20). The app may obtain new ones.

        The account's refresh tokens and authorization codes for the app go too.

        Returns:
            How many access tokens were removed.

        Raises:
            AppNotFound: No app has ``key``.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            self._app(tx, key)
            removed, grants = _remove_grants(tx, key, account) if _is_id(account) else (0, {})
            if removed or grants:
                events.append(
                    Event(EventKind.TOKENS_REMOVED, now, key, account, {"count": removed, **grants})
                )
        return removed

    def purge_expired_tokens(
        self, *, batch_size: int = _DEFAULT_PURGE_BATCH, max_batches: int | None = None
    ) -> int:
        """Delete expired tokens in bounded batches, one short transaction each (R22).

        Expired authorization codes and refresh tokens are deleted alongside, in batches of
        the same size.

        Args:
            batch_size: Most tokens (and most codes, and most refresh tokens) deleted per
                transaction; at most 100 000 (a larger size is cut to that).
            max_batches: Stop after this many batches (``None``: until none are left).

        Returns:
            How many access tokens, codes and refresh tokens were deleted, together.
        """
        if batch_size < 1 or (max_batches is not None and max_batches < 1):
            raise ValueError("batch_size and max_batches must be at least 1")
        batch_size = min(batch_size, _MAX_PURGE_BATCH)
        now = self._now()
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            with self._transaction() as (tx, events):
                deleted = tx.tokens.purge_expired(now=now, limit=batch_size)
                codes = tx.codes.purge_expired(now=now, limit=batch_size)
                refresh = tx.refresh_tokens.purge_expired(now=now, limit=batch_size)
                if deleted or codes or refresh:
                    details = {"count": deleted, **_nonzero(codes=codes, refresh_tokens=refresh)}
                    events.append(Event(EventKind.TOKENS_PURGED, now, details=details))
            total += deleted + codes + refresh
            batches += 1
            if max(deleted, codes, refresh) < batch_size:
                break
        return total

    # -- OAuth 2.0 grants -------------------------------------------------------------------
    #
    # The operations an OAuth 2.0 server (such as `appregistry.oauth2`) is built on. Client
    # authentication is a separate step (`authenticate_client`): the grant operations trust
    # the ``key`` they are given.

    def authenticate_client(self, key: str, secret: str) -> Decision:
        """Check an app's key and secret, as a token endpoint authenticates its client (R25).

        An unknown key (a removed app's too, R13) and a wrong secret give the same decision,
        after the same work. Whether the app is enabled or trusted is not looked at: that is
        decided when a token is issued.

        A previous secret in its grace window (`rotate_secret`) authenticates too.

        A failure emits an `EventKind.AUTHENTICATION_FAILED` event (see
        `_authentication_failed`), as `issue_token` does.

        Returns:
            `Decision.allow`, or a denial with reason ``bad_credentials``.

        >>> from appregistry.storage.memory import MemoryStorage
        >>> Registry(storage=MemoryStorage()).authenticate_client("K" * 32, "S" * 32).reason
        <Reason.BAD_CREDENTIALS: 'bad_credentials'>
        """
        now = self._now()
        valid = False
        if _is_presented(secret):
            with self._transaction() as (tx, _):
                stored = tx.apps.get_secret(key) if _is_id(key) else None
                # Always compare, even for an unknown key, so both take the same time (R25).
                valid = self._secret_valid(stored, secret, now)
        if not valid:
            self._authentication_failed(key, now)
            return _BAD_CREDENTIALS
        return Decision.allow()

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
        the same answer (R25): logs shipped elsewhere must not tell which keys exist either.
        The event is emitted after the (read-only) transaction, like every other.
        """
        presented = key if isinstance(key, str) and cred.is_importable_credential(key) else None
        failures = self._failures.add(presented, now)
        details = {"failures": failures}
        self._emit([Event(EventKind.AUTHENTICATION_FAILED, now, presented, None, details)])

    def redirect_url_matches(self, key: str, redirect_url: str) -> bool:
        """Whether ``redirect_url`` is the app's redirect URL (R4).

        Compared exactly after the normalization registration applies (host case and IDN
        spelling, percent-encoding, default port), never as a prefix. ``False`` for an
        unknown key, and for a URL that is not a valid redirect URL.
        """
        with self._transaction() as (tx, _):
            app = tx.apps.get(key) if _is_id(key) else None
        return app is not None and _same_redirect(app.redirect_url, redirect_url)

    def authorize(
        self,
        key: str,
        account: str,
        *,
        redirect_url: str,
        approved_by: str,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> IssuedCode:
        """A user approved the app on the account: install it there and issue a code.

        This ends the consent step of the authorization-code flow. The app is installed on
        ``account`` (R15, by ``approved_by``) unless it already is, and an authorization code
        bound to the app and the redirect URL is issued. The code lives ``code_lifetime``
        (ten minutes by default) and works once, in `exchange_code`.

        Args:
            key: The app (OAuth's ``client_id``).
            account: The account the app will act for.
            redirect_url: The request's ``redirect_uri``: exactly the app's (R4).
            approved_by: The user who approved, holding the account's apps permission.
            code_challenge, code_challenge_method: PKCE (RFC 7636). Only ``"S256"`` is
                accepted: ``"plain"`` is refused, and so is a challenge without a method
                (which RFC 7636 reads as ``"plain"``).

        Returns:
            The code, to send to the redirect URL, and its record.

        Raises:
            ValidationError: A malformed account, user or PKCE parameter, or a redirect URL
                that is not the app's (field ``redirect_url``, code ``mismatch``: never
                redirect there); every problem at once. Nothing is written.
            Denied: The app is unknown or disabled, the account is not permitted to use apps,
                or the app is suspended on the account. Nothing is written.
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        approved_by = problems.identifier("approved_by", approved_by)  # type: ignore[assignment]
        _check_pkce(problems, code_challenge, code_challenge_method)
        now = self._now()
        code = cred.generate_token()
        digest = self._credentials.code_digest(code)
        with self._transaction() as (tx, events):
            app = tx.apps.get(key) if _is_id(key) else None
            if app is not None and not _same_redirect(app.redirect_url, redirect_url):
                problems.add(
                    "redirect_url", "mismatch", "redirect_url is not the app's redirect URL"
                )
            problems.raise_if_any()
            existing = tx.installations.get(key, account) if app is not None else None
            request = AccessRequest(
                Action.INSTALL,
                app=app,
                account=account,
                # An existing installation stays as it is: suspended, it is denied (R12).
                installation=existing,
                permission=tx.permissions.get(account),
            )
            decision = self._policy.evaluate(request, now)
            if not decision.allowed or app is None:
                raise Denied(decision, f"cannot authorize the app: {decision.detail}")
            if existing is None:
                tx.installations.put(Installation(app.key, account, approved_by, now))
                events.append(
                    Event(EventKind.APP_INSTALLED, now, app.key, account, {"by": approved_by})
                )
            record = AuthorizationCode(
                app_key=app.key,
                account=account,
                redirect_url=app.redirect_url,
                approved_by=approved_by,
                issued_at=now,
                expires_at=now + self._code_lifetime,
                code_challenge=code_challenge,
                code_challenge_method=code_challenge_method,
            )
            tx.codes.add(record, digest)
            events.append(
                Event(
                    EventKind.CODE_ISSUED,
                    now,
                    app.key,
                    account,
                    {"by": approved_by, "pkce": code_challenge_method},
                )
            )
        return IssuedCode(code, record)

    def exchange_code(
        self,
        key: str,
        code: str,
        *,
        redirect_url: str,
        code_verifier: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedToken:
        """Exchange an authorization code for an access token and a refresh token.

        **The caller must have authenticated the client already** (`authenticate_client`,
        or the OAuth server's client authentication): this method believes that ``key`` is
        the app asking, and checks only that the code was issued to it.

        The code is taken first, so it works once, even when the exchange then fails. It
        must have been issued to this app for this ``redirect_url`` (exactly, R4), be
        unexpired, and, when it was issued with a PKCE challenge, come with the verifier
        whose S256 hash is that challenge. A verifier for a code issued without a challenge
        is refused too (a PKCE downgrade, RFC 9700). Then the policy decides as for any token
        issued for the account: the app enabled, installed and active there, the account
        permitted (R11, R12, R14, R15).

        The tokens are a new grant family: `refresh` rotates within it, `revoke` ends it.

        Returns:
            The access token (grant ``authorization_code``) with its ``refresh_token``.

        Raises:
            InvalidGrant: The code is unknown, used, expired, another app's or another
                redirect URL's, or the PKCE verifier is missing, malformed or wrong. Its
                message is the same for all; ``detail`` says which, for logs.
            Denied: The policy refused; ``error.decision`` says why.
            ValidationError: ``user_agent`` is malformed (checked before the code is taken).
        """
        user_agent = _checked_user_agent(user_agent)
        if not _is_presented(code):
            raise InvalidGrant("the code is malformed")
        now = self._now()
        digests = self._credentials.code_digests(code)
        with self._transaction() as (tx, events):
            # A failure is returned, not raised, so that taking the code still commits.
            outcome = self._exchange(
                tx,
                events,
                now,
                key=key,
                digests=digests,
                redirect_url=redirect_url,
                verifier=code_verifier,
                user_agent=user_agent,
            )
        if isinstance(outcome, IssuedToken):
            return outcome
        raise outcome

    def _exchange(
        self,
        tx: UnitOfWork,
        events: list[Event],
        now: datetime,
        *,
        key: str,
        digests: Sequence[bytes],
        redirect_url: object,
        verifier: object,
        user_agent: str | None,
    ) -> IssuedToken | InvalidGrant | Denied:
        record = _first(tx.codes.take, digests)
        if record is None:
            return InvalidGrant("the code is unknown, used or purged")
        if record.app_key != key:
            return InvalidGrant("the code was issued to another app")
        if not _same_redirect(record.redirect_url, redirect_url):
            return InvalidGrant("the redirect URL is not the one the code was issued for")
        if record.is_expired(now):
            return InvalidGrant("the code has expired")
        pkce_failure = _pkce_failure(record, verifier)
        if pkce_failure is not None:
            return InvalidGrant(pkce_failure)
        app = tx.apps.get(record.app_key)
        decision = self._grant_decision(tx, app, record.account, Grant.AUTHORIZATION_CODE, now)
        if not decision.allowed or app is None:
            return Denied(decision, "the app may not act for the account")
        return self._issue_pair(
            tx,
            events,
            now,
            app=app,
            account=record.account,
            grant=Grant.AUTHORIZATION_CODE,
            family_id=cred.generate_token_id(),
            user_agent=user_agent,
        )

    def refresh(
        self, key: str, refresh_token: str, *, user_agent: str | None = None
    ) -> IssuedToken:
        """Rotate a refresh token: a new access token and a new refresh token, same family.

        **The caller must have authenticated the client already**, as for `exchange_code`.

        A refresh token works once. Presenting one that was already used means it leaked
        (or its holder is confused): the whole family is revoked, its access tokens and
        refresh tokens alike, that revocation is committed, and then `InvalidGrant` is raised.
        Otherwise the policy decides as for a token of the family's grant (R11, R12, R14,
        R19); a denied refresh token is left unused, so it works again once the app may act.

        Returns:
            The new access token with its ``refresh_token``.

        Raises:
            InvalidGrant: The refresh token is unknown, revoked, expired, another app's, or
                was used before (and its family is now revoked). ``detail`` says which.
            Denied: The policy refused; ``error.decision`` says why.
            ValidationError: ``user_agent`` is malformed.
        """
        user_agent = _checked_user_agent(user_agent)
        if not _is_presented(refresh_token):
            raise InvalidGrant("the refresh token is malformed")
        now = self._now()
        digests = self._credentials.refresh_digests(refresh_token)
        with self._transaction() as (tx, events):
            # A failure is returned, not raised, so that a family revocation still commits.
            outcome = self._refresh(
                tx, events, now, key=key, digests=digests, user_agent=user_agent
            )
        if isinstance(outcome, IssuedToken):
            return outcome
        raise outcome

    def _refresh(
        self,
        tx: UnitOfWork,
        events: list[Event],
        now: datetime,
        *,
        key: str,
        digests: Sequence[bytes],
        user_agent: str | None,
    ) -> IssuedToken | InvalidGrant | Denied:
        record = _first(tx.refresh_tokens.get, digests)
        if record is None:
            return InvalidGrant("the refresh token is unknown, revoked or purged")
        if record.app_key != key:
            return InvalidGrant("the refresh token was issued to another app")
        if record.rotated_at is not None:
            self._revoke_family(tx, events, now, record, cause="reuse")
            return InvalidGrant("the refresh token was used before; its family is revoked")
        if record.is_expired(now):
            return InvalidGrant("the refresh token has expired")
        app = tx.apps.get(record.app_key)
        decision = self._grant_decision(tx, app, record.account, record.grant, now)
        if not decision.allowed or app is None:
            return Denied(decision, "the app may not act for the account")
        tx.refresh_tokens.mark_rotated(record.token_id, now)
        return self._issue_pair(
            tx,
            events,
            now,
            app=app,
            account=record.account,
            grant=record.grant,
            family_id=record.family_id,
            user_agent=user_agent,
        )

    def revoke(self, token: str, *, key: str | None = None) -> bool:
        """Revoke an access token or a refresh token (RFC 7009).

        An access token is removed. A refresh token revokes its whole family: every access
        and refresh token of that authorization. Anything else (unknown, already revoked,
        malformed, not text) is a no-op: this never raises for bad input.

        Args:
            token: The token, as the client holds it.
            key: When given, only a token of this app is revoked (RFC 7009 asks the server
                to check that the token was issued to the client revoking it).

        Returns:
            Whether a token was revoked.
        """
        if not _is_presented(token):
            return False
        now = self._now()
        with self._transaction() as (tx, events):
            access = _first(tx.tokens.get_by_digest, self._credentials.token_digests(token))
            if access is not None:
                if key is not None and access.app_key != key:
                    return False
                tx.tokens.remove([access.token_id])
                events.append(
                    Event(
                        EventKind.TOKENS_REMOVED,
                        now,
                        access.app_key,
                        access.account,
                        {"token_ids": [access.token_id]},
                    )
                )
                return True
            refresh = _first(tx.refresh_tokens.get, self._credentials.refresh_digests(token))
            if refresh is None or (key is not None and refresh.app_key != key):
                return False
            self._revoke_family(tx, events, now, refresh, cause="revoked")
        return True

    def _grant_decision(
        self, tx: UnitOfWork, app: App | None, account: str, grant: Grant, now: datetime
    ) -> Decision:
        # The policy on issuing a token of ``grant`` for ``account``, as `issue_token` asks
        # it, without the credentials (the caller authenticated the client).
        client_credentials = grant is Grant.CLIENT_CREDENTIALS
        request = AccessRequest(
            Action.ISSUE_TOKEN,
            app=app,
            account=account,
            installation=tx.installations.get(app.key, account) if app is not None else None,
            permission=tx.permissions.get(account),
            needs_installation=not client_credentials,
            needs_trust=client_credentials,
        )
        return self._policy.evaluate(request, now)

    def _new_access_token(
        self,
        app_key: str,
        account: str,
        grant: Grant,
        now: datetime,
        *,
        user_agent: str | None,
        family_id: str | None = None,
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
        )

    def _issue_pair(
        self,
        tx: UnitOfWork,
        events: list[Event],
        now: datetime,
        *,
        app: App,
        account: str,
        grant: Grant,
        family_id: str,
        user_agent: str | None,
    ) -> IssuedToken:
        token, refresh = cred.generate_token(), cred.generate_token()
        record = self._new_access_token(
            app.key, account, grant, now, user_agent=user_agent, family_id=family_id
        )
        refresh_record = RefreshToken(
            token_id=cred.generate_token_id(),
            family_id=family_id,
            app_key=app.key,
            account=account,
            grant=grant,
            issued_at=now,
            expires_at=now + self._refresh_token_lifetime,
        )
        tx.tokens.add(record, self._credentials.token_digest(token))
        tx.refresh_tokens.add(refresh_record, self._credentials.refresh_digest(refresh))
        events.append(
            Event(
                EventKind.TOKEN_ISSUED,
                now,
                app.key,
                account,
                {
                    "token_id": record.token_id,
                    "grant": str(grant),
                    "family_id": family_id,
                    "refresh_token_id": refresh_record.token_id,
                },
            )
        )
        return IssuedToken(token, record, refresh)

    @staticmethod
    def _revoke_family(
        tx: UnitOfWork, events: list[Event], now: datetime, member: RefreshToken, *, cause: str
    ) -> None:
        refresh_tokens = tx.refresh_tokens.remove_family(member.family_id)
        tokens = tx.tokens.remove_family(member.family_id)
        events.append(
            Event(
                EventKind.FAMILY_REVOKED,
                now,
                member.app_key,
                member.account,
                {
                    "family_id": member.family_id,
                    "cause": cause,
                    "tokens_removed": tokens,
                    "refresh_tokens_removed": refresh_tokens,
                },
            )
        )


_NAIVE_CLOCK: Final = "the clock must return an aware datetime (with a tzinfo)"
# Builds a TokenCheck from a (decision, token) pair in C: the named tuple's own __new__ is a
# Python function, and every token check makes one.
_token_check: Final[Callable[[tuple[Decision, AccessToken]], TokenCheck]] = functools.partial(
    tuple.__new__, TokenCheck
)
_UNKNOWN_TOKEN: Final = TokenCheck(Decision(Reason.TOKEN_UNKNOWN, "the token is not known"))
# One decision for an unknown key and a wrong secret alike (R25).
_BAD_CREDENTIALS: Final = Decision(Reason.BAD_CREDENTIALS, "the key or secret is wrong")


def _grace_deadline(until: object, now: datetime) -> datetime:
    """``until`` as the end of a secret's grace window, in UTC, if it is a fit one."""
    problem = None
    if not isinstance(until, datetime):
        problem = ("not_datetime", "old_secret_valid_until must be a datetime")
    elif until.utcoffset() is None:
        problem = ("not_aware", "old_secret_valid_until must be aware (have a time zone)")
    elif until <= now:
        problem = ("not_in_future", "old_secret_valid_until must be in the future")
    elif until - now > MAX_SECRET_GRACE:
        days = MAX_SECRET_GRACE.days
        problem = ("too_far", f"old_secret_valid_until must be at most {days} days ahead")
    if problem is not None:
        raise ValidationError([FieldProblem("old_secret_valid_until", *problem)])
    assert isinstance(until, datetime)  # noqa: S101 - for the type checker; checked above
    return until.astimezone(UTC)


def _first(look_up: Callable[[bytes], T | None], digests: Sequence[bytes]) -> T | None:
    # What is stored under the first of ``digests`` (one per configured pepper) that has any.
    for digest in digests:
        found = look_up(digest)
        if found is not None:
            return found
    return None


def _is_presented(token: object) -> bool:
    # A token, code or refresh token as a client presents it: worth digesting and looking up.
    return isinstance(token, str) and 0 < len(token) <= _MAX_PRESENTED_TOKEN


def _identifiers(**values: object) -> list[str]:
    # The ids, checked as `Problems.identifier` checks them; every problem raised at once.
    problems = Problems()
    checked = [problems.identifier(field, value) for field, value in values.items()]
    problems.raise_if_any()
    return cast(list[str], checked)


def _checked_user_agent(user_agent: object) -> str | None:
    problems = Problems()
    checked = problems.text(
        "user_agent", user_agent, max_length=MAX_USER_AGENT_LENGTH, required=False
    )
    problems.raise_if_any()
    return checked


def _same_redirect(expected: str, presented: object) -> bool:
    # ``expected`` is stored canonical; the presented URL is normalized as registration
    # normalizes, then compared whole: never as a prefix (R4).
    problems = Problems()
    normalized = problems.url("redirect_url", presented, https_only=True)
    return not problems and normalized == expected


def _check_pkce(problems: Problems, challenge: object, method: object) -> None:
    if challenge is None and method is None:
        return
    if method is None:
        problems.add(
            "code_challenge_method",
            "required",
            'code_challenge_method "S256" is required with a code_challenge ("plain" is refused)',
        )
    elif method != "S256":
        problems.add(
            "code_challenge_method",
            "unsupported",
            'code_challenge_method must be "S256" ("plain" is refused)',
        )
    if challenge is None:
        problems.add("code_challenge", "required", "code_challenge is required with its method")
    elif not cred.is_s256_challenge(challenge):
        problems.add(
            "code_challenge", "invalid", "code_challenge must be 43 base64url characters (S256)"
        )


def _pkce_failure(code: AuthorizationCode, verifier: object) -> str | None:
    """Why the PKCE check fails for ``code`` and ``verifier``, or ``None`` when it passes."""
    if code.code_challenge is None:
        # RFC 9700, 2.1.1: a verifier for a code issued without a challenge is refused, or an
        # attacker who stripped the challenge from the request would downgrade PKCE unseen.
        return None if verifier is None else "a code_verifier came for a code issued without PKCE"
    if verifier is None:
        return "the code was issued with PKCE: a code_verifier is required"
    if not cred.is_code_verifier(verifier):
        return "the code_verifier is malformed"
    expected = code.code_challenge.encode("ascii", "replace")
    if not hmac.compare_digest(cred.pkce_s256(str(verifier)).encode("ascii"), expected):
        return "the code_verifier does not match the code_challenge"
    return None


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


def _group_ids(tokens: Sequence[AccessToken]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for token in tokens:
        grouped.setdefault((token.app_key, token.account), []).append(token.token_id)
    return grouped

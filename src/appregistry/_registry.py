"""The Registry: every operation on apps, installations and tokens, one transaction each."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

import attrs

from . import _credentials as cred
from ._policy import AccessRequest, Action, Decision, Policy, Reason
from ._records import (
    AccessToken,
    App,
    AppListing,
    AppsPermission,
    Event,
    EventKind,
    Grant,
    ImportedCredentials,
    Installation,
    InstallationListing,
    IssuedToken,
    Page,
    RegisteredApp,
)
from ._validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_USER_AGENT_LENGTH,
    Problems,
)
from .errors import (
    AppNotFound,
    Denied,
    FieldProblem,
    InstallationNotFound,
    LimitExceeded,
    SecretNotRetrievable,
    TokenNotFound,
    ValidationError,
)
from .ports import ListQuery, Storage, UnitOfWork

__all__ = ["UNSET", "Clock", "Listener", "Registry", "TokenCheck"]

logger = logging.getLogger("appregistry")

#: A clock returns the current time as an aware datetime. Injected so tests control time.
Clock: TypeAlias = Callable[[], datetime]
#: A listener receives each `Event` after its transaction has committed.
Listener: TypeAlias = Callable[[Event], None]

#: Default lifetime of an access token (R18).
DEFAULT_TOKEN_LIFETIME: Final = timedelta(hours=1)
#: Default number of apps one owner may register (R9).
DEFAULT_MAX_APPS_PER_OWNER: Final = 1000
#: Most token ids one removal may name.
MAX_TOKEN_IDS_PER_REMOVAL: Final = 1000
#: Presented tokens longer than this are unknown without being digested.
_MAX_PRESENTED_TOKEN: Final = 512
_KEY_ATTEMPTS: Final = 5
_DEFAULT_PURGE_BATCH: Final = 1000


class _Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


#: The default of `Registry.update_app` arguments: "leave this field as it is".
UNSET: Final = _Unset.UNSET


def system_clock() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@attrs.frozen
class TokenCheck:
    """The answer to a token check: the decision, and the token's record when it is known.

    Show callers outside only whether it is ``allowed``; ``reason`` is for logs (R23).
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


@attrs.define
class Registry:
    """The one composition root: apps, installations, access tokens and their policy.

    Args:
        storage: A `appregistry.ports.Storage`, such as
            `appregistry.storage.memory.MemoryStorage`.
        clock: Returns the current time (aware). Read once per operation.
        policy: The rules; `Policy()` holds the built-in ones, hosts add theirs.
        token_lifetime: How long an access token lives (R18).
        max_apps_per_owner: How many apps one owner may register (R9).
        pepper: A server-side key for token and secret digests, kept outside the database.
        secret_encryption_key: A Fernet key. With it, secrets are stored encrypted and
            `reveal_secret` works (R7); without it, a secret is shown only once.
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
    _max_apps_per_owner: int = attrs.field(
        default=DEFAULT_MAX_APPS_PER_OWNER, alias="max_apps_per_owner", kw_only=True
    )
    _pepper: bytes | None = attrs.field(default=None, alias="pepper", kw_only=True, repr=False)
    _secret_encryption_key: bytes | str | None = attrs.field(
        default=None, alias="secret_encryption_key", kw_only=True, repr=False
    )
    _listeners: tuple[Listener, ...] = attrs.field(
        default=(), alias="listeners", kw_only=True, converter=tuple
    )
    _credentials: cred.Credentials = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self._token_lifetime <= timedelta(0):
            raise ValueError("token_lifetime must be positive")
        if self._max_apps_per_owner < 1:
            raise ValueError("max_apps_per_owner must be at least 1")
        self._credentials = cred.Credentials(
            pepper=self._pepper, encryption_key=self._secret_encryption_key
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return an aware datetime (with a tzinfo)")
        return now

    @contextmanager
    def _transaction(self) -> Iterator[tuple[UnitOfWork, list[Event]]]:
        events: list[Event] = []
        with self._storage.transaction() as tx:
            yield tx, events
        # Only now is the change durable: listeners never hear of a rolled-back change.
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
        app = tx.apps.get(key) if _is_text(key) else None
        if app is None:
            raise AppNotFound(str(key))
        return app

    @staticmethod
    def _installation(tx: UnitOfWork, key: str, account: str) -> Installation:
        installation = tx.installations.get(key, account)
        if installation is None:
            raise InstallationNotFound(key, account)
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
            if tx.apps.get(credentials.key) is not None:
                raise ValidationError(
                    [FieldProblem("key", "taken", "an app with this key already exists")]
                )
            return credentials.key
        # 190 random bits make a collision practically impossible; checking costs one look-up.
        for _ in range(_KEY_ATTEMPTS):
            key = cred.generate_key()
            if tx.apps.get(key) is None:
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
        """Replace the app's secret and remove all its access tokens, in one transaction (R8).

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
            removed = tx.tokens.remove_all_of_app(key)
            events.append(
                Event(
                    EventKind.APP_SECRET_REGENERATED,
                    now,
                    key,
                    app.owner,
                    {"tokens_removed": removed},
                )
            )
        return RegisteredApp(app, secret)

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

        Raises:
            AppNotFound: No app has ``key``.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            app = self._app(tx, key)
            tokens = tx.tokens.remove_all_of_app(key)
            installations = tx.installations.remove_all_of_app(key)
            tx.apps.remove(key)
            events.append(
                Event(
                    EventKind.APP_REMOVED,
                    now,
                    key,
                    app.owner,
                    {"tokens_removed": tokens, "installations_removed": installations},
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
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        by = problems.identifier("by", by)  # type: ignore[assignment]
        problems.raise_if_any()
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
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        problems.raise_if_any()
        now = self._now()
        with self._transaction() as (tx, events):
            if tx.permissions.get(account) is not None:
                tx.permissions.remove(account)
                events.append(Event(EventKind.ACCOUNT_FORBIDDEN, now, None, account))

    def get_permission(self, account: str) -> AppsPermission | None:
        """The account's apps permission, or ``None`` if it has none."""
        with self._transaction() as (tx, _):
            return tx.permissions.get(account)

    def install_app(self, key: str, account: str, *, by: str) -> Installation:
        """Install (authorize) the app on the account (R15).

        Installing again returns the existing installation unchanged (suspended or not).

        Args:
            by: The user who authorized it, holding the account's apps permission.

        Raises:
            AppNotFound: No app has ``key``.
            Denied: The app is disabled or the account is not permitted to use apps.
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        by = problems.identifier("by", by)  # type: ignore[assignment]
        problems.raise_if_any()
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

        Returns:
            How many tokens were removed.

        Raises:
            InstallationNotFound: The app is not installed on the account.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            self._installation(tx, key, account)
            removed = tx.tokens.remove_for(key, account)
            tx.installations.remove(key, account)
            events.append(
                Event(EventKind.APP_UNINSTALLED, now, key, account, {"tokens_removed": removed})
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
            ValidationError: ``account`` or ``user_agent`` is malformed.
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
        problems.raise_if_any()

        now = self._now()
        token = cred.generate_token()
        digest = self._credentials.token_digest(token)
        with self._transaction() as (tx, events):
            app = tx.apps.get(key)
            # Always compare, even for an unknown key, so both take the same time (R25).
            credentials_valid = self._credentials.secret_matches(tx.apps.get_secret(key), secret)
            client_credentials = account is None
            acting_for = (app.owner if app is not None else None) if account is None else account
            request = AccessRequest(
                Action.ISSUE_TOKEN,
                app=app,
                account=acting_for,
                # The owner's installation too, if any: suspending it there stops the app (R12).
                installation=(
                    tx.installations.get(key, acting_for) if acting_for is not None else None
                ),
                permission=tx.permissions.get(acting_for) if acting_for is not None else None,
                needs_installation=not client_credentials,
                needs_trust=client_credentials,
                credentials_valid=credentials_valid,
            )
            decision = self._policy.evaluate(request, now)
            if not decision.allowed or app is None or acting_for is None:
                raise Denied(decision, "invalid client credentials, or the app may not act")
            record = AccessToken(
                token_id=cred.generate_token_id(),
                app_key=app.key,
                account=acting_for,
                grant=Grant.CLIENT_CREDENTIALS if client_credentials else Grant.AUTHORIZATION_CODE,
                issued_at=now,
                expires_at=now + self._token_lifetime,
                user_agent=user_agent,
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

    def check_token(self, token: str) -> TokenCheck:
        """May this access token act now? One storage round trip, then the pure policy.

        Anything that is not a token this registry issued (wrong type, absurd length, removed,
        purged) is ``token_unknown``; it never raises for bad input.

        >>> from appregistry.storage.memory import MemoryStorage
        >>> Registry(storage=MemoryStorage()).check_token("no such token").reason
        <Reason.TOKEN_UNKNOWN: 'token_unknown'>
        """
        now = self._now()
        if not _is_text(token) or not token or len(token) > _MAX_PRESENTED_TOKEN:
            return _UNKNOWN_TOKEN
        context = self._storage.token_context(self._credentials.token_digest(token))
        if context is None:
            return _UNKNOWN_TOKEN
        request = AccessRequest.for_token(
            context.token, context.app, context.installation, context.permission
        )
        return TokenCheck(self._policy.evaluate(request, now), context.token)

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
            ValidationError: ``token_ids`` is not a collection of strings, or too long.
        """
        if _is_text(token_ids) or not all(_is_text(t) for t in token_ids):
            raise ValidationError(
                [FieldProblem("token_ids", "invalid", "token_ids must be a list of token ids")]
            )
        if len(token_ids) > MAX_TOKEN_IDS_PER_REMOVAL:
            raise ValidationError(
                [
                    FieldProblem(
                        "token_ids",
                        "too_many",
                        f"at most {MAX_TOKEN_IDS_PER_REMOVAL} tokens can be removed at once",
                    )
                ]
            )
        now = self._now()
        with self._transaction() as (tx, events):
            found = []
            for token_id in dict.fromkeys(token_ids):
                record = tx.tokens.get(token_id)
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

        Returns:
            How many tokens were removed.

        Raises:
            AppNotFound: No app has ``key``.
        """
        now = self._now()
        with self._transaction() as (tx, events):
            self._app(tx, key)
            removed = tx.tokens.remove_for(key, account)
            if removed:
                events.append(
                    Event(EventKind.TOKENS_REMOVED, now, key, account, {"count": removed})
                )
        return removed

    def purge_expired_tokens(
        self, *, batch_size: int = _DEFAULT_PURGE_BATCH, max_batches: int | None = None
    ) -> int:
        """Delete expired tokens in bounded batches, one short transaction each (R22).

        Args:
            batch_size: Most tokens deleted per transaction.
            max_batches: Stop after this many batches (``None``: until none are left).

        Returns:
            How many tokens were deleted.
        """
        if batch_size < 1 or (max_batches is not None and max_batches < 1):
            raise ValueError("batch_size and max_batches must be at least 1")
        now = self._now()
        total = 0
        batches = 0
        while max_batches is None or batches < max_batches:
            with self._transaction() as (tx, events):
                deleted = tx.tokens.purge_expired(now=now, limit=batch_size)
                if deleted:
                    events.append(Event(EventKind.TOKENS_PURGED, now, details={"count": deleted}))
            total += deleted
            batches += 1
            if deleted < batch_size:
                break
        return total


_UNKNOWN_TOKEN: Final = TokenCheck(Decision(Reason.TOKEN_UNKNOWN, "the token is not known"))


def _is_text(value: object) -> bool:
    # Public entry points check types at run time too: hosts pass through outside input.
    return isinstance(value, str)


def _group_ids(tokens: Sequence[AccessToken]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for token in tokens:
        grouped.setdefault((token.app_key, token.account), []).append(token.token_id)
    return grouped

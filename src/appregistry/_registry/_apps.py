"""Apps: registering, changing, showing, disabling and removing them, and their secrets."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from .. import _credentials as cred
from .._records import App, AppListing, Event, EventKind, ImportedCredentials, Page, RegisteredApp
from .._validation import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, Problems
from ..errors import (
    AppNotFound,
    AppRegistryError,
    FieldProblem,
    LimitExceeded,
    SecretNotRetrievable,
    ValidationError,
)
from ..ports import UnitOfWork
from ._base import (
    _DEFAULT_REENCRYPT_BATCH,
    _KEY_ATTEMPTS,
    _MAX_PURGE_BATCH,
    MAX_SECRET_GRACE,
    UNSET,
    _RegistryBase,
    _remove_grants,
    _Unset,
)
from ._lists import ListKind, key_selection, list_query, with_cursors

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


class _Apps(_RegistryBase):
    """The operations on apps and their secrets."""

    __slots__ = ()

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
        """Register an app and make its key and secret.

        Args:
            owner: The account registering the app.
            credentials: An existing key and secret to keep, when migrating.

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
        """Replace the app's secret and remove all its tokens, in one transaction.

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

        Unlike `regenerate_secret`, nothing is revoked. The new secret authenticates at
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
        >>> from appregistry import Registry
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
        """The app's current secret, when the registry keeps secrets encrypted.

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
        """Enable the app: its unexpired tokens work again.

        Raises:
            AppNotFound: No app has ``key``.
        """
        return self._set_enabled(key, enabled=True)

    def disable_app(self, key: str) -> App:
        """Disable the app: it can neither obtain nor use tokens; they are kept.

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
        """Remove the app with its installations and tokens, in one transaction.

        Its refresh tokens and authorization codes go too, and its key is retired: it never
        authenticates again, and cannot be registered (imported) again.

        Raises:
            AppNotFound: No app has ``key`` (whatever ``key`` is).
        """
        self._remove_apps([key])

    def remove_apps(self, keys: Collection[str]) -> int:
        """Remove several apps, as `remove_app` removes one, all in one transaction.

        The seeds' "Remove Selected": every app named goes, with its installations, tokens,
        refresh tokens and codes, or none does. Each removal emits its own
        `EventKind.APP_REMOVED` event, after the transaction commits.

        Args:
            keys: The apps' keys, at most 1000. A key named twice is removed once.

        Returns:
            How many apps were removed.

        Raises:
            AppNotFound: A key names no app: the first such key, in the order given.
                Nothing is removed.
            ValidationError: ``keys`` is not a collection of strings, names more than
                1000, or has an entry longer than any key. Nothing is removed.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> keys = [registry.register_app("acme", name=name, homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb").app.key
        ...     for name in ("One", "Two", "Three")]
        >>> registry.remove_apps([keys[0], "no such key"])
        Traceback (most recent call last):
        ...
        appregistry.errors.AppNotFound: no app with key 'no such key'
        >>> registry.remove_apps(keys[:2]), registry.list_apps().total
        (2, 1)
        """
        return self._remove_apps(key_selection("keys", keys))

    def _remove_apps(self, selected: list[str]) -> int:
        now = self._now()
        with self._transaction() as (tx, events):
            apps = [self._app(tx, key) for key in selected]
            for app in apps:
                tokens, grants = _remove_grants(tx, app.key)
                installations = tx.installations.remove_all_of_app(app.key)
                tx.apps.remove(app.key)
                events.append(
                    Event(
                        EventKind.APP_REMOVED,
                        now,
                        app.key,
                        app.owner,
                        {
                            "tokens_removed": tokens,
                            "installations_removed": installations,
                            **grants,
                        },
                    )
                )
        return len(apps)

    def list_apps(
        self,
        *,
        owner: str | None = None,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
        after: str | None = None,
        before: str | None = None,
    ) -> Page[AppListing]:
        """A page of registered apps (all, or one owner's), each with its Instances.

        Ordered by name (case-insensitive), then key; ``search`` matches name and description,
        case-insensitively.

        Args:
            page: The page's number. With ``after`` or ``before`` it only labels the page.
            after, before: A cursor from a page of this list (`Page.after`,
                `Page.before`): the page is then the one that follows (precedes) that
                page, read at the cursor's position, as cheap as the first page.

        Raises:
            ValidationError: Bad paging, search text or cursor.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> for name in ("Gamma", "alpha", "Beta"):
        ...     _ = registry.register_app("acme", name=name, homepage="http://example.com/",
        ...         admin_email="admin@example.com", redirect_url="https://example.com/cb")
        >>> first = registry.list_apps(per_page=2)
        >>> [item.app.name for item in first.items], first.pages
        (['alpha', 'Beta'], 2)
        >>> second = registry.list_apps(page=2, per_page=2, after=first.after)
        >>> [item.app.name for item in second.items], second.after
        (['Gamma'], None)
        >>> back = registry.list_apps(page=1, per_page=2, before=second.before)
        >>> [item.app.name for item in back.items]
        ['alpha', 'Beta']
        """
        problems = Problems()
        if owner is not None:
            owner = problems.identifier("owner", owner)
        query = list_query(
            problems,
            ListKind.APPS,
            search=search,
            page=page,
            per_page=per_page,
            after=after,
            before=before,
        )
        with self._transaction() as (tx, _):
            found = tx.apps.list(query, owner=owner)
        return with_cursors(ListKind.APPS, found, _app_position)


def _app_position(listing: AppListing) -> tuple[str, str]:
    return (listing.app.name.casefold(), listing.app.key)


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

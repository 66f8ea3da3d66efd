"""The errors appregistry raises.

Every error derives from one base, so a host can catch them all at its boundary::

    AppRegistryError
    ├── ValidationError          bad input; carries every FieldProblem at once; nothing written
    ├── NotFound                 an id that names nothing
    │   ├── AppNotFound
    │   ├── InstallationNotFound
    │   └── TokenNotFound
    ├── Denied                   the policy refused; carries the Decision (for logs, not clients)
    ├── InvalidGrant             an authorization code or refresh token that cannot be used
    ├── LimitExceeded            a configured quota (apps per owner) is reached
    ├── SecretNotRetrievable     the registry keeps no encrypted copy of secrets
    ├── ConfigurationError       the pepper or encryption key is not the storage's own
    └── StorageError             the backend failed; the driver's error is chained
        ├── StorageUnavailable   cannot connect or open (names the place, never a password)
        └── SchemaError          not an appregistry database, or a newer schema than this code

Messages never contain a secret or a token, only public ids (app keys, token ids, accounts).

>>> from appregistry.errors import FieldProblem, ValidationError
>>> err = ValidationError([FieldProblem("name", "required", "name is required")])
>>> isinstance(err, ValueError), err.problems[0].code
(True, 'required')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._policy import Decision

__all__ = [
    "AppNotFound",
    "AppRegistryError",
    "ConfigurationError",
    "Denied",
    "FieldProblem",
    "InstallationNotFound",
    "InvalidGrant",
    "LimitExceeded",
    "NotFound",
    "SchemaError",
    "SecretNotRetrievable",
    "StorageError",
    "StorageUnavailable",
    "TokenNotFound",
    "ValidationError",
]


class AppRegistryError(Exception):
    """The base of every error appregistry raises on purpose."""


@attrs.frozen
class FieldProblem:
    """One problem with one input field.

    Attributes:
        field: The name of the argument or form field (``"homepage"``, ``"per_page"``).
        code: A stable, machine-readable code (``"required"``, ``"too_long"``, ``"not_https"``).
        message: A sentence for people; it never repeats a secret.
    """

    field: str
    code: str
    message: str


class ValidationError(AppRegistryError, ValueError):
    """Input was rejected; ``problems`` lists every field problem found, and nothing was written.

    >>> err = ValidationError([FieldProblem("a", "required", "a is required"),
    ...                        FieldProblem("b", "too_long", "b is too long")])
    >>> str(err)
    'a: a is required; b: b is too long'
    >>> sorted(err.fields)
    ['a', 'b']
    """

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems: tuple[FieldProblem, ...] = tuple(problems)
        if not self.problems:
            raise ValueError("ValidationError needs at least one FieldProblem")
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))

    @property
    def fields(self) -> frozenset[str]:
        """The names of the fields that have problems."""
        return frozenset(p.field for p in self.problems)


class NotFound(AppRegistryError, LookupError):
    """An id names nothing in the registry."""


class AppNotFound(NotFound):
    """No app has this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no app with key {key!r}")


class InstallationNotFound(NotFound):
    """The app is not installed on the account."""

    def __init__(self, key: str, account: str) -> None:
        self.key = key
        self.account = account
        super().__init__(f"app {key!r} is not installed on account {account!r}")


class TokenNotFound(NotFound):
    """No access token has this public token id."""

    def __init__(self, token_id: str) -> None:
        self.token_id = token_id
        super().__init__(f"no access token with id {token_id!r}")


class Denied(AppRegistryError, PermissionError):
    """The policy refused an operation.

    ``decision`` says why, for logs and admin views. Do not echo ``decision.reason`` to an
    unauthenticated client: an unknown key, a wrong secret and a disabled app must look the
    same from outside. ``str(error)`` is deliberately generic for that reason.
    """

    def __init__(self, decision: Decision, message: str = "access denied") -> None:
        self.decision = decision
        super().__init__(message)


class InvalidGrant(AppRegistryError):
    """An authorization code or refresh token cannot be used; OAuth's ``invalid_grant``.

    It is unknown, expired, already used, bound to another app or redirect URL, or its PKCE
    verifier does not match. ``str(error)`` is the same generic message whatever the cause, so
    a client learns nothing from it; ``detail`` says which it was, for logs.

    >>> error = InvalidGrant("the code has expired")
    >>> str(error), error.detail
    ('invalid, expired or used grant', 'the code has expired')
    """

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        super().__init__("invalid, expired or used grant")


class LimitExceeded(AppRegistryError):
    """A configured quota is reached, such as the number of apps one owner may register."""


class SecretNotRetrievable(AppRegistryError):
    """Secrets are kept only as digests; configure ``secret_encryption_key`` to reveal them."""


class ConfigurationError(AppRegistryError):
    """The registry's configuration does not fit its storage; nothing was written.

    Raised when a `appregistry.Registry` is made with a pepper, or secret encryption
    keys, other than the ones the storage's digests and ciphertexts were made with: every
    token would be unknown, or no secret could be revealed. The message says which and how
    to rotate instead; it never holds a pepper, a key or a fingerprint of one.
    """


class StorageError(AppRegistryError):
    """The storage backend failed; the driver's exception is chained as ``__cause__``."""


class StorageUnavailable(StorageError):
    """The database cannot be opened or reached. The message names it, without a password."""


class SchemaError(StorageError):
    """The database is not an appregistry database, or its schema is newer than this code."""

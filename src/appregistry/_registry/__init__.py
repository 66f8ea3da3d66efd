"""The Registry: every operation on apps, installations and tokens, one transaction each.

`Registry` is composed of one part per area of the domain, each in its own module:
`_apps`, `_accounts`, `_tokens` and `_grants` (OAuth 2.0), on the plumbing in `_base`.
"""

from __future__ import annotations

from ._accounts import _Accounts
from ._apps import _Apps
from ._base import _DEFAULT_PURGE_BATCH as _DEFAULT_PURGE_BATCH
from ._base import _MAX_PRESENTED_TOKEN as _MAX_PRESENTED_TOKEN
from ._base import _MAX_PURGE_BATCH as _MAX_PURGE_BATCH
from ._base import DEFAULT_MAX_APPS_PER_OWNER as DEFAULT_MAX_APPS_PER_OWNER
from ._base import DEFAULT_TOKEN_LIFETIME as DEFAULT_TOKEN_LIFETIME
from ._base import MAX_SECRET_GRACE as MAX_SECRET_GRACE
from ._base import MAX_TOKEN_IDS_PER_REMOVAL as MAX_TOKEN_IDS_PER_REMOVAL
from ._base import UNSET, Clock, Listener, TokenCheck
from ._base import _FailureCounter as _FailureCounter
from ._base import system_clock as system_clock
from ._cache import CheckCache
from ._grants import _Grants
from ._last_use import LastUse
from ._purge import DEFAULT_PURGE_REST as DEFAULT_PURGE_REST
from ._purge import PurgeCounts, _Purge
from ._tokens import _Tokens

__all__ = [
    "UNSET",
    "CheckCache",
    "Clock",
    "LastUse",
    "Listener",
    "PurgeCounts",
    "Registry",
    "TokenCheck",
]


class Registry(_Apps, _Accounts, _Tokens, _Grants, _Purge):
    """The one composition root: apps, installations, access tokens and their policy.

    Share one Registry between the threads of a process: it is safe to, since every operation
    is a transaction of its own and the SQLite and PostgreSQL storages lend each one a
    connection from their pool. Do not share it between processes. A pool belongs to the
    process that opened it, and connections that cross a ``fork()`` would be used by two
    processes at once, so open the Registry (and its storage) after the fork, never before:
    under a prefork server such as gunicorn or uWSGI, in each worker (a ``post_fork`` hook,
    no ``--preload``, or lazily on first use, as `appregistry.integrations.TokenGuard.from_url`
    does). "Threads and processes" in :doc:`embedding` says more.

    Args:
        storage: A `appregistry.ports.Storage`, such as
            `appregistry.storage.memory.MemoryStorage`.
        clock: Returns the current time (aware). Read once per operation.
        policy: The rules; `Policy()` holds the built-in ones, hosts add theirs.
        token_lifetime: How long an access token lives.
        code_lifetime: How long an authorization code lives (ten minutes).
        refresh_token_lifetime: How long a refresh token lives (30 days); a rotation issues
            a new one that lives as long again.
        max_apps_per_owner: How many apps one owner may register.
        pepper: A server-side key for token and secret digests, kept outside the database;
            or a sequence of them, newest first, to rotate it: the newest digests everything
            new, and tokens, codes, refresh tokens and secrets digested under an older one
            keep working (until they expire) while it stays in the sequence. ``None`` in the
            sequence stands for the built-in default: a registry that ran without a pepper
            moves to one with ``pepper=[new, None]``.
        secret_encryption_key: A Fernet key. With it, secrets are stored encrypted and
            `reveal_secret` works; without it, a secret is shown only once. A sequence
            of keys, newest first, rotates it (`cryptography.fernet.MultiFernet`): the newest
            encrypts, every one decrypts; `reencrypt_secrets` moves everything to the newest.
        failure_window: The window over which failed client authentications of one key are
            counted in `EventKind.AUTHENTICATION_FAILED` events (15 minutes).
        listeners: Called with every `Event` after its transaction commits.
        check_cache: A `CheckCache` to answer repeated checks of a token from process
            memory, within a bound it documents; ``None`` (the default) reads storage on
            every check. The storage must have a change feed (every built-in backend does).
        last_use: A `LastUse`: how each access token's ``last_used_at`` is recorded from
            the allowed checks (at most once a minute per token, in batches); ``None`` turns
            it off.

    >>> from appregistry.storage.memory import MemoryStorage
    >>> registry = Registry(storage=MemoryStorage())
    >>> registry.permit_account("acme", by="admin").account
    'acme'
    """

    __slots__ = ()

"""The records: immutable values that the Registry reads, decides on and stores.

Records never hold a plaintext secret, token or code. The values that carry one on their way
to the caller, `RegisteredApp`, `IssuedToken` and `IssuedCode`, keep it out of their ``repr``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

import attrs

T = TypeVar("T")


class Grant(enum.StrEnum):
    """How an access token was obtained; it decides which rules apply to it."""

    #: A trusted app with its key and secret alone; the token acts for the app's owner.
    CLIENT_CREDENTIALS = "client_credentials"
    #: An app the account installed, through a code its user approved; the token acts for
    #: that account.
    AUTHORIZATION_CODE = "authorization_code"
    #: An app the account installed, issued by the host without a code on the approval of a
    #: user it names (`appregistry.Registry.issue_token` with ``approved_by``); the token
    #: acts for that account, as an authorization code's does.
    USER_APPROVAL = "user_approval"


@attrs.frozen
class App:
    """A registered third-party app.

    URLs are stored in their canonical form (lower-case ASCII host, IDNs as ``xn--`` labels);
    `appregistry.display_url` gives the Unicode spelling for people.
    """

    key: str
    owner: str
    name: str
    homepage: str
    admin_email: str
    redirect_url: str
    created_at: datetime
    description: str | None = None
    image_url: str | None = None
    admin_phone: str | None = None
    trusted: bool = False
    enabled: bool = True


@attrs.frozen
class StoredSecret:
    """What storage keeps of an app secret: a keyed digest and, optionally, a ciphertext.

    After `appregistry.Registry.rotate_secret`, the digest of the secret it replaced is kept
    too, with the deadline until which that previous secret still authenticates (a grace
    window); never its ciphertext.

    >>> from datetime import datetime, UTC
    >>> until = datetime(2015, 4, 27, tzinfo=UTC)
    >>> stored = StoredSecret(b"new", previous_digest=b"old", previous_valid_until=until)
    >>> stored.previous_valid(datetime(2015, 4, 26, tzinfo=UTC)), stored.previous_valid(until)
    (True, False)
    """

    digest: bytes = attrs.field(repr=False)
    ciphertext: bytes | None = attrs.field(default=None, repr=False)
    previous_digest: bytes | None = attrs.field(default=None, repr=False)
    previous_valid_until: datetime | None = None

    def previous_valid(self, now: datetime) -> bool:
        """Whether the previous secret still authenticates at ``now``: until its deadline."""
        return (
            self.previous_digest is not None
            and self.previous_valid_until is not None
            and now < self.previous_valid_until
        )


@attrs.frozen
class AppsPermission:
    """The provider's permission for an account to use apps. No record: not permitted."""

    account: str
    granted_by: str
    granted_at: datetime


@attrs.frozen
class Installation:
    """An app authorized on an account: when, by whom, and whether it is suspended."""

    app_key: str
    account: str
    installed_by: str
    installed_at: datetime
    suspended: bool = False


@attrs.frozen
class AccessToken:
    """The stored facts about an access token; the token itself is only ever a digest.

    >>> from datetime import datetime, timedelta, UTC
    >>> t0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
    >>> token = AccessToken("t1", "K" * 32, "acme", Grant.CLIENT_CREDENTIALS, t0,
    ...                     t0 + timedelta(hours=1), "libwww-perl 5.833")
    >>> token.is_expired(t0 + timedelta(minutes=59)), token.is_expired(t0 + timedelta(hours=1))
    (False, True)
    """

    token_id: str
    app_key: str
    account: str
    grant: Grant
    issued_at: datetime
    expires_at: datetime
    user_agent: str | None = None
    #: The grant family (one authorization) the token belongs to, so that a family can be
    #: revoked at once; ``None`` for tokens issued outside a family (client credentials).
    family_id: str | None = None
    #: The user who approved the token for its account: ``approved_by`` of
    #: `appregistry.Registry.issue_token`, or the authorization code's approver (the tokens
    #: of a refresh rotation keep it). ``None`` for client credentials, which nobody
    #: approves, and for tokens stored before it was recorded.
    approved_by: str | None = None
    #: When the token was last used; kept by storage, ``None`` until something records it.
    last_used_at: datetime | None = None

    def is_expired(self, now: datetime) -> bool:
        """Whether the token is dead at ``now``: from ``expires_at`` on, it is."""
        return now >= self.expires_at


@attrs.frozen
class AuthorizationCode:
    """The stored facts about an authorization code; the code itself is only ever a digest.

    A code is bound to its app and redirect URL, lives ten minutes by default and works once.
    ``code_challenge`` is the PKCE challenge (RFC 7636), stored only with method ``"S256"``;
    it is a hash of the client's verifier, not a secret.

    ``redirect_url_given`` says whether the authorization request named the redirect URL
    (RFC 6749 section 4.1.1); if it did, the exchange must name it too (section 4.1.3).
    A used code is kept until it expires, with ``used_at`` and the ``family_id`` of the tokens
    its exchange issued, so that a replay can revoke them (section 10.5).

    >>> from datetime import datetime, timedelta, UTC
    >>> t0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
    >>> code = AuthorizationCode("K" * 32, "acme", "https://example.com/cb", "alice", t0,
    ...                          t0 + timedelta(minutes=10))
    >>> code.is_expired(t0 + timedelta(minutes=9)), code.is_expired(t0 + timedelta(minutes=10))
    (False, True)
    """

    app_key: str
    account: str
    redirect_url: str
    approved_by: str
    issued_at: datetime
    expires_at: datetime
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    redirect_url_given: bool = True
    used_at: datetime | None = None
    family_id: str | None = None

    def is_expired(self, now: datetime) -> bool:
        """Whether the code is dead at ``now``: from ``expires_at`` on, it is."""
        return now >= self.expires_at


@attrs.frozen
class RefreshToken:
    """The stored facts about a refresh token; the token itself is only ever a digest.

    Every refresh token belongs to a family: the access and refresh tokens of one
    authorization. Using it rotates it (``rotated_at`` is set, a new one is issued in the same
    family); presenting a rotated one again revokes the whole family.
    """

    token_id: str
    family_id: str
    app_key: str
    account: str
    grant: Grant
    issued_at: datetime
    expires_at: datetime
    rotated_at: datetime | None = None
    #: The user who approved the authorization the family stands for, so that every access
    #: token the rotation issues carries it too; ``None`` when not recorded.
    approved_by: str | None = None

    def is_expired(self, now: datetime) -> bool:
        """Whether the token is dead at ``now``: from ``expires_at`` on, it is."""
        return now >= self.expires_at


class TokenContext(NamedTuple):
    """Everything a token check needs, read by storage in one round trip.

    ``app``, ``installation`` and ``permission`` are those of the token's app and account, or
    ``None`` when they do not exist.

    Every API request builds one, so it is an immutable named tuple rather than an attrs
    class: it is made in half the time (see ``docs/performance.md``).
    """

    token: AccessToken
    app: App | None
    installation: Installation | None
    permission: AppsPermission | None


@attrs.frozen
class AppContext:
    """An app with what acting for one account takes, read by storage in one round trip.

    Issuing a token reads it: the app, its stored secret (to authenticate the caller), and
    ``account``'s installation of the app and apps permission. ``account`` is
    the account asked for or, when none was, the app's owner; ``installation`` and
    ``permission`` are ``None`` when they do not exist.
    """

    app: App
    secret: StoredSecret
    account: str
    installation: Installation | None
    permission: AppsPermission | None


@attrs.frozen
class Page(Generic[T]):
    """One page of a list, with the total count of matching entries.

    ``after`` and ``before`` are opaque cursors: pass ``after`` back (with ``page=page + 1``)
    for the page that follows this one, or ``before`` (with ``page=page - 1``) for the one
    that precedes it. A page reached by a cursor is read from the list's index at that
    position, so it costs what the first page does however deep it is; a page asked for by
    its number alone is counted out from the nearer end of the list (see "What a page costs"
    in ``docs/concepts.md``). ``after`` is ``None`` on the last page, ``before`` on the first,
    and both on a page without entries.

    >>> Page(items=("a", "b"), total=12, page=2, per_page=10).pages
    2
    """

    items: tuple[T, ...]
    total: int
    page: int
    per_page: int
    after: str | None = None
    before: str | None = None

    @property
    def pages(self) -> int:
        """The number of pages (at least 1, so an empty list still has page 1)."""
        return max(1, -(-self.total // self.per_page))


@attrs.frozen
class AppListing:
    """An app as the app lists show it: with its Instances, the accounts that installed it."""

    app: App
    instances: int


@attrs.frozen
class InstallationListing:
    """An app on an account's App Management, with the live Access Tokens count.

    Mostly an installed app: ``installation`` says when and by whom. An account's own app
    that is not installed there but has live tokens for it (a trusted app's
    client-credentials tokens) is listed too, with ``installation=None``, so that its
    owner sees and can remove them: every live token of an account is under one entry.
    """

    installation: Installation | None
    app: App
    access_tokens: int

    @property
    def installed(self) -> bool:
        """Whether the app is installed on the account (else it is the account's own app)."""
        return self.installation is not None


@attrs.frozen
class RegisteredApp:
    """The result of registering an app or regenerating its secret: the one time the secret shows.

    >>> from datetime import datetime, UTC
    >>> app = App("K" * 32, "acme", "MyApp", "http://example.com/", "a@example.com",
    ...           "https://example.com/cb", datetime(2015, 4, 20, tzinfo=UTC))
    >>> "s3cr3t" in repr(RegisteredApp(app, "s3cr3t"))
    False
    """

    app: App
    secret: str = attrs.field(repr=False)


@attrs.frozen
class IssuedToken:
    """A freshly issued access token: ``token`` goes to the client and is never shown again.

    ``refresh_token``, when the grant comes with one (the authorization-code flow), is shown
    this once too. Neither appears in the ``repr``.
    """

    token: str = attrs.field(repr=False)
    record: AccessToken
    refresh_token: str | None = attrs.field(default=None, repr=False)

    def expires_in(self, now: datetime) -> int:
        """Whole seconds from ``now`` until the token expires, as OAuth's ``expires_in``."""
        return max(0, int((self.record.expires_at - now).total_seconds()))


@attrs.frozen
class IssuedCode:
    """A freshly issued authorization code: ``code`` goes to the client via the user agent.

    >>> from datetime import datetime, timedelta, UTC
    >>> t0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
    >>> record = AuthorizationCode("K" * 32, "acme", "https://example.com/cb", "alice", t0,
    ...                            t0 + timedelta(minutes=10))
    >>> "c0de" in repr(IssuedCode("c0de", record))
    False
    """

    code: str = attrs.field(repr=False)
    record: AuthorizationCode


@attrs.frozen
class ImportedCredentials:
    """An existing key and secret to keep when migrating an installation.

    Both are 32 characters of the RFC 3986 unreserved set; the registry validates them.
    """

    key: str
    secret: str = attrs.field(repr=False)


class EventKind(enum.StrEnum):
    """What happened; the string values appear in audit logs."""

    APP_REGISTERED = "app_registered"
    APP_UPDATED = "app_updated"
    APP_SECRET_REGENERATED = "app_secret_regenerated"
    APP_SECRET_ROTATED = "app_secret_rotated"
    SECRETS_REENCRYPTED = "secrets_reencrypted"
    AUTHENTICATION_FAILED = "authentication_failed"
    APP_ENABLED = "app_enabled"
    APP_DISABLED = "app_disabled"
    APP_REMOVED = "app_removed"
    ACCOUNT_PERMITTED = "account_permitted"
    ACCOUNT_FORBIDDEN = "account_forbidden"
    APP_INSTALLED = "app_installed"
    INSTALLATION_SUSPENDED = "installation_suspended"
    INSTALLATION_RESUMED = "installation_resumed"
    APP_UNINSTALLED = "app_uninstalled"
    TOKEN_ISSUED = "token_issued"
    TOKENS_REMOVED = "tokens_removed"
    TOKENS_PURGED = "tokens_purged"
    CODE_ISSUED = "code_issued"
    FAMILY_REVOKED = "family_revoked"


@attrs.frozen
class Event:
    """A change that has been committed. Events carry ids and counts, never secrets.

    ``details`` holds small, JSON-ready facts: changed field names, token ids, counts.
    `EventKind.AUTHENTICATION_FAILED` is the one kind that tells of no change: a client
    failed to authenticate, and ``details["failures"]`` counts such failures of its key.
    """

    kind: EventKind
    at: datetime
    app_key: str | None = None
    account: str | None = None
    details: Mapping[str, object] = attrs.field(factory=dict)

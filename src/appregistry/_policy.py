"""The policy layer: pure rules that decide whether an app or a token may act now.

A rule takes an `AccessRequest` (records already read from storage) and ``now``, and returns a
denying `Decision` or ``None`` for "no objection". It does no I/O and reads no clock.
A `Policy` runs its rules in order; the first denial wins, and with none the answer is
`Decision.allow`. The built-in rules come first, in the order of the `Reason` codes, so when
several apply the first in that order is reported; host rules run after them.

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 1, 1, tzinfo=UTC)
>>> request = AccessRequest(Action.INSTALL, app=None, account="acme")
>>> Policy().evaluate(request, now)
Decision(reason=<Reason.APP_UNKNOWN: 'app_unknown'>, detail='the app does not exist')
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

import attrs

from ._records import AccessToken, App, AppsPermission, Grant, Installation, TokenContext

__all__ = [
    "BUILTIN_RULES",
    "AccessRequest",
    "Action",
    "Decision",
    "Policy",
    "Reason",
    "Rule",
]


class Reason(enum.StrEnum):
    """Why a decision was made. Denials are listed in precedence order: first applicable wins."""

    ALLOWED = "allowed"
    TOKEN_UNKNOWN = "token_unknown"
    TOKEN_EXPIRED = "token_expired"
    APP_UNKNOWN = "app_unknown"
    APP_DISABLED = "app_disabled"
    INSTALLATION_MISSING = "installation_missing"
    INSTALLATION_SUSPENDED = "installation_suspended"
    APPS_NOT_PERMITTED = "apps_not_permitted"
    BAD_CREDENTIALS = "bad_credentials"
    APP_NOT_TRUSTED = "app_not_trusted"


@attrs.frozen
class Decision:
    """The answer to "may this act now?": a reason code and a detail for logs, never a bare bool.

    ``reason`` is a `Reason` for the built-in rules; host rules may use codes of their own
    (any string, a `enum.StrEnum` member is best). Every reason but ``allowed`` is a denial.

    >>> Decision.allow().allowed
    True
    >>> denial = Decision.deny(Reason.APP_DISABLED, "the app is disabled")
    >>> denial.allowed, str(denial.reason)
    (False, 'app_disabled')
    """

    reason: str
    detail: str = ""

    @property
    def allowed(self) -> bool:
        """Whether the action may go ahead."""
        return self.reason == Reason.ALLOWED

    @classmethod
    def allow(cls) -> Decision:
        """The decision that lets an action go ahead."""
        return _ALLOWED

    @classmethod
    def deny(cls, reason: str, detail: str = "") -> Decision:
        """A denial with ``reason`` (not ``allowed``) and a detail for logs and admin views."""
        if reason == Reason.ALLOWED:
            raise ValueError("a denial needs a reason other than 'allowed'")
        return cls(reason, detail)


_ALLOWED = Decision(Reason.ALLOWED)


class Action(enum.StrEnum):
    """What is being asked for; host rules can treat actions differently."""

    #: An access token is presented with an API request.
    USE_TOKEN = "use_token"
    #: An app asks for a new access token.
    ISSUE_TOKEN = "issue_token"
    #: A user installs (authorizes) an app on an account.
    INSTALL = "install"


@attrs.frozen
class AccessRequest:
    """What the rules look at: the records involved, already read from storage.

    Attributes:
        action: What is being asked for.
        app: The app, or ``None`` if its key names no app.
        account: The account the app would act for.
        token: For `Action.USE_TOKEN`: the token, or ``None`` if it is unknown.
        installation: The app's installation on ``account``, if any.
        permission: ``account``'s apps permission, if granted.
        needs_installation: Whether acting on ``account`` requires the app to be installed
            there (false for a trusted app acting for its owner).
        needs_trust: Whether the app must be trusted (client credentials).
        credentials_valid: For `Action.ISSUE_TOKEN`: whether key and secret matched;
            ``None`` when no credentials were presented.
    """

    action: Action
    app: App | None
    account: str | None
    token: AccessToken | None = None
    installation: Installation | None = None
    permission: AppsPermission | None = None
    needs_installation: bool = False
    needs_trust: bool = False
    credentials_valid: bool | None = None

    @classmethod
    def for_token(
        cls,
        token: AccessToken | None,
        app: App | None = None,
        installation: Installation | None = None,
        permission: AppsPermission | None = None,
    ) -> AccessRequest:
        """The request a presented token makes: its grant decides what it needs."""
        client_credentials = token is not None and token.grant is Grant.CLIENT_CREDENTIALS
        return cls(
            Action.USE_TOKEN,
            app=app,
            account=token.account if token is not None else None,
            token=token,
            installation=installation,
            permission=permission,
            needs_installation=token is not None and not client_credentials,
            needs_trust=client_credentials,
        )


#: A policy rule: a pure function of the request and the time.
Rule = Callable[[AccessRequest, datetime], Decision | None]


def token_known(request: AccessRequest, now: datetime) -> Decision | None:
    """A presented token must exist: unknown, removed and purged tokens are all unknown."""
    if request.action is Action.USE_TOKEN and request.token is None:
        return Decision.deny(Reason.TOKEN_UNKNOWN, "the token is not known")
    return None


def token_unexpired(request: AccessRequest, now: datetime) -> Decision | None:
    """A token is dead from its ``expires_at`` on."""
    if request.token is not None and request.token.is_expired(now):
        return Decision.deny(Reason.TOKEN_EXPIRED, "the token has expired")
    return None


def app_known(request: AccessRequest, now: datetime) -> Decision | None:
    """The app must exist: a removed app's key never works again."""
    if request.app is None:
        return Decision.deny(Reason.APP_UNKNOWN, "the app does not exist")
    return None


def app_enabled(request: AccessRequest, now: datetime) -> Decision | None:
    """A disabled app cannot obtain tokens, use them, or be installed."""
    if request.app is not None and not request.app.enabled:
        return Decision.deny(Reason.APP_DISABLED, "the app is disabled")
    return None


def installation_present(request: AccessRequest, now: datetime) -> Decision | None:
    """Acting for an account needs the app installed there, unless it acts for its trusted owner."""
    if request.needs_installation and request.installation is None:
        return Decision.deny(Reason.INSTALLATION_MISSING, "the app is not installed on the account")
    return None


def installation_active(request: AccessRequest, now: datetime) -> Decision | None:
    """A suspended installation stops the app on that account only.

    It applies whatever the grant: a trusted app's owner who installed it and suspended it
    has stopped it on that account, client-credentials tokens included.
    """
    installation = request.installation
    if installation is not None and installation.suspended:
        return Decision.deny(Reason.INSTALLATION_SUSPENDED, "the app is suspended on the account")
    return None


def account_permitted(request: AccessRequest, now: datetime) -> Decision | None:
    """The account needs the provider's apps permission."""
    if request.permission is None:
        return Decision.deny(Reason.APPS_NOT_PERMITTED, "the account is not permitted to use apps")
    return None


def credentials_valid(request: AccessRequest, now: datetime) -> Decision | None:
    """Key and secret must match, when they are presented."""
    if request.credentials_valid is False:
        return Decision.deny(Reason.BAD_CREDENTIALS, "the key or secret is wrong")
    return None


def app_trusted(request: AccessRequest, now: datetime) -> Decision | None:
    """Only a trusted app acts by key and secret alone."""
    if request.needs_trust and request.app is not None and not request.app.trusted:
        return Decision.deny(Reason.APP_NOT_TRUSTED, "the app is not trusted")
    return None


#: The built-in rules, in the precedence order of the `Reason` codes.
BUILTIN_RULES: tuple[Rule, ...] = (
    token_known,
    token_unexpired,
    app_known,
    app_enabled,
    installation_present,
    installation_active,
    account_permitted,
    credentials_valid,
    app_trusted,
)


def _as_rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(rules)


@attrs.frozen
class Policy:
    """An ordered list of rules; the first denial wins.

    Args:
        extra_rules: Host rules, run after the built-in ones, in the order given.

    >>> from datetime import datetime, UTC
    >>> def business_hours(request, now):
    ...     if not 8 <= now.hour < 18:
    ...         return Decision.deny("outside_business_hours", "apps act 08:00-18:00 UTC")
    ...     return None
    >>> policy = Policy(extra_rules=[business_hours])
    >>> request = AccessRequest(Action.INSTALL, app=None, account="acme")
    >>> policy.evaluate(request, datetime(2026, 1, 1, 3, tzinfo=UTC)).reason  # built-ins first
    <Reason.APP_UNKNOWN: 'app_unknown'>
    """

    extra_rules: tuple[Rule, ...] = attrs.field(default=(), converter=_as_rules)
    # Whether the built-in rules alone decide, so that `_evaluate_token` may test their
    # conditions directly: no host rules, and not a subclass that may evaluate otherwise.
    _builtin_only: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        builtin_only = not self.extra_rules and type(self) is Policy
        object.__setattr__(self, "_builtin_only", builtin_only)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, in the order they run."""
        return BUILTIN_RULES + self.extra_rules

    def with_rules(self, *rules: Rule) -> Policy:
        """A copy of this policy with ``rules`` appended."""
        return Policy(extra_rules=self.extra_rules + rules)

    def evaluate(self, request: AccessRequest, now: datetime) -> Decision:
        """Run the rules in order and return the first denial, or `Decision.allow`."""
        for rule in self.rules:
            decision = rule(request, now)
            if decision is not None and not decision.allowed:
                return decision
        return _ALLOWED

    def _evaluate_token(self, context: TokenContext, now: datetime) -> Decision:
        """``evaluate(AccessRequest.for_token(...), now)`` for a known token, made cheap.

        Every API request checks a token, and nearly every check is allowed. So the built-in
        rules' conditions for letting a known token act are tested here directly, with no
        request built; whenever one of them fails, or the policy has host rules or is a
        subclass, the request is built and `evaluate` decides, so every denial and its detail
        come from the rules themselves.
        """
        token, app, installation, permission = context
        if (
            self._builtin_only
            and app is not None  # app_known (token_known: the token was found)
            and app.enabled  # app_enabled
            and permission is not None  # account_permitted
            and now < token.expires_at  # token_unexpired
        ):
            client_credentials = token.grant is _CLIENT_CREDENTIALS
            if (
                # installation_present (only other grants need one), installation_active
                (client_credentials if installation is None else not installation.suspended)
                and (app.trusted or not client_credentials)  # app_trusted
            ):
                return _ALLOWED
        request = AccessRequest.for_token(token, app, installation, permission)
        return self.evaluate(request, now)


_CLIENT_CREDENTIALS: Final = Grant.CLIENT_CREDENTIALS

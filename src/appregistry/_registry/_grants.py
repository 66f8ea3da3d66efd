"""OAuth 2.0 grants: client authentication, authorization codes, refresh and revocation.

It stays one module a little over 600 lines: the code exchange, the refresh rotation, code
replay and revocation all issue and revoke through the same token-family helpers
(`_issue_pair`, `_revoke_family`), and a Registry part may not import another part.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, TypeVar

from .. import _credentials as cred
from .._policy import AccessRequest, Action, Decision, Reason
from .._records import (
    App,
    AuthorizationCode,
    Event,
    EventKind,
    Grant,
    Installation,
    IssuedCode,
    IssuedToken,
    RefreshToken,
)
from .._validation import MAX_USER_AGENT_LENGTH, Problems
from ..errors import Denied, InvalidGrant
from ..ports import UnitOfWork
from ._base import _MAX_PRESENTED_TOKEN, _is_id, _RegistryBase

T = TypeVar("T")


class _Grants(_RegistryBase):
    """Client authentication and the OAuth 2.0 grants: codes, refresh tokens, revocation."""

    __slots__ = ()

    # The operations an OAuth 2.0 server (such as `appregistry.oauth2`) is built on. Client
    # authentication is a separate step (`authenticate_client`): the grant operations trust
    # the ``key`` they are given.

    def authenticate_client(self, key: str, secret: str) -> Decision:
        """Check an app's key and secret, as a token endpoint authenticates its client.

        An unknown key (a removed app's too) and a wrong secret give the same decision,
        after the same work. Whether the app is enabled or trusted is not looked at: that is
        decided when a token is issued.

        A previous secret in its grace window (`rotate_secret`) authenticates too.

        A failure emits an `EventKind.AUTHENTICATION_FAILED` event (see
        `_authentication_failed`), as `issue_token` does.

        Returns:
            `Decision.allow`, or a denial with reason ``bad_credentials``.

        >>> from appregistry import Registry
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

    def redirect_url_matches(self, key: str, redirect_url: str) -> bool:
        """Whether ``redirect_url`` is the app's redirect URL.

        Compared exactly after the normalization registration applies (host case and IDN
        spelling, percent-encoding, default port), never as a prefix. ``False`` for an
        unknown key, and for a URL that is not a valid redirect URL.
        """
        with self._transaction() as (tx, _):
            app = tx.apps.get(key) if _is_id(key) else None
        return app is not None and _same_redirect(app.redirect_url, redirect_url)

    def authorization_decision(self, key: str, account: str) -> Decision:
        """Whether `authorize` would let a user of ``account`` approve the app now.

        Nothing is written. A consent page asks this before it offers an Allow button, so
        that a user whose account may not use apps is told so at once.

        Returns:
            `Decision.allow`, or the denial `authorize` would raise now: the app unknown
            or disabled, the account without the apps permission, the app suspended on the
            account, or a host rule.

        Raises:
            ValidationError: ``account`` is not an account id.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> Registry(storage=MemoryStorage()).authorization_decision("K" * 32, "acme").reason
        <Reason.APP_UNKNOWN: 'app_unknown'>
        """
        problems = Problems()
        account = problems.identifier("account", account)  # type: ignore[assignment]
        problems.raise_if_any()
        now = self._now()
        with self._transaction() as (tx, _):
            app = tx.apps.get(key) if _is_id(key) else None
            request = AccessRequest(
                Action.INSTALL,
                app=app,
                account=account,
                installation=tx.installations.get(key, account) if app is not None else None,
                permission=tx.permissions.get(account),
            )
            return self._policy.evaluate(request, now)

    def authorize(
        self,
        key: str,
        account: str,
        *,
        redirect_url: str | None = None,
        approved_by: str,
        code_challenge: str | None = None,
        code_challenge_method: str | None = None,
    ) -> IssuedCode:
        """A user approved the app on the account: install it there and issue a code.

        This ends the consent step of the authorization-code flow. The app is installed on
        ``account`` (by ``approved_by``) unless it already is, and an authorization code
        bound to the app and the redirect URL is issued. The code lives ``code_lifetime``
        (ten minutes by default) and works once, in `exchange_code`.

        Args:
            key: The app (OAuth's ``client_id``).
            account: The account the app will act for.
            redirect_url: The request's ``redirect_uri``: exactly the app's. ``None``
                when the request left it out: the code goes to the app's redirect URL, and
                its exchange needs none either (RFC 6749 sections 4.1.1, 4.1.3). When given,
                the exchange must give it again.
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
            if (
                app is not None
                and redirect_url is not None
                and not _same_redirect(app.redirect_url, redirect_url)
            ):
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
                redirect_url_given=redirect_url is not None,
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
        redirect_url: str | None = None,
        code_verifier: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedToken:
        """Exchange an authorization code for an access token and a refresh token.

        **The caller must have authenticated the client already** (`authenticate_client`,
        or the OAuth server's client authentication): this method believes that ``key`` is
        the app asking, and checks only that the code was issued to it.

        The code is used up first, so it works once, even when the exchange then fails. It
        must have been issued to this app, be unexpired, and, when it was issued with a PKCE
        challenge, come with the verifier whose S256 hash is that challenge. A verifier for a
        code issued without a challenge is refused too (a PKCE downgrade, RFC 9700).
        ``redirect_url`` must be the one the authorization request named (exactly); if
        that request named none, it may be left out, and when given must be the app's. Then
        the policy decides as for any token issued for the account: the app enabled,
        installed and active there, the account permitted.

        The tokens are a new grant family: `refresh` rotates within it, `revoke` ends it.
        A used code is kept until it expires (then `purge_expired_tokens` removes it), and
        presenting it again revokes that family, its access and refresh tokens alike (RFC
        6749 sections 4.1.2, 10.5): the code leaked, so the tokens it gave may have too.

        Returns:
            The access token (grant ``authorization_code``) with its ``refresh_token``.

        Raises:
            InvalidGrant: The code is unknown, used (its tokens are now revoked), expired,
                another app's or another redirect URL's, or the PKCE verifier is missing,
                malformed or wrong. Its message is the same for all; ``detail`` says which,
                for logs.
            Denied: The policy refused; ``error.decision`` says why.
            ValidationError: ``user_agent`` is malformed (checked before the code is taken).
        """
        user_agent = _checked_user_agent(user_agent)
        if not _is_presented(code):
            raise InvalidGrant("the code is malformed")
        now = self._now()
        digests = self._credentials.code_digests(code)
        with self._transaction() as (tx, events):
            # A failure is returned, not raised, so that using up the code (and revoking what
            # a replayed code gave) still commits.
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
        family_id = cred.generate_token_id()

        def redeem(digest: bytes) -> AuthorizationCode | None:
            return tx.codes.redeem(digest, at=now, family_id=family_id)

        record = _first(redeem, digests)
        if record is None:
            return InvalidGrant("the code is unknown or purged")
        if record.used_at is not None:
            if record.family_id is not None:
                self._revoke_family(
                    tx,
                    events,
                    now,
                    family_id=record.family_id,
                    app_key=record.app_key,
                    account=record.account,
                    cause="code_reuse",
                )
            return InvalidGrant("the code was used before; the tokens it gave are revoked")
        if record.app_key != key:
            return InvalidGrant("the code was issued to another app")
        if redirect_url is None:
            if record.redirect_url_given:
                return InvalidGrant("the code was issued for a redirect URL the request omits")
        elif not _same_redirect(record.redirect_url, redirect_url):
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
            family_id=family_id,
            user_agent=user_agent,
            approved_by=record.approved_by,
        )

    def refresh(
        self, key: str, refresh_token: str, *, user_agent: str | None = None
    ) -> IssuedToken:
        """Rotate a refresh token: a new access token and a new refresh token, same family.

        **The caller must have authenticated the client already**, as for `exchange_code`.

        A refresh token works once. Presenting one that was already used means it leaked
        (or its holder is confused): the whole family is revoked, its access tokens and
        refresh tokens alike, that revocation is committed, and then `InvalidGrant` is raised.
        Otherwise the policy decides as for a token of the family's grant (app enabled,
        installation active, apps permission); a denied refresh token is left unused, so it
        works again once the app may act.

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
            self._revoke_member(tx, events, now, record, cause="reuse")
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
            approved_by=record.approved_by,
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
            self._revoke_member(tx, events, now, refresh, cause="revoked")
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
        approved_by: str | None,
    ) -> IssuedToken:
        # The user who approved the authorization goes on both tokens: the refresh token
        # passes it on to the access token of each rotation.
        token, refresh = cred.generate_token(), cred.generate_token()
        record = self._new_access_token(
            app.key,
            account,
            grant,
            now,
            user_agent=user_agent,
            family_id=family_id,
            approved_by=approved_by,
        )
        refresh_record = RefreshToken(
            token_id=cred.generate_token_id(),
            family_id=family_id,
            app_key=app.key,
            account=account,
            grant=grant,
            issued_at=now,
            expires_at=now + self._refresh_token_lifetime,
            approved_by=approved_by,
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

    @classmethod
    def _revoke_member(
        cls, tx: UnitOfWork, events: list[Event], now: datetime, member: RefreshToken, *, cause: str
    ) -> None:
        cls._revoke_family(
            tx,
            events,
            now,
            family_id=member.family_id,
            app_key=member.app_key,
            account=member.account,
            cause=cause,
        )

    @staticmethod
    def _revoke_family(
        tx: UnitOfWork,
        events: list[Event],
        now: datetime,
        *,
        family_id: str,
        app_key: str,
        account: str,
        cause: str,
    ) -> None:
        refresh_tokens = tx.refresh_tokens.remove_family(family_id)
        tokens = tx.tokens.remove_family(family_id)
        events.append(
            Event(
                EventKind.FAMILY_REVOKED,
                now,
                app_key,
                account,
                {
                    "family_id": family_id,
                    "cause": cause,
                    "tokens_removed": tokens,
                    "refresh_tokens_removed": refresh_tokens,
                },
            )
        )


# One decision for an unknown key and a wrong secret alike (R25).
_BAD_CREDENTIALS: Final = Decision(Reason.BAD_CREDENTIALS, "the key or secret is wrong")


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
        problems.add("code_challenge", "invalid", "code_challenge must be 43 base64url characters")


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

"""Access tokens: issuing and checking them, listing, removing and purging them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Final, cast

from .. import _credentials as cred
from .._policy import AccessRequest, Action, Decision, Reason
from .._records import AccessToken, Event, EventKind, Grant, IssuedToken, Page
from .._validation import MAX_ACCOUNT_LENGTH, MAX_USER_AGENT_LENGTH, Problems
from ..errors import Denied, FieldProblem, TokenNotFound, ValidationError
from ._base import (
    _DEFAULT_PURGE_BATCH,
    _MAX_PRESENTED_TOKEN,
    _MAX_PURGE_BATCH,
    _NAIVE_CLOCK,
    MAX_TOKEN_IDS_PER_REMOVAL,
    TokenCheck,
    _is_id,
    _is_text,
    _nonzero,
    _RegistryBase,
    _remove_grants,
)


class _Tokens(_RegistryBase):
    """The operations on access tokens (R18-R22, R26)."""

    __slots__ = ()

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

        >>> from appregistry import Registry
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


# Builds a TokenCheck from a (decision, token) pair in C: the named tuple's own __new__ is a
# Python function, and every token check makes one.
_token_check: Final[Callable[[tuple[Decision, AccessToken]], TokenCheck]] = functools.partial(
    tuple.__new__, TokenCheck
)
_UNKNOWN_TOKEN: Final = TokenCheck(Decision(Reason.TOKEN_UNKNOWN, "the token is not known"))


def _group_ids(tokens: Sequence[AccessToken]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for token in tokens:
        grouped.setdefault((token.app_key, token.account), []).append(token.token_id)
    return grouped

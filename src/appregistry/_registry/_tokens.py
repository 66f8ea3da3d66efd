"""Access tokens: issuing and checking them, listing, removing and purging them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Final, cast

from .. import _credentials as cred
from .._policy import _ALLOWED, AccessRequest, Action, Decision, Reason
from .._records import AccessToken, AppContext, Event, EventKind, Grant, IssuedToken, Page
from .._validation import MAX_ACCOUNT_LENGTH, MAX_USER_AGENT_LENGTH, Problems
from ..errors import Denied, FieldProblem, TokenNotFound, ValidationError
from ..ports import NEVER_USED, Position, TokenOrder
from ._base import (
    _MAX_PRESENTED_TOKEN,
    _NAIVE_CLOCK,
    MAX_TOKEN_IDS_PER_REMOVAL,
    TokenCheck,
    _is_id,
    _is_text,
    _RegistryBase,
    _remove_grants,
)
from ._last_use import NOT_TRACKED
from ._lists import ListKind, list_query, with_cursors


class _Tokens(_RegistryBase):
    """The operations on access tokens."""

    __slots__ = ()

    def issue_token(
        self,
        key: str,
        secret: str,
        *,
        account: str | None = None,
        approved_by: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedToken:
        """Authenticate the app by key and secret and issue an access token.

        Without ``account``, a trusted app gets a client-credentials token acting for its
        owner. With ``account``, the token acts for that account, which must have the app
        installed, and only on a user's approval: ``approved_by`` names the user of the
        account who approved it (whoever the app is, trusted or not). The token's grant is
        then `Grant.USER_APPROVAL`; its record keeps the user (`AccessToken.approved_by`),
        and so does the `EventKind.TOKEN_ISSUED` event. (The OAuth authorization-code flow
        issues its tokens through `exchange_code`, from the code the user approved.)

        A wrong key, a wrong secret, and a wrong secret of a disabled or removed app are
        all denied with one reason, ``bad_credentials``: what else would deny the
        request is told only to a caller who authenticated.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> new = registry.register_app("acme", name="MyApp", homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb")
        >>> _ = registry.permit_account("globex", by="provider")
        >>> _ = registry.install_app(new.app.key, "globex", by="alice")
        >>> issued = registry.issue_token(new.app.key, new.secret, account="globex",
        ...                               approved_by="alice")
        >>> issued.record.account, str(issued.record.grant), issued.record.approved_by
        ('globex', 'user_approval', 'alice')
        >>> registry.issue_token(new.app.key, new.secret, account="globex")
        Traceback (most recent call last):
        ...
        appregistry.errors.ValidationError: approved_by: approved_by is required

        Raises:
            Denied: Any reason at all. Its message is the same for every reason, so a caller
                cannot tell an unknown key from a wrong secret; ``error.decision`` says
                why, for logs.
            ValidationError: ``account``, ``approved_by`` or ``user_agent`` is malformed,
                ``account`` is given without ``approved_by`` or ``approved_by`` without
                ``account``, or ``key`` or ``secret`` is not text or longer than 512
                characters. Nothing is written.
        """
        problems = Problems()
        if account is not None:
            account = problems.identifier("account", account)
            approved_by = problems.identifier("approved_by", approved_by)
        elif approved_by is not None:
            problems.add(
                "approved_by",
                "unexpected",
                "approved_by names who approved a token for an account; give account too",
            )
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
            # Always compare, even for an unknown key, so both take the same time (R25).
            credentials_valid = self._secret_valid(
                context.secret if context is not None else None, secret, now
            )
            if not credentials_valid or context is None:
                # Nothing else is told to a caller who has not authenticated (R25): not
                # whether the key exists, nor whether its app is disabled.
                decision = _BAD_CREDENTIALS
            else:
                decision = self._issue_decision(context, account, now)
            if decision.allowed and context is not None:
                app, acting_for = context.app, context.account
                grant = Grant.CLIENT_CREDENTIALS if account is None else Grant.USER_APPROVAL
                record = self._new_access_token(
                    app.key,
                    acting_for,
                    grant,
                    now,
                    user_agent=user_agent,
                    approved_by=approved_by,
                )
                tx.tokens.add(record, digest)
                details = {"token_id": record.token_id, "grant": str(record.grant)}
                if approved_by is not None:
                    details["approved_by"] = approved_by
                events.append(Event(EventKind.TOKEN_ISSUED, now, app.key, acting_for, details))
                return IssuedToken(token, record)
        # Denied, and nothing written. A failed authentication is counted and told first.
        if not credentials_valid:
            self._authentication_failed(key, now)
        raise Denied(decision, "invalid client credentials, or the app may not act")

    def _issue_decision(self, context: AppContext, account: str | None, now: datetime) -> Decision:
        # The policy on an authenticated app's request for a token: for its owner by client
        # credentials (``account`` is None), or for ``account`` on a user's approval.
        client_credentials = account is None
        request = AccessRequest(
            Action.ISSUE_TOKEN,
            app=context.app,
            account=context.account,
            installation=context.installation,
            permission=context.permission,
            needs_installation=not client_credentials,
            needs_trust=client_credentials,
            credentials_valid=True,
        )
        return self._policy.evaluate(request, now)

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
        digests = creds.token_digests(token) if self._rotating_peppers else None
        context = (
            self._storage.token_context(*digests)
            if digests is not None
            else self._storage.token_context(creds.token_digest(token))
        )
        if context is None:
            return _UNKNOWN_TOKEN
        # The clock is read only when there is a token to judge: an unknown one needs none.
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(_NAIVE_CLOCK)
        decision = self._policy._evaluate_token(context, now)
        # The built-in rules' fast path allows with this very object: no property to call.
        if decision is _ALLOWED or decision.allowed:
            record = context.token
            uses = self._last_use
            if uses is not None:
                # Two comparisons, unless this token's use or the batch is due (see _last_use).
                # A subscript costs least (no method call); a miss is the rare path anyway.
                try:
                    due = uses.due[record.token_id]
                except KeyError:
                    due = NOT_TRACKED
                if now >= due or now >= uses.flush_at:
                    uses.use(record, now)
            return _token_check((decision, record))
        if self._check_cache is not None:
            # A refusal judged from the cache is judged again from storage: the cache may
            # only ever be late to refuse, never give another reason (an expired token that
            # was since purged is unknown). Refusals are rare; allowed checks pay nothing.
            return self._check_uncached(digests or (creds.token_digest(token),), now)
        return _token_check((decision, context.token))

    def _check_uncached(self, digests: Sequence[bytes], now: datetime) -> TokenCheck:
        context = self._storage.cache.read_through(*digests)  # type: ignore[attr-defined]
        if context is None:
            return _UNKNOWN_TOKEN
        return TokenCheck(self._policy._evaluate_token(context, now), context.token)

    def list_tokens(
        self,
        key: str,
        account: str | None = None,
        *,
        search: str | None = None,
        page: int = 1,
        per_page: int = 10,
        after: str | None = None,
        before: str | None = None,
        order: str = "expires",
    ) -> Page[AccessToken]:
        """A page of the app's live tokens on the account, soonest expiry first.

        Without ``account``, every account's live tokens of the app, ordered by account and
        then as for one account: the provider's view of an app. ``search`` matches the user
        agent, case-insensitively. Paging and cursors work as in `list_apps`.

        ``order="last_used"`` (`appregistry.ports.TokenOrder`) lists the most recently used
        first instead, never-used tokens last, ties by token id. Each token's
        ``last_used_at`` is as `LastUse` records it (this process's pending uses are written
        before any list is read). A cursor belongs to its order.

        Raises:
            AppNotFound: No app has ``key``.
            ValidationError: Bad account, paging, search text, cursor or order.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> registry = Registry(storage=MemoryStorage())
        >>> new = registry.register_app("acme", name="MyApp", homepage="http://example.com/",
        ...     admin_email="admin@example.com", redirect_url="https://example.com/cb")
        >>> for account in ("org-2", "org-1"):
        ...     _ = registry.permit_account(account, by="sp-admin")
        ...     _ = registry.install_app(new.app.key, account, by="alice")
        ...     _ = registry.issue_token(new.app.key, new.secret, account=account,
        ...                              approved_by="alice")
        >>> [t.account for t in registry.list_tokens(new.app.key).items]
        ['org-1', 'org-2']
        >>> [t.account for t in registry.list_tokens(new.app.key, "org-2").items]
        ['org-2']
        """
        problems = Problems()
        if account is not None:
            account = problems.identifier("account", account)
        by_use = order == TokenOrder.LAST_USED
        if not by_use and order != TokenOrder.EXPIRES:
            choices = ", ".join(repr(str(o)) for o in TokenOrder)
            problems.add("order", "invalid", f"order must be one of {choices}")
        if by_use:
            kind = ListKind.ALL_TOKENS_BY_USE if account is None else ListKind.TOKENS_BY_USE
        else:
            kind = ListKind.ALL_TOKENS if account is None else ListKind.TOKENS
        query = list_query(
            problems,
            kind,
            search=search,
            page=page,
            per_page=per_page,
            after=after,
            before=before,
        )
        if self._last_use is not None:
            self._last_use.flush()
        now = self._now()
        sort = TokenOrder.LAST_USED if by_use else TokenOrder.EXPIRES
        with self._transaction() as (tx, _):
            self._app(tx, key)
            found = tx.tokens.list(key, account, query, now=now, order=sort)
        if by_use:
            return with_cursors(
                kind, found, _use_position if account is not None else _account_use_position
            )
        if account is None:
            return with_cursors(kind, found, lambda t: (t.account, t.expires_at, t.token_id))
        return with_cursors(kind, found, lambda t: (t.expires_at, t.token_id))

    def remove_tokens(
        self, token_ids: Collection[str], *, key: str | None = None, account: str | None = None
    ) -> int:
        """Remove the selected tokens; they are dead at once. All or nothing.

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
        """Remove every token of the app on the account. The app may obtain new ones.

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


# Builds a TokenCheck from a (decision, token) pair in C: the named tuple's own __new__ is a
# Python function, and every token check makes one.
_token_check: Final[Callable[[tuple[Decision, AccessToken]], TokenCheck]] = functools.partial(
    tuple.__new__, TokenCheck
)
_UNKNOWN_TOKEN: Final = TokenCheck(Decision(Reason.TOKEN_UNKNOWN, "the token is not known"))
# The one answer to a caller whose key and secret do not authenticate (R25).
_BAD_CREDENTIALS: Final = Decision(Reason.BAD_CREDENTIALS, "the key or secret is wrong")


def _use_position(token: AccessToken) -> Position:
    return (token.last_used_at or NEVER_USED, token.token_id)


def _account_use_position(token: AccessToken) -> Position:
    return (token.account, token.last_used_at or NEVER_USED, token.token_id)


def _group_ids(tokens: Sequence[AccessToken]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for token in tokens:
        grouped.setdefault((token.app_key, token.account), []).append(token.token_id)
    return grouped

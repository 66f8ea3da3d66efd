"""The PostgreSQL repositories of access tokens, authorization codes, refresh tokens, settings."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from ..._records import AccessToken, AuthorizationCode, Page, RefreshToken
from ..._validation import search_text
from ...ports import ListQuery, TokenOrder
from ._lists import list_params, recency
from ._queries import _code, _list_params, _page, _refresh, _storable, _token

if TYPE_CHECKING:
    from ._repositories import _Unit


class _Tokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, token: AccessToken, digest: bytes) -> None:
        self._unit.lock_app(token.app_key)  # already held when the Registry issues
        self._unit.execute(
            self._q.token_add,
            (
                token.token_id,
                token.app_key,
                token.account,
                str(token.grant),
                token.issued_at,
                token.expires_at,
                token.user_agent,
                token.family_id,
                token.approved_by,
                token.last_used_at,
                digest,
                search_text(token.user_agent),
            ),
        )

    def get(self, token_id: str) -> AccessToken | None:
        if not _storable(token_id):
            return None
        # Lock the token's app before the token itself: every transaction takes an app's
        # row before the rows that belong to the app, so two of them never wait on each other
        # in a circle (see PostgresStorage.transaction).
        row = self._unit.one(self._q.token_app, (token_id,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.token_get, (token_id,))
        return _token(row) if row is not None else None

    def get_by_digest(self, digest: bytes) -> AccessToken | None:
        # The app's row first, then the token's, as everywhere (see PostgresStorage.transaction).
        row = self._unit.one(self._q.token_app_by_digest, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.token_get_by_digest, (digest,))
        return _token(row) if row is not None else None

    def remove(self, token_ids: Collection[str]) -> int:
        ids = [token_id for token_id in set(token_ids) if _storable(token_id)]
        return self._unit.count(self._q.token_remove, (ids,)) if ids else 0

    def remove_family(self, family_id: str) -> int:
        if not _storable(family_id):
            return 0
        for (app_key,) in self._unit.all(self._q.token_family_apps, (family_id,)):
            self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_family, (family_id,))

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_app, (app_key,))

    def count_live(self, app_key: str, account: str, *, now: datetime) -> int:
        if not _storable(app_key, account):
            return 0
        row = self._unit.one(self._q.token_count_live, (app_key, account, now))
        return int(row[0]) if row is not None else 0

    def list(
        self,
        app_key: str,
        account: str | None,
        query: ListQuery,
        *,
        now: datetime,
        order: TokenOrder = TokenOrder.EXPIRES,
    ) -> Page[AccessToken]:
        if not _storable(app_key, account or "", query.search or ""):
            return Page((), 0, query.page, query.per_page)
        values = {"app_key": app_key, "account": account, "now": now}
        if order == TokenOrder.LAST_USED:
            name = "all_tokens_by_use" if account is None else "tokens_by_use"
            params = list_params(query, **values)
            position = query.after or query.before or ()
            # The position's time, as the list's first order column has it (see _lists).
            params.update(
                (f"k{n}", recency(v)) for n, v in enumerate(position) if isinstance(v, datetime)
            )
            rows = self._unit.all(self._q.lists.statement(name, query), params)
            return _page(rows, query, _token)
        if account is None:
            statement = self._q.lists.statement("all_tokens", query)
            rows = self._unit.all(statement, list_params(query, **values))
            return _page(rows, query, _token)
        reading = query
        expiry = query.after[0] if query.after is not None else None
        if isinstance(expiry, datetime) and expiry <= now:
            # Every live token is after the position: the page is the first page.
            reading = ListQuery(per_page=query.per_page, search=query.search)
        if reading.after is None and reading.before is None:
            # By number: the ids come from the pair's index alone (see token_list).
            statement = self._q.token_list[query.search is not None]
            rows = self._unit.all(statement, _list_params(reading, **values))
        else:
            # After a live position, "expires_at > now" follows from it; left in, the index
            # scan would start at now and step over the tokens up to the position.
            live = () if expiry is not None else ("live",)
            statement = self._q.lists.statement("tokens", reading, *live)
            rows = self._unit.all(statement, list_params(reading, **values))
        return _page(rows, query, _token)

    def record_uses(self, uses: Mapping[str, datetime]) -> None:
        ids = [token_id for token_id in uses if _storable(token_id)]
        if ids:
            self._unit.execute(self._q.token_record_uses, (ids, [uses[i] for i in ids]))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.token_purge, (now, limit))

    def count_expired(self, *, now: datetime) -> int:
        return self._unit.count(self._q.purge.token_count, (now,))


class _Codes:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        self._unit.lock_app(code.app_key)
        self._unit.execute(
            self._q.code_add,
            (
                digest,
                code.app_key,
                code.account,
                code.redirect_url,
                code.approved_by,
                code.issued_at,
                code.expires_at,
                code.code_challenge,
                code.code_challenge_method,
                code.redirect_url_given,
                code.used_at,
                code.family_id,
            ),
        )

    def redeem(self, digest: bytes, *, at: datetime, family_id: str) -> AuthorizationCode | None:
        # Lock the code's app before the code (the order every transaction keeps); should the
        # code be redeemed or removed in between, the UPDATE finds nothing to change.
        row = self._unit.one(self._q.code_app, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.code_redeem, (at, family_id, digest))
        if row is not None:
            # RETURNING shows the row as this UPDATE left it; the caller gets it as it was.
            return attrs.evolve(_code(row), used_at=None, family_id=None)
        row = self._unit.one(self._q.code_get, (digest,))
        return _code(row) if row is not None else None

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.code_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.code_remove_app, (app_key,))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.code_purge, (now, limit))

    def count_expired(self, *, now: datetime) -> int:
        return self._unit.count(self._q.purge.code_count, (now,))


class _RefreshTokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, token: RefreshToken, digest: bytes) -> None:
        self._unit.lock_app(token.app_key)
        self._unit.execute(
            self._q.refresh_add,
            (
                token.token_id,
                token.family_id,
                token.app_key,
                token.account,
                str(token.grant),
                token.issued_at,
                token.expires_at,
                token.rotated_at,
                token.approved_by,
                digest,
            ),
        )

    def get(self, digest: bytes) -> RefreshToken | None:
        # Locked to the end of the transaction: two refreshes with one token run one after
        # the other, so the second sees the first's rotation.
        row = self._unit.one(self._q.refresh_app_by_digest, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.refresh_get, (digest,))
        return _refresh(row) if row is not None else None

    def mark_rotated(self, token_id: str, at: datetime) -> None:
        if not _storable(token_id):
            return
        row = self._unit.one(self._q.refresh_app_by_id, (token_id,))
        if row is not None:
            self._unit.lock_app(row[0])
            self._unit.execute(self._q.refresh_rotate, (at, token_id))

    def remove_family(self, family_id: str) -> int:
        if not _storable(family_id):
            return 0
        for (app_key,) in self._unit.all(self._q.refresh_family_apps, (family_id,)):
            self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_family, (family_id,))

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_app, (app_key,))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.refresh_purge, (now, limit))

    def count_expired(self, *, now: datetime) -> int:
        return self._unit.count(self._q.purge.refresh_count, (now,))


class _Settings:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def get(self, name: str) -> bytes | None:
        if not _storable(name):
            return None
        row = self._unit.one(self._q.setting_get, (name,))
        return bytes(row[0]) if row is not None else None

    def put(self, name: str, value: bytes) -> None:
        self._unit.execute(self._q.setting_put, (name, bytes(value)))

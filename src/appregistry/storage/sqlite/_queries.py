"""The SQLite backend's SQL text, and the conversions between rows and records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..._records import (
    AccessToken,
    App,
    AuthorizationCode,
    Grant,
    Installation,
    Page,
    RefreshToken,
    StoredSecret,
)
from ..._validation import search_text
from ...errors import StorageError
from ...ports import ListQuery, Position

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
# Grant(value) goes through the enum's lookup machinery; a dict is ten times faster.
_GRANTS: Final = {grant.value: grant for grant in Grant}

_APP_COLUMNS: Final = (
    "app_key, owner, name, homepage, admin_email, redirect_url, created_at, description, "
    "image_url, admin_phone, trusted, enabled"
)
_APP_WIDTH: Final = 12
_TOKEN_COLUMNS: Final = (
    "token_id, app_key, account, grant_type, issued_at, expires_at, user_agent, family_id, "
    "approved_by, last_used_at"
)
_SECRET_COLUMNS: Final = (
    "secret_digest, secret_ciphertext, previous_secret_digest, previous_secret_valid_until"
)
_SECRET_WIDTH: Final = 4
_CODE_COLUMNS: Final = (
    "app_key, account, redirect_url, approved_by, issued_at, expires_at, code_challenge, "
    "code_challenge_method, redirect_url_given, used_at, family_id"
)
_REFRESH_COLUMNS: Final = (
    "token_id, family_id, app_key, account, grant_type, issued_at, expires_at, rotated_at, "
    "approved_by"
)


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in columns.split(","))


# One query answers a token check (S3): the token, its app (as its record), installation and
# permission. The columns come in the order SQLiteStorage.token_context unpacks them.
_TOKEN_CONTEXT_SQL: Final = f"""
    SELECT {_prefixed(_TOKEN_COLUMNS, "t")}, a.record,
           i.installed_by, i.installed_at, i.suspended, p.granted_by, p.granted_at
    FROM tokens AS t
    LEFT JOIN apps AS a INDEXED BY apps_records ON a.app_key = t.app_key
    LEFT JOIN installations AS i ON i.app_key = t.app_key AND i.account = t.account
    LEFT JOIN permissions AS p ON p.account = t.account
    WHERE t.digest = ?
"""  # noqa: S608 - the interpolated parts are constant column lists, not input


# One query reads what issuing a token needs: the app, its secret, and the installation and
# permission of the account it would act for; ?1 is that account, or NULL for the app's owner.
_APP_CONTEXT_SQL: Final = f"""
    SELECT {_prefixed(_APP_COLUMNS, "a")}, {_prefixed(_SECRET_COLUMNS, "a")},
           COALESCE(?1, a.owner), i.installed_by, i.installed_at, i.suspended,
           p.granted_by, p.granted_at
    FROM apps AS a
    LEFT JOIN installations AS i ON i.app_key = a.app_key AND i.account = COALESCE(?1, a.owner)
    LEFT JOIN permissions AS p ON p.account = COALESCE(?1, a.owner)
    WHERE a.app_key = ?2
"""  # noqa: S608 - the interpolated parts are constant column lists, not input


def _digest_in(count: int) -> str:
    """The condition of a token check over ``count`` digests, one per configured pepper.

    >>> _digest_in(2)
    't.digest IN (?, ?)'
    """
    return f"t.digest IN ({', '.join('?' * count)})"


def _to_db(when: datetime) -> int:
    if when.utcoffset() is None:
        raise StorageError("datetimes must be aware (have a tzinfo) to be stored")
    return (when - _EPOCH) // _MICROSECOND


def _from_db(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


def _app(row: Sequence[Any]) -> App:
    return App(
        key=row[0],
        owner=row[1],
        name=row[2],
        homepage=row[3],
        admin_email=row[4],
        redirect_url=row[5],
        created_at=_from_db(row[6]),
        description=row[7],
        image_url=row[8],
        admin_phone=row[9],
        trusted=bool(row[10]),
        enabled=bool(row[11]),
    )


def _app_record(app: App) -> str:
    """The app as one JSON text: what ``apps.record`` holds, and what token checks read.

    ASCII only (``json``'s default): the cheapest text for the driver to make a string of.

    >>> app = App("K" * 32, "acme", "Café", "http://example.com/", "a@example.com",
    ...           "https://example.com/cb", _EPOCH, trusted=True)
    >>> _app_record(app).isascii(), _app_of_record(_app_record(app)) == app
    (True, True)
    """
    return json.dumps(
        [
            app.key,
            app.owner,
            app.name,
            app.homepage,
            app.admin_email,
            app.redirect_url,
            _to_db(app.created_at),
            app.description,
            app.image_url,
            app.admin_phone,
            app.trusted,
            app.enabled,
        ],
        separators=(",", ":"),
    )


def _app_of_record(record: str) -> App:
    fields = json.loads(record)
    fields[6] = _from_db(fields[6])
    return App(*fields)


def _token(row: Sequence[Any]) -> AccessToken:
    return AccessToken(
        token_id=row[0],
        app_key=row[1],
        account=row[2],
        grant=_GRANTS[row[3]],
        issued_at=_from_db(row[4]),
        expires_at=_from_db(row[5]),
        user_agent=row[6],
        family_id=row[7],
        approved_by=row[8],
        last_used_at=None if row[9] is None else _from_db(row[9]),
    )


def _code(row: Sequence[Any]) -> AuthorizationCode:
    return AuthorizationCode(
        app_key=row[0],
        account=row[1],
        redirect_url=row[2],
        approved_by=row[3],
        issued_at=_from_db(row[4]),
        expires_at=_from_db(row[5]),
        code_challenge=row[6],
        code_challenge_method=row[7],
        redirect_url_given=bool(row[8]),
        used_at=_from_db(row[9]) if row[9] is not None else None,
        family_id=row[10],
    )


def _refresh(row: Sequence[Any]) -> RefreshToken:
    return RefreshToken(
        token_id=row[0],
        family_id=row[1],
        app_key=row[2],
        account=row[3],
        grant=Grant(row[4]),
        issued_at=_from_db(row[5]),
        expires_at=_from_db(row[6]),
        rotated_at=None if row[7] is None else _from_db(row[7]),
        approved_by=row[8],
    )


def _stored_secret(row: Sequence[Any]) -> StoredSecret:
    return StoredSecret(
        bytes(row[0]),
        None if row[1] is None else bytes(row[1]),
        None if row[2] is None else bytes(row[2]),
        None if row[3] is None else _from_db(row[3]),
    )


def _secret_values(secret: StoredSecret) -> tuple[object, ...]:
    until = secret.previous_valid_until
    return (
        secret.digest,
        secret.ciphertext,
        secret.previous_digest,
        None if until is None else _to_db(until),
    )


def _app_values(app: App) -> tuple[object, ...]:
    return (
        _app_record(app),
        app.owner,
        app.name,
        app.name.casefold(),
        search_text(app.name, app.description),
        app.homepage,
        app.admin_email,
        app.redirect_url,
        _to_db(app.created_at),
        app.description,
        app.image_url,
        app.admin_phone,
        int(app.trusted),
        int(app.enabled),
    )


def _installation(row: Sequence[Any]) -> Installation:
    return Installation(row[0], row[1], row[2], _from_db(row[3]), bool(row[4]))


def _search_clause(query: ListQuery, column: str, params: list[object]) -> str:
    # instr() matches substrings code point by code point, like Python's ``in``; LIKE would
    # treat % and _ as wildcards and fold only ASCII case.
    if query.search is None:
        return ""
    params.append(query.search)
    return f" AND instr({column}, ?) > 0"


def _nearer_end(total: int, query: ListQuery) -> tuple[int, int, bool]:
    """LIMIT and OFFSET that read the page from the nearer end of a list of ``total`` rows.

    Returns ``(limit, offset, backward)``; backward, the rows come in reverse order.

    >>> _nearer_end(1000, ListQuery(page=2, per_page=100))
    (100, 100, False)
    >>> _nearer_end(1000, ListQuery(page=9, per_page=100))
    (100, 100, True)
    >>> _nearer_end(950, ListQuery(page=10, per_page=100))  # the last, partial page
    (50, 0, True)
    """
    if 2 * query.offset + query.per_page <= total:
        return query.per_page, query.offset, False
    remaining = max(0, total - query.offset)
    return min(query.per_page, remaining), max(0, remaining - query.per_page), True


def _page_of(items: list[Any], total: int, query: ListQuery) -> Page[Any]:
    return Page(tuple(items), total, query.page, query.per_page)


def _ordered_page(
    query: ListQuery, total: int, order: Sequence[str], params: list[object]
) -> tuple[str, bool]:
    """The tail of a page's SELECT (its WHERE's last terms, ORDER BY, LIMIT and OFFSET).

    At a cursor's position the page is read from there on the list's index (keyset
    paging): a row-value comparison on the ``order`` columns, no OFFSET, so a deep page
    costs what the first does (R26). By number, OFFSET counts it out from the nearer end
    (see `_nearer_end`). Appends the tail's values to ``params``; returns the tail, and
    whether the rows come in reverse order (to be put right by the caller).

    >>> params = []
    >>> _ordered_page(ListQuery(after=("b", "K")), 9, ("name_folded", "app_key"), params)
    (' AND (name_folded, app_key) > (?, ?) ORDER BY name_folded, app_key LIMIT ? OFFSET ?', False)
    >>> params
    ['b', 'K', 10, 0]
    """
    position: Position | None = query.after if query.after is not None else query.before
    if position is not None:
        backward = query.after is None
        columns = ", ".join(order)
        marks = ", ".join("?" * len(order))
        condition = f" AND ({columns}) {'<' if backward else '>'} ({marks})"
        params.extend(_to_db(v) if isinstance(v, datetime) else v for v in position)
        limit, offset = query.per_page, 0
    else:
        condition = ""
        limit, offset, backward = _nearer_end(total, query)
    direction = " DESC" if backward else ""
    ordering = ", ".join(f"{column}{direction}" for column in order)
    params.extend((limit, offset))
    return f"{condition} ORDER BY {ordering} LIMIT ? OFFSET ?", backward

"""The SQLite backend's last use of access tokens: writing a batch, and the list by last use.

Kept apart from `_repositories` (which calls these) so that module stays readable. Times
are stored as microseconds since the epoch (see `_queries._to_db`), so a never-used token's
place in the order, `appregistry.ports.NEVER_USED`, is a plain integer too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, cast

import attrs

from ..._records import AccessToken, Page
from ...ports import NEVER_USED, ListQuery, Position
from ._queries import _TOKEN_COLUMNS, _ordered_page, _page_of, _search_clause, _to_db, _token

if TYPE_CHECKING:
    from ._repositories import _Session

_NEVER: Final = _to_db(NEVER_USED)
# The list's first order "column": negated so that it ascends as the times descend (most
# recently used first), and row-value comparisons work as for every other list. No index
# serves it: one app's tokens on one account are few, and last_used_at changes too often
# for an index on it to pay (every write would update the index too).
_RECENCY: Final = f"-coalesce(last_used_at, {_NEVER})"

# Never moves a time backwards; a token id that is not stored updates nothing.
_RECORD_SQL: Final = (
    "UPDATE tokens SET last_used_at = ?2 WHERE token_id = ?1 "
    "AND (last_used_at IS NULL OR last_used_at < ?2)"
)


def record_uses(session: _Session, uses: Mapping[str, datetime]) -> None:
    """`appregistry.ports.TokenRepository.record_uses`, in the session's transaction.

    One statement, prepared once and run for each token: SQLite runs in process, so there
    is no round trip to save by building one ``UPDATE ... FROM`` of the whole batch.
    """
    for token_id, at in uses.items():
        session.execute(_RECORD_SQL, (token_id, _to_db(at)))


def list_by_use(
    session: _Session, app_key: str, account: str | None, query: ListQuery, *, now: datetime
) -> Page[AccessToken]:
    """A page of the app's live tokens, most recently used first (`TokenOrder.LAST_USED`)."""
    params: list[object] = [app_key, _to_db(now)]
    where = "app_key = ? AND expires_at > ?"
    order: tuple[str, ...] = ("account", _RECENCY, "token_id")
    if account is not None:
        where += " AND account = ?"
        params.append(account)
        order = order[1:]
    searched = _search_clause(query, "search_text", params)
    total = session.scalar(f"SELECT count(*) FROM tokens WHERE {where}{searched}", params)  # noqa: S608
    reading = attrs.evolve(query, after=_recency(query.after), before=_recency(query.before))
    tail, backward = _ordered_page(reading, total, order, params)
    rows = session.all(
        f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where}{searched}{tail}",  # noqa: S608
        params,
    )
    if backward:
        rows.reverse()
    return _page_of([_token(row) for row in rows], total, query)


def _recency(position: Position | None) -> Position | None:
    # A position's time, as the value of _RECENCY (the types of a Position are its kinds in
    # a cursor; a row-value comparison binds the integer as is).
    if position is None:
        return None
    values: Sequence[object] = [-_to_db(v) if isinstance(v, datetime) else v for v in position]
    return cast(Position, tuple(values))

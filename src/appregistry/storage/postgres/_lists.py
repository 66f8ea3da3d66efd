"""The PostgreSQL backend's list queries: a page and its total in one statement (R26).

A page is read one of three ways (`Mode`):

- ``NUMBER``: by its number, with ``OFFSET``, from whichever end of the list is nearer (the
  total decides, and only that branch runs): no page costs more than the count plus half
  the list.
- ``AFTER`` / ``BEFORE``: at a position (keyset paging): a row comparison on the list's
  order columns, which the list's index answers directly, so a page costs what the first
  does however deep it is.

Every statement is rendered once, for every combination of its options, when the storage
opens; the repositories pick one by its options.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, LiteralString

import attrs
from psycopg import sql

from ...ports import ListQuery

Render = Callable[..., bytes]

# How long before the end of time a token was last used: an interval, exact to the
# microsecond (intervals compare by their whole span), that ascends as the time descends.
_RECENCY: Final = (
    "timestamptz '9999-12-31 00:00:00+00' - coalesce(last_used_at, '0001-01-01 00:00:00+00')"
)
_LATEST: Final = datetime(9999, 12, 31, tzinfo=UTC)


class Mode(enum.Enum):
    """How a page is found: by its number, or after or before a position."""

    NUMBER = "number"
    AFTER = "after"
    BEFORE = "before"

    @classmethod
    def of(cls, query: ListQuery) -> Mode:
        """The mode ``query`` asks for."""
        if query.after is not None:
            return cls.AFTER
        if query.before is not None:
            return cls.BEFORE
        return cls.NUMBER


@attrs.frozen
class _List:
    """One list: where its entries come from, what a page shows, and its order.

    ``source`` is the FROM clause; ``conditions`` its WHERE terms, each with the option that
    switches it on (``None``: always); ``columns`` the entry's columns inside the page,
    ``shown`` what the statement returns of them (``p`` is the page) with anything made only
    for the page's entries; ``order`` the order columns, in ``source``'s terms.
    """

    source: LiteralString
    conditions: tuple[tuple[LiteralString, str | None], ...]
    columns: LiteralString
    shown: LiteralString
    order: tuple[LiteralString, ...]

    def options(self) -> list[str]:
        return sorted({option for _, option in self.conditions if option is not None})


_LISTS: Final[Mapping[str, _List]] = {
    "apps": _List(
        source="{apps}",
        conditions=(
            ("owner = %(owner)s", "owner"),
            ("strpos(search_text, %(search)s) > 0", "search"),
        ),
        columns="{app_cols}",
        # Counted for the page's apps only: inside, every row skipped would be counted too.
        shown="{p_app_cols}, (SELECT count(*) FROM {installations} AS i "
        "WHERE i.app_key = p.app_key)",
        order=("name_folded", "app_key"),
    ),
    "permissions": _List(
        source="{permissions}",
        # lower() of "C" text folds ASCII letters only: ids are matched ignoring their case.
        conditions=(("strpos(lower(account), %(search)s) > 0", "search"),),
        columns="account, granted_by, granted_at",
        shown="p.account, p.granted_by, p.granted_at",
        order=("account",),
    ),
    # An account's App Management: its installations, and its own apps not installed on it
    # that have live tokens for it (client credentials, R19), with each app.
    "installations": _List(
        source="""(SELECT app_key, installed_by, installed_at, suspended FROM {installations}
                   WHERE account = %(account)s
                   UNION ALL
                   SELECT o.app_key, NULL, NULL, NULL FROM {apps} AS o
                   WHERE o.owner = %(account)s
                     AND NOT EXISTS (SELECT 1 FROM {installations} AS n
                                     WHERE n.app_key = o.app_key AND n.account = o.owner)
                     AND EXISTS (SELECT 1 FROM {tokens} AS t
                                 WHERE t.app_key = o.app_key AND t.account = o.owner
                                   AND t.expires_at > %(now)s)) AS e
                  JOIN {apps} AS a ON a.app_key = e.app_key""",
        conditions=(("strpos(a.search_text, %(search)s) > 0", "search"),),
        columns="e.installed_by, e.installed_at, e.suspended, {a_cols}",
        # The app first: an empty page is one row of NULLs, told by the first column (see
        # _queries._page), and an own app's installation columns are NULL.
        shown="{p_app_cols}, p.installed_by, p.installed_at, p.suspended, "
        "(SELECT count(*) FROM {tokens} AS t WHERE t.app_key = p.app_key "
        "AND t.account = %(account)s AND t.expires_at > %(now)s)",
        order=("a.name_folded", "a.app_key"),
    ),
    "app_installations": _List(
        source="{installations}",
        conditions=(
            ("app_key = %(app_key)s", None),
            ("strpos(lower(account), %(search)s) > 0", "search"),
        ),
        columns="{inst_cols}",
        shown="{p_inst_cols}",
        order=("account",),
    ),
    # One account's tokens of an app; "live" is off only for a page after a position that
    # is itself live, where it follows from the position (and would make the index scan
    # start at "now", stepping over every token up to the position).
    "tokens": _List(
        source="{tokens}",
        conditions=(
            ("app_key = %(app_key)s", None),
            ("account = %(account)s", None),
            ("expires_at > %(now)s", "live"),
            ("strpos(search_text, %(search)s) > 0", "search"),
        ),
        columns="{token_cols}",
        shown="{p_token_cols}",
        order=("expires_at", "token_id"),
    ),
    "all_tokens": _List(
        source="{tokens}",
        conditions=(
            ("app_key = %(app_key)s", None),
            ("expires_at > %(now)s", None),
            ("strpos(search_text, %(search)s) > 0", "search"),
        ),
        columns="{token_cols}",
        shown="{p_token_cols}",
        order=("account", "expires_at", "token_id"),
    ),
    # The same by last use (TokenOrder.LAST_USED): the first order column ascends as the time
    # descends, so that row comparisons work as everywhere else; positions are turned into
    # it by `recency`. No index serves it: one app's tokens on one account are few, and an
    # index on a column that changes this often would cost every write (no HOT updates).
    "tokens_by_use": _List(
        source="{tokens}",
        conditions=(
            ("app_key = %(app_key)s", None),
            ("account = %(account)s", None),
            ("expires_at > %(now)s", None),
            ("strpos(search_text, %(search)s) > 0", "search"),
        ),
        columns="{token_cols}",
        shown="{p_token_cols}",
        order=(_RECENCY, "token_id"),
    ),
    "all_tokens_by_use": _List(
        source="{tokens}",
        conditions=(
            ("app_key = %(app_key)s", None),
            ("expires_at > %(now)s", None),
            ("strpos(search_text, %(search)s) > 0", "search"),
        ),
        columns="{token_cols}",
        shown="{p_token_cols}",
        order=("account", _RECENCY, "token_id"),
    ),
}


def recency(when: datetime) -> timedelta:
    """The value of a last use (or `appregistry.ports.NEVER_USED`) in the lists by use.

    >>> recency(datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC))
    datetime.timedelta(seconds=1)
    """
    return _LATEST - when


class ListQueries:
    """Every list statement, rendered for one schema.

    Args:
        render: Renders a template with the schema's table names (`_Queries._render`).
        names: The table names and column lists, as ``render`` formats them.
        columns: The column names of ``"apps"``, ``"installations"`` and ``"tokens"``.
    """

    def __init__(
        self,
        render: Render,
        names: Mapping[str, sql.Composable],
        columns: Mapping[str, Sequence[str]],
    ) -> None:
        parts = {
            **names,
            "p_app_cols": _columns(columns["apps"], "p"),
            "p_inst_cols": _columns(columns["installations"], "p"),
            "p_token_cols": _columns(columns["tokens"], "p"),
        }
        self._statements: dict[tuple[str, Mode, frozenset[str]], bytes] = {}
        for name, spec in _LISTS.items():
            options = spec.options()
            for mode in Mode:
                for count in range(len(options) + 1):
                    for chosen in itertools.combinations(options, count):
                        on = frozenset(chosen)
                        statement = _statement(spec, mode, on, parts)
                        self._statements[name, mode, on] = render("{s}", s=statement)

    def statement(self, name: str, query: ListQuery, *options: str) -> bytes:
        """The statement of list ``name`` for ``query``, with ``options`` switched on."""
        chosen = set(options)
        if query.search is not None:
            chosen.add("search")
        return self._statements[name, Mode.of(query), frozenset(chosen)]


def list_params(query: ListQuery, **values: object) -> dict[str, object]:
    """The parameters of a list statement: ``values``, the search, paging and position."""
    params: dict[str, object] = {
        **values,
        "search": query.search,
        "limit": query.per_page,
        "offset": (query.page - 1) * query.per_page,
    }
    position: Sequence[str | datetime] = query.after or query.before or ()
    params.update((f"k{n}", value) for n, value in enumerate(position))
    return params


def _columns(names: Sequence[str], alias: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, name) for name in names)


def _statement(
    spec: _List, mode: Mode, on: frozenset[str], parts: Mapping[str, sql.Composable]
) -> sql.Composable:
    """The statement of ``spec`` read in ``mode``, with the options ``on``."""
    source = sql.SQL(spec.source).format(**parts)
    where = _where(spec, lambda option: option in on)
    # The total counts the entries whatever the page's own conditions ("live" is off only
    # where it follows from the position).
    total_where = _where(spec, lambda option: option in on or option == "live")
    # The order columns come out of the page as o0, o1, ...: the outer ORDER BY puts a page
    # read backward right.
    aliases = [sql.Identifier(f"o{n}") for n in range(len(spec.order))]
    inner = sql.SQL("{columns}, {order}").format(
        columns=sql.SQL(spec.columns).format(**parts),
        order=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.SQL(column), alias)
            for column, alias in zip(spec.order, aliases, strict=True)
        ),
    )
    forward = sql.SQL(", ").join(sql.SQL(column) for column in spec.order)
    backward = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.SQL(column)) for column in spec.order
    )

    def branch(
        extra: sql.Composable, order: sql.Composable, paging: sql.Composable
    ) -> sql.Composed:
        return sql.SQL(
            "(SELECT {inner} FROM {source} WHERE {where}{extra} ORDER BY {order} {paging})"
        ).format(inner=inner, source=source, where=where, extra=extra, order=order, paging=paging)

    if mode is Mode.NUMBER:
        page: sql.Composable = sql.SQL(" UNION ALL ").join(
            [
                branch(
                    sql.SQL(" AND 2 * %(offset)s + %(limit)s <= c.total"),
                    forward,
                    sql.SQL("LIMIT %(limit)s OFFSET %(offset)s"),
                ),
                branch(
                    sql.SQL(" AND 2 * %(offset)s + %(limit)s > c.total"),
                    backward,
                    sql.SQL(
                        "LIMIT greatest(0, least(%(limit)s, c.total - %(offset)s)) "
                        "OFFSET greatest(0, c.total - %(offset)s - %(limit)s)"
                    ),
                ),
            ]
        )
    else:
        after = mode is Mode.AFTER
        keys = sql.SQL(", ").join(sql.Placeholder(f"k{n}") for n in range(len(spec.order)))
        condition = sql.SQL(" AND ({}) {} ({})").format(
            forward, sql.SQL(">" if after else "<"), keys
        )
        page = branch(condition, forward if after else backward, sql.SQL("LIMIT %(limit)s"))
    return sql.SQL(
        """SELECT c.total, {shown}
           FROM (SELECT count(*) FROM {source} WHERE {total_where}) AS c (total)
           LEFT JOIN LATERAL ({page}) AS p ON true
           ORDER BY {outer}"""
    ).format(
        shown=sql.SQL(spec.shown).format(**parts),
        source=source,
        total_where=total_where,
        page=page,
        outer=sql.SQL(", ").join(sql.SQL("p.{}").format(alias) for alias in aliases),
    )


def _where(spec: _List, wanted: Callable[[str], bool]) -> sql.Composable:
    terms = [sql.SQL(text) for text, option in spec.conditions if option is None or wanted(option)]
    return sql.SQL(" AND ").join(terms) if terms else sql.SQL("true")

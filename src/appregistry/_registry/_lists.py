"""Lists and selections: page cursors, and the key selections that bulk removals take.

A cursor is an entry's position in its list (`appregistry.ports.Position`), tagged with the
list's name, as URL-safe base64 of JSON: opaque to callers, and checked when it comes back,
so that a cursor of another list, or a forged one, is refused rather than misread. It holds
nothing secret: the values it carries are on the page that made it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Final, TypeVar, cast

import attrs

from .._records import Page
from .._validation import MAX_ACCOUNT_LENGTH, Problems
from ..errors import FieldProblem, ValidationError
from ..ports import ListQuery, Position

T = TypeVar("T")

#: Most app keys one bulk removal may name.
MAX_KEYS_PER_REMOVAL: Final = 1000
# Longer cursors are refused unread. A position holds at most a folded name (a few times
# the longest name) and two ids.
_MAX_CURSOR: Final = 4096


class ListKind(enum.Enum):
    """Each list, with the types of its position's values (``datetime`` or ``str``)."""

    APPS = ("apps", (str, str))
    INSTALLATIONS = ("installations", (str, str))
    PERMISSIONS = ("permissions", (str,))
    APP_INSTALLATIONS = ("app_installations", (str,))
    TOKENS = ("tokens", (datetime, str))
    ALL_TOKENS = ("all_tokens", (str, datetime, str))
    TOKENS_BY_USE = ("tokens_by_use", (datetime, str))
    ALL_TOKENS_BY_USE = ("all_tokens_by_use", (str, datetime, str))

    @property
    def tag(self) -> str:
        """The list's name, as cursors carry it."""
        return cast(str, self.value[0])

    @property
    def types(self) -> tuple[type, ...]:
        """The types of a position's values, in order."""
        return cast(tuple[type, ...], self.value[1])


def encode_cursor(kind: ListKind, position: Position) -> str:
    """The opaque cursor of ``position`` in the list ``kind``.

    >>> cursor = encode_cursor(ListKind.APPS, ("myapp", "K" * 32))
    >>> decode_cursor(ListKind.APPS, cursor)
    ('myapp', 'KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK')
    >>> decode_cursor(ListKind.PERMISSIONS, cursor) is None  # another list's cursor
    True
    """
    values = [v.isoformat() if isinstance(v, datetime) else v for v in position]
    text = json.dumps([kind.tag, *values], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(kind: ListKind, cursor: object) -> Position | None:
    """The position a cursor of the list ``kind`` holds, or ``None`` if it is not one."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _MAX_CURSOR:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(decoded, list) or len(decoded) != len(kind.types) + 1:
        return None
    tag, *values = decoded
    if tag != kind.tag or not all(_storable(value) for value in values):
        return None
    position: list[str | datetime] = []
    for value, wanted in zip(values, kind.types, strict=True):
        if wanted is datetime:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                return None
            if when.utcoffset() is None:
                return None
            position.append(when)
        else:
            position.append(value)
    return tuple(position)


def _storable(value: object) -> bool:
    # Text that storage can bind: no NUL (PostgreSQL refuses it), no lone surrogates.
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def with_cursors(kind: ListKind, found: Page[T], position: Callable[[T], Position]) -> Page[T]:
    """``found`` with its ``after`` and ``before`` cursors (none past either end)."""
    if not found.items:
        return found
    last_page = found.page * found.per_page >= found.total
    return attrs.evolve(
        found,
        after=None if last_page else encode_cursor(kind, position(found.items[-1])),
        before=None if found.page <= 1 else encode_cursor(kind, position(found.items[0])),
    )


def list_query(
    problems: Problems,
    kind: ListKind,
    *,
    search: object,
    page: object,
    per_page: object,
    after: object,
    before: object,
) -> ListQuery:
    """The query of a page of the list ``kind``: checked search text, paging and cursor.

    An empty cursor is no cursor, as a form's empty field would send it. The problems
    found, with those already in ``problems``, are raised at once.
    """
    folded = problems.search(search)
    good_page, good_size = problems.paging(page, per_page)
    after, before = after or None, before or None
    positions: dict[str, Position | None] = {"after": None, "before": None}
    for field, cursor in (("after", after), ("before", before)):
        if cursor is None:
            continue
        positions[field] = decode_cursor(kind, cursor)
        if positions[field] is None:
            problems.add(field, "invalid", f"{field} is not a cursor of this list")
    if after is not None and before is not None:
        problems.add("before", "conflict", "give after or before, not both")
    problems.raise_if_any()
    return ListQuery(
        page=good_page,
        per_page=good_size,
        search=folded,
        after=positions["after"],
        before=positions["before"],
    )


def key_selection(field: str, values: object, *, most: int = MAX_KEYS_PER_REMOVAL) -> list[str]:
    """The distinct keys of a bulk operation, in the order given (repeats collapsed).

    Raises:
        ValidationError: ``values`` is not a collection of strings (a string alone is not
            one), has more than ``most`` entries, or an entry longer than any key.

    >>> key_selection("keys", ["b", "a", "b"])
    ['b', 'a']
    """
    # Typed as a collection, but hosts pass outside input through: check at run time,
    # counting first so that a huge collection is refused without a look at its items.
    if isinstance(values, str) or not isinstance(values, Collection):
        raise ValidationError([FieldProblem(field, "invalid", f"{field} must be a list of keys")])
    if len(values) > most:
        raise ValidationError(
            [FieldProblem(field, "too_many", f"at most {most} can be named at once")]
        )
    items = cast(Sequence[object], list(values))
    if not all(isinstance(value, str) for value in items):
        raise ValidationError([FieldProblem(field, "invalid", f"{field} must be a list of keys")])
    keys = cast(list[str], items)
    if any(len(key) > MAX_ACCOUNT_LENGTH for key in keys):
        raise ValidationError([FieldProblem(field, "too_long", "a key is longer than any key")])
    return list(dict.fromkeys(keys))

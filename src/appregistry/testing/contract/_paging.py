"""Paging checks the list parts of the contract suite share: every way to a page agrees."""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ..._records import Page
from ...ports import ListQuery, Position

T = TypeVar("T")


def assert_pages_agree(
    read: Callable[[ListQuery], Page[T]],
    position: Callable[[T], Position],
    expected: Sequence[T],
    *,
    per_page: int,
    search: str | None = None,
) -> None:
    """Every page of a list is the same slice of ``expected``, however it is reached.

    By number (``offset``), forward from the previous page's last position (``after``),
    and backward from the next page's first position (``before``); each with the total.
    Positions between entries (an entry removed since) and past either end are tried too.
    """
    pages = max(1, -(-len(expected) // per_page))
    slices = [list(expected[n * per_page : (n + 1) * per_page]) for n in range(pages)]
    by_number = [
        read(ListQuery(page=n + 1, per_page=per_page, search=search)) for n in range(pages)
    ]
    assert [(s, len(expected)) for s in slices] == [(list(p.items), p.total) for p in by_number]
    for n in range(1, pages):
        after = position(slices[n - 1][-1])
        forward = read(ListQuery(page=n + 1, per_page=per_page, search=search, after=after))
        before = position(slices[n][0])
        backward = read(ListQuery(page=n, per_page=per_page, search=search, before=before))
        assert (slices[n], len(expected), n + 1) == (
            list(forward.items),
            forward.total,
            forward.page,
        )
        assert (slices[n - 1], len(expected), n) == (
            list(backward.items),
            backward.total,
            backward.page,
        )
    if pages > 1:
        # Just past the first page's last entry, where no entry is (as if it was removed).
        *lead, tail = position(slices[0][-1])
        assert isinstance(tail, str)
        between = (*lead, tail + "\x01")
        moved = read(ListQuery(page=2, per_page=per_page, search=search, after=between))
        assert slices[1] == list(moved.items)
    if expected:
        last, first = position(expected[-1]), position(expected[0])
        beyond = read(ListQuery(page=pages + 1, per_page=per_page, search=search, after=last))
        before_all = read(ListQuery(per_page=per_page, search=search, before=first))
        assert ((), (), len(expected)) == (beyond.items, before_all.items, beyond.total)

"""Token list pages (R26) on every backend: each page is its slice of the whole ordered list.

The SQL backends read a page from whichever end of the list is nearer, so pages past the
middle, the last partial page and ties in expiry are where they could go wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appregistry import AccessToken, Grant, Registry
from appregistry.ports import ListQuery, Storage
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing import ManualClock

T0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
LIVE = 23
SIZES = (1, 2, 5, 10, 11, 22, 23, 25)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    if request.param == "sqlite":
        return SQLiteStorage(tmp_path / "pages.sqlite3")
    found: Storage = request.getfixturevalue("postgres_storage")
    return found


@pytest.fixture
def listed(storage: Storage) -> tuple[Registry, str, list[AccessToken]]:
    """An app on "acme" with 23 live tokens (expiries tied in threes) and 3 expired ones."""
    registry = Registry(storage=storage, clock=ManualClock(T0))
    registry.permit_account("acme", by="admin")
    key = registry.register_app(
        "acme",
        name="Pager",
        homepage="https://pager.example/",
        admin_email="admin@pager.example",
        redirect_url="https://pager.example/cb",
    ).app.key
    registry.install_app(key, "acme", by="admin")
    tokens = [
        AccessToken(
            f"t{n:02d}{'zyx'[n % 3]}",
            key,
            "acme",
            Grant.AUTHORIZATION_CODE,
            T0,
            T0 + timedelta(minutes=n // 3, seconds=-30),  # the first three have expired
            f"agent {n}",
        )
        for n in range(LIVE + 3)
    ]
    with storage.transaction() as tx:
        for n, token in enumerate(reversed(tokens)):
            tx.tokens.add(token, bytes([n]) * 32)
    live = sorted(
        (t for t in tokens if not t.is_expired(T0)), key=lambda t: (t.expires_at, t.token_id)
    )
    return registry, key, live


class TestPages:
    """Every page of every size is the matching slice of the full list, with the full total."""

    @pytest.mark.parametrize("per_page", SIZES)
    def test_every_page(
        self, listed: tuple[Registry, str, list[AccessToken]], per_page: int
    ) -> None:
        registry, key, live = listed
        for page in range(1, LIVE // per_page + 3):
            shown = registry.list_tokens(key, "acme", page=page, per_page=per_page)
            start = (page - 1) * per_page
            assert (LIVE, live[start : start + per_page]) == (shown.total, list(shown.items))

    def test_pages_of_a_search(self, listed: tuple[Registry, str, list[AccessToken]]) -> None:
        registry, key, live = listed
        matching = [t for t in live if t.user_agent is not None and "1" in t.user_agent]
        for page in range(1, len(matching) + 2):
            shown = registry.list_tokens(key, "acme", search="1", page=page, per_page=1)
            assert (len(matching), matching[page - 1 : page]) == (
                shown.total,
                list(shown.items),
            )

    def test_query_offsets_are_the_storage_contract(self) -> None:
        # The slice a page stands for, as ListQuery defines it.
        assert 22 == ListQuery(page=3, per_page=11).offset

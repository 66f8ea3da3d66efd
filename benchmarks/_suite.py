"""The rows of one backend, in the order their data sets build on each other.

1. 10,000 live tokens: ``check_valid``, ``check_unknown`` (and ``check_asgi`` on memory,
   see ``_asgi.py``; the check cache's rows, ``_cache.py``), ``check_last_use``
   (``_last_use.py``), then ``issue``.
2. Grown to 1,000,000 live tokens (100,000 of them on one app and account):
   ``check_valid_..._1m`` (ours at a million over ours at 10,000), ``list_page``; then
   100,000 apps of one owner, each installed on one account: ``list_apps_page``,
   ``list_installations_page``.
3. One million expired tokens added: ``purge`` (the library's batches), reloaded, then the
   raw DELETE.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from appregistry import Page

from ._asgi import asgi_row
from ._backends import Backend, MemoryBackend, Pair
from ._cache import cache_rows
from ._harness import Row, Sizes, each, no_gc, once, rates
from ._last_use import last_use_row
from ._world import LIST_ACCOUNT, USER_AGENT, Tokens, World

#: The issue's targets for each kind of row, per backend where they differ.
CHECK_TARGETS = {"memory": 0.5, "sqlite": 0.6, "postgres": 0.8, "postgres_pgbouncer": 0.8}
SCALE_TARGET = 0.8
LIST_TARGET = 0.67
ISSUE_TARGET = 0.6
PURGE_TARGET = 0.5


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _verify_checks(bench: Backend, valid: Sequence[str], unknown: Sequence[str]) -> None:
    """Ours and the baseline must give the same answers before their speeds are compared."""
    raw = bench.raw_check()
    for token in valid[:2000]:
        if not bench.registry.check_token(token).allowed or not raw(token):
            raise AssertionError(f"{bench.name}: a valid sample token was refused")
    for token in unknown[:200]:
        if bench.registry.check_token(token).allowed or raw(token):
            raise AssertionError(f"{bench.name}: an unknown token was accepted")


def _first_uses(bench: Backend, world: World, valid: Sequence[str]) -> None:
    """Check every sample once and write the uses that records (last use is on by default).

    The check rows then measure checks as a server sees them between a token's writes, the
    usual case: a token is written at most once a minute. What the writes cost is the
    ``check_last_use_<backend>`` row's to say, and the worst case (every token checked about
    once a minute, so about one write per check) is in docs/performance.md, "Last use".
    """
    check = bench.registry.check_token
    for token in valid:
        check(token)
    bench.registry.list_tokens(world.apps[0].key)  # writes what is pending


def _load(bench: Backend, tokens: Tokens) -> None:
    with no_gc():
        bench.load_tokens(tokens)


def run_backend(bench: Backend, world: World, sizes: Sizes) -> tuple[list[Row], dict[str, float]]:
    """Every row of one backend, and its storage measurements."""
    _log(f"{bench.name}: setting up {sizes.small_tokens:,} tokens")
    bench.register_apps(world)
    with no_gc():
        bench.load_accounts(world)
    _load(bench, world.small)
    rows = _check_rows(bench, world, sizes)
    if bench.name == "memory":
        rows.append(asgi_row(bench, world.samples(world.small), sizes))
    rows += cache_rows(bench, world, sizes)
    rows.append(last_use_row(bench, world, sizes, check_rate=rows[0].ours_per_s))
    rows.append(_issue_row(bench, world, sizes))
    _log(f"{bench.name}: checks and issues done; loading {len(world.large.rows):,} more tokens")
    before = bench.storage_bytes()
    _load(bench, world.large)
    after = bench.storage_bytes()
    stats: dict[str, float] = {}
    if before is not None and after is not None:
        stats[f"{bench.name}_bytes_per_token"] = (after - before) / len(world.large.rows)
    rows.append(_scale_row(bench, world, sizes, small_rate=rows[0].ours_per_s))
    rows.append(_list_row(bench, world, sizes))
    _log(f"{bench.name}: loading {len(world.list_apps):,} apps for the app lists")
    with no_gc():
        bench.load_list_apps(world)
    rows += _app_list_rows(bench, sizes)
    _log(f"{bench.name}: scale rows done; loading {len(world.expired.rows):,} expired tokens")
    rows.append(_purge_row(bench, world, sizes))
    _log(f"{bench.name}: purge done")
    return rows, stats


def run_check_rows(bench: Backend, world: World, sizes: Sizes) -> list[Row]:
    """The check rows alone (``check_valid``, ``check_unknown``), at the small size.

    For the PostgreSQL backend behind PgBouncer: what a pooler changes is the cost of a
    round trip and of leaving statements unprepared; the other rows measure the server.
    """
    _log(f"{bench.name}: setting up {sizes.small_tokens:,} tokens")
    bench.register_apps(world)
    with no_gc():
        bench.load_accounts(world)
    _load(bench, world.small)
    return _check_rows(bench, world, sizes)


def _check_rows(bench: Backend, world: World, sizes: Sizes) -> list[Row]:
    """``check_valid`` and ``check_unknown`` at the small size."""
    valid = world.samples(world.small)
    _verify_checks(bench, valid, world.unknown)
    _first_uses(bench, world, valid)
    fns = {"ours": each(bench.registry.check_token), "raw": bench.raw_batch(bench.raw_check())}
    target = CHECK_TARGETS[bench.name]
    rows = []
    for kind, tokens in (("valid", valid), ("unknown", world.unknown)):
        found = rates(fns, tokens, sizes=sizes)
        rows.append(Row(f"check_{kind}_{bench.name}", found["ours"], found["raw"], target))
    return rows


def _issue_row(bench: Backend, world: World, sizes: Sizes) -> Row:
    """``issue``: an app with its key and secret gets a token for an account, committed."""
    registry = bench.registry
    secret_of = {app.key: app.secret for app in world.apps}

    def issue(pair: Pair) -> None:
        registry.issue_token(
            pair[0], secret_of[pair[0]], account=pair[1], approved_by="alice", user_agent=USER_AGENT
        )

    found = rates(
        {"ours": each(issue), "raw": bench.raw_batch(bench.raw_issue)},
        world.installations,
        sizes=sizes,
        seconds=sizes.issue_seconds,
        rounds=sizes.issue_rounds,
    )
    return Row(f"issue_{bench.name}", found["ours"], found["raw"], ISSUE_TARGET)


def _scale_row(bench: Backend, world: World, sizes: Sizes, *, small_rate: float) -> Row:
    """``check_valid_..._1m``: ours at the large size over ours at the small one."""
    valid = world.samples(world.large)
    _verify_checks(bench, valid, world.unknown)
    _first_uses(bench, world, valid)
    fns = {"ours": each(bench.registry.check_token), "raw": bench.raw_batch(bench.raw_check())}
    found = rates(fns, valid, sizes=sizes)
    return Row(
        f"check_valid_{bench.name}_1m",
        found["ours"],
        small_rate,
        SCALE_TARGET,
        note=f"ours at {sizes.large_tokens:,} tokens over ours at {sizes.small_tokens:,}",
        extra={"raw_per_s": found["raw"], "vs_raw": found["ours"] / found["raw"]},
    )


def _list_row(bench: Backend, world: World, sizes: Sizes) -> Row:
    """``list_page``: the last page of 100 of the list pair's tokens against the first."""
    registry = bench.registry
    key, account = world.list_pair
    last = sizes.list_page

    def page(number: int) -> Callable[[Sequence[Any]], None]:
        def run(batch: Sequence[Any]) -> None:
            for _ in batch:
                registry.list_tokens(key, account, page=number, per_page=sizes.per_page)

        return run

    shown = registry.list_tokens(key, account, page=last, per_page=sizes.per_page)
    if len(shown.items) != sizes.per_page or shown.total < sizes.list_tokens:
        raise AssertionError(f"{bench.name}: page {last} is not a full page of the list pair")
    # Page 1000 is the last page of the list. The SQL backends read a page from the nearer
    # end of the list, so the middle page is their worst case: it is measured too.
    middle = max(1, last // 2)
    found = rates(
        {"last": page(last), "first": page(1), "middle": page(middle)},
        [None],
        sizes=sizes,
        rounds=sizes.list_rounds,
    )
    return Row(
        f"list_page_{bench.name}",
        found["last"],
        found["first"],
        LIST_TARGET,
        note=f"page {last} of {sizes.per_page} against page 1",
        extra={
            "middle_page": middle,
            "middle_per_s": found["middle"],
            "middle_ratio": found["middle"] / found["first"],
        },
    )


def _app_list_rows(bench: Backend, sizes: Sizes) -> list[Row]:
    """``list_apps_page`` and ``list_installations_page``: the last page, by its cursor.

    The last full page of 100 (page 1000 at full size), read after the cursor of the page
    before it, as a "Next" link reads it, against page 1. The middle page by its number
    alone, counted out from the nearer end of the list, is measured too (``middle_ratio``):
    what a page costs without a cursor.
    """
    registry = bench.registry
    per_page = sizes.per_page
    lists: dict[str, Callable[..., Page[Any]]] = {
        "list_apps_page": lambda **kw: registry.list_apps(per_page=per_page, **kw),
        "list_installations_page": lambda **kw: registry.list_installations(
            LIST_ACCOUNT, per_page=per_page, **kw
        ),
    }
    rows = []
    for name, read in lists.items():
        last = read().total // per_page
        cursor = read(page=last - 1).after  # by its number, from the nearer end
        shown = read(page=last, after=cursor)
        if cursor is None or len(shown.items) != per_page or shown != read(page=last):
            raise AssertionError(f"{bench.name}: {name}: page {last} by its cursor is wrong")
        middle = max(1, last // 2)

        def reading(read: Callable[..., Page[Any]], **kw: Any) -> Callable[[Sequence[Any]], None]:
            def run(batch: Sequence[Any]) -> None:
                for _ in batch:
                    read(**kw)

            return run

        found = rates(
            {
                "last": reading(read, page=last, after=cursor),
                "first": reading(read, page=1),
                "middle": reading(read, page=middle),
            },
            [None],
            sizes=sizes,
            rounds=sizes.list_rounds,
        )
        rows.append(
            Row(
                f"{name}_{bench.name}",
                found["last"],
                found["first"],
                LIST_TARGET,
                note=f"page {last} of {per_page} by its cursor against page 1",
                extra={
                    "middle_page": middle,
                    "middle_per_s": found["middle"],
                    "middle_ratio": found["middle"] / found["first"],
                },
            )
        )
    return rows


def _purge_row(bench: Backend, world: World, sizes: Sizes) -> Row:
    """``purge``: the library's batches over the expired tokens, against one raw DELETE."""
    expected = len(world.expired.rows)

    def counted(purge: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            deleted = purge()
            if deleted != expected:
                raise AssertionError(f"{bench.name}: purged {deleted}, not {expected}")
            return deleted

        return run

    _load(bench, world.expired)
    # Flat out (no rest between batches): this row is the batches' cost, not their pace.
    ours = once(counted(lambda: bench.registry.purge_expired_tokens(rest=0).total))
    bench.after_purge()
    if bench.reload_for_raw_purge:
        _load(bench, world.expired)
    raw = once(counted(bench.raw_purge))
    return Row(
        f"purge_{bench.name}",
        ours,
        raw,
        PURGE_TARGET,
        note=f"{len(world.expired.rows):,} expired tokens among {sizes.large_tokens:,} live",
    )


def memory_bytes_per_token(world: World, sizes: Sizes) -> float:
    """Bytes the memory backend keeps per token, issued through the library.

    Tokens are spread over installations as densely as in the million-token set, and each
    issue gets strings of its own, as it would from a request; measured with `tracemalloc`.
    """
    bench = MemoryBackend()
    try:
        bench.register_apps(world)
        bench.load_accounts(world)
        density = sizes.large_tokens / len(world.installations)
        pairs = world.installations[: max(1, round(sizes.memory_tokens / density))]
        secret_of = {app.key: app.secret for app in world.apps}
        registry = bench.registry
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            for i in range(sizes.memory_tokens):
                key, account = pairs[i % len(pairs)]
                registry.issue_token(
                    key,
                    secret_of[key],
                    account="".join([account[:1], account[1:]]),
                    approved_by="alice",
                    user_agent="".join([USER_AGENT[:1], USER_AGENT[1:]]),
                )
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - start) / sizes.memory_tokens
        finally:
            tracemalloc.stop()
    finally:
        bench.close()

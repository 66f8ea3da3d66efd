"""``python -m benchmarks.steps``: what one token check costs, step by step, on each backend.

`appregistry.Registry.check_token` reads the clock, digests the token, asks storage for the
token's context (one query), lets the policy decide and wraps the answer. This times each
step on its own, on 10,000 tokens, as the median of several rounds over every token, and
prints microseconds per check. It reaches into the library's private parts to call each step
alone; the main harness (``python -m benchmarks``) times only the public API.

For the SQL backends the storage step is split further: the query alone (the library's SQL
through the driver, on a connection of its own), and the rest (the connection pool and
turning the row into records).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from appregistry import TokenCheck, TokenContext
from appregistry._credentials import Credentials

from ._backends import Backend, MemoryBackend, PostgresBackend, SQLiteBackend
from ._harness import FULL, awake_cpus
from ._suite import _load
from ._world import PEPPER, World

ROUNDS = 7


def _median(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Microseconds per call: the median round over all items (see `_harness.rates`)."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rounds.append((time.perf_counter() - start) / len(items))
    return statistics.median(rounds) * 1e6


def _steps(bench: Backend, tokens: Sequence[str]) -> dict[str, float]:
    registry = bench.registry
    # Private parts, on purpose: each step is called on its own.
    storage: Any = registry._storage
    policy = registry._policy
    credentials = Credentials(pepper=PEPPER)
    digests = [credentials.token_digest(token) for token in tokens]
    contexts: list[TokenContext] = [storage.token_context(digest) for digest in digests]
    now: datetime = registry._now()
    decided = [(policy._evaluate_token(c, now), c.token) for c in contexts]
    steps = {
        "clock": _median(lambda _: registry._clock(), tokens),
        "digest": _median(credentials.token_digest, tokens),
        "storage": _median(storage.token_context, digests),
        "policy": _median(lambda context: policy._evaluate_token(context, now), contexts),
        "result": _median(lambda pair: TokenCheck(*pair), decided),
    }
    query = bench.raw_query()
    if query is not None:
        steps["storage: the query alone"] = _median(query, digests)
    steps["whole check"] = _median(registry.check_token, tokens)
    return steps


def main(argv: list[str] | None = None) -> int:
    """Print the steps of a check for each backend asked for."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steps", description=__doc__)
    parser.add_argument("--backends", default="memory,sqlite,postgres")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-data"))
    arguments = parser.parse_args(argv)
    sizes = dataclasses.replace(
        FULL, large_tokens=FULL.small_tokens + 2, list_tokens=1, purge_tokens=1
    )
    world = World.make(sizes)
    tokens = world.samples(world.small)
    workdir_existed = arguments.workdir.exists()
    try:
        with awake_cpus():
            for name in arguments.backends.split(","):
                _print_steps(name, arguments, world, tokens)
    finally:
        if not workdir_existed and arguments.workdir.exists():
            shutil.rmtree(arguments.workdir)
    return 0


def _print_steps(
    name: str, arguments: argparse.Namespace, world: World, tokens: Sequence[str]
) -> None:
    """Set up one backend with the small data set, time the steps, print them."""
    if name == "sqlite":
        arguments.workdir.mkdir(parents=True, exist_ok=True)
    bench: Backend = {
        "memory": MemoryBackend,
        "sqlite": lambda: SQLiteBackend(arguments.workdir),
        "postgres": lambda: PostgresBackend(arguments.postgres_url),
    }[name]()
    try:
        bench.register_apps(world)
        bench.load_accounts(world)
        _load(bench, world.small)
        steps = _steps(bench, tokens)
    finally:
        bench.close()
    whole = steps["whole check"]
    print(f"{name}: {whole:.2f} us per check ({1e6 / whole:,.0f}/s)")
    for step, micros in steps.items():
        print(f"  {step:26s} {micros:7.2f} us  {100 * micros / whole:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())

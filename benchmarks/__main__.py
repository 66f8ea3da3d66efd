"""``python -m benchmarks``: run every row, print the table, write ``build/bench.json``.

Examples::

    python -m benchmarks                     # the full run: 10,000 and 1,000,000 tokens
    python -m benchmarks --quick             # tiny sizes, a few seconds: a smoke test
    python -m benchmarks --backends memory,sqlite --output /tmp/bench.json

PostgreSQL is reached at ``--postgres-url``, else ``$APPREGISTRY_BENCH_POSTGRES``, else
``$APPREGISTRY_TEST_POSTGRES``, else ``postgresql://postgres@127.0.0.1:5432/test``. The run
works in a schema of its own (``appregistry_bench_<random>``) and drops it at the end. When
the server cannot be reached and ``--backends`` was not given, its rows are skipped with a
warning (and listed under ``skipped`` in the JSON).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

from ._backends import Backend, MemoryBackend, PostgresBackend, SQLiteBackend
from ._harness import FULL, QUICK, Row, awake_cpus, machine, table, write_json
from ._suite import memory_bytes_per_token, run_backend
from ._world import World

BACKENDS = ("memory", "sqlite", "postgres")
Stats = dict[str, float]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The issue's targets for the storage measurements, in bytes per token.
MEMORY_BYTES_TARGET = 1024
SQLITE_BYTES_TARGET = 400


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the token check, issue, lists and purge on every backend.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument(
        "--backends",
        help=f"comma-separated, of {', '.join(BACKENDS)} (default: all; PostgreSQL is skipped "
        "when unreachable unless named here)",
    )
    parser.add_argument("--postgres-url", help="the PostgreSQL server to use")
    parser.add_argument(
        "--let-cpus-idle",
        action="store_true",
        help="do not ask the kernel to keep the CPUs out of idle states while measuring",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("build/bench.json"), help="the JSON file to write"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("build/bench-data"),
        help="where the SQLite file goes (removed at the end)",
    )
    arguments = parser.parse_args(argv)
    chosen = arguments.backends.split(",") if arguments.backends else list(BACKENDS)
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends: {', '.join(unknown)}")
    arguments.explicit = arguments.backends is not None
    arguments.chosen = [name for name in BACKENDS if name in chosen]
    return arguments


def _postgres_url(arguments: argparse.Namespace) -> str:
    return str(
        arguments.postgres_url
        or os.environ.get("APPREGISTRY_BENCH_POSTGRES")
        or os.environ.get("APPREGISTRY_TEST_POSTGRES")
        or DEFAULT_POSTGRES_URL
    )


def _postgres_problem(url: str) -> str | None:
    """Why PostgreSQL cannot be benchmarked, or ``None`` if it can."""
    try:
        import psycopg  # noqa: PLC0415 - optional
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        return f"no PostgreSQL server: {lines[0] if lines else type(exc).__name__}"
    return None


def _open(name: str, arguments: argparse.Namespace) -> Backend:
    if name == "memory":
        return MemoryBackend()
    if name == "sqlite":
        arguments.workdir.mkdir(parents=True, exist_ok=True)
        return SQLiteBackend(arguments.workdir)
    return PostgresBackend(_postgres_url(arguments))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; the exit status is 0 even when targets are missed, 1 if a backend
    failed (the other backends' rows are still written)."""
    arguments = _arguments(argv)
    sizes = QUICK if arguments.quick else FULL
    started = time.perf_counter()
    skipped: list[str] = []
    backends = list(arguments.chosen)
    if "postgres" in backends:
        problem = _postgres_problem(_postgres_url(arguments))
        if problem is not None:
            if arguments.explicit:
                print(f"cannot benchmark postgres: {problem}", file=sys.stderr)
                return 2
            print(f"warning: skipping postgres: {problem}", file=sys.stderr)
            skipped.append(f"postgres: {problem}")
            backends.remove("postgres")

    print(f"building the data set ({'quick' if arguments.quick else 'full'})", file=sys.stderr)
    world = World.make(sizes)
    workdir_existed = arguments.workdir.exists()
    try:
        with (
            awake_cpus()
            if not arguments.let_cpus_idle
            else nullcontext(enter_result=False) as awake
        ):
            if not awake:
                print("note: the CPUs may idle between round trips", file=sys.stderr)
            rows, stats, failed = _measure(backends, arguments, world)
    finally:
        if not workdir_existed and arguments.workdir.exists():
            shutil.rmtree(arguments.workdir)
    elapsed = time.perf_counter() - started

    print(table(rows))
    limits = {"memory_bytes_per_token": MEMORY_BYTES_TARGET}
    limits["sqlite_bytes_per_token"] = SQLITE_BYTES_TARGET
    for key, value in stats.items():
        verdict = "ok" if value <= limits[key] else "MISSED"
        print(f"{key}: {value:,.0f} (target <= {limits[key]}) {verdict}")
    print(f"elapsed: {elapsed:,.0f} s")
    write_json(
        arguments.output,
        rows,
        **{key: round(value, 1) for key, value in stats.items()},
        elapsed_s=round(elapsed, 1),
        quick=arguments.quick,
        sizes=sizes,
        machine=machine(),
        cpus_kept_awake=awake,
        skipped=skipped,
        failed=failed,
    )
    print(f"wrote {arguments.output}")
    for failure in failed:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failed else 0


def _measure(
    backends: list[str], arguments: argparse.Namespace, world: World
) -> tuple[list[Row], Stats, list[str]]:
    """Every backend's rows and measurements, and the failures of those that failed."""
    rows: list[Row] = []
    stats: Stats = {}
    failed: list[str] = []
    for name in backends:
        try:
            found, measured = _run(name, arguments, world)
        except Exception as exc:  # noqa: BLE001 - reported, and the other backends run
            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        print(table(found), file=sys.stderr, flush=True)
        rows += found
        stats |= measured
    if "memory" in backends:
        stats["memory_bytes_per_token"] = memory_bytes_per_token(world, world.sizes)
    return rows, stats, failed


def _run(name: str, arguments: argparse.Namespace, world: World) -> tuple[list[Row], Stats]:
    """One backend's rows, on a backend opened for them and closed (and removed) after."""
    bench = _open(name, arguments)
    try:
        return run_backend(bench, world, world.sizes)
    finally:
        bench.close()
        del bench
        # Let go of the data sets frozen during setup.
        gc.unfreeze()
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())

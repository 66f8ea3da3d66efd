"""``python -m benchmarks``: run every row, print the table, write ``build/bench.json``.

Examples::

    python -m benchmarks                     # the full run: 10,000 and 1,000,000 tokens
    python -m benchmarks --quick             # tiny sizes, a few seconds: a smoke test
    python -m benchmarks --backends memory,sqlite --output /tmp/bench.json
    python -m benchmarks --backends pgbouncer  # the check rows through PgBouncer alone

PostgreSQL is reached at ``--postgres-url``, else ``$APPREGISTRY_BENCH_POSTGRES``, else
``$APPREGISTRY_TEST_POSTGRES``, else ``postgresql://postgres@127.0.0.1:5432/test``. The run
works in a schema of its own (``appregistry_bench_<random>``) and drops it at the end. When
the server cannot be reached and ``--backends`` was not given, its rows are skipped with a
warning (and listed under ``skipped`` in the JSON).

``pgbouncer`` runs the check rows (``check_valid_postgres_pgbouncer``,
``check_unknown_postgres_pgbouncer``) through a PgBouncer in transaction mode that the run
starts in front of that server (see ``appregistry.testing._pgbouncer``); without the
``pgbouncer`` binary they are skipped in the same way.

The HTTP rows (``http_check_<db>``, ``http_client_credentials_<db>``, see ``_http.py``)
serve the library and django-oauth-toolkit under gunicorn and load them with ``wrk``, for
``sqlite`` and ``postgres`` among the backends; ``--no-http`` leaves them out, ``--http``
runs them in ``--quick`` mode too. Without wrk, gunicorn or django-oauth-toolkit (the
``bench`` extra) they are skipped with the reason under ``skipped``.
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

from appregistry.testing._pgbouncer import find_pgbouncer

from ._backends import Backend, MemoryBackend, PgBouncerBackend, PostgresBackend, SQLiteBackend
from ._cache import add_memory_floor
from ._harness import FULL, QUICK, Row, awake_cpus, machine, table, write_json
from ._http import http_problem, http_rows
from ._purge import purge_while_checking_row
from ._suite import memory_bytes_per_token, run_backend, run_check_rows
from ._world import World

BACKENDS = ("memory", "sqlite", "postgres", "pgbouncer")
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
        "--http",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the HTTP rows against django-oauth-toolkit, for sqlite and postgres among the "
        "backends (default: on, except with --quick)",
    )
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
    if name == "pgbouncer":
        return PgBouncerBackend(_postgres_url(arguments))
    return PostgresBackend(_postgres_url(arguments))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; the exit status is 0 even when targets are missed, 1 if a backend
    failed (the other backends' rows are still written)."""
    arguments = _arguments(argv)
    sizes = QUICK if arguments.quick else FULL
    started = time.perf_counter()
    skipped: list[str] = []
    backends = list(arguments.chosen)
    for name in ("postgres", "pgbouncer"):
        if name not in backends:
            continue
        problem = _postgres_problem(_postgres_url(arguments))
        if problem is None and name == "pgbouncer" and find_pgbouncer() is None:
            problem = "pgbouncer is not installed (apt-get install pgbouncer)"
        if problem is not None:
            if arguments.explicit:
                print(f"cannot benchmark {name}: {problem}", file=sys.stderr)
                return 2
            print(f"warning: skipping {name}: {problem}", file=sys.stderr)
            skipped.append(f"{name}: {problem}")
            backends.remove(name)

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
            rows += _http(backends, arguments, skipped, failed)
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
    add_memory_floor(rows)
    return rows, stats, failed


def _http(
    backends: list[str], arguments: argparse.Namespace, skipped: list[str], failed: list[str]
) -> list[Row]:
    """The HTTP rows (``benchmarks._http``) of the SQL backends run, unless turned off."""
    wanted = not arguments.quick if arguments.http is None else arguments.http
    dbs = [name for name in ("sqlite", "postgres") if name in backends]
    if not wanted or not dbs:
        return []
    problem = http_problem()
    if problem is not None:
        print(f"warning: skipping the HTTP rows: {problem}", file=sys.stderr)
        skipped.append(f"http: {problem}")
        return []
    arguments.workdir.mkdir(parents=True, exist_ok=True)
    try:
        found = http_rows(dbs, arguments.workdir, _postgres_url(arguments), quick=arguments.quick)
    except Exception as exc:  # noqa: BLE001 - reported, and the other rows are kept
        traceback.print_exc()
        failed.append(f"http: {type(exc).__name__}: {exc}")
        return []
    print(table(found), file=sys.stderr, flush=True)
    return found


def _run(name: str, arguments: argparse.Namespace, world: World) -> tuple[list[Row], Stats]:
    """One backend's rows, on a backend opened for them and closed (and removed) after."""
    bench = _open(name, arguments)
    try:
        if name == "pgbouncer":
            return run_check_rows(bench, world, world.sizes), {}
        rows, stats = run_backend(bench, world, world.sizes)
        if name == "postgres":
            # On a schema of its own, after the backend's rows: 2M rows of its own making.
            rows.append(purge_while_checking_row(_postgres_url(arguments), world.sizes))
        return rows, stats
    finally:
        bench.close()
        del bench
        # Let go of the data sets frozen during setup.
        gc.unfreeze()
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())

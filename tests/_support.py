"""Helpers the test modules share: app fields, error probes, the CLI runner, a loopback server.

Fixtures live in ``conftest.py``; this module holds what tests import by name.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from appregistry import Denied, RegisteredApp, Registry, TokenCheck, ValidationError

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from psycopg_pool import ConnectionPool

    from appregistry.storage.postgres import PostgresStorage

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
#: The seeds' app: every required field, nothing optional.
APP_FIELDS: dict[str, Any] = {
    "name": "MyApp",
    "homepage": "http://example.com/MyApp",
    "admin_email": "myapp@example.com",
    "redirect_url": "https://example.com/MyApp/handler",
}
# The seeds' own key and secret, as an installation migrating its credentials would bring.
SEED_KEY = "PVui7jiATDKcWhPOpAUkXAliGahUvEdf"
SEED_SECRET = "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N"


def register(registry: Registry, owner: str = "acme", **changes: Any) -> RegisteredApp:
    """A new app of ``owner``: `APP_FIELDS` with ``changes``."""
    return registry.register_app(owner, **{**APP_FIELDS, **changes})


def seen_check(check: TokenCheck) -> object:
    """A check's answer without the token's last use: what a snapshot of the state compares.

    A check records the use it allows (`appregistry.LastUse`), so a snapshot that checks
    tokens writes their last use itself; the answer is otherwise the registry's to give.
    """
    token = check.token
    return (check.decision, None if token is None else attrs.evolve(token, last_used_at=None))


def denial(call: Callable[[], object]) -> str:
    """The reason code of the `Denied` that ``call`` raises."""
    with pytest.raises(Denied) as info:
        call()
    return info.value.decision.reason


def problems_of(call: Callable[[], object]) -> list[tuple[str, str]]:
    """The (field, code) of each problem of the `ValidationError` that ``call`` raises."""
    with pytest.raises(ValidationError) as info:
        call()
    return [(p.field, p.code) for p in info.value.problems]


# -- the command line, as a subprocess ------------------------------------------------------------

RunCLI = Callable[..., subprocess.CompletedProcess[str]]
# Unset for every run, so the caller's environment cannot reach the CLI under test.
_CLI_VARIABLES = ("APPREGISTRY_DATABASE", "APPREGISTRY_ENCRYPTION_KEY", "APPREGISTRY_PEPPER")


def run_cli(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    keys: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m appregistry ARGS`` in ``cwd``; ``keys`` sets the encryption key(s)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for name in _CLI_VARIABLES:
        env.pop(name, None)
    if keys is not None:
        env["APPREGISTRY_ENCRYPTION_KEY"] = keys
    return subprocess.run(  # noqa: S603 - our own CLI, with arguments from the tests
        [sys.executable, "-m", "appregistry", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def cli_runner(database: str, cwd: Path) -> RunCLI:
    """`run_cli` on ``database``: ``run(*args, stdin=None, keys=None)``."""

    def run(
        *args: str, stdin: str | None = None, keys: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli("--database", database, *args, cwd=cwd, stdin=stdin, keys=keys)

    return run


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document the CLI printed."""
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


# -- a WSGI app on a loopback port --------------------------------------------------------------


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@contextmanager
def serving(app: WSGIApplication) -> Iterator[str]:
    """``app`` behind a real HTTP server on a free loopback port; yields its base URL."""
    httpd = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


# -- PostgreSQL ---------------------------------------------------------------------------------


def counting_postgres_storage(
    url: str, schema: str
) -> tuple[PostgresStorage, ConnectionPool[Any], list[bytes | str]]:
    """A `PostgresStorage` on a one-connection pool, the pool, and the statements it ran.

    Counted where every statement passes, whether sent by the connection or a cursor.
    """
    import psycopg
    from psycopg_pool import ConnectionPool

    from appregistry.storage.postgres import PostgresStorage

    executed: list[bytes | str] = []

    class Counting(psycopg.Cursor[Any]):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            executed.append(query if isinstance(query, bytes | str) else repr(query))
            return super().execute(query, *args, **kwargs)

    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        kwargs={"autocommit": True, "cursor_factory": Counting},
        min_size=1,
        max_size=1,
        open=False,
    )
    return PostgresStorage(pool, schema=schema), pool, executed

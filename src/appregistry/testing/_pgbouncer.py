"""A throwaway PgBouncer in transaction mode, for the tests and the benchmarks (not public API).

Transaction pooling is what breaks a PostgreSQL client that keeps state in its server
session (prepared statements, ``SET``, ``LISTEN``, session advisory locks): each transaction
may run on another server connection. The only honest test of a backend against it is a real
PgBouncer, so the test suite and ``python -m benchmarks`` start one of their own, on a free
port of 127.0.0.1, with a configuration in a temporary directory that is removed afterwards.

PgBouncer refuses to run as root; as root it is started with ``-u`` (the ``postgres`` user by
default), and its directory is handed to that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

#: Where distributions install the binary, should ``$PATH`` (a non-root one) miss it.
_SBIN: Final = ("/usr/sbin", "/usr/local/sbin")
#: Bind races with another process for the free port are retried this many times.
_ATTEMPTS: Final = 3


def find_pgbouncer() -> str | None:
    """The path of the ``pgbouncer`` binary, or ``None`` when it is not installed."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which("pgbouncer", path=search)


class PgBouncer:
    """A running PgBouncer: its port, and URLs of the databases it pools."""

    def __init__(self, port: int, user: str, log: Path) -> None:
        self.port = port
        self._user = user
        self._log = log

    def url(self, database: str, **params: str) -> str:
        """A URL of ``database`` (a name in its configuration) through the pooler."""
        query = "&".join(f"{name}={value}" for name, value in params.items())
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def log(self) -> str:
        """What PgBouncer logged so far (to explain a failure)."""
        with suppress(OSError):
            return self._log.read_text(errors="replace")
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _plain(value: str, what: str) -> str:
    # A value with spaces, quotes or newlines would change the ini file's meaning.
    if not value or any(c.isspace() or c in "'\"=;#[]" for c in value):
        raise ValueError(f"{what} cannot go into pgbouncer.ini as it is")
    return value


def _config(
    server: Mapping[str, str], pools: Mapping[str, int | None], port: int, home: Path
) -> str:
    host = _plain(server.get("host") or "127.0.0.1", "the server's host")
    target = f"host={host} port={_plain(server.get('port') or '5432', 'the port')}"
    target += f" dbname={_plain(server['dbname'], 'the database name')}"
    if server.get("password"):
        target += f" user={_plain(server['user'], 'the user')}"
        target += f" password={_plain(server['password'], 'the password')}"
    databases = [
        f"{_plain(name, 'a database alias')} = {target}"
        + (f" pool_size={size}" if size is not None else "")
        for name, size in pools.items()
    ]
    return "\n".join(
        [
            "[databases]",
            *databases,
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            # trust: the server decides; PgBouncer only needs the user listed.
            "auth_type = trust",
            f"auth_file = {home / 'users.txt'}",
            "pool_mode = transaction",
            "max_client_conn = 1000",
            "default_pool_size = 20",
            "logfile =",
            "pidfile =",
            "",
        ]
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # PgBouncer's immediate shutdown
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], bouncer: PgBouncer, database: str) -> bool:
    """Whether PgBouncer answers a query; ``False`` if it exited (the port was taken?)."""
    import psycopg  # noqa: PLC0415 - the PostgreSQL extra, needed only here

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with psycopg.connect(bouncer.url(database), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            time.sleep(0.05)
        else:
            return True
    raise RuntimeError(f"PgBouncer did not answer within 15 s:\n{bouncer.log()}")


@contextmanager
def running_pgbouncer(
    server_url: str,
    *,
    pools: Mapping[str, int | None] | None = None,
    run_as: str = "postgres",
) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the server at ``server_url``, until exit.

    Args:
        server_url: The PostgreSQL server (its host, port, database, user and password).
        pools: Database names PgBouncer offers, each for the server's database, with its
            own server pool size (``None``: the default of 20). By default the server's
            database name alone.
        run_as: The user PgBouncer runs as when this process is root (it refuses root).

    Raises:
        FileNotFoundError: PgBouncer is not installed.
        RuntimeError: PgBouncer would not start; the message has its log.
    """
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - the PostgreSQL extra

    binary = find_pgbouncer()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed")
    server = {key: str(value) for key, value in conninfo_to_dict(server_url).items()}
    server.setdefault("user", "postgres")
    server.setdefault("dbname", server["user"])
    pools = dict(pools) if pools is not None else {server["dbname"]: None}
    home = Path(tempfile.mkdtemp(prefix="appregistry-pgbouncer-"))
    command = [binary]
    owner = None
    if os.geteuid() == 0:
        account = pwd.getpwnam(run_as)
        owner = (account.pw_uid, account.pw_gid)
        command += ["-u", run_as]
    try:
        users = home / "users.txt"
        users.write_text(f'"{_plain(server["user"], "the user")}" ""\n')
        for attempt in range(_ATTEMPTS):
            port = _free_port()
            ini = home / "pgbouncer.ini"
            ini.write_text(_config(server, pools, port, home))
            log = home / f"pgbouncer-{attempt}.log"
            log.touch()
            for path in (home, users, ini, log):
                path.chmod(0o700 if path.is_dir() else 0o600)
                if owner is not None:
                    os.chown(path, *owner)
            bouncer = PgBouncer(port, server["user"], log)
            with log.open("ab") as output:
                process = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                    [*command, str(ini)], stdout=output, stderr=output, stdin=subprocess.DEVNULL
                )
            try:
                if _wait_until_ready(process, bouncer, next(iter(pools))):
                    yield bouncer
                    return
            finally:
                _stop(process)
        raise RuntimeError(f"PgBouncer would not start:\n{bouncer.log()}")
    finally:
        shutil.rmtree(home, ignore_errors=True)

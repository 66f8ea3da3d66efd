"""The HTTP rows: the library and django-oauth-toolkit (DOT) served alike, loaded alike.

Each side runs under gunicorn with the same settings (`GUNICORN`: 2 ``gthread`` workers of 8
threads each), on the same kind of database, each in a database of its own: an SQLite file
each, or a PostgreSQL schema each, dropped at the end. ``wrk`` keeps `CONNECTIONS`
keep-alive connections busy for `SECONDS` after a warm-up, and its requests per second are
the figures. Every request must succeed (wrk counts non-2xx answers; any is an error), and
one request of each kind is checked by hand first.

Rows, for ``<db>`` in ``sqlite`` and ``postgres``:

- ``http_check_<db>``: GETs of a view protected by a bearer token (the library's
  ``@require_token()`` on Django; DOT's ``@protected_resource()``), against DOT's; the
  target is ten times. ``django_unprotected_per_s`` in the JSON: the same GETs of a view of
  the same project with no check, the most any check under Django can reach
  (``django_unprotected_vs_dot``).
- ``http_client_credentials_<db>``: client-credentials grants, against DOT with
  ``hash_client_secret=False`` (plain secrets, the fair comparison: both then cost a few
  queries and a commit); the target is twice. ``dot_hashed_per_s`` and ``vs_dot_hashed`` in
  the JSON are against DOT's default (secrets stored as PBKDF2 password hashes),
  ``vs_dot_plain`` repeats the ratio (earlier runs' rows had the hashed DOT as their
  baseline and the plain one only there), and ``per_core`` the grants per
  second per CPU of the machine (server, database and load generator share them), beside
  Keycloak's published 120 per vCPU (``vs_keycloak``).

The load generator's own ceiling, ``http_ceiling_per_s``, is wrk against `http_apps.trivial`
under the same gunicorn: no figure can be above it.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from appregistry import open_registry

from ._harness import Row

#: Concurrent keep-alive connections the load generator holds.
CONNECTIONS = 16
#: Seconds each side is measured for, after `WARM_UP` seconds of load that are not counted.
SECONDS = 5.0
WARM_UP = 1.0
#: The longest window, for the slowest requests (see `_measure`).
MAX_SECONDS = 20.0
#: The server, the same for both sides.
GUNICORN = ("--worker-class", "gthread", "--workers", "2", "--threads", "8")
#: Keycloak's published client-credentials rate per vCPU (its sizing guide, "Concepts for
#: sizing CPU and memory resources": 120 client-credentials grants per second per vCPU).
KEYCLOAK_PER_VCPU = 120.0
#: The targets: a bearer check ten times DOT's, a grant twice DOT's with plain secrets.
CHECK_TARGET = 10.0
GRANT_TARGET = 2.0
_ROOT = Path(__file__).resolve().parent.parent


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def http_problem() -> str | None:
    """Why the HTTP rows cannot run here, or ``None``."""
    if shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install wrk)"
    for module, extra in (("gunicorn", "bench"), ("oauth2_provider", "bench"), ("django", "bench")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def _served(app: str, env: dict[str, str]) -> Iterator[int]:
    """``app`` under gunicorn on a free port until the block ends; yields the port."""
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", *GUNICORN, "--bind", f"127.0.0.1:{port}"]
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [*command, "--log-level", "warning", app],
        cwd=_ROOT,
        env={**os.environ, "OAUTHLIB_INSECURE_TRANSPORT": "1", **env},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({process.returncode}) serving {app}")
            try:
                _request(port, "GET", "/", {})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_RATE = re.compile(r"Requests/sec:\s*([\d.]+)")
_BAD = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _wrk(port: int, path: str, script: str, seconds: float) -> float:
    """Requests per second of wrk over ``seconds``; every answer must be a success."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        # wrk takes whole seconds.
        whole = max(1, math.ceil(seconds))
        command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{whole}s", "--timeout", "60s"]
        done = subprocess.run(  # noqa: S603 - our own command line
            [*command, "-s", file.name, f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        Path(file.name).unlink()
    out = done.stdout
    bad, errors, rate = _BAD.search(out), _ERRORS.search(out), _RATE.search(out)
    if bad is not None or rate is None or (errors and any(int(n) for n in errors.groups())):
        raise AssertionError(f"wrk on {path}: failed requests\n{out}")
    return float(rate.group(1))


def _drain(port: int) -> None:
    """Wait until the server has finished what the last run left in flight."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        start = time.perf_counter()
        _request(port, "GET", "/idle", {})
        if time.perf_counter() - start < 0.05:
            return


def _measure(port: int, path: str, script: str, seconds: float, alone: float) -> float:
    """wrk's rate after a warm-up, in a window long enough for slow requests.

    ``alone`` is one request's time on an idle server. Under load a request waits about
    ``CONNECTIONS * alone / cores``; the warm-up lasts at least that, and the window at
    least four times that (at most `MAX_SECONDS`), so that the requests in flight when it
    opens and closes move the rate by little (under 15 per cent for the slowest, DOT's
    hashed secrets; nothing for the fast ones).
    """
    busy = CONNECTIONS * alone / (os.cpu_count() or 1)
    quick = seconds < SECONDS  # --quick: only long enough for some answers to come back
    _wrk(port, path, script, WARM_UP if quick else min(max(WARM_UP, busy), MAX_SECONDS))
    # The warm-up's requests still queued would fill the window's start: for DOT's hashed
    # grants, seconds of them, and a quick run's window could then see none complete.
    _drain(port)
    rate = _wrk(port, path, script, min(max(seconds, (2 if quick else 4) * busy), MAX_SECONDS))
    _drain(port)
    return rate


def _lua(method: str, headers: dict[str, str], body: str = "") -> str:
    lines = [f'wrk.method = "{method}"', f"wrk.body = {json.dumps(body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _basic(client_id: str, secret: str) -> dict[str, str]:
    import base64  # noqa: PLC0415

    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {
        "Authorization": f"Basic {pair}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


_GRANT = "grant_type=client_credentials"


def _check_grant(port: int, path: str, headers: dict[str, str]) -> float:
    """Check that a grant succeeds; the fastest of three on the idle server, in seconds."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        status, body = _request(port, "POST", path, headers, _GRANT)
        times.append(time.perf_counter() - start)
        if status != 200 or "access_token" not in json.loads(body):
            raise AssertionError(f"a grant at {path} failed: {status} {body[:200]!r}")
    return min(times)


def _check_protected(port: int, token: str) -> float:
    """Check that a valid token passes and a wrong one not; the valid one's time."""
    start = time.perf_counter()
    ok, _ = _request(port, "GET", "/api/me", {"Authorization": f"Bearer {token}"})
    alone = time.perf_counter() - start
    refused, _ = _request(port, "GET", "/api/me", {"Authorization": "Bearer nonsense"})
    if ok != 200 or refused not in {401, 403}:
        raise AssertionError(f"/api/me answered {ok} to a valid token, {refused} to none")
    return alone


def _ours(db: str, url: str, seconds: float) -> dict[str, float]:
    """The library's check and grant rates on the database ``url``."""
    with open_registry(url) as registry:
        registry.permit_account("acme", by="bench")
        new = registry.register_app(
            "acme",
            name="Bench",
            homepage="https://acme.example/",
            admin_email="admin@acme.example",
            redirect_url="https://acme.example/cb",
            trusted=True,
        )
        token = registry.issue_token(new.app.key, new.secret).token
    _log(f"http {db}: the library under gunicorn")
    with _served("benchmarks.http_apps:ours", {"APPREGISTRY_BENCH_DATABASE": url}) as port:
        grant = _basic(new.app.key, new.secret)
        check_alone = _check_protected(port, token)
        grant_alone = _check_grant(port, "/oauth/token.php", grant)
        bearer = _lua("GET", {"Authorization": f"Bearer {token}"})
        return {
            "check": _measure(port, "/api/me", bearer, seconds, check_alone),
            # The same request to a view with no check: the most a check in Django can show.
            "django": _measure(port, "/api/open", bearer, seconds, check_alone),
            "grant": _measure(
                port, "/oauth/token.php", _lua("POST", grant, _GRANT), seconds, grant_alone
            ),
        }


def _dot(db: str, env: dict[str, str], seconds: float) -> dict[str, float]:
    """DOT's check and grant rates (hashed and plain client secrets)."""
    _log(f"http {db}: migrating DOT's database")
    prepared = subprocess.run(
        [sys.executable, "-m", "benchmarks.dot_project.prepare"],
        cwd=_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    made: dict[str, Any] = json.loads(prepared.stdout)
    _log(f"http {db}: DOT under gunicorn")
    with _served("benchmarks.dot_project.wsgi:application", env) as port:
        hashed = _basic(made["hashed"]["client_id"], made["hashed"]["secret"])
        plain = _basic(made["plain"]["client_id"], made["plain"]["secret"])
        check_alone = _check_protected(port, made["token"])
        hashed_alone = _check_grant(port, "/o/token/", hashed)
        plain_alone = _check_grant(port, "/o/token/", plain)
        bearer = _lua("GET", {"Authorization": f"Bearer {made['token']}"})
        return {
            "check": _measure(port, "/api/me", bearer, seconds, check_alone),
            "grant_hashed": _measure(
                port, "/o/token/", _lua("POST", hashed, _GRANT), seconds, hashed_alone
            ),
            "grant_plain": _measure(
                port, "/o/token/", _lua("POST", plain, _GRANT), seconds, plain_alone
            ),
        }


@contextmanager
def _databases(db: str, workdir: Path, postgres_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The library's database URL and DOT's environment, both fresh; removed at the end."""
    if db == "sqlite":
        ours, dot = workdir / "http-ours.sqlite3", workdir / "http-dot.sqlite3"
        try:
            yield f"sqlite:///{ours}", {"DOT_BENCH_DATABASE": f"sqlite:{dot}"}
        finally:
            for file in workdir.glob("http-*.sqlite3*"):
                file.unlink()
        return
    import psycopg  # noqa: PLC0415 - optional

    suffix = secrets.token_hex(4)
    ours_schema, dot_schema = f"appregistry_bench_http_{suffix}", f"appregistry_bench_dot_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {dot_schema}")
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield (
            f"{postgres_url}{separator}schema={ours_schema}",
            {"DOT_BENCH_DATABASE": f"postgresql:{dot_schema}", "DOT_BENCH_POSTGRES": postgres_url},
        )
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for schema in (ours_schema, dot_schema):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def ceiling(seconds: float) -> float:
    """wrk against the trivial app under the same gunicorn: the most any row can show."""
    with _served("benchmarks.http_apps:trivial", {}) as port:
        return _measure(port, "/", _lua("GET", {}), seconds, 0.0)


def http_rows(dbs: list[str], workdir: Path, postgres_url: str, *, quick: bool) -> list[Row]:
    """The HTTP rows of each database kind in ``dbs`` (``sqlite``, ``postgres``)."""
    seconds = 1.0 if quick else SECONDS
    # Measured before and after, the higher kept: work the earlier rows left the database
    # (autovacuum after the purge rows, say) can hold down one measurement of it.
    first = ceiling(seconds)
    measured = []
    for db in dbs:
        with ExitStack() as stack:
            url, env = stack.enter_context(_databases(db, workdir, postgres_url))
            measured.append((db, _ours(db, url, seconds), _dot(db, env, seconds)))
    top = max(first, ceiling(seconds))
    _log(f"http: the load generator's ceiling is {top:,.0f} requests/s")
    cores = os.cpu_count() or 1
    rows = []
    for db, ours, dot in measured:
        note = (
            f"gunicorn gthread 2x8, {CONNECTIONS} keep-alive connections (wrk), "
            f"ceiling {top:,.0f}/s"
        )
        rows.append(
            Row(
                f"http_check_{db}",
                ours["check"],
                dot["check"],
                CHECK_TARGET,
                note=f"bearer-protected GETs against DOT's; {note}",
                # What a check costing nothing would show against DOT: the row's own ceiling.
                extra={
                    "http_ceiling_per_s": top,
                    "ceiling_vs_dot": top / dot["check"],
                    "django_unprotected_per_s": ours["django"],
                    "django_unprotected_vs_dot": ours["django"] / dot["check"],
                },
            )
        )
        rows.append(
            Row(
                f"http_client_credentials_{db}",
                ours["grant"],
                dot["grant_plain"],
                GRANT_TARGET,
                note=f"grants against DOT's with plain secrets; {note}",
                extra={
                    "dot_hashed_per_s": dot["grant_hashed"],
                    "vs_dot_hashed": ours["grant"] / dot["grant_hashed"],
                    "dot_plain_per_s": dot["grant_plain"],
                    "vs_dot_plain": ours["grant"] / dot["grant_plain"],
                    "per_core": ours["grant"] / cores,
                    "keycloak_per_vcpu": KEYCLOAK_PER_VCPU,
                    "vs_keycloak": ours["grant"] / cores / KEYCLOAK_PER_VCPU,
                    "http_ceiling_per_s": top,
                },
            )
        )
    return rows

"""``appregistry serve``: the pages and the OAuth 2.0 endpoints on one port, on uvicorn.

Each test starts the real command in a subprocess on a free port of the loopback interface,
with a SQLite file the test prepared, and talks to it over HTTP.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from _support import APP_FIELDS
from appregistry import open_registry

SECRET_QUERY = "SECRETTOKENVALUE"


class Served:
    """A running ``appregistry serve``: its base URL, and its stderr once stopped."""

    def __init__(self, process: subprocess.Popen[str], base: str, early: str) -> None:
        self.process = process
        self.base = base
        self.early = early

    def stop(self) -> str:
        """Stop the server; everything it wrote to stderr."""
        self.process.terminate()
        _, err = self.process.communicate(timeout=20)
        return self.early + err


def _start(database: Path, *options: str) -> Served:
    process = subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "appregistry",
            "--database",
            f"sqlite:///{database}",
            "serve",
            "--port",
            "0",
            *options,
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    early = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        early += line
        found = re.search(r"OAuth 2\.0 on (http://127\.0\.0\.1:\d+)", line)
        if found:
            return Served(process, found.group(1), early)
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail("serve did not start")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A SQLite file with a trusted app of "acme", which may use apps."""
    path = tmp_path / "serve.sqlite3"
    with open_registry(f"sqlite:///{path}") as registry:
        registered = registry.register_app("acme", **APP_FIELDS, trusted=True)
        registry.permit_account("acme", by="admin")
    (tmp_path / "credentials").write_text(f"{registered.app.key} {registered.secret}")
    return path


@pytest.fixture
def served(database: Path) -> Iterator[Served]:
    """``serve --dev-sign-in`` on ``database``."""
    server = _start(database, "--dev-sign-in")
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


def _credentials(database: Path) -> tuple[str, str]:
    key, secret = (database.parent / "credentials").read_text().split()
    return key, secret


class TestOnePort:
    """The pages and the OAuth 2.0 endpoints answer on the same port."""

    def test_pages_and_token_endpoint(self, served: Served, database: Path) -> None:
        home = requests.get(f"{served.base}/", allow_redirects=False, timeout=10)
        assert (303, "/manage/") == (home.status_code, home.headers["location"])
        sign_in = requests.get(f"{served.base}/manage/sign-in", timeout=10)
        assert 200 == sign_in.status_code
        assert "Development sign-in" in sign_in.text
        key, secret = _credentials(database)
        issued = requests.post(
            f"{served.base}/oauth/token.php",
            data={"grant_type": "client_credentials", "client_id": key, "client_secret": secret},
            timeout=10,
        )
        assert 200 == issued.status_code, issued.text
        token = issued.json()["access_token"]
        me = requests.get(
            f"{served.base}/uapi/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert "acme" == me.json()["account"]

    def test_the_development_sign_in_signs_in_the_consent_page_too(
        self, served: Served, database: Path
    ) -> None:
        key, _ = _credentials(database)
        browser = requests.Session()
        page = browser.get(f"{served.base}/manage/sign-in", timeout=10)
        token = re.search(r'name="csrftoken" value="([^"]+)"', page.text)
        assert token is not None
        signed_in = browser.post(
            f"{served.base}/manage/sign-in",
            data={
                "csrftoken": token.group(1),
                "role": "account",
                "account": "acme",
                "name": "alice",
                "next": "/manage/",
            },
            timeout=10,
        )
        assert signed_in.url.endswith("/manage/installed/")
        consent = browser.get(
            f"{served.base}/oauth/authorize.php",
            params={
                "response_type": "code",
                "client_id": key,
                "redirect_uri": APP_FIELDS["redirect_url"],
                "state": "x" * 16,
            },
            timeout=10,
        )
        assert 200 == consent.status_code, consent.text
        assert "alice" in consent.text
        assert "/manage/static/appregistry.css" in consent.text
        css = browser.get(f"{served.base}/manage/static/appregistry.css", timeout=10)
        assert "appregistry-consent" in css.text


class TestAccessLog:
    """The log names method, path and status; query strings and bad request lines stay out."""

    def test_query_strings_are_not_logged(self, served: Served) -> None:
        requests.get(
            f"{served.base}/uapi/me?accessRequestToken=Bearer%20{SECRET_QUERY}", timeout=10
        )
        err = served.stop()
        assert '"GET /uapi/me" 401' in err
        assert SECRET_QUERY not in err

    def test_malformed_request_is_refused_without_echoing_it(self, served: Served) -> None:
        host, port = served.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                f"GET /uapi/me?accessRequestToken={SECRET_QUERY} HTTP/9.9.9\r\n\r\n".encode()
            )
            reply = connection.recv(4096)
        err = served.stop()
        assert reply.startswith(b"HTTP/1.1 400")
        assert SECRET_QUERY not in err
        assert "Traceback" not in err


class TestOptions:
    """``serve --help`` gives the default port; the development modes warn loudly."""

    def test_help_shows_the_default_port(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "appregistry", "serve", "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "default: 8080" in result.stdout

    def test_dev_sign_in_warns(self, served: Served) -> None:
        assert "WARNING: --dev-sign-in is on" in served.stop()

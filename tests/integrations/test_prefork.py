"""The Flask example under gunicorn's prefork workers, over real HTTP, on a SQLite file."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import pytest

from appregistry import open_registry

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
WORKERS = 3
# Generous: the server only has to start; nothing here is timed.
START_DEADLINE = 60.0


@dataclass
class Server:
    """A running gunicorn, its port, and what it has logged so far."""

    process: subprocess.Popen[str]
    port: int
    log: list[str]

    def get(self, path: str, token: str | None = None) -> tuple[int, dict[str, str]]:
        """One request on a connection of its own, so that any worker may take it."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Connection": "close"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@pytest.fixture
def database(tmp_path: Path) -> tuple[str, str, str]:
    """A SQLite registry with a trusted app and a token: the URL, the app's key, the token."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    with open_registry(url) as registry:
        registry.permit_account("acme", by="provider")
        new = registry.register_app(
            "acme",
            name="Weather",
            homepage="https://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/callback",
            trusted=True,
        )
        token = registry.issue_token(new.app.key, new.secret).token
    return url, new.app.key, token


@pytest.fixture
def server(database: tuple[str, str, str]) -> Iterator[Server]:
    """``gunicorn --workers 3 'flask_example:create_app()'`` on a port the kernel chose."""
    env = {**os.environ, "APPREGISTRY_DATABASE": database[0]}
    env.pop("APPREGISTRY_PEPPER", None)
    process = subprocess.Popen(  # noqa: S603 - our own example, arguments from the test
        [
            sys.executable, "-m", "gunicorn",
            "--workers", str(WORKERS),
            "--bind", "127.0.0.1:0",
            "--chdir", str(EXAMPLES),
            "flask_example:create_app()",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    stderr = process.stderr
    assert stderr is not None
    lines: Queue[str] = Queue()

    def read() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log: list[str] = []
    port = None
    try:
        booted = 0
        while port is None or booted < WORKERS:
            try:
                line = lines.get(timeout=START_DEADLINE)
            except Empty:
                pytest.fail("gunicorn did not start:\n" + "".join(log))
            log.append(line)
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
            booted += "Booting worker" in line
        yield Server(process, port, log)
    finally:
        process.terminate()
        process.wait(timeout=60)
        reader.join(timeout=60)
        stderr.close()


class TestPrefork:
    """Several worker processes, each opening the registry after the fork, answer alike."""

    def test_answers(self, server: Server, database: tuple[str, str, str]) -> None:
        url, key, token = database
        assert WORKERS == sum("Booting worker" in line for line in server.log)
        for _ in range(4 * WORKERS):
            status, body = server.get("/api/me", token)
            assert (200, "acme") == (status, body["account"])
            assert 401 == server.get("/api/me")[0]
        # A change made elsewhere reaches every worker at once: nothing is cached per process.
        with open_registry(url) as registry:
            registry.disable_app(key)
        for _ in range(4 * WORKERS):
            status, body = server.get("/api/me", token)
            assert (401, "The access token is not valid.") == (status, body["error_description"])

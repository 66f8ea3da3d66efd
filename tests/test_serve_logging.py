"""`appregistry serve`'s access log never shows a query string, even for malformed requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from appregistry.cli._serve import make_http_server

SECRET = "SECRETTOKENVALUE"


def _app(environ: dict[str, object], start_response: object) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"ok"]


@pytest.fixture
def port() -> Iterator[int]:
    server = make_http_server(_app, "127.0.0.1", 0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _send(port: int, request_line: bytes) -> bytes:
    """Send one request and read the whole answer (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request_line + b"\r\n\r\n")
        chunks = []
        while chunk := connection.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks)


def _log(capsys: pytest.CaptureFixture[str], expected: str) -> str:
    """The server's stderr once ``expected`` shows up (it logs after answering), or at 5 s."""
    seen = ""
    deadline = time.monotonic() + 5
    while expected not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
        seen += capsys.readouterr().err
    return seen


class TestAccessLog:
    """The log names method, path and status; query strings and bad request lines stay out."""

    def test_well_formed_request_logs_path_only(
        self, port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        reply = _send(port, f"GET /uapi/me?accessRequestToken=Bearer%20{SECRET} HTTP/1.0".encode())
        err = _log(capsys, '"GET /uapi/me" 200')
        assert reply.startswith(b"HTTP/1.0 200")
        assert '"GET /uapi/me" 200' in err
        assert SECRET not in err

    def test_malformed_request_is_refused_without_echoing_it(
        self, port: int, capsys: pytest.CaptureFixture[str]
    ) -> None:
        reply = _send(
            port, f"GET /uapi/me?accessRequestToken=Bearer%20{SECRET} HTTP/9.9.9".encode()
        )
        err = _log(capsys, "status 400")
        assert b"Error code: 400" in reply
        assert "status 400" in err
        assert SECRET not in err
        assert "Traceback" not in err

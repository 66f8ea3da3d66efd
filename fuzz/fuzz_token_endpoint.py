"""atheris harness: the WSGI token endpoint's request parsing (`appregistry.oauth2`).

A fuzzed request (method, path, query, headers, Content-Length that may lie, a body that is a
form of real and fuzzed fields or raw bytes) goes to `make_wsgi_app` on a memory registry.
The app must always answer, through ``start_response`` exactly once, with a valid HTTP status
below 500 (a 500 means an exception escaped a handler), a body whose length matches its
Content-Length, and never the app's secret.

    python fuzz/fuzz_token_endpoint.py -max_total_time=60
    python fuzz/fuzz_token_endpoint.py -atheris_runs=20000
"""

# Asserts are the checks: libFuzzer reports a failed one, with its input, as a crash;
# they read `expected == actual`, as in the tests.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import urllib.parse
from typing import Any

import atheris
from _harness import hostile_text, run, seeded_registry

with atheris.instrument_imports():
    import appregistry.storage.memory  # noqa: F401 - instrumented for coverage
    from appregistry.oauth2 import (
        AUTHORIZE_PATH,
        DEFAULT_MAX_BODY_SIZE,
        INTROSPECT_PATH,
        ME_PATH,
        REVOKE_PATH,
        TOKEN_PATH,
        SignedInUser,
        make_wsgi_app,
    )

REGISTRY, KNOWN = seeded_registry()
APP = make_wsgi_app(REGISTRY, current_user=lambda _environ: SignedInUser("org-1", "alice"))
PATHS = [TOKEN_PATH] * 6 + [REVOKE_PATH, INTROSPECT_PATH, ME_PATH, AUTHORIZE_PATH, "/", ""]
FIELDS = [
    "grant_type", "client_id", "client_secret", "redirect_uri", "code", "refresh_token",
    "scope", "type", "token", "token_type_hint", "code_verifier", "state", "response_type",
]  # fmt: skip
LIKELY = {
    "grant_type": ["client_credentials", "authorization_code", "refresh_token", "password"],
    "client_id": [KNOWN["key"], KNOWN["plain_key"]],
    "client_secret": [KNOWN["secret"], KNOWN["plain_secret"]],
    "redirect_uri": [KNOWN["redirect_url"]],
    "type": ["unifiedapi"],
    "token": [KNOWN["token"]],
}


class _Failures(logging.Handler):
    """Keeps the exceptions the app logs, so a 500 fails with the real traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.caught.append(record.exc_info[1])


FAILURES = _Failures()
logging.getLogger("appregistry").addHandler(FAILURES)
logging.getLogger("appregistry").propagate = False


def _latin1(fdp: atheris.FuzzedDataProvider, max_length: int) -> str:
    # WSGI hands text over as Latin-1 decoded bytes (PEP 3333).
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, max_length)).decode("latin-1")


def _value(fdp: atheris.FuzzedDataProvider, name: str) -> str:
    likely = LIKELY.get(name)
    if likely and fdp.ConsumeIntInRange(0, 3):
        return str(fdp.PickValueInList(likely))
    return hostile_text(fdp, 60).encode("utf-8", "surrogatepass").decode("latin-1")


def _body(fdp: atheris.FuzzedDataProvider) -> bytes:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    # Mostly a request as the seeds' clients send it, some fields fuzzed; or any fields.
    names = (
        ["grant_type", "client_id", "client_secret", "type", "redirect_uri"]
        if choice > 1
        else [fdp.PickValueInList(FIELDS) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    )
    names += [
        fdp.PickValueInList(FIELDS) if fdp.ConsumeBool() else _latin1(fdp, 10)
        for _ in range(fdp.ConsumeIntInRange(0, 3))
    ]
    form = [(name, _value(fdp, name)) for name in names]
    return urllib.parse.urlencode(form, encoding="latin-1").encode("ascii")


def _authorization(fdp: atheris.FuzzedDataProvider) -> str | None:
    choice = fdp.ConsumeIntInRange(0, 4)
    if choice == 0:
        return None
    if choice == 1:
        return _latin1(fdp, 80)
    if choice == 2:
        return f"Bearer {fdp.PickValueInList([KNOWN['token'], _latin1(fdp, 50)])}"
    user = urllib.parse.quote(_value(fdp, "client_id"), safe="")
    password = urllib.parse.quote(_value(fdp, "client_secret"), safe="")
    raw = f"{user}:{password}".encode("latin-1", "replace")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _environ(fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    body = _body(fdp)
    length_choice = fdp.ConsumeIntInRange(0, 5)
    content_length = {
        0: str(len(body)),
        1: "",
        2: _latin1(fdp, 12),
        3: str(-fdp.ConsumeIntInRange(1, 10)),
        4: str(DEFAULT_MAX_BODY_SIZE + fdp.ConsumeIntInRange(1, 10**9)),
    }.get(length_choice, str(fdp.ConsumeIntInRange(0, 2 * len(body) + 1)))
    environ: dict[str, Any] = {
        "REQUEST_METHOD": fdp.PickValueInList(["POST"] * 4 + ["GET", "PUT", _latin1(fdp, 8)]),
        "PATH_INFO": fdp.PickValueInList([*PATHS, _latin1(fdp, 30)]),
        "QUERY_STRING": _latin1(fdp, 100) if fdp.ConsumeBool() else "",
        "CONTENT_TYPE": fdp.PickValueInList(
            ["application/x-www-form-urlencoded"] * 3
            + ["application/x-www-form-urlencoded; charset=utf-8", "", _latin1(fdp, 30)]
        ),
        "CONTENT_LENGTH": content_length,
        "SERVER_NAME": "registry.example",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": fdp.PickValueInList(["registry.example", _latin1(fdp, 20)]),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    authorization = _authorization(fdp)
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    if fdp.ConsumeBool():
        environ["HTTP_USER_AGENT"] = _latin1(fdp, 60)
    return environ


def test_one_input(data: bytes) -> None:
    """One request, made of ``data``; raises (a crash for libFuzzer) if a check fails."""
    fdp = atheris.FuzzedDataProvider(data)
    environ = _environ(fdp)
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> Any:
        started.append((status, headers))
        return lambda _: None

    FAILURES.caught.clear()
    body = b"".join(APP(environ, start_response))
    assert 1 == len(started), started
    status, headers = started[0]
    code = int(status[:3])
    if code >= 500 and FAILURES.caught:
        raise AssertionError(f"{status} for {environ!r}") from FAILURES.caught[0]
    assert 100 <= code < 500, (status, environ)
    assert str(len(body)) == dict(headers)["Content-Length"]
    assert KNOWN["secret"].encode() not in body
    if code == 200 and environ["PATH_INFO"] == TOKEN_PATH:
        # A token answer is JSON with the token and its lifetime, as the seeds' clients read;
        # the token works, and is removed again to keep the store small.
        answer = json.loads(body)
        check = REGISTRY.check_token(answer["access_token"])
        assert check.allowed, answer
        assert check.token is not None
        assert answer["expires_in"] > 0, answer
        REGISTRY.remove_tokens([check.token.token_id])


if __name__ == "__main__":
    run(test_one_input)

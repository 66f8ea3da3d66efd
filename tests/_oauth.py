"""What the OAuth 2.0 endpoint tests share: the apps, the signed-in user, a browser's consent.

``WsgiClient`` calls a WSGI app in-process, the way a server would; the tests over real HTTP
use `_support.serving` and `requests` instead.
"""

from __future__ import annotations

import html.parser
import io
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
from requests.structures import CaseInsensitiveDict

from appregistry import RegisteredApp, Registry
from appregistry.oauth2 import SignedInUser

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

REDIRECT = "https://client.example/MyApp/handler"
OWNER = "acme"
ACCOUNT = "org-1"
ALICE = SignedInUser(ACCOUNT, "alice")
#: RFC 7636, appendix B: a verifier and its S256 challenge.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def new_state() -> str:
    """A fresh ``state`` of more than sixteen characters."""
    return secrets.token_urlsafe(16)


@attrs.define
class SignIn:
    """Who the host says is signed in; tests change it."""

    user: SignedInUser | None = ALICE


def register_apps(registry: Registry) -> tuple[RegisteredApp, RegisteredApp]:
    """A trusted app of ``acme`` and an untrusted partner app; both accounts may use apps."""
    registry.permit_account(OWNER, by="provider")
    registry.permit_account(ACCOUNT, by="provider")
    trusted = registry.register_app(
        OWNER,
        name="Trusted",
        homepage="https://acme.example/",
        admin_email="admin@acme.example",
        redirect_url=REDIRECT,
        trusted=True,
    )
    partner = registry.register_app(
        "vendor",
        name="Partner <App>",
        homepage="https://bücher.example/",
        admin_email="admin@vendor.example",
        redirect_url=REDIRECT,
        description="Reads your call history.",
    )
    return trusted, partner


class ConsentForm(html.parser.HTMLParser):
    """The consent page's form: where it posts, its hidden fields, its decision buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self.buttons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = values.get("action")
        elif tag == "input" and values.get("type") == "hidden":
            self.hidden[values["name"]] = values.get("value", "")
        elif tag == "button" and values.get("name") == "decision":
            self.buttons.append(values.get("value", ""))


def consent_form(page: str) -> ConsentForm:
    """The form of a consent page."""
    form = ConsentForm()
    form.feed(page)
    return form


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect's ``Location``."""
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


@attrs.frozen
class Answer:
    """A WSGI app's answer: status code, headers and body."""

    status: int
    headers: CaseInsensitiveDict[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class WsgiClient:
    """Calls a WSGI app in-process, as a server on ``host`` with the app at ``script_name``."""

    app: WSGIApplication
    host: str = "auth.example"
    script_name: str = ""
    scheme: str = "https"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: str | Iterable[tuple[str, str]] = "",
        body: bytes | str | Iterable[tuple[str, str]] = b"",
        headers: Mapping[str, str] | None = None,
        stream: Any = None,
    ) -> Answer:
        """Send one request; ``path`` is below the mount point (``PATH_INFO``)."""
        if not isinstance(query, str):
            query = urllib.parse.urlencode(list(query))
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = urllib.parse.urlencode(list(body)).encode()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": self.script_name,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": self.host,
            "SERVER_PORT": "443" if self.scheme == "https" else "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": self.host,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded" if body else "",
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": stream if stream is not None else io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in (headers or {}).items():
            key = name.upper().replace("-", "_")
            environ[key if key in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{key}"] = value
        started: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
            started["status"] = int(status.split(maxsplit=1)[0])
            started["headers"] = dict(response_headers)

        chunks = self.app(environ, start_response)  # type: ignore[arg-type]
        headers = CaseInsensitiveDict(started["headers"])
        return Answer(started["status"], headers, b"".join(chunks))

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Answer:
        return self.request("POST", path, **kw)


@attrs.define
class AsgiClient:
    """Calls an ASGI app in-process (Starlette's test client), as `WsgiClient` calls WSGI.

    ``script_name`` is the mount point: the app gets it as ``root_path``, and ``path`` below it.
    """

    app: Any
    host: str = "auth.example"
    script_name: str = ""
    scheme: str = "https"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: str | Iterable[tuple[str, str]] = "",
        body: bytes | str | Iterable[tuple[str, str]] = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send one request; ``path`` is below the mount point."""
        from starlette.testclient import TestClient

        if not isinstance(query, str):
            query = urllib.parse.urlencode(list(query))
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, bytes):
            body = urllib.parse.urlencode(list(body)).encode()
        sent = dict(headers or {})
        if body:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        client = TestClient(
            self.app, base_url=f"{self.scheme}://{self.host}", root_path=self.script_name
        )
        url = f"{self.script_name}{path}" + (f"?{query}" if query else "")
        answer = client.request(method, url, content=body, headers=sent, follow_redirects=False)
        headers = CaseInsensitiveDict(answer.headers.items())
        return Answer(answer.status_code, headers, answer.content)

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Answer:
        return self.request("POST", path, **kw)


def approve(
    client: WsgiClient | AsgiClient, params: Iterable[tuple[str, str]], decision: str = "approve"
) -> Answer:
    """What a browser does: open the consent page, press a button; the redirect it gets."""
    page = client.get("/oauth/authorize.php", query=params)
    assert 200 == page.status, page.text
    form = consent_form(page.text)
    assert form.action == f"{client.script_name}/oauth/authorize.php"
    return client.post("/oauth/authorize.php", body=[*form.hidden.items(), ("decision", decision)])


def code_params(
    key: str,
    *,
    state: str | None = None,
    with_state: bool = True,
    pkce: bool = True,
    redirect: bool = True,
) -> list[tuple[str, str]]:
    """An authorization request's parameters (a fresh state, S256 PKCE by default)."""
    params = [("response_type", "code"), ("client_id", key)]
    if redirect:
        params.append(("redirect_uri", REDIRECT))
    if with_state:
        params.append(("state", state if state is not None else new_state()))
    if pkce:
        params += [("code_challenge", CHALLENGE), ("code_challenge_method", "S256")]
    return params


@contextmanager
def serving_asgi(app: Any) -> Iterator[str]:
    """``app`` on uvicorn on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http="h11", ws="none", lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wsgi_mounted(prefix: str, app: Any) -> Any:
    """A plain WSGI dispatcher: ``app`` below ``prefix``, a host's page everywhere else."""

    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(f"{prefix}/"):
            inner = {**environ, "SCRIPT_NAME": prefix, "PATH_INFO": path[len(prefix) :]}
            return app(inner, start_response)  # type: ignore[no-any-return]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the host's own page"]

    return dispatch if prefix else app


def asgi_mounted(prefix: str, app: Any) -> Any:
    """Starlette with ``app`` mounted at ``prefix``, beside a page of the host's."""

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def home(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("the host's own page")

    return Starlette(routes=[Route("/home", home), Mount(prefix, app=app)])

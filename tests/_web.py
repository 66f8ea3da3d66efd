"""What the pages' route tests share: the `Web` harness, a counting storage, HTML probes."""

from __future__ import annotations

import html
import re
import threading
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from appregistry import RegisteredApp, Registry
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock
from appregistry.web import Role, WebUser, make_app

CSRF_COOKIE = "appregistry_csrftoken"
PROVIDER = WebUser("admin", Role.PROVIDER, "provider")
ALICE = WebUser("alice", Role.ACCOUNT, "acme")
MALLORY = WebUser("mallory", Role.ACCOUNT, "other")
APP_FIELDS = {
    "name": "MyApp",
    "homepage": "http://example.com/MyApp",
    "admin_email": "myapp@example.com",
    "redirect_url": "https://example.com/MyApp/handler",
}


class CountingStorage:
    """A storage that counts the calls made on it (transactions, look-ups), by method name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            return found(*args, **kwargs)

        return counted

    def total(self) -> int:
        """How many calls so far."""
        with self._lock:
            return sum(self.calls.values())


@attrs.define
class Web:
    """The app under test, its registry and a client that signs in as whom it is told."""

    registry: Registry
    client: TestClient
    base: str
    state: dict[str, WebUser | None]
    storage: CountingStorage
    recorder: EventRecorder
    clock: ManualClock

    def sign_in(self, user: WebUser | None) -> None:
        """From now on, the host says ``user`` is signed in (``None``: nobody)."""
        self.state["user"] = user

    def url(self, path: str) -> str:
        """``path`` under the app's mount."""
        return f"{self.base}{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET a page of the app."""
        return self.client.get(self.url(path), **kwargs)

    def token(self) -> str:
        """The CSRF token of this client (visiting a page for one if it has none yet)."""
        if CSRF_COOKIE not in self.client.cookies:
            # Any page with a form sets the cookie; Add App is one whoever is signed in.
            signed_in = self.state["user"]
            self.state["user"] = WebUser("admin", Role.PROVIDER, "provider")
            self.client.get(self.url("/apps/new"))
            self.state["user"] = signed_in
        return self.client.cookies[CSRF_COOKIE]

    def post(self, path: str, data: Any = None, *, csrf: bool = True, **kwargs: Any) -> Any:
        """POST a form to the app, with the CSRF token unless ``csrf`` is false."""
        fields: list[tuple[str, str]] = list(
            data.items() if isinstance(data, dict) else (data or [])
        )
        if csrf:
            fields.append(("csrftoken", self.token()))
        return self.client.post(self.url(path), data=_flatten(fields), **kwargs)

    def follow(self, response: Any) -> Any:
        """GET the page a redirect leads to."""
        assert 303 == response.status_code, response.text
        return self.client.get(response.headers["location"])

    def register(self, owner: str = "provider", **changes: Any) -> RegisteredApp:
        """An app registered straight through the registry."""
        return self.registry.register_app(owner, **{**APP_FIELDS, **changes})


def _flatten(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    # httpx takes repeated fields as lists.
    grouped: dict[str, Any] = {}
    for name, value in fields:
        if name in grouped:
            existing = grouped[name]
            grouped[name] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            grouped[name] = value
    return grouped


def text(response: Any) -> str:
    """The page's text without tags, whitespace collapsed, entities decoded."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.text, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def flash(response: Any) -> str:
    """The page's one-line message(s)."""
    return " ".join(
        html.unescape(m)
        for m in re.findall(r'<p class="flash" role="status">(.*?)</p>', response.text)
    )


def links(response: Any) -> list[str]:
    """Every href, src and form action on the page."""
    return [html.unescape(m) for m in re.findall(r'(?:href|src|action)="([^"]*)"', response.text)]


def problem(response: Any, field: str) -> str:
    """The problem shown beside ``field``, or ""."""
    found = re.search(
        rf'<span class="problem" id="{re.escape(field)}-problem">(.*?)</span>', response.text
    )
    return html.unescape(found.group(1)) if found else ""


def value_of(response: Any, name: str) -> str | None:
    """The value an input named ``name`` shows (textarea text included)."""
    found = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', response.text)
    if found:
        return html.unescape(found.group(1))
    area = re.search(
        rf'<textarea[^>]*name="{re.escape(name)}"[^>]*>(.*?)</textarea>', response.text, re.S
    )
    return html.unescape(area.group(1)) if area else None


def build_web(
    base: str = "",
    *,
    storage: Any = None,
    registry_options: dict[str, Any] | None = None,
    **options: Any,
) -> Web:
    """A `Web` for the app served at ``base`` ("", "/manage" or "/proxy")."""
    counting = CountingStorage(storage if storage is not None else MemoryStorage())
    recorder = EventRecorder()
    clock = ManualClock()
    registry = Registry(
        storage=counting, clock=clock, listeners=[recorder], **(registry_options or {})
    )
    state: dict[str, WebUser | None] = {"user": None}
    app = make_app(registry, current_user=lambda request: state["user"], **options)
    if base == "/manage":
        host = Starlette(routes=[Mount("/manage", app=app, name="appregistry")])
        client = TestClient(host, follow_redirects=False)
    elif base == "/proxy":
        client = TestClient(app, root_path="/proxy", follow_redirects=False)
    else:
        client = TestClient(app, follow_redirects=False)
    return Web(registry, client, base, state, counting, recorder, clock)

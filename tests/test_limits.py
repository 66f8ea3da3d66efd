"""Every bound on outside input, at its edge (docs/security.md, "Abuse limits").

For each limit: a value at the limit is accepted, one past it is refused with the documented
error (a `ValidationError` naming the field and its code, or an HTTP status from the WSGI
app), and nothing is written: what a caller can see of the registry is the same before and
after, and no event is emitted.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
import wsgiref.simple_server
import wsgiref.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

from _support import seen_check, serving
from appregistry import (
    AppNotFound,
    Denied,
    InvalidGrant,
    LimitExceeded,
    RegisteredApp,
    Registry,
    TokenNotFound,
    ValidationError,
    open_registry,
)
from appregistry import cli as appregistry_cli
from appregistry._registry import MAX_TOKEN_IDS_PER_REMOVAL
from appregistry._validation import (
    MAX_ACCOUNT_LENGTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAGE,
    MAX_PER_PAGE,
    MAX_PHONE_LENGTH,
    MAX_SEARCH_LENGTH,
    MAX_URL_LENGTH,
    MAX_USER_AGENT_LENGTH,
)
from appregistry.oauth2 import (
    DEFAULT_MAX_BODY_SIZE,
    MAX_STATE_LENGTH,
    TOKEN_PATH,
    SignedInUser,
    make_wsgi_app,
)
from appregistry.oauth2._wsgi import MAX_FORM_FIELDS, MAX_HEADER_LENGTH, MAX_QUERY_LENGTH
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder, ManualClock

OWNER = "acme"
ACCOUNT = "org-1"
#: Longest key, secret, token, code or refresh token the registry looks at (R6, R17).
MAX_PRESENTED = 512

APP = {
    "name": "MyApp",
    "homepage": "https://example.com/",
    "admin_email": "admin@example.com",
    "redirect_url": "https://example.com/cb",
}


def _url(scheme: str, length: int) -> str:
    """An http(s) URL of exactly ``length`` characters, canonical as it is."""
    head = f"{scheme}://example.com/"
    return head + "a" * (length - len(head))


def _email(length: int) -> str:
    """A valid address of exactly ``length`` characters (64 of them the local part)."""
    local, tld = "a" * 64, ".com"
    room = length - len(local) - 1 - len(tld)
    labels = []
    while room > 0:
        # Labels of at most 63 characters and their dots; never leave room for an empty one.
        size = min(63, room)
        size -= room - size - 1 == 0
        labels.append("b" * size)
        room -= size + 1
    return f"{local}@{'.'.join(labels)}{tld}"


#: Each length-limited app field: its limit and a valid value of any length up to it.
FIELDS: dict[str, tuple[int, Callable[[int], str]]] = {
    "name": (MAX_NAME_LENGTH, lambda n: "n" * n),
    "description": (MAX_DESCRIPTION_LENGTH, lambda n: "d" * n),
    "homepage": (MAX_URL_LENGTH, lambda n: _url("http", n)),
    "image_url": (MAX_URL_LENGTH, lambda n: _url("https", n)),
    "redirect_url": (MAX_URL_LENGTH, lambda n: _url("https", n)),
    "admin_email": (MAX_EMAIL_LENGTH, _email),
    # Counted as typed: surrounding spaces included.
    "admin_phone": (MAX_PHONE_LENGTH, "+40 21 312 0000".ljust),
}


@attrs.define
class World:
    """A registry with one trusted app installed on an account, and one token issued."""

    registry: Registry
    recorder: EventRecorder
    clock: ManualClock
    app: RegisteredApp
    token: str
    token_id: str
    code: str
    refresh_token: str

    @property
    def key(self) -> str:
        return self.app.app.key

    def snapshot(self) -> list[object]:
        """What a caller can see of the registry's state."""
        r = self.registry
        # The check comes first: the use it records (last use) is written before the lists
        # below are read, so a second snapshot at the same time sees the same rows; the answer
        # is taken without the last use that the snapshot itself writes.
        seen: list[object] = [seen_check(r.check_token(self.token))]
        apps = r.list_apps(per_page=MAX_PER_PAGE)
        seen.append(apps)
        for listing in apps.items:
            key = listing.app.key
            seen += [r.get_app(key), r.list_tokens(key, OWNER, per_page=MAX_PER_PAGE)]
            seen.append(r.list_tokens(key, ACCOUNT, per_page=MAX_PER_PAGE))
        for account in (OWNER, ACCOUNT, "a" * MAX_ACCOUNT_LENGTH):
            seen += [r.get_permission(account), r.list_installations(account)]
        return seen


def _world(registry: Registry, recorder: EventRecorder, clock: ManualClock) -> World:
    registry.permit_account(OWNER, by="provider")
    registry.permit_account(ACCOUNT, by="provider")
    app = registry.register_app(OWNER, trusted=True, **APP)
    issued = registry.issue_token(app.app.key, app.secret)
    code = registry.authorize(
        app.app.key, ACCOUNT, redirect_url=APP["redirect_url"], approved_by="alice"
    ).code
    pair = registry.exchange_code(app.app.key, code, redirect_url=APP["redirect_url"])
    assert pair.refresh_token is not None
    recorder.clear()
    return World(
        registry,
        recorder,
        clock,
        app,
        issued.token,
        issued.record.token_id,
        code,
        pair.refresh_token,
    )


class CountingStorage(MemoryStorage):
    """Memory storage that counts token look-ups, to show what never reaches storage."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def token_context(self, *digests: bytes) -> Any:
        self.lookups += 1
        return super().token_context(*digests)


@pytest.fixture
def world() -> World:
    recorder, clock = EventRecorder(), ManualClock()
    registry = Registry(storage=CountingStorage(), clock=clock, listeners=[recorder])
    return _world(registry, recorder, clock)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The world on every backend: the SQL ones must hold the largest page number too."""
    recorder, clock = EventRecorder(), ManualClock()
    if request.param == "memory":
        url = "memory:"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limits.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_schema_url")
    registry = open_registry(url, clock=clock, listeners=[recorder])
    yield _world(registry, recorder, clock)
    registry.close()


def _problems(caught: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str]]:
    return [(p.field, p.code) for p in caught.value.problems]


@pytest.fixture
def unchanged(world: World) -> Iterator[None]:
    """Asserts, after the test, that it wrote nothing and emitted no event."""
    before = world.snapshot()
    yield
    assert before == world.snapshot()
    assert [] == world.recorder.events


# -- the Registry -----------------------------------------------------------------------------


class TestAppFields:
    """Each length-limited app field takes its limit; one more is too_long and writes nothing."""

    @pytest.mark.parametrize("field", sorted(FIELDS))
    def test_the_limit_is_accepted(self, world: World, field: str) -> None:
        limit, make = FIELDS[field]
        value = make(limit)
        assert limit == len(value)
        app = world.registry.register_app(OWNER, **{**APP, field: value}).app
        expected = "+40213120000" if field == "admin_phone" else value
        assert expected == getattr(app, field)

    @pytest.mark.parametrize("field", sorted(FIELDS))
    def test_one_more_is_refused_at_registration(
        self, world: World, unchanged: None, field: str
    ) -> None:
        limit, make = FIELDS[field]
        with pytest.raises(ValidationError) as caught:
            world.registry.register_app(OWNER, **{**APP, field: make(limit + 1)})
        assert [(field, "too_long")] == _problems(caught)

    @pytest.mark.parametrize("field", sorted(FIELDS))
    def test_one_more_is_refused_on_edit(self, world: World, unchanged: None, field: str) -> None:
        limit, make = FIELDS[field]
        with pytest.raises(ValidationError) as caught:
            world.registry.update_app(world.key, **{field: make(limit + 1)})
        assert [(field, "too_long")] == _problems(caught)


class TestRawText:
    """Text over four times its limit is refused before it is normalized; shorter text is
    judged by its normalized length."""

    def test_decomposed_text_that_composes_within_the_limit_is_accepted(self, world: World) -> None:
        name = "a\u0301" * MAX_NAME_LENGTH
        app = world.registry.register_app(OWNER, **{**APP, "name": name}).app
        assert "\u00e1" * MAX_NAME_LENGTH == app.name

    def test_padding_up_to_four_times_the_limit_is_trimmed(self, world: World) -> None:
        name = " " * (3 * MAX_NAME_LENGTH) + "n" * MAX_NAME_LENGTH
        app = world.registry.register_app(OWNER, **{**APP, "name": name}).app
        assert "n" * MAX_NAME_LENGTH == app.name

    def test_more_than_four_times_the_limit_is_refused(self, world: World, unchanged: None) -> None:
        name = " " * (3 * MAX_NAME_LENGTH + 1) + "n" * MAX_NAME_LENGTH
        with pytest.raises(ValidationError) as caught:
            world.registry.register_app(OWNER, **{**APP, "name": name})
        assert [("name", "too_long")] == _problems(caught)

    def test_a_huge_description_is_refused(self, world: World, unchanged: None) -> None:
        with pytest.raises(ValidationError) as caught:
            world.registry.update_app(world.key, description="\u0301" * 10_000_000)
        assert [("description", "too_long")] == _problems(caught)


class TestIds:
    """Owner, account and user ids take 128 characters; 129 are too_long; longer keys and
    ids name nothing."""

    def test_the_limit_is_accepted(self, world: World) -> None:
        account = "a" * MAX_ACCOUNT_LENGTH
        permission = world.registry.permit_account(account, by="u" * MAX_ACCOUNT_LENGTH)
        assert (account, "u" * MAX_ACCOUNT_LENGTH) == (permission.account, permission.granted_by)

    @pytest.mark.parametrize("field", ["account", "by"])
    def test_one_more_is_refused(self, world: World, unchanged: None, field: str) -> None:
        arguments = {"account": ACCOUNT, "by": "provider"}
        arguments[field] = "a" * (MAX_ACCOUNT_LENGTH + 1)
        with pytest.raises(ValidationError) as caught:
            world.registry.permit_account(arguments["account"], by=arguments["by"])
        assert [(field, "too_long")] == _problems(caught)

    def test_an_owner_one_past_the_limit_is_refused(self, world: World, unchanged: None) -> None:
        with pytest.raises(ValidationError) as caught:
            world.registry.register_app("o" * (MAX_ACCOUNT_LENGTH + 1), **APP)
        assert [("owner", "too_long")] == _problems(caught)

    def test_a_huge_key_names_no_app(self, world: World, unchanged: None) -> None:
        with pytest.raises(AppNotFound):
            world.registry.disable_app("K" * 10_000_000)

    def test_a_huge_account_has_no_permission(self, world: World) -> None:
        assert world.registry.get_permission("a" * (MAX_ACCOUNT_LENGTH + 1)) is None


class TestTokenRequests:
    """A user agent takes 512 characters; a key, secret, token, code or refresh token over
    512 is refused without a look-up."""

    def test_a_user_agent_at_the_limit_is_kept(self, world: World) -> None:
        agent = "u" * MAX_USER_AGENT_LENGTH
        issued = world.registry.issue_token(world.key, world.app.secret, user_agent=agent)
        assert agent == issued.record.user_agent

    def test_a_user_agent_one_past_is_refused(self, world: World, unchanged: None) -> None:
        agent = "u" * (MAX_USER_AGENT_LENGTH + 1)
        with pytest.raises(ValidationError) as caught:
            world.registry.issue_token(world.key, world.app.secret, user_agent=agent)
        assert [("user_agent", "too_long")] == _problems(caught)

    def test_refresh_checks_the_user_agent_before_the_token(
        self, world: World, unchanged: None
    ) -> None:
        agent = "u" * (MAX_USER_AGENT_LENGTH + 1)
        with pytest.raises(ValidationError):
            world.registry.refresh(world.key, world.refresh_token, user_agent=agent)

    @pytest.mark.parametrize(
        ("field", "reason"), [("key", "bad_credentials"), ("secret", "bad_credentials")]
    )
    def test_credentials_at_the_limit_are_only_wrong(
        self, world: World, field: str, reason: str
    ) -> None:
        credentials = {"key": world.key, "secret": world.app.secret, field: "x" * MAX_PRESENTED}
        before = world.snapshot()
        with pytest.raises(Denied) as caught:
            world.registry.issue_token(credentials["key"], credentials["secret"])
        assert reason == caught.value.decision.reason
        assert before == world.snapshot()

    @pytest.mark.parametrize("field", ["key", "secret"])
    def test_credentials_one_past_are_refused(
        self, world: World, unchanged: None, field: str
    ) -> None:
        credentials = {
            "key": world.key,
            "secret": world.app.secret,
            field: "x" * (MAX_PRESENTED + 1),
        }
        with pytest.raises(ValidationError) as caught:
            world.registry.issue_token(credentials["key"], credentials["secret"])
        assert [(field, "too_long")] == _problems(caught)

    def test_authenticate_client_refuses_a_long_secret(self, world: World) -> None:
        assert (
            "bad_credentials"
            == world.registry.authenticate_client(world.key, "x" * (MAX_PRESENTED + 1)).reason
        )

    @pytest.mark.parametrize(("length", "lookups"), [(MAX_PRESENTED, 1), (MAX_PRESENTED + 1, 0)])
    def test_check_token_looks_up_nothing_past_the_limit(
        self, world: World, length: int, lookups: int
    ) -> None:
        # The Registry wraps its storage to publish changes; the backend is inside.
        storage = world.registry._storage._storage  # type: ignore[attr-defined]
        assert isinstance(storage, CountingStorage)
        storage.lookups = 0
        assert "token_unknown" == world.registry.check_token("t" * length).reason
        assert lookups == storage.lookups

    @pytest.mark.parametrize("length", [MAX_PRESENTED, MAX_PRESENTED + 1])
    def test_codes_and_refresh_tokens_of_any_length_are_invalid_grants(
        self, world: World, unchanged: None, length: int
    ) -> None:
        r, redirect = world.registry, APP["redirect_url"]
        with pytest.raises(InvalidGrant):
            r.exchange_code(world.key, "c" * length, redirect_url=redirect)
        with pytest.raises(InvalidGrant):
            r.refresh(world.key, "r" * length)
        assert r.revoke("t" * length) is False


class TestLists:
    """Search text takes 200 characters, a page 1000 entries, the page number 1e9; one more
    of any is refused, and the largest page number works on every backend."""

    def test_search_at_the_limit(self, world: World) -> None:
        search = "s" * MAX_SEARCH_LENGTH
        r = world.registry
        assert (0, 0, 0) == (
            r.list_apps(search=search).total,
            r.list_installations(ACCOUNT, search=search).total,
            r.list_tokens(world.key, OWNER, search=search).total,
        )

    @pytest.mark.parametrize("listing", ["apps", "installations", "tokens"])
    def test_search_one_past(self, world: World, listing: str) -> None:
        search = "s" * (MAX_SEARCH_LENGTH + 1)
        lists: dict[str, Callable[[], object]] = {
            "apps": lambda: world.registry.list_apps(search=search),
            "installations": lambda: world.registry.list_installations(ACCOUNT, search=search),
            "tokens": lambda: world.registry.list_tokens(world.key, OWNER, search=search),
        }
        with pytest.raises(ValidationError) as caught:
            lists[listing]()
        assert [("search", "too_long")] == _problems(caught)

    def test_the_largest_page_and_page_size(self, any_world: World) -> None:
        page = any_world.registry.list_apps(page=MAX_PAGE, per_page=MAX_PER_PAGE)
        assert ((), 1, MAX_PAGE) == (page.items, page.total, page.page)
        tokens = any_world.registry.list_tokens(
            any_world.key, OWNER, page=MAX_PAGE, per_page=MAX_PER_PAGE
        )
        assert ((), 1) == (tokens.items, tokens.total)

    @pytest.mark.parametrize(
        ("field", "paging"),
        [
            ("page", {"page": MAX_PAGE + 1}),
            ("page", {"page": 2**63}),
            ("per_page", {"per_page": MAX_PER_PAGE + 1}),
        ],
    )
    def test_one_past_is_refused(
        self, any_world: World, field: str, paging: dict[str, int]
    ) -> None:
        r = any_world.registry
        for listing in (
            lambda: r.list_apps(**paging),
            lambda: r.list_installations(ACCOUNT, **paging),
            lambda: r.list_tokens(any_world.key, OWNER, **paging),
        ):
            with pytest.raises(ValidationError) as caught:
                listing()
            assert [(field, "invalid")] == _problems(caught)


class TestTokenRemoval:
    """One removal names at most 1000 ids, each at most 128 characters."""

    def test_the_limit_is_accepted(self, world: World) -> None:
        ids = [world.token_id] * MAX_TOKEN_IDS_PER_REMOVAL
        assert 1 == world.registry.remove_tokens(ids)
        assert "token_unknown" == world.registry.check_token(world.token).reason

    def test_one_more_is_refused(self, world: World, unchanged: None) -> None:
        ids = [world.token_id] * (MAX_TOKEN_IDS_PER_REMOVAL + 1)
        with pytest.raises(ValidationError) as caught:
            world.registry.remove_tokens(ids)
        assert [("token_ids", "too_many")] == _problems(caught)

    def test_a_huge_collection_is_refused_by_its_size(self, world: World, unchanged: None) -> None:
        # range() is a Collection of ints: refused for its size before its items are seen.
        with pytest.raises(ValidationError) as caught:
            world.registry.remove_tokens(range(10**12))  # type: ignore[arg-type]
        assert [("token_ids", "too_many")] == _problems(caught)

    def test_an_id_at_the_length_limit_names_nothing(self, world: World, unchanged: None) -> None:
        with pytest.raises(TokenNotFound):
            world.registry.remove_tokens([world.token_id, "i" * MAX_ACCOUNT_LENGTH])

    def test_an_id_one_past_is_refused(self, world: World, unchanged: None) -> None:
        with pytest.raises(ValidationError) as caught:
            world.registry.remove_tokens([world.token_id, "i" * (MAX_ACCOUNT_LENGTH + 1)])
        assert [("token_ids", "too_long")] == _problems(caught)


class TestAppsPerOwner:
    """An owner registers up to max_apps_per_owner apps; one more is LimitExceeded."""

    def test_the_limit(self) -> None:
        recorder = EventRecorder()
        registry = Registry(storage=MemoryStorage(), max_apps_per_owner=2, listeners=[recorder])
        registry.register_app(OWNER, **APP)
        registry.register_app(OWNER, **APP)
        recorder.clear()
        with pytest.raises(LimitExceeded):
            registry.register_app(OWNER, **APP)
        assert (2, []) == (registry.list_apps().total, recorder.events)


class TestCommandLine:
    """The command line passes paging to the registry, which bounds it."""

    def _run(self, database: str, *args: str) -> int:
        return appregistry_cli.main(["--database", database, "--json", "apps", "list", *args])

    def test_page_and_page_size(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        database = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
        limits = (str(MAX_PAGE), str(MAX_PER_PAGE))
        assert 0 == self._run(database, "--page", limits[0], "--per-page", limits[1])
        assert 2 == self._run(database, "--page", str(MAX_PAGE + 1))
        assert '"validation"' in capsys.readouterr().out
        with pytest.raises(SystemExit) as usage:
            self._run(database, "--per-page", str(MAX_PER_PAGE + 1))
        assert 2 == usage.value.code


# -- the WSGI app -----------------------------------------------------------------------------


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _basic(world: World) -> str:
    pair = f"{world.key}:{world.app.secret}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def _call(
    app: Any,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Response:
    """Call the WSGI app directly with a built environ."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded" if body else "",
        "wsgi.input": io.BytesIO(body),
        # oauthlib refuses plain http: the app is reached as a TLS terminator would pass it on.
        "wsgi.url_scheme": "https",
        "HTTPS": "on",
    }
    for name, value in (headers or {}).items():
        environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
    wsgiref.util.setup_testing_defaults(environ)
    started: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.append((int(status[:3]), dict(response_headers)))

    data = b"".join(app(environ, start_response))
    return Response(started[0][0], started[0][1], data)


def _form(length: int, *, fields: int = 2) -> bytes:
    """A client-credentials form body of ``length`` bytes in ``fields`` fields."""
    body = "grant_type=client_credentials" + "".join(f"&f{i}=" for i in range(fields - 2))
    body += "&pad="
    return (body + "x" * (length - len(body))).encode()


@pytest.fixture
def wsgi(world: World) -> Any:
    return make_wsgi_app(
        world.registry,
        current_user=lambda _environ: SignedInUser(ACCOUNT, "alice"),
        clock=world.clock,
        csrf_key=b"k" * 32,
    )


def _tokens(world: World) -> int:
    return world.registry.list_tokens(world.key, OWNER).total


class TestWsgiLimits:
    """Body, query string, form fields and the headers read are bounded; past a bound the
    request is refused with its status and no token is issued."""

    def test_a_body_at_the_limit_is_read(self, world: World, wsgi: Any) -> None:
        body = _form(DEFAULT_MAX_BODY_SIZE)
        response = _call(
            wsgi, "POST", TOKEN_PATH, body=body, headers={"Authorization": _basic(world)}
        )
        assert (200, 2) == (response.status, _tokens(world))

    def test_a_body_one_past_is_413(self, world: World, wsgi: Any, unchanged: None) -> None:
        body = _form(DEFAULT_MAX_BODY_SIZE + 1)
        response = _call(
            wsgi, "POST", TOKEN_PATH, body=body, headers={"Authorization": _basic(world)}
        )
        assert 413 == response.status

    def test_form_fields_at_the_limit(self, world: World, wsgi: Any) -> None:
        body = _form(1000, fields=MAX_FORM_FIELDS)
        response = _call(
            wsgi, "POST", TOKEN_PATH, body=body, headers={"Authorization": _basic(world)}
        )
        assert (200, MAX_FORM_FIELDS - 1) == (response.status, body.count(b"&"))

    def test_form_fields_one_past_are_400(self, world: World, wsgi: Any, unchanged: None) -> None:
        body = _form(1000, fields=MAX_FORM_FIELDS + 1)
        response = _call(
            wsgi, "POST", TOKEN_PATH, body=body, headers={"Authorization": _basic(world)}
        )
        description = json.loads(response.body)["error_description"]
        assert (400, f"The form has more than {MAX_FORM_FIELDS} fields.") == (
            response.status,
            description,
        )

    def test_a_query_at_the_limit(self, world: World, wsgi: Any) -> None:
        query = "pad=" + "x" * (MAX_QUERY_LENGTH - 4)
        response = _call(
            wsgi, "GET", "/uapi/me", query=query, headers={"Authorization": f"Bearer {world.token}"}
        )
        assert 200 == response.status

    def test_a_query_one_past_is_414(self, world: World, wsgi: Any) -> None:
        query = "pad=" + "x" * (MAX_QUERY_LENGTH - 3)
        response = _call(
            wsgi, "GET", "/uapi/me", query=query, headers={"Authorization": f"Bearer {world.token}"}
        )
        assert 414 == response.status

    def test_query_fields_one_past_are_400(self, world: World, wsgi: Any) -> None:
        at_limit = "&".join(f"f{i}=" for i in range(MAX_FORM_FIELDS))
        bearer = {"Authorization": f"Bearer {world.token}"}
        assert 200 == _call(wsgi, "GET", "/uapi/me", query=at_limit, headers=bearer).status
        past = f"{at_limit}&more="
        assert 400 == _call(wsgi, "GET", "/uapi/me", query=past, headers=bearer).status

    def test_a_user_agent_at_the_header_limit_is_cut_to_the_registry_limit(
        self, world: World, wsgi: Any
    ) -> None:
        headers = {"Authorization": _basic(world), "User-Agent": "u" * MAX_HEADER_LENGTH}
        response = _call(wsgi, "POST", TOKEN_PATH, body=_form(100), headers=headers)
        assert 200 == response.status
        agents = {t.user_agent for t in world.registry.list_tokens(world.key, OWNER).items}
        assert {None, "u" * MAX_USER_AGENT_LENGTH} == agents

    @pytest.mark.parametrize("header", ["User-Agent", "Origin", "Authorization"])
    def test_a_header_one_past_is_431(
        self, world: World, wsgi: Any, unchanged: None, header: str
    ) -> None:
        headers = {"Authorization": _basic(world), header: "h" * (MAX_HEADER_LENGTH + 1)}
        response = _call(wsgi, "POST", TOKEN_PATH, body=_form(100), headers=headers)
        assert 431 == response.status

    @pytest.mark.parametrize(
        ("length", "status"), [(MAX_STATE_LENGTH, 200), (MAX_STATE_LENGTH + 1, 302)]
    )
    def test_state_up_to_its_limit(
        self, world: World, wsgi: Any, unchanged: None, length: int, status: int
    ) -> None:
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": world.key,
                "redirect_uri": APP["redirect_url"],
                "state": "s" * length,
            }
        )
        response = _call(wsgi, "GET", "/oauth/authorize.php", query=query)
        assert status == response.status
        if status == 302:
            assert "error=invalid_request" in response.headers["Location"]

    def test_the_consent_page_answers_in_html(self, wsgi: Any) -> None:
        query = "state=" + "s" * MAX_QUERY_LENGTH
        response = _call(wsgi, "GET", "/oauth/authorize.php", query=query)
        assert (414, "text/html; charset=utf-8") == (
            response.status,
            response.headers["Content-Type"],
        )


@pytest.fixture
def base_url(wsgi: Any) -> Iterator[str]:
    """The WSGI app behind a real HTTP server on a free loopback port."""
    with serving(wsgi) as url:
        yield url


class TestOverHttp:
    """The same bounds hold over a real HTTP connection."""

    @pytest.fixture(autouse=True)
    def _plain_http_on_loopback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # oauthlib refuses http:// unless told; the server listens on loopback only.
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    def test_body_query_and_header(self, world: World, base_url: str) -> None:
        token_url = f"{base_url}{TOKEN_PATH}"
        basic = {"Authorization": _basic(world)}

        def post(body: bytes, **headers: str) -> int:
            headers = {"Content-Type": "application/x-www-form-urlencoded", **basic, **headers}
            return requests.post(token_url, data=body, headers=headers, timeout=10).status_code

        assert 200 == post(_form(DEFAULT_MAX_BODY_SIZE))
        assert 413 == post(_form(DEFAULT_MAX_BODY_SIZE + 1))
        assert 431 == post(_form(100), **{"User-Agent": "u" * (MAX_HEADER_LENGTH + 1)})
        me = f"{base_url}/uapi/me?pad=" + "x" * (MAX_QUERY_LENGTH - 3)
        bearer = {"Authorization": f"Bearer {world.token}"}
        assert 414 == requests.get(me, headers=bearer, timeout=10).status_code
        assert 2 == _tokens(world)

"""What one client-credentials grant costs the storage, and that the cheaper path says the same.

The token endpoint authenticates a client-credentials client in the transaction that issues
its token (`RegistryValidator.present_client`). These tests pin the cost, one storage
transaction a grant (two PostgreSQL round trips), so that it cannot creep back up, and check
that every answer, refusal, event and failure count is what the three-transaction path gave:
that path is kept as the reference, an oauthlib client-credentials grant without the hook.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from oauthlib.oauth2 import ClientCredentialsGrant

from _support import counting_postgres_storage
from appregistry import Event, EventKind, Reason, RegisteredApp, Registry
from appregistry.oauth2 import make_server
from appregistry.oauth2._server import RegistryServer
from appregistry.ports import Storage, UnitOfWork
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage

TOKEN_URL = "https://registry.example/oauth/token.php"


@attrs.define
class CountingStorage:
    """A storage that counts the transactions opened through it; the rest is the inner one's."""

    inner: Storage
    transactions: int = 0

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        self.transactions += 1
        return self.inner.transaction()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@attrs.define
class Setup:
    """A registry over a counting storage, its events, and a trusted and an untrusted app."""

    registry: Registry
    storage: CountingStorage
    events: list[Event]
    trusted: RegisteredApp
    untrusted: RegisteredApp


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_storage(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], Storage]:
    """Fresh storages of one kind (each on its own file or schema)."""
    if request.param == "memory":
        return MemoryStorage
    if request.param == "sqlite":
        paths = iter(range(1_000_000))
        return lambda: SQLiteStorage(tmp_path / f"cost-{next(paths)}.sqlite3")
    factory: Callable[[], Storage] = request.getfixturevalue("postgres_storage_factory")
    return factory


def new_setup(storage: Storage) -> Setup:
    counting = CountingStorage(storage)
    events: list[Event] = []
    registry = Registry(storage=counting, listeners=[events.append])  # type: ignore[arg-type]
    registry.permit_account("acme", by="provider")
    fields = {
        "homepage": "https://acme.example/",
        "admin_email": "admin@acme.example",
        "redirect_url": "https://acme.example/cb",
    }
    trusted = registry.register_app("acme", name="Trusted", trusted=True, **fields)
    untrusted = registry.register_app("acme", name="Partner", **fields)
    return Setup(registry, counting, events, trusted, untrusted)


@pytest.fixture
def setup(make_storage: Callable[[], Storage]) -> Iterator[Setup]:
    made = new_setup(make_storage())
    yield made
    made.registry.close()


def basic(key: str, secret: str) -> dict[str, str]:
    pair = f"{urllib.parse.quote_plus(key)}:{urllib.parse.quote_plus(secret)}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def grant(server: RegistryServer, headers: dict[str, str], body: str = "") -> tuple[int, Any]:
    """POST a client-credentials token request; the status and the JSON body."""
    form = "grant_type=client_credentials" + body
    _, text, status = server.create_token_response(TOKEN_URL, "POST", form, headers)
    return status, json.loads(text or "null")


def reference_server(registry: Registry) -> RegistryServer:
    """The server as it was: oauthlib authenticates the client before anything else."""
    server = make_server(registry)
    plain = ClientCredentialsGrant(server.validator)
    plain.register_token_modifier(lambda token, *_: token)
    server._grant_types["client_credentials"] = plain
    return server


class TestCost:
    """One transaction a grant, whatever the backend."""

    def test_a_grant_opens_one_transaction(self, setup: Setup) -> None:
        server = make_server(setup.registry)
        setup.storage.transactions = 0
        status, body = grant(server, basic(setup.trusted.app.key, setup.trusted.secret))
        assert 200 == status
        assert 1 == setup.storage.transactions
        check = setup.registry.check_token(body["access_token"])
        assert (Reason.ALLOWED, "acme") == (check.reason, check.token.account)

    def test_no_token_is_drawn_to_be_thrown_away(
        self, setup: Setup, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # oauthlib's BearerToken draws a token that save_bearer_token replaces with the
        # Registry's: the server gives it a placeholder instead, which never reaches a client.
        def drawn(*_: object, **__: object) -> str:
            raise AssertionError("oauthlib drew a token")

        # oauthlib's default generator looks it up on the module at each call.
        monkeypatch.setattr("oauthlib.common.generate_token", drawn)
        status, body = grant(
            make_server(setup.registry), basic(setup.trusted.app.key, setup.trusted.secret)
        )
        assert 200 == status
        assert "not yet issued" not in json.dumps(body)
        assert setup.registry.check_token(body["access_token"]).allowed

    def test_the_reference_path_costs_three(self, setup: Setup) -> None:
        # What the hook saves: authentication, the trust read and the issue, one each.
        server = reference_server(setup.registry)
        setup.storage.transactions = 0
        status, _ = grant(server, basic(setup.trusted.app.key, setup.trusted.secret))
        assert (200, 3) == (status, setup.storage.transactions)

    def test_a_wrong_secret_costs_one_too(self, setup: Setup) -> None:
        server = make_server(setup.registry)
        setup.storage.transactions = 0
        status, body = grant(server, basic(setup.trusted.app.key, "S" * 32))
        assert (401, "invalid_client", 1) == (status, body["error"], setup.storage.transactions)


@pytest.mark.postgres
def test_a_grant_is_one_read_and_one_insert_on_postgresql(
    postgres_url: str, postgres_schema: str
) -> None:
    """Two round trips in pipeline mode: the locked app context, then the token's insert."""
    storage, pool, executed = counting_postgres_storage(postgres_url, postgres_schema)
    try:
        made = new_setup(storage)
        server = make_server(made.registry)
        executed.clear()
        status, _ = grant(server, basic(made.trusted.app.key, made.trusted.secret))
        assert 200 == status
        queries = storage._queries
        expected = [queries.app_context, queries.token_add]
        if not storage._pipelined:
            expected = [b"BEGIN", *expected, b"COMMIT"]
        assert expected == executed
    finally:
        storage.close()
        pool.close()


class TestSameAnswers:
    """Every answer, event and failure count is the reference path's."""

    def test_success_emits_token_issued_once(self, setup: Setup) -> None:
        setup.events.clear()
        status, _ = grant(
            make_server(setup.registry), basic(setup.trusted.app.key, setup.trusted.secret)
        )
        assert 200 == status
        assert [EventKind.TOKEN_ISSUED] == [e.kind for e in setup.events]
        assert "client_credentials" == setup.events[0].details["grant"]

    def test_failures_are_counted_once_each(self, setup: Setup) -> None:
        server = make_server(setup.registry)
        setup.events.clear()
        for _ in range(3):
            grant(server, basic(setup.trusted.app.key, "S" * 32))
        failed = [e for e in setup.events if e.kind == EventKind.AUTHENTICATION_FAILED]
        assert [1, 2, 3] == [e.details["failures"] for e in failed]
        assert {setup.trusted.app.key} == {e.app_key for e in failed}
        assert len(failed) == len(setup.events)

    def test_a_disable_before_the_grant_wins(self, setup: Setup) -> None:
        setup.registry.disable_app(setup.trusted.app.key)
        status, body = grant(
            make_server(setup.registry), basic(setup.trusted.app.key, setup.trusted.secret)
        )
        assert (401, "invalid_client") == (status, body["error"])
        assert 0 == setup.registry.list_tokens(setup.trusted.app.key).total

    def test_revocation_never_defers_authentication(self, setup: Setup) -> None:
        # A revocation request naming grant_type=client_credentials must not be mistaken for
        # a deferred grant: with a wrong secret it revokes nothing.
        server = make_server(setup.registry)
        issued = setup.registry.issue_token(setup.trusted.app.key, setup.trusted.secret)
        body = f"token={issued.token}&grant_type=client_credentials"
        headers = basic(setup.trusted.app.key, "S" * 32)
        _, _, status = server.create_revocation_response(TOKEN_URL, "POST", body, headers)
        assert 401 == status
        assert setup.registry.check_token(issued.token).allowed


# Which key, which secret, which app state, which extra parameters.
_CASES = st.tuples(
    st.sampled_from(["trusted", "untrusted", "unknown"]),
    st.booleans(),  # the right secret
    st.sampled_from(["enabled", "disabled", "suspended", "unpermitted"]),
    st.sampled_from(["", "&scope=calls", "&scope=", "&client_id=other"]),
    st.sampled_from(["basic", "form", "none"]),
)


@settings(max_examples=60, deadline=None)
@given(case=_CASES)
def test_answers_match_the_reference(case: tuple[Any, ...]) -> None:
    """For any mix of credentials, app state and parameters: the same status and error."""
    app_kind, right_secret, state, extra, how = case
    answers = []
    for make in (make_server, reference_server):
        setup = new_setup(MemoryStorage())
        registry = setup.registry
        app = setup.untrusted if app_kind == "untrusted" else setup.trusted
        key = "K" * 32 if app_kind == "unknown" else app.app.key
        secret = app.secret if right_secret else "S" * 32
        if state == "disabled":
            registry.disable_app(app.app.key)
        elif state == "suspended":
            registry.install_app(app.app.key, "acme", by="alice")
            registry.suspend_installation(app.app.key, "acme")
        elif state == "unpermitted":
            registry.forbid_account("acme")
        headers: dict[str, str] = {}
        body = extra
        if how == "basic":
            headers = basic(key, secret)
        elif how == "form":
            body += f"&client_id={key}&client_secret={secret}"
        setup.events.clear()
        status, answer = grant(make(registry), headers, body)
        answers.append(
            (
                status,
                answer.get("error"),
                sorted(answer),
                [(e.kind, e.app_key == key, e.details.get("failures")) for e in setup.events],
            )
        )
        registry.close()
    assert answers[0] == answers[1]

"""The framework-neutral core: request parts in, an identity or an RFC 6750 answer out."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from _answers import REALM, Case, Expect, World

from appregistry import Grant, Reason, Registry, StorageUnavailable
from appregistry.integrations import BearerError, TokenGuard, TokenIdentity, add_vary
from appregistry.storage.memory import MemoryStorage


def answer(world: World, case: Case) -> tuple[int, list[tuple[str, str]], str]:
    """What an adapter would answer: the error's parts, or 200 with the identity."""
    try:
        identity = world.guard.authenticate(
            case.headers(world.tokens), case.query_string(world.tokens)
        )
    except BearerError as error:
        return error.status, error.headers, error.body.decode()
    return 200, add_vary([]), json.dumps(identity.as_json())


class TestAnswers:
    """Every row of the table gets its answer from `TokenGuard.authenticate`."""

    def test_answer(self, case: Case, world: World, expect: Expect) -> None:
        expect(case, *answer(world, case))

    def test_query_as_bytes(self, world: World) -> None:
        query = f"accessRequestToken=Bearer%20{world.tokens['valid']}".encode()
        assert "acme" == world.guard.authenticate(None, query).account

    def test_one_header_as_text(self, world: World) -> None:
        assert "acme" == world.guard.authenticate(f"Bearer {world.tokens['valid']}").account


class TestIdentity:
    """An accepted token gives who it acts for, with the decision that let it in."""

    def test_fields(self, world: World) -> None:
        identity = world.guard.authenticate([f"Bearer {world.tokens['installed']}"])
        check = world.registry.check_token(world.tokens["installed"])
        assert check.token is not None
        expected = TokenIdentity(
            "globex",
            check.token.app_key,
            Grant.USER_APPROVAL,
            check.token.expires_at,
            check.token.token_id,
            check.decision,
        )
        assert expected == identity
        assert Reason.ALLOWED == identity.decision.reason

    def test_of_a_refused_check_raises(self, world: World) -> None:
        with pytest.raises(ValueError, match="token_expired"):
            TokenIdentity.of(world.registry.check_token(world.tokens["expired"]))

    def test_as_json(self, world: World) -> None:
        identity = world.guard.authenticate([f"Bearer {world.tokens['valid']}"])
        assert {"account", "app", "grant", "expires_at"} == set(identity.as_json())
        assert "client_credentials" == identity.as_json()["grant"]


class TestOptional:
    """``optional=True`` lets a request without a token through, never a bad token."""

    def test_no_token_is_none(self, world: World) -> None:
        assert world.guard.authenticate([], "", optional=True) is None

    def test_other_scheme_is_none(self, world: World) -> None:
        assert world.guard.authenticate(["Basic dXNlcjpwYXNz"], optional=True) is None

    @pytest.mark.parametrize("kind", ["unknown", "expired", "disabled", "suspended"])
    def test_bad_token_is_refused(self, world: World, kind: str) -> None:
        with pytest.raises(BearerError) as info:
            world.guard.authenticate([f"Bearer {world.tokens[kind]}"], optional=True)
        assert (401, "invalid_token") == (info.value.status, info.value.error)

    def test_empty_token_is_refused(self, world: World) -> None:
        with pytest.raises(BearerError) as info:
            world.guard.authenticate(["Bearer"], optional=True)
        assert 400 == info.value.status


class TestRefusals:
    """The reason goes to the log and the error's ``reason``; the caller sees one message."""

    @pytest.mark.parametrize(
        ("kind", "reason"),
        [
            ("unknown", "token_unknown"),
            ("expired", "token_expired"),
            ("disabled", "app_disabled"),
            ("suspended", "installation_suspended"),
            ("forbidden", "apps_not_permitted"),
            ("blocked", "account_blocked"),
        ],
    )
    def test_reason_is_logged_not_told(
        self, world: World, kind: str, reason: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        token = world.tokens[kind]
        with (
            caplog.at_level(logging.INFO, "appregistry.integrations"),
            pytest.raises(BearerError) as info,
        ):
            world.guard.authenticate([f"Bearer {token}"])
        assert reason == info.value.reason
        assert reason in caplog.text
        assert "The access token is not valid." == str(info.value)
        assert reason not in info.value.body.decode()
        assert token not in caplog.text
        assert token not in repr(info.value)

    def test_a_malformed_token_is_not_logged(
        self, world: World, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, "appregistry.integrations"), pytest.raises(BearerError):
            world.guard.authenticate(["Bearer secret-looking value"])
        assert "secret-looking" not in caplog.text
        assert "malformed" in caplog.text

    @pytest.mark.parametrize(
        ("authorization", "query", "reason"),
        [
            (["Bearer"], "", "empty"),
            (["Bearer    "], "", "empty"),
            ([], "accessRequestToken=Bearer", "empty"),
            (["Bearer a", "Bearer b"], "", "doubled"),
            (["Basic x", "Bearer b"], "", "doubled"),
            (["Bearer a, Bearer b"], "", "doubled"),
            (["Bearer a"], "accessRequestToken=b", "doubled"),
            (["Bearer a b"], "", "malformed"),
            (["Bearer a,b"], "", "malformed"),
            (["Bearer " + "a" * 5000], "", "malformed"),
            (["Bearer \u00e9t\u00e9"], "", "malformed"),
            ([], "accessRequestToken=%FF%FE", "malformed"),
        ],
    )
    def test_bad_requests(
        self, world: World, authorization: list[str], query: str, reason: str
    ) -> None:
        with pytest.raises(BearerError) as info:
            world.guard.authenticate(authorization, query)
        assert (400, "invalid_request", reason) == (
            info.value.status,
            info.value.error,
            info.value.reason,
        )

    def test_storage_failure_is_503_not_500(self, caplog: pytest.LogCaptureFixture) -> None:
        class FailingStorage(MemoryStorage):
            def token_context(self, *digests: Any) -> Any:
                raise StorageUnavailable("the database is down")

        guard = TokenGuard(Registry(storage=FailingStorage()), realm=REALM)
        with (
            caplog.at_level(logging.ERROR, "appregistry.integrations"),
            pytest.raises(BearerError) as info,
        ):
            guard.authenticate(["Bearer abc"])
        error = info.value
        assert (503, None, "storage_unavailable") == (error.status, error.error, error.reason)
        assert "WWW-Authenticate" not in dict(error.headers)
        assert "no-store" == dict(error.headers)["Cache-Control"]
        assert "the database is down" in caplog.text

    def test_missing_token_challenge_has_no_error(self, world: World) -> None:
        error = world.guard.challenge()
        assert (401, None) == (error.status, error.error)
        assert 'Bearer realm="example"' == dict(error.headers)["WWW-Authenticate"]
        assert {"error_description": "This resource needs a bearer token."} == error.as_json()


class TestGuard:
    """The guard checks its realm and opens its registry once per process, when asked."""

    @pytest.mark.parametrize("realm", ["", 'say "hi"', "back\\slash", "caf\u00e9", "x" * 101])
    def test_bad_realm(self, realm: str) -> None:
        with pytest.raises(ValueError, match="realm"):
            TokenGuard.from_url("memory:", realm=realm)

    def test_from_url_opens_on_first_use_only(self) -> None:
        opened: list[Registry] = []

        def opener() -> Registry:
            opened.append(Registry(storage=MemoryStorage()))
            return opened[-1]

        guard = TokenGuard(opener)
        assert [] == opened
        assert guard.registry is guard.registry
        assert 1 == len(opened)

    def test_reopens_after_a_fork(self, monkeypatch: pytest.MonkeyPatch) -> None:
        guard = TokenGuard.from_url("memory:")
        first = guard.registry
        monkeypatch.setattr("os.getpid", lambda: -1)  # as in a forked child
        second = guard.registry
        assert first is not second
        assert second is guard.registry

    def test_an_open_registry_is_used_as_is(self) -> None:
        registry = Registry(storage=MemoryStorage())
        assert registry is TokenGuard(registry).registry

    def test_repr_shows_no_url(self) -> None:
        guard = TokenGuard.from_url("postgresql://user:hunter2@db/app", pepper=b"pepper!")
        assert "hunter2" not in repr(guard)
        assert "pepper!" not in repr(guard)


class TestAddVary:
    """``Vary`` names ``Authorization`` once, merged with what is there."""

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ([], [("Vary", "Authorization")]),
            ([("Vary", "Accept")], [("Vary", "Accept, Authorization")]),
            ([("Vary", "accept, AUTHORIZATION")], [("Vary", "accept, AUTHORIZATION")]),
            ([("Vary", "*")], [("Vary", "*")]),
            ([("Vary", "")], [("Vary", "Authorization")]),
        ],
    )
    def test_merge(self, headers: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
        assert expected == add_vary(headers)

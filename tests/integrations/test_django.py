"""The Django middleware and decorator, through Django's own test clients, on the example."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import django_example
import pytest
from _answers import Case, Expect, World
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.utils.decorators import method_decorator
from django.views import View

from appregistry.integrations.django import get_guard, identity_from, require_token

#: The example's settings, without the middleware: the tests that want it add it.
BARE = {**django_example.SETTINGS, "MIDDLEWARE": []}


pytestmark = pytest.mark.usefixtures("django_settings")


@pytest.fixture
def with_guard(world: World) -> Iterator[None]:
    """The example's settings with the world's guard, and its middleware."""
    with override_settings(**{**django_example.SETTINGS, "APPREGISTRY_TOKEN_GUARD": world.guard}):
        yield


def bearer(world: World, kind: str = "valid") -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[kind]}"}


def answer(response: Any) -> tuple[int, list[tuple[str, str]], str]:
    return response.status_code, list(response.headers.items()), response.content.decode()


class TestAnswers:
    """Every row of the table gets its answer, with the middleware and without it."""

    @pytest.mark.usefixtures("with_guard")
    @pytest.mark.parametrize("path", ["/api/me", "/api/grant"])
    def test_with_middleware(self, case: Case, world: World, expect: Expect, path: str) -> None:
        self._check(Client(), case, world, expect, path)

    def test_decorator_alone(self, case: Case, world: World, expect: Expect) -> None:
        with override_settings(**{**BARE, "APPREGISTRY_TOKEN_GUARD": world.guard}):
            self._check(Client(), case, world, expect, "/api/me")

    @staticmethod
    def _check(client: Client, case: Case, world: World, expect: Expect, path: str) -> None:
        authorization = case.joined(world.tokens)  # Django keeps one value per header
        query = case.query_string(world.tokens)
        response = client.get(
            f"{path}?{query}" if query else path,
            headers={"Authorization": authorization} if authorization is not None else {},
        )
        status, headers, body = answer(response)
        if path == "/api/grant" and status == 200:
            assert {
                "grant": "user_approval" if case.account == "globex" else "client_credentials"
            } == response.json()
            return
        expect(case, status, headers, body)


@pytest.mark.usefixtures("with_guard")
class TestMiddleware:
    """The middleware lets requests without a token through and refuses bad tokens anywhere."""

    def test_public_page_without_token(self) -> None:
        response = Client().get("/")
        assert 200 == response.status_code
        assert "Authorization" in response.headers["Vary"]

    def test_public_page_with_a_bad_token(self, world: World) -> None:
        response = Client().get("/", headers=bearer(world, "disabled"))
        assert 401 == response.status_code

    def test_public_page_with_another_scheme(self) -> None:
        assert 200 == Client().get("/", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code

    def test_async_view_optional(self, world: World) -> None:
        assert {"hello": "stranger"} == Client().get("/api/hello").json()
        assert {"hello": "acme"} == Client().get("/api/hello", headers=bearer(world)).json()

    def test_async_stack(self, world: World) -> None:
        """Under ASGI, the middleware runs async and checks in a worker thread."""
        import asyncio

        async def run() -> list[Any]:
            client = AsyncClient()
            return [
                await client.get("/api/me", headers=bearer(world)),
                await client.get("/api/me"),
                await client.get("/api/me", headers=bearer(world, "expired")),
            ]

        valid, missing, expired = asyncio.run(run())
        assert [200, 401, 401] == [valid.status_code, missing.status_code, expired.status_code]
        assert "acme" == valid.json()["account"]


class TestDecorator:
    """``require_token`` on methods (Authlib #305), method_decorator and async views."""

    def _run(self, view: Any, world: World, headers: dict[str, str]) -> Any:
        request = RequestFactory().get("/", headers=headers)
        with override_settings(APPREGISTRY_TOKEN_GUARD=world.guard):
            return view(request)

    def test_on_a_method(self, world: World) -> None:
        class Me(View):
            @require_token()
            def get(self, request: HttpRequest) -> JsonResponse:
                return JsonResponse({"account": identity_from(request).account})

        assert 200 == self._run(Me.as_view(), world, bearer(world)).status_code
        assert 401 == self._run(Me.as_view(), world, {}).status_code

    def test_with_method_decorator(self, world: World) -> None:
        @method_decorator(require_token(), name="dispatch")
        class Me(View):
            def get(self, request: HttpRequest) -> JsonResponse:
                return JsonResponse({"account": identity_from(request).account})

        assert 200 == self._run(Me.as_view(), world, bearer(world)).status_code
        assert 401 == self._run(Me.as_view(), world, {}).status_code

    def test_async_view_without_middleware(self, world: World) -> None:
        import asyncio

        @require_token()
        async def view(request: HttpRequest) -> JsonResponse:
            return JsonResponse({"account": identity_from(request).account})

        async def run() -> Any:
            with override_settings(APPREGISTRY_TOKEN_GUARD=world.guard):
                return await view(RequestFactory().get("/", headers=bearer(world)))

        response = asyncio.run(run())
        assert (200, b'{"account": "acme"}') == (response.status_code, response.content)

    def test_not_given_a_request(self, world: World) -> None:
        @require_token()
        def view(anything: object) -> JsonResponse:
            return JsonResponse({})

        with pytest.raises(TypeError, match="HttpRequest"):
            view(object())


class TestSettings:
    """A missing or wrong guard setting is a loud ``ImproperlyConfigured``."""

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (None, "must name a TokenGuard"),
            ("no_such_module.guard", "cannot import"),
            ("django_example.urlpatterns", "not list"),
        ],
    )
    def test_wrong_setting(self, value: object, message: str) -> None:
        with (
            override_settings(APPREGISTRY_TOKEN_GUARD=value),
            pytest.raises(ImproperlyConfigured, match=message),
        ):
            get_guard()

    def test_dotted_path(self) -> None:
        with override_settings(APPREGISTRY_TOKEN_GUARD="django_example.guard"):
            assert django_example.guard is get_guard()

"""The development sign-in: any role, account and name, kept in the session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from _web import Web, build_web, problem, text
from appregistry.web import Role, WebUser, dev_session_user, make_app


class TestDevSignIn:
    """Sign in as a role; the pages then see that user; sign out forgets it."""

    def test_sign_in_and_out(self) -> None:
        web = build_web("/manage")
        seen: list[WebUser | None] = []

        def spy(request: object) -> WebUser | None:
            user = dev_session_user(request)  # type: ignore[arg-type]
            seen.append(user)
            return user

        app = make_app(web.registry, current_user=spy, unsafe_dev_sign_in=True)
        client = TestClient(Starlette(routes=[Mount("/manage", app=app)]), follow_redirects=False)
        asked = client.get("/manage/apps/?page=2")
        assert 303 == asked.status_code
        assert "/manage/sign-in?next=%2Fmanage%2Fapps%2F%3Fpage%3D2" == asked.headers["location"]
        page = client.get(asked.headers["location"])
        assert 200 == page.status_code
        assert "Development sign-in" in text(page)
        token = client.cookies["appregistry_csrftoken"]
        answer = client.post(
            "/manage/sign-in",
            data={
                "csrftoken": token,
                "role": "provider",
                "account": "provider",
                "name": "admin",
                "next": "/manage/apps/?page=2",
            },
        )
        assert "/manage/apps/?page=2" == answer.headers["location"]
        assert 200 == client.get("/manage/apps/").status_code
        assert WebUser("admin", Role.PROVIDER, "provider") == seen[-1]
        client.post("/manage/sign-out", data={"csrftoken": token})
        assert 303 == client.get("/manage/apps/").status_code

    @pytest.mark.parametrize(
        "next_page", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"]
    )
    def test_no_open_redirect(self, next_page: str) -> None:
        web = build_web("", unsafe_dev_sign_in=True)
        web.client.get("/sign-in")
        answer = web.client.post(
            "/sign-in",
            data={
                "csrftoken": web.client.cookies["appregistry_csrftoken"],
                "role": "account",
                "account": "acme",
                "name": "alice",
                "next": next_page,
            },
        )
        assert "/" == answer.headers["location"]

    def test_bad_choices_are_problems(self) -> None:
        web = build_web("", unsafe_dev_sign_in=True)
        web.client.get("/sign-in")
        answer = web.client.post(
            "/sign-in",
            data={
                "csrftoken": web.client.cookies["appregistry_csrftoken"],
                "role": "root",
                "account": " ",
                "name": "",
            },
        )
        assert 400 == answer.status_code
        assert problem(answer, "account")
        assert problem(answer, "name")

    def test_a_forged_sign_in_is_refused(self) -> None:
        web = build_web("", unsafe_dev_sign_in=True)
        answer = web.client.post(
            "/sign-in", data={"role": "provider", "account": "provider", "name": "admin"}
        )
        assert 403 == answer.status_code

    def test_absent_unless_asked_for(self, make_web: Callable[..., Web]) -> None:
        assert 404 == make_web().get("/sign-in").status_code

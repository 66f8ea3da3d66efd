"""What protects the pages: CSRF, headers, cookies, request bounds, errors, costs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from _web import ALICE, APP_FIELDS, CSRF_COOKIE, PROVIDER, Web, build_web, text
from appregistry import Registry, StorageError
from appregistry.storage.memory import MemoryStorage
from appregistry.web import CONTENT_SECURITY_POLICY, make_app

POSTS = [
    "/apps/new",
    "/apps/remove",
    "/apps/{key}",
    "/apps/{key}/enable",
    "/apps/{key}/disable",
    "/apps/{key}/regenerate",
    "/apps/{key}/reveal",
    "/accounts/permit",
    "/accounts/forbid",
]


class TestCsrf:
    """A change without the token of this client's cookie is refused (403), writing nothing."""

    @pytest.mark.parametrize("path", POSTS)
    def test_missing_token(self, web: Web, path: str) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        web.token()
        before = len(web.recorder.events)
        answer = web.post(path.format(key=key), {**APP_FIELDS, "key": key}, csrf=False)
        assert 403 == answer.status_code
        assert "This form has expired" in text(answer)
        assert before == len(web.recorder.events)

    def test_mismatched_token(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        web.token()
        answer = web.client.post(web.url(f"/apps/{key}/disable"), data={"csrftoken": "x" * 40})
        assert 403 == answer.status_code
        assert web.registry.get_app(key).enabled

    def test_tampered_cookie(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        good = web.token()
        forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
        web.client.cookies.set(CSRF_COOKIE, forged)
        answer = web.client.post(web.url(f"/apps/{key}/disable"), data={"csrftoken": forged})
        assert 403 == answer.status_code
        assert web.registry.get_app(key).enabled

    def test_no_cookies_at_all(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        token = web.token()
        web.client.cookies.clear()
        answer = web.client.post(web.url(f"/apps/{key}/disable"), data={"csrftoken": token})
        assert 403 == answer.status_code
        assert web.registry.get_app(key).enabled

    def test_strangers_cookies_do_not_break_it(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        token = web.token()
        answer = web.client.post(
            web.url(f"/apps/{key}/disable"),
            content=f"csrftoken={token}",
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "cookie": f'a<b=1; x="unterminated; {CSRF_COOKIE}={token}; é=ü'.encode(),
            },
        )
        assert 303 == answer.status_code


class TestHeaders:
    """Every answer carries the security headers; cookies are HttpOnly, Lax, and Secure."""

    @pytest.mark.parametrize("path", ["/apps/", "/nowhere", "/static/appregistry.css"])
    def test_security_headers(self, web: Web, path: str) -> None:
        web.sign_in(PROVIDER)
        answer = web.get(path)
        assert CONTENT_SECURITY_POLICY == answer.headers["content-security-policy"]
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert "nosniff" == answer.headers["x-content-type-options"]
        assert "no-referrer" == answer.headers["referrer-policy"]
        assert "DENY" == answer.headers["x-frame-options"]

    def test_pages_are_not_stored(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert "no-store" == web.get("/apps/").headers["cache-control"]

    @pytest.mark.parametrize("https_only", [False, True])
    def test_cookies(self, make_web: Callable[..., Web], https_only: bool) -> None:
        web = make_web(https_only=https_only)
        # A Secure cookie comes back over HTTPS only.
        web.client.base_url = "https://testserver"  # type: ignore[assignment]
        key = web.register().app.key
        web.sign_in(PROVIDER)
        page = web.get("/apps/new")
        answer = web.post(f"/apps/{key}/disable")
        cookies = page.headers.get_list("set-cookie") + answer.headers.get_list("set-cookie")
        assert {"appregistry_csrftoken", "appregistry_session"} == {
            c.split("=", 1)[0] for c in cookies
        }
        for cookie in cookies:
            flags = {part.strip().lower() for part in cookie.split(";")[1:]}
            assert "httponly" in flags
            assert "samesite=lax" in flags
            assert ("secure" in flags) is https_only

    def test_no_inline_script_or_style(self, web: Web) -> None:
        web.register()
        web.sign_in(PROVIDER)
        for path in ("/apps/", "/apps/new", "/accounts/"):
            page = web.get(path).text
            assert "<script>" not in page
            assert "<style" not in page
            assert " style=" not in page
            assert " onclick=" not in page


class TestRequestBounds:
    """Odd requests get 400, 413 or 415 pages, never a 500."""

    def _post(self, web: Web, body: bytes, content_type: str) -> int:
        web.sign_in(PROVIDER)
        web.token()
        return int(
            web.client.post(
                web.url("/apps/new"), content=body, headers={"content-type": content_type}
            ).status_code
        )

    def test_too_large(self, web: Web) -> None:
        form = "application/x-www-form-urlencoded"
        assert 413 == self._post(web, b"name=" + b"x" * 200_000, form)

    def test_not_utf8(self, web: Web) -> None:
        assert 400 == self._post(web, b"name=\xff\xfe", "application/x-www-form-urlencoded")

    @pytest.mark.parametrize("content_type", ["multipart/form-data", "application/json", ""])
    def test_not_a_form(self, web: Web, content_type: str) -> None:
        assert 415 == self._post(web, b"{}", content_type)

    def test_too_many_fields(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        body = f"csrftoken={web.token()}&" + "&".join(f"k{n}=v" for n in range(2000))
        answer = web.client.post(
            web.url("/apps/new"),
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert 400 == answer.status_code


class TestGetChangesNothing:
    """No GET writes: every page is opened by each role and no event follows."""

    def test_every_page(self, web: Web) -> None:
        registered = web.register()
        key = registered.app.key
        web.registry.permit_account("acme", by="admin")
        web.registry.install_app(key, "acme", by="alice")
        before = len(web.recorder.events)
        pages = [
            "/",
            "/apps/",
            "/apps/new",
            f"/apps/{key}",
            f"/apps/{key}/regenerate",
            "/accounts/",
            "/installed/",
            f"/installed/{key}/tokens",
            "/install/",
            f"/apps/{key}/disable",
            f"/installed/{key}/suspend",
            f"/install/{key}",
        ]
        for user in (PROVIDER, ALICE, None):
            web.sign_in(user)
            for path in pages:
                assert web.get(path).status_code < 500
        assert before == len(web.recorder.events)


class TestErrors:
    """Unknown pages are 404 pages; a storage failure is a 503 page, logged, without details."""

    def test_unknown_page(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        page = web.get("/nowhere")
        assert 404 == page.status_code
        assert "Not found" in text(page)

    def test_storage_failure(
        self, make_web: Callable[..., Web], caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken(MemoryStorage):
            # Works while the registry is made (it reads its settings), then fails.
            broken = False

            def transaction(self):  # type: ignore[no-untyped-def]
                if self.broken:
                    raise StorageError("the database is gone")
                return super().transaction()

        storage = Broken()
        web = make_web(storage=storage)
        storage.broken = True
        web.sign_in(PROVIDER)
        with caplog.at_level(logging.ERROR, logger="appregistry.web"):
            page = web.get("/apps/")
        assert 503 == page.status_code
        assert "the database is gone" not in page.text
        assert "storage failed" in caplog.text

    def test_a_failing_sign_in_is_a_500_page(self, caplog: pytest.LogCaptureFixture) -> None:
        def broken(request: object) -> None:
            raise RuntimeError("host bug")

        app = make_app(Registry(storage=MemoryStorage()), current_user=broken)
        with caplog.at_level(logging.ERROR, logger="appregistry.web"), TestClient(app) as client:
            page = client.get("/apps/")
        assert 500 == page.status_code
        assert "Something went wrong" in page.text
        assert "host bug" not in page.text
        assert "host bug" in caplog.text


class TestBoundedCost:
    """A list page costs the same storage calls on page 1 and on page 40 (R26)."""

    @pytest.mark.parametrize(
        ("user", "path"),
        [
            (PROVIDER, "/apps/"),
            (PROVIDER, "/accounts/"),
            (ALICE, "/installed/"),
            (ALICE, "/install/"),
        ],
    )
    def test_first_and_deep_page(self, web: Web, user: object, path: str) -> None:
        for n in range(60):
            app = web.register(name=f"App {n:02d}").app
            web.registry.permit_account(f"acct-{n:02d}", by="admin")
            if n < 45:
                web.registry.permit_account("acme", by="admin")
                web.registry.install_app(app.key, "acme", by="alice")
        web.sign_in(user)  # type: ignore[arg-type]
        costs = []
        for query in ("", "?page=40&per_page=1", "?page=5&per_page=10"):
            before = web.storage.total()
            assert 200 == web.get(f"{path}{query}").status_code
            costs.append(web.storage.total() - before)
        assert 1 == len(set(costs)), costs
        assert costs[0] <= 3

    def test_tokens_page(self, web: Web) -> None:
        registered = web.register()
        web.registry.permit_account("acme", by="admin")
        web.registry.install_app(registered.app.key, "acme", by="alice")
        for _ in range(30):
            web.registry.issue_token(
                registered.app.key, registered.secret, account="acme", approved_by="alice"
            )
        web.sign_in(ALICE)
        costs = []
        for query in ("", "?page=30&per_page=1"):
            before = web.storage.total()
            web.get(f"/installed/{registered.app.key}/tokens{query}")
            costs.append(web.storage.total() - before)
        assert costs[0] == costs[1] <= 5


class TestTemplates:
    """A host's template folder replaces the package's templates, name for name."""

    def test_override_the_layout(self, make_web: Callable[..., Web], tmp_path: Path) -> None:
        folder = tmp_path / "appregistry"
        folder.mkdir()
        (folder / "layout.html").write_text(
            "<!DOCTYPE html><title>Host</title><p>HOST LAYOUT</p>{% block content %}{% endblock %}"
        )
        web = make_web(templates_dir=tmp_path)
        web.sign_in(PROVIDER)
        page = web.get("/apps/")
        assert "HOST LAYOUT" in page.text
        assert "App Registration" in page.text

    def test_autoescape(self, web: Web) -> None:
        web.register(name="<script>alert(1)</script>", description="<b>bold</b>")
        web.sign_in(PROVIDER)
        page = web.get("/apps/").text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;" in page


FORM_FIELDS = [
    "name",
    "description",
    "homepage",
    "image_url",
    "admin_email",
    "admin_phone",
    "trusted",
    "redirect_url",
    "key",
    "token",
    "account",
    "all",
    "search",
    "page",
    "per_page",
    "return_to",
]


class TestNoInputIsA500:
    """Random forms posted to every action, and random queries, never get a 500."""

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        path=st.sampled_from(
            [*POSTS, "/installed/remove", "/install/{key}", "/installed/{key}/tokens/remove"]
        ),
        fields=st.lists(
            st.tuples(st.sampled_from(FORM_FIELDS), st.text(max_size=300)), max_size=12
        ),
    )
    def test_random_posts(
        self, make_web: Callable[..., Web], path: str, fields: list[tuple[str, str]]
    ) -> None:
        web = make_web()
        key = web.register().app.key
        web.registry.permit_account("acme", by="admin")
        for user in (PROVIDER, ALICE):
            web.sign_in(user)
            answer = web.post(path.format(key=key), fields)
            assert answer.status_code < 500, answer.text

    @settings(max_examples=60, deadline=None)
    @given(
        path=st.sampled_from(["/apps/", "/accounts/", "/installed/", "/install/", "/apps/{key}"]),
        query=st.lists(
            st.tuples(st.sampled_from([*FORM_FIELDS, "after", "before"]), st.text(max_size=60)),
            max_size=5,
        ),
    )
    def test_random_queries(self, path: str, query: list[tuple[str, str]]) -> None:
        web = build_web()
        key = web.register().app.key
        web.registry.permit_account("acme", by="admin")
        for user in (PROVIDER, ALICE):
            web.sign_in(user)
            answer = web.get(path.format(key=key), params=query)
            assert answer.status_code < 500, answer.text

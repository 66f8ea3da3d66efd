"""The provider administrator's pages: App Registration, Add/Edit App, Accounts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet

from _web import ALICE, APP_FIELDS, PROVIDER, Web, flash, links, problem, text, value_of
from appregistry import EventKind
from appregistry.web import Role, WebUser

IDN_FIELDS = {
    **APP_FIELDS,
    "homepage": "http://bücher.example/MyApp",
    "admin_email": "myapp@exämple.com",
}


class TestAppRegistration:
    """Every app, with S, App, Description, Instances and Configured; search; pages."""

    def test_the_table_shows_each_app(self, web: Web) -> None:
        long = "I love my App! " * 10
        app = web.register(description=long).app
        web.registry.permit_account("acme", by="admin")
        web.registry.install_app(app.key, "acme", by="alice")
        web.sign_in(PROVIDER)
        page = web.get("/apps/")
        assert 200 == page.status_code
        shown = text(page)
        assert "MyApp" in shown
        assert "Apr 20, 2015" in shown
        assert "1 App(s)" in shown
        # Cut short, with the full text on hover.
        assert f'title="{long.strip()}"' in page.text
        assert web.url(f"/apps/{app.key}") in links(page)
        assert 'aria-label="Disable MyApp"' in page.text

    def test_search_and_page_sizes(self, web: Web) -> None:
        for n in range(12):
            web.register(name=f"App {n:02d}")
        web.register(name="Other")
        web.sign_in(PROVIDER)
        assert "13 App(s)" in text(web.get("/apps/"))
        assert "App 10" not in text(web.get("/apps/"))
        assert "App 10" in text(web.get("/apps/?page=2"))
        assert "App 11" in text(web.get("/apps/?per_page=25"))
        searched = web.get("/apps/?search=other")
        assert "1 App(s)" in text(searched)
        assert "Show All" in text(searched)

    def test_odd_paging_falls_back_to_the_first_page(self, web: Web) -> None:
        web.register()
        web.sign_in(PROVIDER)
        for query in ("page=0", "page=x", "per_page=-1", "per_page=99999", "page=٣"):
            assert 200 == web.get(f"/apps/?{query}").status_code

    def test_an_overlong_search_is_a_problem_beside_the_box(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        page = web.get("/apps/", params={"search": "x" * 300})
        assert 400 == page.status_code
        assert "200" in problem(page, "search")


class TestStatus:
    """S: one click disables or enables an app (R11); a GET changes nothing."""

    def test_disable_then_enable(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        answer = web.post(f"/apps/{key}/disable", {"search": "My"})
        assert 303 == answer.status_code
        assert web.url("/apps/?search=My&per_page=10") == answer.headers["location"]
        assert "MyApp is disabled." == flash(web.follow(answer))
        assert not web.registry.get_app(key).enabled
        web.post(f"/apps/{key}/enable")
        assert web.registry.get_app(key).enabled

    def test_a_get_is_refused(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        assert 405 == web.get(f"/apps/{key}/disable").status_code
        assert web.registry.get_app(key).enabled

    def test_unknown_app_is_404(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert 404 == web.post(f"/apps/{'K' * 32}/disable").status_code


class TestRemoveSelected:
    """Remove Selected removes every selected app, or none."""

    def test_removes_the_selected(self, web: Web) -> None:
        keys = [web.register(name=f"App {n}").app.key for n in range(3)]
        web.sign_in(PROVIDER)
        answer = web.post("/apps/remove", [("key", keys[0]), ("key", keys[2])])
        assert "Removed 2 app(s)." == flash(web.follow(answer))
        assert [keys[1]] == [i.app.key for i in web.registry.list_apps().items]

    def test_an_unknown_key_removes_nothing(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        answer = web.post("/apps/remove", [("key", key), ("key", "K" * 32)])
        assert 404 == answer.status_code
        assert 1 == web.registry.list_apps().total

    def test_nothing_selected(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert "Select the apps to remove first." == flash(web.follow(web.post("/apps/remove")))


class TestAddApp:
    """Add App: the seed's form; the new key and secret are shown once, on the answer."""

    def test_the_form_in_the_seeds_order(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        page = web.get("/apps/new")
        order = [
            "Name",
            "Description",
            "Homepage",
            "Image URL",
            "Admin email",
            "Admin phone",
            "App is trusted",
            "Redirect URL",
            "App ID/key",
            "App secret",
            "Cancel",
            "OK",
        ]
        shown, at = text(page), 0
        for label in order:
            at = shown.find(label, at)
            assert at >= 0, f"{label} is missing or out of order"
        for name in ("name", "description", "homepage", "image_url", "admin_email"):
            assert f'<label for="f-{name}">' in page.text

    def test_ok_registers_and_shows_the_secret_once(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        answer = web.post("/apps/new", {**IDN_FIELDS, "trusted": "on"})
        assert 200 == answer.status_code
        assert "no-store" == answer.headers["cache-control"]
        [listed] = web.registry.list_apps().items
        app = listed.app
        assert ("provider", True) == (app.owner, app.trusted)
        assert app.key in answer.text
        secret = _credential(answer, "secret")
        assert web.registry.authenticate_client(app.key, secret).allowed
        # Never again: not on the edit page, not in a cookie.
        again = web.get(f"/apps/{app.key}")
        assert secret not in again.text
        assert all(secret not in value for value in web.client.cookies.values())
        assert "http://bücher.example/MyApp" == value_of(again, "homepage")
        assert "myapp@exämple.com" == value_of(again, "admin_email")

    def test_every_problem_beside_its_field_and_nothing_written(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        typed = {
            "name": "",
            "description": "kept",
            "homepage": "ftp://example.com",
            "admin_email": "not an email",
            "redirect_url": "http://example.com/cb",
            "admin_phone": "12",
        }
        answer = web.post("/apps/new", typed)
        assert 400 == answer.status_code
        for field in ("name", "homepage", "admin_email", "redirect_url", "admin_phone"):
            assert problem(answer, field), field
        assert "kept" == value_of(answer, "description")
        assert "ftp://example.com" == value_of(answer, "homepage")
        assert 0 == web.registry.list_apps().total
        assert [] == web.recorder.events

    def test_a_problem_beside_its_field_does_not_repeat_the_fields_name(self, web: Web) -> None:
        """The label says which field; the message beside it starts with what is wrong."""
        web.sign_in(PROVIDER)
        typed = {**APP_FIELDS, "admin_email": "not an email", "homepage": "ftp://example.com"}
        answer = web.post("/apps/new", typed)
        assert 400 == answer.status_code
        for field in ("admin_email", "homepage"):
            shown = problem(answer, field)
            assert shown[:1].isupper(), shown
            assert field not in shown
            assert shown.endswith(".")
        assert problem(answer, "admin_email").startswith("Is not a valid email address")

    def test_the_owners_limit_is_a_message(self, make_web: Callable[..., Web]) -> None:
        web = make_web(registry_options={"max_apps_per_owner": 1})
        web.register()
        web.sign_in(PROVIDER)
        answer = web.post("/apps/new", APP_FIELDS)
        assert 400 == answer.status_code
        assert "limit" in text(answer)
        assert 1 == web.registry.list_apps().total


def _credential(page: object, which: str) -> str:
    import re

    found = re.search(
        rf'<code class="credential[^"]*" aria-labelledby="{which}-label"[^>]*>([^<]+)</code>',
        page.text,  # type: ignore[attr-defined]
    )
    assert found, f"no {which} shown"
    return found.group(1)


class TestEditApp:
    """Edit App: the app's fields, saved on OK; the secret is never rendered into it."""

    def test_save(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        form = web.get(f"/apps/{key}")
        assert "MyApp" == value_of(form, "name")
        assert key in form.text
        answer = web.post(f"/apps/{key}", {**APP_FIELDS, "name": "Renamed", "description": "New"})
        assert web.url("/apps/") == answer.headers["location"]
        assert "Saved Renamed." == flash(web.follow(answer))
        app = web.registry.get_app(key)
        assert ("Renamed", "New", False) == (app.name, app.description, app.trusted)

    def test_clearing_optional_fields(self, web: Web) -> None:
        key = web.register(description="Old", admin_phone="+16502530000").app.key
        web.sign_in(PROVIDER)
        web.post(f"/apps/{key}", {**APP_FIELDS, "description": "", "admin_phone": ""})
        app = web.registry.get_app(key)
        assert (None, None) == (app.description, app.admin_phone)

    def test_bad_input_keeps_it_and_changes_nothing(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        before = len(web.recorder.events)
        answer = web.post(f"/apps/{key}", {**APP_FIELDS, "name": "New", "homepage": "nope"})
        assert 400 == answer.status_code
        assert problem(answer, "homepage")
        assert "nope" == value_of(answer, "homepage")
        assert "MyApp" == web.registry.get_app(key).name
        assert before == len(web.recorder.events)

    def test_unknown_key_is_404(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert 404 == web.get(f"/apps/{'K' * 32}").status_code
        assert 404 == web.get("/apps/%E2%98%83").status_code


class TestRegenerate:
    """Regenerate asks first, says the tokens stop working, then shows the new secret once."""

    def test_confirmation_then_new_secret(self, web: Web) -> None:
        registered = web.register(trusted=True)
        key = registered.app.key
        web.registry.permit_account("provider", by="admin")
        issued = web.registry.issue_token(key, registered.secret)
        web.sign_in(PROVIDER)
        asking = web.get(f"/apps/{key}/regenerate")
        assert "every access token" in text(asking)
        assert web.registry.check_token(issued.token).allowed
        answer = web.post(f"/apps/{key}/regenerate")
        assert 200 == answer.status_code
        assert "no-store" == answer.headers["cache-control"]
        secret = _credential(answer, "secret")
        assert secret != registered.secret
        assert web.registry.authenticate_client(key, secret).allowed
        assert not web.registry.check_token(issued.token).allowed


class TestReveal:
    """Reveal shows the secret where the registry keeps it encrypted (R7)."""

    def test_with_an_encryption_key(self, make_web: Callable[..., Web]) -> None:
        web = make_web(
            reveal_secrets=True,
            registry_options={"secret_encryption_key": Fernet.generate_key()},
        )
        registered = web.register()
        web.sign_in(PROVIDER)
        assert "Reveal" in text(web.get(f"/apps/{registered.app.key}"))
        answer = web.post(f"/apps/{registered.app.key}/reveal")
        assert registered.secret == _credential(answer, "secret")

    def test_without_one_the_page_says_so(self, make_web: Callable[..., Web]) -> None:
        web = make_web(reveal_secrets=True)
        registered = web.register()
        web.sign_in(PROVIDER)
        answer = web.post(f"/apps/{registered.app.key}/reveal")
        assert 200 == answer.status_code
        assert "cannot be shown" in text(answer)
        assert registered.secret not in answer.text

    def test_not_offered_unless_configured(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(PROVIDER)
        assert "Reveal" not in text(web.get(f"/apps/{key}"))


class TestAccounts:
    """Permit and forbid accounts; who permitted each and when."""

    def test_permit_and_forbid(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        answer = web.post("/accounts/permit", {"account": "acme"})
        assert "acme may use apps." == flash(web.follow(answer))
        permission = web.registry.get_permission("acme")
        assert permission is not None
        assert "admin" == permission.granted_by
        shown = text(web.get("/accounts/?search=acme"))
        assert "acme" in shown
        assert "admin" in shown
        assert "Apr 20, 2015 09:56:40 UTC" in shown
        answer = web.post("/accounts/forbid", {"account": "acme"})
        assert "acme may no longer use apps." == flash(web.follow(answer))
        assert web.registry.get_permission("acme") is None
        assert (EventKind.ACCOUNT_PERMITTED, EventKind.ACCOUNT_FORBIDDEN) == tuple(
            web.recorder.kinds()
        )

    def test_a_bad_account_is_a_problem_and_nothing_written(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        answer = web.post("/accounts/permit", {"account": " spaced "})
        assert 400 == answer.status_code
        assert problem(answer, "account")
        assert " spaced " == value_of(answer, "account")
        assert [] == web.recorder.events


class TestRoles:
    """The provider's pages refuse account users; nobody signed in is asked to sign in."""

    @pytest.mark.parametrize(
        "path", ["/apps/", "/apps/new", "/accounts/", f"/apps/{'K' * 32}/regenerate"]
    )
    def test_an_account_user_gets_403(self, web: Web, path: str) -> None:
        web.sign_in(ALICE)
        assert 403 == web.get(path).status_code

    def test_an_account_user_cannot_post_either(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(ALICE)
        for path in (f"/apps/{key}/disable", "/apps/remove", f"/apps/{key}/regenerate"):
            assert 403 == web.post(path, {"key": key}).status_code
        assert web.registry.get_app(key).enabled
        assert 1 == web.registry.list_apps().total

    def test_nobody_gets_401(self, web: Web) -> None:
        web.sign_in(None)
        page = web.get("/apps/")
        assert 401 == page.status_code
        assert "Sign in" in text(page)

    def test_nobody_goes_to_the_login_url(self, make_web: Callable[..., Web]) -> None:
        web = make_web(login_url="https://host.example/login")
        answer = web.get("/apps/?page=2")
        assert 303 == answer.status_code
        assert "https://host.example/login?next=%2Fapps%2F%3Fpage%3D2" == answer.headers["location"]

    def test_home_leads_each_role_to_its_page(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert web.url("/apps/") == web.get("/").headers["location"]
        web.sign_in(WebUser("bob", Role.ACCOUNT, "acme"))
        assert web.url("/installed/") == web.get("/").headers["location"]

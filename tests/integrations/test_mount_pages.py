"""The example site of ``docs/web.md``: its own pages, the management pages and OAuth, together.

Driven through Starlette's TestClient as a browser would: the site's sign-in, its session
cookie, the pages' CSRF cookie and form field, and the OAuth endpoints under ``/oauth``.
"""

from __future__ import annotations

import re
from typing import Any

import mount_pages_example
import pytest
from starlette.testclient import TestClient

from appregistry import Registry
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

APP: dict[str, Any] = {
    "name": "Weather",
    "homepage": "https://weather.example/",
    "admin_email": "admin@weather.example",
    "redirect_url": "https://weather.example/callback",
}


@pytest.fixture
def registry() -> Registry:
    return Registry(storage=MemoryStorage(), clock=ManualClock())


@pytest.fixture
def client(registry: Registry) -> TestClient:
    app = mount_pages_example.create_app(registry, secret="a secret for the tests")
    return TestClient(app, base_url="https://site.example")


def sign_in(client: TestClient, name: str) -> None:
    answer = client.post("/login", data={"name": name}, follow_redirects=False)
    assert 303 == answer.status_code, answer.text


def csrf_of(page: str) -> str:
    """The CSRF token a page's form carries, as a browser would send it back."""
    found = re.search(r'name="csrftoken" value="([^"]+)"', page)
    assert found, "the form has no CSRF token"
    return found.group(1)


class TestHostPages:
    """The site's own pages answer beside the mounted ones, and know its session."""

    def test_home(self, client: TestClient) -> None:
        assert "Hello, stranger." in client.get("/").text
        sign_in(client, "alice")
        answer = client.get("/")
        assert (200, True) == (answer.status_code, "Hello, alice." in answer.text)

    def test_next_stays_on_the_site(self, client: TestClient) -> None:
        answer = client.post(
            "/login?next=//evil.example/", data={"name": "alice"}, follow_redirects=False
        )
        assert "/" == answer.headers["location"]


class TestManagementPages:
    """/manage asks the site who is signed in, and sends strangers to the site's sign-in."""

    def test_a_stranger_goes_to_the_sites_sign_in(self, client: TestClient) -> None:
        answer = client.get("/manage/apps/", follow_redirects=False)
        assert answer.status_code in {302, 303, 307}
        assert answer.headers["location"].startswith("/login?next=")

    def test_the_provider_sees_app_registration(self, client: TestClient) -> None:
        sign_in(client, "root")
        answer = client.get("/manage/apps/")
        assert 200 == answer.status_code
        assert "App Registration" in answer.text
        # Links are built under the mount point.
        assert 'href="/manage/apps/new"' in answer.text

    def test_an_account_user_sees_app_management(
        self, client: TestClient, registry: Registry
    ) -> None:
        registry.permit_account("acme", by="root")
        sign_in(client, "alice")
        answer = client.get("/manage/installed/")
        assert (200, True) == (answer.status_code, "App Management" in answer.text)
        assert 403 == client.get("/manage/apps/").status_code

    def test_a_post_with_the_forms_token_registers_an_app(
        self, client: TestClient, registry: Registry
    ) -> None:
        sign_in(client, "root")
        form = client.get("/manage/apps/new")
        answer = client.post(
            "/manage/apps/new",
            data={**APP, "csrftoken": csrf_of(form.text)},
            follow_redirects=False,
        )
        assert 200 == answer.status_code, answer.text  # the secret is shown once, here
        apps = registry.list_apps().items
        assert [("Weather", "provider")] == [(a.app.name, a.app.owner) for a in apps]

    def test_a_post_without_the_token_is_refused(
        self, client: TestClient, registry: Registry
    ) -> None:
        sign_in(client, "root")
        client.get("/manage/apps/new")
        answer = client.post("/manage/apps/new", data=APP, follow_redirects=False)
        assert 403 == answer.status_code
        assert 0 == registry.list_apps().total


class TestOAuth:
    """The OAuth endpoints under /oauth: metadata, tokens, and the consent page's sign-in."""

    def test_metadata(self, client: TestClient) -> None:
        answer = client.get("/oauth/.well-known/oauth-authorization-server")
        assert 200 == answer.status_code
        data = answer.json()
        assert "https://site.example/oauth/token.php" == data["token_endpoint"]
        assert "https://site.example/oauth/authorize.php" == data["authorization_endpoint"]

    def test_a_trusted_apps_token_works_on_uapi_me(
        self, client: TestClient, registry: Registry
    ) -> None:
        registry.permit_account("provider", by="root")
        new = registry.register_app("provider", trusted=True, **APP)
        answer = client.post(
            "/oauth/token.php",
            data={
                "client_id": new.app.key,
                "client_secret": new.secret,
                "grant_type": "client_credentials",
            },
        )
        assert 200 == answer.status_code, answer.text
        token = answer.json()["access_token"]
        me = client.get("/oauth/uapi/me", headers={"Authorization": f"Bearer {token}"})
        assert (200, "provider") == (me.status_code, me.json()["account"])

    def test_the_consent_page_uses_the_sites_session(
        self, client: TestClient, registry: Registry
    ) -> None:
        registry.permit_account("acme", by="root")
        new = registry.register_app("provider", **APP)
        query = {
            "response_type": "code",
            "client_id": new.app.key,
            "redirect_uri": APP["redirect_url"],
            "state": "a-state-of-sixteen-chars",
        }
        stranger = client.get("/oauth/authorize.php", params=query, follow_redirects=False)
        assert stranger.headers["location"].startswith("/login?next=")
        sign_in(client, "alice")
        page = client.get("/oauth/authorize.php", params=query)
        assert (200, True) == (page.status_code, "Weather" in page.text)

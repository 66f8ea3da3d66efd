"""The seeds' story, clicked through in Chromium; tokens come from the OAuth 2.0 endpoint.

The provider registers an app with an internationalized homepage, sees its key and secret
once, and permits an account; a user of that account installs it; a real HTTP client gets
tokens through the authorization-code flow; the user opens the tokens list, searches it and
removes one, suspends and resumes the app; the provider disables and enables it,
regenerates its secret and removes it with Remove Selected.
"""

from __future__ import annotations

import re
import urllib.parse

import requests
from playwright.sync_api import Page, Route, expect

from appregistry import Registry

REDIRECT = "https://example.com/MyApp/handler"


# -- small helpers ------------------------------------------------------------------------------


def sign_in(page: Page, role: str, account: str, name: str) -> None:
    """Sign in on the development sign-in page."""
    page.goto("/manage/sign-in")
    page.get_by_label(role).check()
    page.get_by_label("Account", exact=True).fill(account)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Sign in").click()


def message(page: Page, text: str) -> None:
    """The page's one-line message says ``text``."""
    expect(page.get_by_role("status").filter(has_text=text)).to_be_visible()


def me(base_url: str, token: str) -> int:
    """The status ``/uapi/me`` answers for ``token``: 200 while it acts, 401 when refused."""
    return requests.get(
        f"{base_url}/uapi/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).status_code


def token_through_consent(page: Page, base_url: str, key: str, secret: str, agent: str) -> str:
    """Approve the app on the consent page, then exchange the code with a real HTTP client."""
    arrived: list[str] = []

    def back_at_the_app(route: Route) -> None:
        arrived.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="back at the app")

    page.route("https://example.com/**", back_at_the_app)
    query = {"response_type": "code", "client_id": key, "redirect_uri": REDIRECT}
    page.goto(f"/oauth/authorize.php?{urllib.parse.urlencode({**query, 'state': 's' * 16})}")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(re.compile(r"^https://example\.com/"))
    page.unroute("https://example.com/**")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(arrived[-1]).query)["code"][0]
    answer = requests.post(
        f"{base_url}/oauth/token.php",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": key,
            "client_secret": secret,
        },
        headers={"User-Agent": agent},
        timeout=10,
    )
    assert 200 == answer.status_code, answer.text
    return str(answer.json()["access_token"])


def shown_credential(page: Page, label: str) -> str:
    """The key or secret the page shows under ``label``."""
    return page.get_by_label(label).inner_text().strip()


# -- the story, phase by phase -------------------------------------------------------------------


def provider_registers_an_app(page: Page) -> tuple[str, str]:
    """Add App with an internationalized homepage; the key and secret show once."""
    sign_in(page, "Provider administrator", "provider", "admin")
    expect(page.get_by_role("heading", name="App Registration")).to_be_visible()
    page.get_by_role("link", name="Add App").first.click()
    page.get_by_label("Name").fill("MyApp")
    page.get_by_label("Description").fill("I love my App!")
    page.get_by_label("Homepage").fill("http://bücher.example/MyApp")
    page.get_by_label("Admin email").fill("myapp@exämple.com")
    page.get_by_label("Redirect URL").fill(REDIRECT)
    page.get_by_role("button", name="OK").click()
    message(page, "MyApp is registered")
    key = shown_credential(page, "App ID/key")
    secret = shown_credential(page, "App secret")
    assert (32, 32) == (len(key), len(secret))
    expect(page.get_by_label("Homepage")).to_have_value("http://bücher.example/MyApp")
    page.goto("/manage/apps/")
    page.get_by_role("link", name="MyApp").click()
    expect(page.get_by_text(secret)).to_have_count(0)
    return key, secret


def provider_permits(page: Page, account: str) -> None:
    """Accounts: permit ``account`` to use apps."""
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Account to permit").fill(account)
    page.get_by_role("button", name="Permit").click()
    message(page, f"{account} may use apps.")
    expect(page.get_by_role("cell", name=account, exact=True)).to_be_visible()


def user_installs_the_app(page: Page) -> None:
    """A user of "acme" installs MyApp; App Management records who."""
    sign_in(page, "Account user", "acme", "alice")
    expect(page.get_by_role("heading", name="App Management")).to_be_visible()
    page.get_by_role("link", name="Install Apps").first.click()
    page.get_by_role("button", name="Install MyApp").click()
    message(page, "MyApp is installed on acme.")
    expect(page.get_by_role("cell", name="alice")).to_be_visible()


def user_removes_a_token(page: Page) -> None:
    """The tokens dialog: Expires, User Agent, search, Show All, remove the curl token."""
    page.goto("/manage/installed/")
    page.get_by_role("link", name="2 token(s)").click()
    dialog = page.get_by_role("dialog")
    title = "Manage Access Tokens for App MyApp"
    expect(dialog.get_by_role("heading", name=title)).to_be_visible()
    expect(dialog.get_by_role("columnheader", name="Expires")).to_be_visible()
    expect(dialog.get_by_role("columnheader", name="User Agent")).to_be_visible()
    expect(dialog.get_by_text("libwww-perl 5.833")).to_be_visible()
    expect(dialog.get_by_text(re.compile(r"\d\d:\d\d:\d\d UTC")).first).to_be_visible()
    dialog.get_by_label("Search by user agent").fill("curl")
    dialog.get_by_role("button", name="Search").click()
    expect(dialog.get_by_text("1 token(s)")).to_be_visible()
    expect(dialog.get_by_text("libwww-perl 5.833")).to_have_count(0)
    dialog.get_by_role("link", name="Show All").click()
    expect(dialog.get_by_text("2 token(s)")).to_be_visible()
    dialog.get_by_role("row").filter(has_text="curl/8.5").get_by_role("checkbox").check()
    dialog.get_by_role("button", name="Remove Selected").click()
    expect(dialog.get_by_text("Removed 1 token(s).")).to_be_visible()
    dialog.get_by_role("link", name="Dismiss").click()
    expect(page.get_by_role("link", name="1 token(s)")).to_be_visible()


def click_status(page: Page, button: str, said: str) -> None:
    """Click an S-column button and see its message."""
    page.get_by_role("button", name=button).click()
    message(page, said)


def provider_regenerates_the_secret(page: Page, secret: str) -> None:
    """Edit App, Regenerate, read the warning, confirm: a new secret shows once."""
    page.get_by_role("link", name="MyApp").click()
    page.get_by_role("link", name="Regenerate").click()
    expect(page.get_by_text("every access token of MyApp")).to_be_visible()
    page.get_by_role("button", name="Regenerate the secret").click()
    message(page, "MyApp has a new secret")
    assert secret != shown_credential(page, "App secret")


def provider_removes_the_app(page: Page) -> None:
    """App Registration: select MyApp, Remove Selected."""
    page.get_by_role("link", name="App Registration").click()
    page.get_by_label("Select MyApp").check()
    page.get_by_role("button", name="Remove Selected").click()
    message(page, "Removed 1 app(s).")
    expect(page.get_by_text("0 App(s)")).to_be_visible()


class TestSeedsStory:
    """The provider, then a user of an account, then the provider again, by clicking."""

    def test_the_story(self, page: Page, base_url: str, registry: Registry) -> None:
        key, secret = provider_registers_an_app(page)
        provider_permits(page, "acme")
        user_installs_the_app(page)

        kept = token_through_consent(page, base_url, key, secret, "libwww-perl 5.833")
        removed = token_through_consent(page, base_url, key, secret, "curl/8.5")
        assert (200, 200) == (me(base_url, kept), me(base_url, removed))
        user_removes_a_token(page)
        assert (200, 401) == (me(base_url, kept), me(base_url, removed))

        click_status(page, "Suspend MyApp", "MyApp is suspended.")
        assert 401 == me(base_url, kept)
        click_status(page, "Resume MyApp", "MyApp is resumed.")
        assert 200 == me(base_url, kept)

        sign_in(page, "Provider administrator", "provider", "admin")
        click_status(page, "Disable MyApp", "MyApp is disabled.")
        assert 401 == me(base_url, kept)
        click_status(page, "Enable MyApp", "MyApp is enabled.")
        assert 200 == me(base_url, kept)

        provider_regenerates_the_secret(page, secret)
        assert 401 == me(base_url, kept)
        provider_removes_the_app(page)
        assert 0 == registry.list_apps().total


class TestWithoutJavaScript:
    """With scripts off, the tokens list is a page of its own and the header box still works."""

    def test_tokens_page(self, browser: object, base_url: str, registry: Registry) -> None:
        registered = registry.register_app(
            "acme",
            name="Own",
            homepage="https://own.example/",
            admin_email="admin@own.example",
            redirect_url=REDIRECT,
            trusted=True,
        )
        registry.permit_account("acme", by="admin")
        issued = [registry.issue_token(registered.app.key, registered.secret) for _ in range(2)]
        context = browser.new_context(base_url=base_url, java_script_enabled=False)  # type: ignore[attr-defined]
        page = context.new_page()
        sign_in(page, "Account user", "acme", "alice")
        page.get_by_role("link", name="2 token(s)").click()
        expect(page).to_have_url(re.compile(r"/manage/installed/\w+/tokens$"))
        page.get_by_label("Select every token of Own").check()
        page.get_by_role("button", name="Remove Selected").click()
        message(page, "Removed 2 token(s).")
        assert not any(registry.check_token(t.token).allowed for t in issued)
        context.close()


class TestKeyboard:
    """The header box, Remove Selected and the dialog work from the keyboard."""

    def test_select_all_and_escape(self, page: Page, registry: Registry) -> None:
        registered = registry.register_app(
            "acme",
            name="Own",
            homepage="https://own.example/",
            admin_email="admin@own.example",
            redirect_url=REDIRECT,
            trusted=True,
        )
        registry.permit_account("acme", by="admin")
        for _ in range(3):
            registry.issue_token(registered.app.key, registered.secret)
        sign_in(page, "Account user", "acme", "alice")
        page.get_by_role("link", name="3 token(s)").focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        dialog.get_by_label("Select every token of Own").focus()
        page.keyboard.press("Space")
        rows = dialog.get_by_role("row").get_by_role("checkbox")
        expect(rows.nth(1)).to_be_checked()
        expect(rows.nth(3)).to_be_checked()
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

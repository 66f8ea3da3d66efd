"""``make screenshots``: a PNG of every page, on a registry filled as in the seeds' story.

Usage: ``PYTHONPATH=tests python -m browser.screenshots OUTPUT_FOLDER``; needs Chromium.
"""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from appregistry import Registry
from appregistry.storage.memory import MemoryStorage
from browser.live import CHROMIUM_ARGS, chromium, serving

REDIRECT = "https://example.com/MyApp/handler"


def _registry() -> tuple[Registry, str, str]:
    """Apps, accounts, an installation with tokens; MyApp's key and its secret."""
    registry = Registry(storage=MemoryStorage())
    myapp = registry.register_app(
        "provider",
        name="MyApp",
        description="I love my App!",
        homepage="http://bücher.example/MyApp",
        admin_email="myapp@exämple.com",
        redirect_url=REDIRECT,
    )
    others = [
        ("Calendar Sync", "Keeps the account's calendars in step with the phone system.", True),
        (
            "CRM Connector",
            "Shows who is calling from the CRM, and logs every call back " * 2,
            False,
        ),
        ("Fax Relay", "", False),
        ("Wallboard", "Live queue statistics on a big screen.", False),
    ]
    for name, description, trusted in others:
        registered = registry.register_app(
            "provider",
            name=name,
            description=description or None,
            homepage=f"https://{name.lower().replace(' ', '-')}.example/",
            admin_email=f"admin@{name.lower().replace(' ', '-')}.example",
            redirect_url=f"https://{name.lower().replace(' ', '-')}.example/cb",
            trusted=trusted,
        )
        if name == "Fax Relay":
            registry.disable_app(registered.app.key)
    for account in ("acme", "globex", "initech"):
        registry.permit_account(account, by="admin")
    registry.install_app(myapp.app.key, "acme", by="alice")
    for agent in ("libwww-perl 5.833", "curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)"):
        registry.issue_token(
            myapp.app.key, myapp.secret, account="acme", approved_by="alice", user_agent=agent
        )
    wallboard = registry.list_apps(search="Wallboard").items[0].app.key
    registry.install_app(wallboard, "acme", by="bob")
    registry.suspend_installation(wallboard, "acme")
    return registry, myapp.app.key, myapp.secret


def _sign_in(page: Page, role: str, account: str, name: str) -> None:
    page.goto("/manage/sign-in")
    page.get_by_label(role).check()
    page.get_by_label("Account", exact=True).fill(account)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Sign in").click()


def _provider_pages(page: Page, shot: Callable[[str], None], key: str) -> None:
    page.goto("/manage/sign-in")
    shot("sign-in")
    _sign_in(page, "Provider administrator", "provider", "admin")
    shot("app-registration")
    page.get_by_role("link", name="Add App").first.click()
    shot("add-app")
    page.get_by_label("Name").fill("")
    page.get_by_label("Homepage").fill("ftp://bücher.example")
    page.get_by_label("Admin email").fill("not an email")
    page.get_by_label("Redirect URL").fill("http://example.com/cb")
    page.get_by_role("button", name="OK").click()
    shot("add-app-problems")
    page.get_by_label("Name").fill("Phone Book")
    page.get_by_label("Homepage").fill("https://phonebook.example/")
    page.get_by_label("Admin email").fill("admin@phonebook.example")
    page.get_by_label("Redirect URL").fill("https://phonebook.example/cb")
    page.get_by_role("button", name="OK").click()
    shot("app-registered-secret-once")
    page.goto(f"/manage/apps/{key}")
    shot("edit-app")
    page.get_by_role("link", name="Regenerate").click()
    shot("regenerate-confirm")
    page.goto("/manage/accounts/")
    shot("accounts")


def _account_pages(page: Page, shot: Callable[[str], None], key: str) -> None:
    _sign_in(page, "Account user", "acme", "alice")
    shot("app-management")
    page.get_by_role("link", name="3 token(s)").click()
    page.get_by_role("dialog").get_by_role("heading").first.wait_for()
    shot("tokens-dialog")
    page.goto(f"/manage/installed/{key}/tokens")
    shot("tokens-page")
    page.goto("/manage/install/")
    shot("install-apps")
    page.goto("/manage/apps/")
    shot("error-403")
    page.goto("/manage/nowhere")
    shot("error-404")
    query = {"response_type": "code", "client_id": key, "redirect_uri": REDIRECT, "state": "s" * 16}
    page.goto(f"/oauth/authorize.php?{urllib.parse.urlencode(query)}")
    shot("consent")


def main(folder: Path) -> None:
    """Save every page as ``folder/NN-name.png``."""
    path = chromium()
    if path is None:
        sys.exit("screenshots need chromium: apt-get install chromium (make chromium)")
    folder.mkdir(parents=True, exist_ok=True)
    registry, key, _secret = _registry()
    count = 0
    with serving(registry) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=base, viewport={"width": 1200, "height": 760})

        def shot(name: str) -> None:
            nonlocal count
            count += 1
            page.screenshot(path=str(folder / f"{count:02d}-{name}.png"), full_page=True)

        _provider_pages(page, shot, key)
        _account_pages(page, shot, key)
        browser.close()
    print(f"{count} screenshots in {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/screenshots"))

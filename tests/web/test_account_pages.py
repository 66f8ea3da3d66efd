"""An account user's pages: App Management, an app's tokens, installing apps."""

from __future__ import annotations

from _web import ALICE, MALLORY, PROVIDER, Web, flash, links, text
from appregistry import IssuedToken, RegisteredApp


def installed(web: Web, owner: str = "provider", **changes: object) -> RegisteredApp:
    """An app of ``owner`` installed on ALICE's account "acme", which may use apps."""
    registered = web.register(owner, **changes)
    web.registry.permit_account("acme", by="admin")
    web.registry.install_app(registered.app.key, "acme", by="alice")
    return registered


def token(web: Web, registered: RegisteredApp, agent: str = "libwww-perl 5.833") -> IssuedToken:
    """A token of the app for "acme", approved by alice."""
    return web.registry.issue_token(
        registered.app.key, registered.secret, account="acme", approved_by="alice", user_agent=agent
    )


class TestAppManagement:
    """The apps on the account: S, App, Description, Access Tokens, Configured, who installed."""

    def test_the_table(self, web: Web) -> None:
        registered = installed(web, description="I love my App!")
        token(web, registered)
        web.sign_in(ALICE)
        page = web.get("/installed/")
        assert 200 == page.status_code
        shown = text(page)
        for expected in ("MyApp", "I love my App!", "1 token(s)", "Apr 20, 2015 09:56:40 UTC"):
            assert expected in shown
        assert "alice" in shown
        assert "1 App(s)" in shown
        assert web.url(f"/installed/{registered.app.key}/tokens") in links(page)
        # The homepage opens in a new window, without a handle on this one.
        assert 'target="_blank" rel="noopener noreferrer"' in page.text

    def test_only_this_accounts_apps(self, web: Web) -> None:
        installed(web)
        web.registry.permit_account("other", by="admin")
        web.sign_in(MALLORY)
        assert "0 App(s)" in text(web.get("/installed/"))

    def test_a_trusted_apps_own_tokens_on_its_owners_page(self, web: Web) -> None:
        registered = web.register("acme", name="Own", trusted=True)
        web.registry.permit_account("acme", by="admin")
        web.registry.issue_token(registered.app.key, registered.secret)
        web.sign_in(ALICE)
        page = web.get("/installed/")
        assert "Own" in text(page)
        assert "1 token(s)" in text(page)
        tokens = web.get(f"/installed/{registered.app.key}/tokens")
        assert 200 == tokens.status_code
        assert "1 token(s)" in text(tokens)

    def test_an_account_without_the_permission_gets_403(self, web: Web) -> None:
        web.sign_in(ALICE)
        for path in ("/installed/", "/install/"):
            page = web.get(path)
            assert 403 == page.status_code
            assert "may not use apps" in text(page)

    def test_the_provider_gets_403(self, web: Web) -> None:
        web.sign_in(PROVIDER)
        assert 403 == web.get("/installed/").status_code


class TestSuspendResume:
    """S: suspend and resume the app on this account (R12); its tokens here stop and start."""

    def test_suspend_then_resume(self, web: Web) -> None:
        registered = installed(web)
        issued = token(web, registered)
        key = registered.app.key
        web.sign_in(ALICE)
        answer = web.post(f"/installed/{key}/suspend")
        assert "MyApp is suspended." == flash(web.follow(answer))
        assert not web.registry.check_token(issued.token).allowed
        web.post(f"/installed/{key}/resume")
        assert web.registry.check_token(issued.token).allowed

    def test_another_accounts_app_is_403_and_unknown_is_404(self, web: Web) -> None:
        registered = installed(web)
        web.registry.permit_account("other", by="admin")
        web.sign_in(MALLORY)
        assert 403 == web.post(f"/installed/{registered.app.key}/suspend").status_code
        assert 403 == web.get(f"/installed/{registered.app.key}/tokens").status_code
        assert 404 == web.post(f"/installed/{'K' * 32}/suspend").status_code
        [listed] = web.registry.list_installations("acme").items
        assert listed.installation is not None
        assert not listed.installation.suspended


class TestRemoveSelected:
    """Remove Selected uninstalls every selected app from the account, or none (R15)."""

    def test_uninstalls(self, web: Web) -> None:
        registered = installed(web)
        issued = token(web, registered)
        web.sign_in(ALICE)
        answer = web.post("/installed/remove", {"key": registered.app.key})
        assert "Removed 1 app(s)." == flash(web.follow(answer))
        assert 0 == web.registry.list_installations("acme").total
        assert not web.registry.check_token(issued.token).allowed

    def test_one_not_installed_here_uninstalls_none(self, web: Web) -> None:
        registered = installed(web)
        other = web.register(name="Other").app.key
        web.sign_in(ALICE)
        answer = web.post("/installed/remove", [("key", registered.app.key), ("key", other)])
        assert 404 == answer.status_code
        assert 1 == web.registry.list_installations("acme").total


class TestTokens:
    """Manage Access Tokens for App X: Expires, User Agent, search, Remove Selected."""

    def test_the_list(self, web: Web) -> None:
        registered = installed(web)
        token(web, registered, "libwww-perl 5.833")
        token(web, registered, "curl/8.5")
        web.sign_in(ALICE)
        page = web.get(f"/installed/{registered.app.key}/tokens")
        shown = text(page)
        assert "Manage Access Tokens for App MyApp" in shown
        assert "Active Access Tokens" in shown
        assert "Apr 20, 2015 10:56:40 UTC" in shown
        assert "libwww-perl 5.833" in shown
        assert "2 token(s)" in shown
        assert "Dismiss" in shown
        searched = text(web.get(f"/installed/{registered.app.key}/tokens?search=curl"))
        assert "1 token(s)" in searched
        assert "libwww" not in searched
        assert "Show All" in searched

    def test_the_list_names_who_approved_each_token(self, web: Web) -> None:
        registered = installed(web)
        web.registry.issue_token(
            registered.app.key, registered.secret, account="acme", approved_by="approver-7"
        )
        web.sign_in(ALICE)
        shown = text(web.get(f"/installed/{registered.app.key}/tokens"))
        assert "Approved by" in shown
        assert "approver-7" in shown

    def test_last_used_beside_expires_and_sorted_by_it(self, web: Web) -> None:
        """Each token's last use, "never" when unused; the header link lists by it, kept
        across pages."""
        registered = installed(web)
        used = token(web, registered, "used-agent")
        token(web, registered, "unused-agent")
        assert web.registry.check_token(used.token).allowed
        web.sign_in(ALICE)
        path = f"/installed/{registered.app.key}/tokens"
        by_expiry = web.get(path)
        by_use = web.get(f"{path}?order=last_used&per_page=1")
        shown = text(by_use)
        assert "Last used" in text(by_expiry)
        assert "never" in text(by_expiry)
        assert web.url(f"{path}?per_page=10&order=last_used") in links(by_expiry)
        assert "used-agent" in shown
        assert "unused-agent" not in shown  # the unused one comes last, on page 2
        assert "Apr 20, 2015 09:56:40 UTC" in shown  # the check's time, as Expires shows times
        (after,) = [link for link in links(by_use) if "after=" in link]
        assert "order=last_used" in after
        second = text(web.get(after.removeprefix(web.url(""))))
        assert "unused-agent" in second
        assert "never" in second

    def test_remove_selected(self, web: Web) -> None:
        registered = installed(web)
        first, second = token(web, registered), token(web, registered)
        key = registered.app.key
        web.sign_in(ALICE)
        answer = web.post(f"/installed/{key}/tokens/remove", {"token": first.record.token_id})
        assert web.url(f"/installed/{key}/tokens?per_page=10") == answer.headers["location"]
        assert "Removed 1 token(s)." == flash(web.follow(answer))
        assert not web.registry.check_token(first.token).allowed
        assert web.registry.check_token(second.token).allowed

    def test_the_header_box_removes_every_token(self, web: Web) -> None:
        registered = installed(web)
        issued = [token(web, registered) for _ in range(3)]
        web.sign_in(ALICE)
        answer = web.post(
            f"/installed/{registered.app.key}/tokens/remove",
            {"all": "1", "return_to": "installed"},
        )
        assert web.url("/installed/") == answer.headers["location"]
        assert "Removed 3 token(s)." == flash(web.follow(answer))
        assert not any(web.registry.check_token(t.token).allowed for t in issued)

    def test_another_accounts_token_is_not_removed(self, web: Web) -> None:
        registered = installed(web)
        theirs = token(web, registered)
        mine = web.register("other", name="Mine")
        web.registry.permit_account("other", by="admin")
        web.registry.install_app(mine.app.key, "other", by="mallory")
        web.sign_in(MALLORY)
        answer = web.post(
            f"/installed/{mine.app.key}/tokens/remove", {"token": theirs.record.token_id}
        )
        assert 404 == answer.status_code
        assert web.registry.check_token(theirs.token).allowed

    def test_no_token_in_any_page_or_url(self, web: Web) -> None:
        registered = installed(web)
        issued = token(web, registered)
        web.sign_in(ALICE)
        for path in ("/installed/", f"/installed/{registered.app.key}/tokens"):
            assert issued.token not in web.get(path).text


class TestInstall:
    """Installing an app the account may use records the signed-in user and the time."""

    def test_install(self, web: Web) -> None:
        key = web.register().app.key
        disabled = web.register(name="Off").app.key
        web.registry.disable_app(disabled)
        web.registry.permit_account("acme", by="admin")
        web.sign_in(ALICE)
        page = web.get("/install/")
        assert 'aria-label="Install MyApp"' in page.text
        assert 'aria-label="Install Off"' not in page.text
        answer = web.post(f"/install/{key}")
        assert "MyApp is installed on acme." == flash(web.follow(answer))
        [listed] = web.registry.list_installations("acme").items
        assert listed.installation is not None
        assert ("alice", web.clock()) == (
            listed.installation.installed_by,
            listed.installation.installed_at,
        )

    def test_a_disabled_app_is_refused(self, web: Web) -> None:
        key = web.register().app.key
        web.registry.disable_app(key)
        web.registry.permit_account("acme", by="admin")
        web.sign_in(ALICE)
        assert 403 == web.post(f"/install/{key}").status_code
        assert 0 == web.registry.list_installations("acme").total

    def test_without_the_permission(self, web: Web) -> None:
        key = web.register().app.key
        web.sign_in(ALICE)
        assert 403 == web.post(f"/install/{key}").status_code

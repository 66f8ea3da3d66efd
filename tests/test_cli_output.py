"""What the command line prints, run in process on a memory registry with a manual clock.

The subprocess tests in ``test_cli.py`` show the CLI as users run it; these pin the details of
its tables, messages and help, where a subprocess per case would only be slower.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from _support import APP_FIELDS
from appregistry import Registry
from appregistry.cli import build_parser, execute, main
from appregistry.cli._commands import Outcome
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

# The seeds' date, in a zone three hours east of UTC: what is shown must say UTC.
T0 = datetime(2015, 4, 20, 12, 56, 40, tzinfo=timezone(timedelta(hours=3)))


@pytest.fixture
def registry() -> Registry:
    return Registry(storage=MemoryStorage(), clock=ManualClock(T0))


def run(registry: Registry, *argv: str) -> Outcome:
    """One command, parsed and run as ``appregistry`` runs it."""
    return execute(registry, build_parser().parse_args(list(argv)))


def installed_app(registry: Registry) -> tuple[str, str]:
    """The seeds' app, installed on org-1 by alice; its key and secret."""
    new = registry.register_app("sp-admin", **APP_FIELDS)
    registry.permit_account("org-1", by="sp-admin")
    registry.install_app(new.app.key, "org-1", by="alice")
    return new.app.key, new.secret


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


class TestTimes:
    """Times in tables carry their time zone; the installed-apps list shows the time too."""

    def test_the_expires_column_says_utc(self, registry: Registry) -> None:
        key, secret = installed_app(registry)
        registry.issue_token(
            key, secret, account="org-1", approved_by="alice", user_agent="libwww-perl 5.833"
        )

        table = run(registry, "tokens", "list", key, "org-1").text

        assert re.search(r"Apr 20, 2015 10:56:40 UTC  never +libwww-perl 5\.833", table)

    def test_the_installed_apps_list_shows_date_time_and_zone(self, registry: Registry) -> None:
        installed_app(registry)

        table = run(registry, "installs", "list", "org-1").text

        assert "Apr 20, 2015 09:56:40 UTC" in table


class TestTokenList:
    """The token list names who approved each token; nobody, for client credentials."""

    def test_the_approved_by_column(self, registry: Registry) -> None:
        key, secret = installed_app(registry)
        registry.issue_token(key, secret, account="org-1", approved_by="approver-7")

        lines = run(registry, "tokens", "list", key, "org-1").text.splitlines()
        listed = run(registry, "--json", "tokens", "list", key, "org-1").data

        assert lines[0].rstrip().endswith("User Agent  Approved by")
        assert lines[1].rstrip().endswith("approver-7")
        assert ["approver-7"] == [item["approved_by"] for item in listed["items"]]


class TestLastUsed:
    """The token list shows each token's last use beside its expiry, and sorts by it."""

    def test_the_last_used_column_and_order(self, registry: Registry) -> None:
        key, secret = installed_app(registry)
        used, _ = (
            registry.issue_token(key, secret, account="org-1", approved_by="alice")
            for _ in range(2)
        )
        checked = run(registry, "--json", "tokens", "check", used.token).data
        assert registry.check_token(used.token).allowed

        lines = run(registry, "tokens", "list", key, "org-1", "--order", "last_used").text
        listed = run(registry, "--json", "tokens", "list", key, "org-1", "--order", "last_used")

        header, first, second, *_ = lines.splitlines()
        assert re.search(r"Expires +Last used +User Agent", header)
        assert first.startswith(used.record.token_id)
        assert "Apr 20, 2015 10:56:40 UTC  Apr 20, 2015 09:56:40 UTC" in first
        assert re.search(r"UTC  never +alice", second)
        assert [T0, None] == [
            item["last_used_at"] and datetime.fromisoformat(item["last_used_at"])
            for item in listed.data["items"]
        ]
        assert None is checked["last_used_at"]  # as stored before that check

    def test_an_unknown_order_is_refused_with_the_choices(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit):
            main(["tokens", "list", "K", "--order", "newest"])
        assert "'expires', 'last_used'" in capsys.readouterr().err


class TestErrors:
    """A field problem names its field once, and a refused token says one reason (R25)."""

    def test_a_problem_names_its_field_once(self, registry: Registry) -> None:
        outcome = run(
            registry, "apps", "register", "--owner", "sp-admin", "--name", "MyApp",
            "--homepage", "http://example.com/", "--admin-email", "not-an-email",
            "--redirect-url", "https://example.com/cb",
        )  # fmt: skip

        (line,) = outcome.text.splitlines()
        assert 2 == outcome.exit_code
        assert line.startswith("admin_email: not a valid email address")
        assert 1 == line.count("admin_email")
        assert "admin_email is not a valid email address" in outcome.data["problems"][0]["message"]

    def test_a_token_for_an_account_needs_the_approving_user(self, registry: Registry) -> None:
        key, secret = installed_app(registry)

        outcome = run(registry, "tokens", "issue", "--key", key, "--secret", secret,
                      "--account", "org-1")  # fmt: skip
        approved = run(registry, "--json", "tokens", "issue", "--key", key, "--secret", secret,
                       "--account", "org-1", "--approved-by", "alice")  # fmt: skip

        assert (2, "approved_by: required [required]") == (outcome.exit_code, outcome.text)
        assert (0, "user_approval") == (approved.exit_code, approved.data["grant"])

    def test_failed_authentication_is_one_reason(self, registry: Registry) -> None:
        key, secret = installed_app(registry)
        trusted = registry.register_app("sp-admin", **APP_FIELDS, trusted=True).app.key
        removed = registry.register_app("sp-admin", **APP_FIELDS, trusted=True).app.key
        registry.disable_app(trusted)
        registry.remove_app(removed)
        wrong = "W" * 32

        outcomes = [
            run(registry, "tokens", "issue", "--key", "K" * 32, "--secret", wrong),
            run(registry, "tokens", "issue", "--key", key, "--secret", wrong,
                "--account", "org-1", "--approved-by", "alice"),
            run(registry, "tokens", "issue", "--key", trusted, "--secret", wrong),
            run(registry, "tokens", "issue", "--key", removed, "--secret", wrong),
        ]  # fmt: skip

        assert {
            (1, "denied: bad_credentials (invalid client credentials, or the app may not act)")
        } == {(outcome.exit_code, outcome.text) for outcome in outcomes}
        assert secret not in "".join(outcome.text for outcome in outcomes)


class TestHelp:
    """``apps register`` and ``apps edit`` name the same fields with the same metavars."""

    def test_register_and_edit_use_the_same_metavars(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        flag = re.compile(r"(--[a-z-]+) ([A-Z]+)\b")
        register = dict(flag.findall(help_text(capsys, "apps", "register")))
        edit = dict(flag.findall(help_text(capsys, "apps", "edit")))

        shared = {
            "--name": "NAME",
            "--homepage": "URL",
            "--admin-email": "EMAIL",
            "--redirect-url": "URL",
            "--description": "TEXT",
            "--image-url": "URL",
            "--admin-phone": "PHONE",
        }
        assert shared.items() <= register.items()
        assert shared.items() <= edit.items()


class TestSelectionsAndLists:
    """Several keys at once, all or none; the provider's lists; pages by cursor."""

    def test_apps_remove_takes_several_keys_all_or_none(self, registry: Registry) -> None:
        keys = [registry.register_app("sp-admin", **APP_FIELDS).app.key for _ in range(3)]

        refused = run(registry, "apps", "remove", keys[0], "U" * 32)
        removed = run(registry, "--json", "apps", "remove", keys[0], keys[1], keys[0])

        assert (1, {"removed": keys[:2]}) == (refused.exit_code, removed.data)
        assert [keys[2]] == [item.app.key for item in registry.list_apps().items]

    def test_installs_remove_takes_several_keys_before_the_account(
        self, registry: Registry
    ) -> None:
        first, _ = installed_app(registry)
        second = registry.register_app("sp-admin", **APP_FIELDS).app.key
        registry.install_app(second, "org-1", by="alice")

        outcome = run(registry, "--json", "installs", "remove", first, second, "org-1")

        assert (0, [first, second], 0) == (
            outcome.exit_code,
            outcome.data["keys"],
            registry.list_installations("org-1").total,
        )

    def test_the_provider_lists(self, registry: Registry) -> None:
        key, secret = installed_app(registry)
        registry.permit_account("org-2", by="root")
        registry.install_app(key, "org-2", by="bob")
        for account in ("org-2", "org-1"):
            registry.issue_token(key, secret, account=account, approved_by="alice")

        accounts = run(registry, "accounts", "list").text.splitlines()
        installs = run(registry, "installs", "accounts", key).text.splitlines()
        tokens = run(registry, "tokens", "list", key).text.splitlines()

        assert ["Account", "Permitted", "By"] == accounts[0].split()
        assert ["org-1", "org-2"] == [line.split()[0] for line in accounts[1:3]]
        assert ["org-1", "org-2"] == [line.split()[1] for line in installs[1:3]]
        assert ["Account", "Token", "ID"] == tokens[0].split()[:3]
        assert ["org-1", "org-2"] == [line.split()[0] for line in tokens[1:3]]

    def test_pages_by_cursor(self, registry: Registry) -> None:
        for _ in range(3):
            registry.register_app("sp-admin", **APP_FIELDS)
        first = run(registry, "--json", "apps", "list", "--per-page", "2").data

        second = run(registry, "--json", "apps", "list", "--per-page", "2", "--page", "2",
                     "--after", first["after"]).data  # fmt: skip

        assert (1, None, second["before"] is not None) == (
            len(second["items"]),
            second["after"],
            True,
        )

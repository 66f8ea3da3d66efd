"""The command line, run as users run it: a subprocess on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _support import RunCLI, cli_runner, run_cli
from _support import cli_json as _json

APP_ARGS = [
    "--owner", "sp-admin", "--name", "MyApp", "--description", "I love my App!",
    "--homepage", "http://bücher.example/MyApp", "--admin-email", "myapp@exämple.com",
    "--redirect-url", "https://example.com/MyApp/handler",
]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunCLI]:
    """The CLI on a fresh SQLite file, and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield cli_runner(f"sqlite:///{tmp_path / 'cli.sqlite3'}", tmp_path)
    else:
        url = request.getfixturevalue("postgres_schema_url")
        yield cli_runner(url, tmp_path)


def _register(cli: RunCLI, *extra: str) -> dict[str, Any]:
    result = cli("--json", "apps", "register", *APP_ARGS, *extra)
    assert 0 == result.returncode, result.stderr
    data: dict[str, Any] = _json(result)
    return data


def _setup_installed(cli: RunCLI) -> tuple[str, str]:
    app = _register(cli)
    assert 0 == cli("accounts", "permit", "org-1", "--by", "sp-admin").returncode
    assert 0 == cli("installs", "add", app["key"], "org-1", "--by", "alice").returncode
    return app["key"], app["secret"]


def _issue(cli: RunCLI, key: str, secret: str, *extra: str) -> dict[str, Any]:
    result = cli("--json", "tokens", "issue", "--key", key, "--secret", "-", *extra, stdin=secret)
    assert 0 == result.returncode, result.stderr
    data: dict[str, Any] = _json(result)
    return data


class TestApps:
    """`apps` subcommands register, show, list, edit, enable, disable and remove apps."""

    def test_register_prints_key_and_secret_once(self, cli: RunCLI) -> None:
        data = _register(cli)
        assert 32 == len(data["key"]) == len(data["secret"])
        shown = cli("--json", "apps", "show", data["key"])
        assert data["secret"] not in shown.stdout
        assert "xn--bcher-kva.example" in _json(shown)["homepage"]

    def test_show_displays_unicode_hosts(self, cli: RunCLI) -> None:
        data = _register(cli)
        result = cli("apps", "show", data["key"])
        assert 0 == result.returncode
        assert "http://bücher.example/MyApp" in result.stdout

    def test_list_shows_instances_and_footer(self, cli: RunCLI) -> None:
        key, _ = _setup_installed(cli)
        result = cli("apps", "list")
        assert 0 == result.returncode
        assert "1 App(s)" in result.stdout
        row = next(line for line in result.stdout.splitlines() if key in line)
        assert ["on", "MyApp", key] == row.split()[:3]
        page = _json(cli("--json", "apps", "list", "--search", "LOVE"))
        assert (1, 1) == (page["total"], page["items"][0]["instances"])

    def test_list_pages(self, cli: RunCLI) -> None:
        for _ in range(3):
            _register(cli)
        page = _json(cli("--json", "apps", "list", "--per-page", "2", "--page", "2"))
        assert (3, 2, 1) == (page["total"], page["pages"], len(page["items"]))

    def test_edit_changes_only_given_fields(self, cli: RunCLI) -> None:
        key = _register(cli)["key"]
        result = cli("--json", "apps", "edit", key, "--name", "Renamed", "--trusted")
        assert 0 == result.returncode, result.stderr
        app = _json(result)
        assert ("Renamed", True, "I love my App!") == (
            app["name"],
            app["trusted"],
            app["description"],
        )
        cleared = _json(cli("--json", "apps", "edit", key, "--description", ""))
        assert cleared["description"] is None

    def test_enable_disable_remove(self, cli: RunCLI) -> None:
        key = _register(cli)["key"]
        assert _json(cli("--json", "apps", "disable", key))["enabled"] is False
        assert _json(cli("--json", "apps", "enable", key))["enabled"] is True
        assert 0 == cli("apps", "remove", key).returncode
        missing = cli("apps", "show", key)
        assert 1 == missing.returncode
        assert 1 == len(missing.stderr.strip().splitlines())

    def test_regenerate_secret_voids_old_secret_and_tokens(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        token = _issue(cli, key, secret, "--account", "org-1", "--approved-by", "alice")["token"]
        new = _json(cli("--json", "apps", "regenerate-secret", key))
        assert new["secret"] != secret
        assert 1 == cli("tokens", "check", token).returncode
        stale = cli(
            "tokens",
            "issue",
            "--key",
            key,
            "--secret",
            secret,
            "--account",
            "org-1",
            "--approved-by",
            "alice",
        )
        assert 1 == stale.returncode
        assert (
            0
            == cli(
                "tokens",
                "issue",
                "--key",
                key,
                "--secret",
                new["secret"],
                "--account",
                "org-1",
                "--approved-by",
                "alice",
            ).returncode
        )


class TestAccountsAndInstalls:
    """`accounts` and `installs` follow the permission and installation rules."""

    def test_install_needs_permission(self, cli: RunCLI) -> None:
        key = _register(cli)["key"]
        refused = cli("--json", "installs", "add", key, "org-1", "--by", "alice")
        assert 1 == refused.returncode
        assert "apps_not_permitted" == _json(refused)["reason"]

    def test_installs_list_suspend_resume_remove(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        token = _issue(
            cli,
            key,
            secret,
            "--account",
            "org-1",
            "--approved-by",
            "alice",
            "--user-agent",
            "curl/8",
        )["token"]
        listing = cli("installs", "list", "org-1")
        assert "1 token(s)" in listing.stdout
        assert "alice" in listing.stdout
        assert 0 == cli("installs", "suspend", key, "org-1").returncode
        assert "installation_suspended" == _json(cli("--json", "tokens", "check", token))["reason"]
        assert 0 == cli("installs", "resume", key, "org-1").returncode
        assert 0 == cli("tokens", "check", token).returncode
        assert 0 == cli("installs", "remove", key, "org-1").returncode
        assert "token_unknown" == _json(cli("--json", "tokens", "check", token))["reason"]

    def test_forbid_stops_tokens_and_permit_revives(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        token = _issue(cli, key, secret, "--account", "org-1", "--approved-by", "alice")["token"]
        assert 0 == cli("accounts", "forbid", "org-1").returncode
        assert "apps_not_permitted" == _json(cli("--json", "tokens", "check", token))["reason"]
        assert 0 == cli("accounts", "permit", "org-1", "--by", "sp-admin").returncode
        assert 0 == cli("tokens", "check", token).returncode


class TestTokens:
    """`tokens` issue, check, list, remove and purge."""

    def test_issue_json_fields(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        data = _issue(cli, key, secret, "--account", "org-1", "--approved-by", "alice")
        assert {"token", "token_id", "expires_at", "expires_in", "key", "account"} <= set(data)
        assert 3600 == data["expires_in"]

    def test_trusted_app_client_credentials(self, cli: RunCLI) -> None:
        app = _register(cli, "--trusted")
        assert 0 == cli("accounts", "permit", "sp-admin", "--by", "root").returncode
        token = _issue(cli, app["key"], app["secret"])
        assert "sp-admin" == token["account"]
        check = cli("--json", "tokens", "check", "-", stdin=token["token"])
        assert {"allowed": True, "reason": "allowed"}.items() <= _json(check).items()

    def test_untrusted_app_without_account_is_refused(self, cli: RunCLI) -> None:
        app = _register(cli)
        cli("accounts", "permit", "sp-admin", "--by", "root")
        refused = cli("--json", "tokens", "issue", "--key", app["key"], "--secret", app["secret"])
        assert 1 == refused.returncode
        assert "app_not_trusted" == _json(refused)["reason"]
        assert app["secret"] not in refused.stdout + refused.stderr

    def test_check_exit_codes(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        token = _issue(cli, key, secret, "--account", "org-1", "--approved-by", "alice")["token"]
        assert 0 == cli("tokens", "check", token).returncode
        cli("apps", "disable", key)
        denied = cli("tokens", "check", token)
        assert (1, "denied: app_disabled") == (denied.returncode, denied.stdout.strip())
        unknown = cli("--json", "tokens", "check", "not-a-token")
        assert {"allowed": False, "reason": "token_unknown"} == _json(unknown)

    def test_list_search_and_remove(self, cli: RunCLI) -> None:
        key, secret = _setup_installed(cli)
        perl = _issue(
            cli,
            key,
            secret,
            "--account",
            "org-1",
            "--approved-by",
            "alice",
            "--user-agent",
            "libwww-perl 5.833",
        )
        _issue(
            cli,
            key,
            secret,
            "--account",
            "org-1",
            "--approved-by",
            "alice",
            "--user-agent",
            "curl/8",
        )
        listing = cli("tokens", "list", key, "org-1")
        assert "2 token(s)" in listing.stdout
        assert "libwww-perl 5.833" in listing.stdout
        found = _json(cli("--json", "tokens", "list", key, "org-1", "--search", "PERL"))
        assert [perl["token_id"]] == [t["token_id"] for t in found["items"]]
        assert 0 == cli("tokens", "remove", perl["token_id"]).returncode
        assert 1 == cli("tokens", "check", perl["token"]).returncode
        assert 1 == _json(cli("--json", "tokens", "remove", "--all", key, "org-1"))["removed"]
        assert 1 == cli("tokens", "remove", "no-such-id").returncode

    def test_purge(self, cli: RunCLI) -> None:
        result = cli("--json", "tokens", "purge")
        data = _json(result)
        assert (0, 0, False) == (result.returncode, data["purged"], data["dry_run"])


class TestBadInput:
    """Bad input exits 2, lists every field problem on stderr and writes nothing."""

    def test_every_field_problem_reported(self, cli: RunCLI) -> None:
        result = cli(
            "apps", "register", "--owner", "sp-admin", "--name", " ",
            "--homepage", "ftp://example.com", "--admin-email", "not-an-email",
            "--redirect-url", "http://example.com/cb", "--admin-phone", "12",
        )  # fmt: skip
        assert 2 == result.returncode
        fields = {line.split(":")[0] for line in result.stderr.splitlines()}
        assert {"name", "homepage", "admin_email", "redirect_url", "admin_phone"} == fields
        assert "Traceback" not in result.stderr
        assert 0 == _json(cli("--json", "apps", "list"))["total"]

    def test_json_error_document(self, cli: RunCLI) -> None:
        result = cli("--json", "apps", "list", "--search", "x" * 500)
        assert 2 == result.returncode
        assert "validation" == _json(result)["error"]

    def test_bad_per_page_is_a_usage_error(self, cli: RunCLI) -> None:
        assert 2 == cli("apps", "list", "--per-page", "5000").returncode


class TestDatabaseErrors:
    """A database that cannot be opened exits 2 with a message naming it, no traceback."""

    def test_unsupported_url(self, tmp_path: Path) -> None:
        result = cli_runner("mysql://nowhere/db", tmp_path)("apps", "list")
        assert 2 == result.returncode
        assert "mysql://nowhere/db" in result.stderr
        assert "Traceback" not in result.stderr

    def test_not_an_appregistry_file(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("just some notes, not a database\n" * 100)
        before = path.read_bytes()
        result = cli_runner(f"sqlite:///{path}", tmp_path)("apps", "list")
        assert 2 == result.returncode
        assert "notes.txt" in result.stderr
        assert "Traceback" not in result.stderr
        assert before == path.read_bytes()

    def test_unreachable_postgres_names_host_not_password(self, tmp_path: Path) -> None:
        url = "postgresql://app:hunter2@127.0.0.1:1/apps"
        result = cli_runner(url, tmp_path)("apps", "list")
        assert 2 == result.returncode
        assert "127.0.0.1" in result.stderr
        assert "hunter2" not in result.stdout + result.stderr


class TestHelpAndDemo:
    """Every level has help with an example; the demo walks an app's story."""

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["apps"],
            ["apps", "register"],
            ["apps", "edit"],
            ["installs", "add"],
            ["tokens", "issue"],
            ["tokens", "remove"],
            ["tokens", "check"],
        ],
    )
    def test_help(self, tmp_path: Path, argv: list[str]) -> None:
        result = cli_runner("memory:", tmp_path)(*argv, "--help")
        assert 0 == result.returncode
        assert "usage: appregistry" in result.stdout
        if argv != ["apps"]:  # a group lists its actions; the root and leaves show examples
            assert "example:" in result.stdout

    def test_default_database_is_sqlite_in_working_directory(self, tmp_path: Path) -> None:
        result = run_cli("apps", "list", cwd=tmp_path)
        assert 0 == result.returncode, result.stderr
        assert (tmp_path / "appregistry.sqlite3").exists()

    def test_demo(self, tmp_path: Path) -> None:
        result = run_cli("demo", cwd=tmp_path, timeout=120)
        assert 0 == result.returncode, result.stdout + result.stderr
        out = result.stdout
        for reason in ("app_disabled", "token_unknown", "bad_credentials"):
            assert f"denied: {reason}" in out
        assert "Every step behaved as the rules say." in out
        assert "http://bücher.example/MyApp" in out
        assert list(tmp_path.iterdir()) == []

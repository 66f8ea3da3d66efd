"""The rotation subcommands, run as users run them: a subprocess on a real SQLite file."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from _support import RunCLI, cli_runner
from _support import cli_json as _json

APP_ARGS = [
    "--owner", "sp-admin", "--name", "MyApp", "--trusted",
    "--homepage", "http://example.com/MyApp", "--admin-email", "myapp@example.com",
    "--redirect-url", "https://example.com/MyApp/handler",
]  # fmt: skip


@pytest.fixture
def cli(tmp_path: Path) -> RunCLI:
    """The CLI on a fresh SQLite file; ``keys`` sets ``$APPREGISTRY_ENCRYPTION_KEY``."""
    return cli_runner(f"sqlite:///{tmp_path / 'cli.sqlite3'}", tmp_path)


def _register(cli: RunCLI, *, keys: str | None = None) -> dict[str, Any]:
    result = cli("--json", "apps", "register", *APP_ARGS, keys=keys)
    assert 0 == result.returncode, result.stderr
    data: dict[str, Any] = _json(result)
    assert 0 == cli("accounts", "permit", "sp-admin", "--by", "root").returncode
    return data


def _issue(cli: RunCLI, key: str, secret: str) -> subprocess.CompletedProcess[str]:
    return cli("--json", "tokens", "issue", "--key", key, "--secret", "-", stdin=secret)


def _key() -> str:
    return Fernet.generate_key().decode()


class TestRotateSecret:
    """`apps rotate-secret` makes a new secret; the old one works until the deadline."""

    def test_grace_keeps_the_old_secret_and_the_tokens(self, cli: RunCLI) -> None:
        app = _register(cli)
        token = _json(_issue(cli, app["key"], app["secret"]))["token"]
        before = datetime.now(UTC)
        result = cli("--json", "apps", "rotate-secret", app["key"], "--grace", "7d")
        after = datetime.now(UTC)

        assert 0 == result.returncode, result.stderr
        rotated = _json(result)
        until = datetime.fromisoformat(rotated["old_secret_valid_until"])
        assert before + timedelta(days=7) <= until <= after + timedelta(days=7)
        assert (app["key"], 32) == (rotated["key"], len(rotated["secret"]))
        assert app["secret"] != rotated["secret"]
        assert [0, 0] == [
            _issue(cli, app["key"], s).returncode for s in (app["secret"], rotated["secret"])
        ]
        assert 0 == cli("tokens", "check", "-", stdin=token).returncode

    def test_until_takes_an_instant_with_a_zone(self, cli: RunCLI) -> None:
        app = _register(cli)
        until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
        local = until.astimezone(datetime.now().astimezone().tzinfo).isoformat()
        result = cli("--json", "apps", "rotate-secret", app["key"], "--until", local)

        assert 0 == result.returncode, result.stderr
        assert until.isoformat() == _json(result)["old_secret_valid_until"]

    def test_text_output_shows_the_secret_and_the_deadline(self, cli: RunCLI) -> None:
        app = _register(cli)
        result = cli("apps", "rotate-secret", app["key"], "--until", "2100-01-01T00:00:00Z")

        # Far beyond 30 days: refused, nothing printed on standard output.
        assert (2, "") == (result.returncode, result.stdout)
        assert "old_secret_valid_until" in result.stderr
        result = cli("apps", "rotate-secret", app["key"], "--grace", "12h")
        lines = result.stdout.splitlines()
        assert 0 == result.returncode, result.stderr
        assert lines[1].startswith("The previous secret works until ")
        assert f"App ID/key  {app['key']}" == lines[2]
        assert ("App", "secret", 32) == (*lines[3].split()[:2], len(lines[3].split()[-1]))

    @pytest.mark.parametrize(
        ("deadline", "code"),
        [
            (["--grace", "31d"], "too_far"),
            (["--until", "2000-01-01T00:00:00+00:00"], "not_in_future"),
            (["--until", "2999-01-01T00:00:00"], "not_aware"),
        ],
    )
    def test_a_bad_deadline_is_refused_with_its_problem(
        self, cli: RunCLI, deadline: list[str], code: str
    ) -> None:
        app = _register(cli)
        result = cli("--json", "apps", "rotate-secret", app["key"], *deadline)

        assert 2 == result.returncode
        assert [{"field": "old_secret_valid_until", "code": code}] == [
            {"field": p["field"], "code": p["code"]} for p in _json(result)["problems"]
        ]
        assert 0 == _issue(cli, app["key"], app["secret"]).returncode

    @pytest.mark.parametrize(
        "arguments",
        [
            [],
            ["--grace", "7"],
            ["--grace", "7y"],
            ["--grace", "0d"],
            ["--until", "next week"],
            ["--grace", "7d", "--until", "2030-01-01T00:00:00Z"],
        ],
    )
    def test_a_malformed_deadline_is_a_usage_error(self, cli: RunCLI, arguments: list[str]) -> None:
        result = cli("apps", "rotate-secret", "K" * 32, *arguments)

        assert (2, "") == (result.returncode, result.stdout)
        assert "usage:" in result.stderr

    def test_an_unknown_app_is_not_found(self, cli: RunCLI) -> None:
        result = cli("--json", "apps", "rotate-secret", "K" * 32, "--grace", "1d")

        assert (1, "not_found") == (result.returncode, _json(result)["error"])


class TestReencryptSecrets:
    """`apps reencrypt-secrets` moves every secret to the newest key; it prints no key."""

    def test_secrets_move_to_the_newest_key(self, cli: RunCLI) -> None:
        old, new = _key(), _key()
        apps = [_register(cli, keys=old) for _ in range(3)]
        moved = cli("--json", "apps", "reencrypt-secrets", "--batch-size", "2", keys=f"{new},{old}")
        again = cli("--json", "apps", "reencrypt-secrets", keys=f" {new} , {old} ")
        newest_only = cli("--json", "apps", "reencrypt-secrets", keys=new)
        oldest_only = cli("--json", "apps", "reencrypt-secrets", keys=old)

        assert (0, {"reencrypted": 3}) == (moved.returncode, _json(moved))
        assert (0, {"reencrypted": 0}) == (again.returncode, _json(again))
        assert (0, {"reencrypted": 0}) == (newest_only.returncode, _json(newest_only))
        # Once the rotation has run, the storage is the new key's: the old one alone is
        # refused before any command runs (ConfigurationError), with a way out.
        assert (2, "configuration") == (oldest_only.returncode, _json(oldest_only)["error"])
        assert "rotating keys" in oldest_only.stderr
        said = "".join(r.stdout + r.stderr for r in (moved, again, newest_only, oldest_only))
        assert [] == [v for v in (old, new, *(a["secret"] for a in apps)) if v in said]

    def test_text_output_counts(self, cli: RunCLI) -> None:
        old, new = _key(), _key()
        _register(cli, keys=old)
        result = cli("apps", "reencrypt-secrets", keys=f"{new},{old}")

        assert (0, "1 secret(s) re-encrypted with the newest key\n") == (
            result.returncode,
            result.stdout,
        )

    def test_without_a_key_it_says_what_is_needed(self, cli: RunCLI) -> None:
        _register(cli)
        result = cli("apps", "reencrypt-secrets")

        assert 2 == result.returncode
        assert "APPREGISTRY_ENCRYPTION_KEY" in result.stderr

    def test_a_malformed_key_is_refused_without_echoing_it(self, cli: RunCLI) -> None:
        bad = "not-a-fernet-key-at-all"
        result = cli("apps", "reencrypt-secrets", keys=f"{_key()},{bad}")

        assert 2 == result.returncode
        assert "encryption_key" in result.stderr
        assert bad not in result.stderr + result.stdout

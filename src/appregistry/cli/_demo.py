"""``appregistry demo``: an app's life, from registration to tokens, told through the CLI.

Every step is a real command line, parsed by the same parser and run by the same handlers as
``appregistry`` itself, on a fresh SQLite file in a temporary folder.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any, TextIO

from .._registry import Registry
from . import build_parser, execute, open_cli_registry

__all__ = ["run_demo"]

_APP = {
    "owner": "sp-admin",
    "name": "MyApp",
    "description": "I love my App!",
    "homepage": "http://bücher.example/MyApp",
    "admin_email": "myapp@exämple.com",
    "redirect_url": "https://example.com/MyApp/handler",
}
_ACCOUNT = "org-1"


class _Walk:
    def __init__(self, registry: Registry, out: TextIO) -> None:
        self._registry = registry
        self._out = out
        self._parser = build_parser()
        self.failures: list[str] = []

    def say(self, text: str) -> None:
        self._out.write(f"\n# {text}\n")

    def run(self, *argv: str, expect: int = 0, show: str | None = None) -> Any:
        """Run one command; ``show`` replaces secrets in the echoed command line."""
        self._out.write(f"$ appregistry {show or shlex.join(argv)}\n")
        outcome = execute(self._registry, self._parser.parse_args(list(argv)))
        for line in outcome.text.splitlines():
            self._out.write(f"  {line}\n")
        if outcome.exit_code != expect:
            self.failures.append(
                f"{argv[0]} {argv[1]}: exit {outcome.exit_code}, expected {expect}"
            )
        return outcome.data


def _story(walk: _Walk) -> None:
    walk.say("The provider registers an app; its homepage and admin email use IDNs.")
    new = walk.run(
        "apps", "register",
        "--owner", _APP["owner"], "--name", _APP["name"], "--description", _APP["description"],
        "--homepage", _APP["homepage"], "--admin-email", _APP["admin_email"],
        "--redirect-url", _APP["redirect_url"],
    )  # fmt: skip
    key, secret = new["key"], new["secret"]
    walk.run("apps", "show", key)

    def issue(*extra: str, expect: int = 0, shown: str = "***") -> Any:
        """``tokens issue`` of the app for org-1, approved by alice; the secret is not echoed."""
        argv = ["--account", _ACCOUNT, "--approved-by", "alice", *extra]
        return walk.run(
            "tokens", "issue", "--key", key, "--secret", secret, *argv,
            expect=expect, show=f"tokens issue --key {key} --secret {shown} {shlex.join(argv)}",
        )  # fmt: skip

    walk.say("The service provider lets account org-1 use apps; a user there installs MyApp.")
    walk.run("accounts", "permit", _ACCOUNT, "--by", "sp-admin")
    walk.run("installs", "add", key, _ACCOUNT, "--by", "alice")

    walk.say("Alice approves two access tokens of the app for org-1.")
    first = issue("--user-agent", "libwww-perl 5.833")
    second = issue("--user-agent", "curl/8.5.0")
    walk.run("installs", "list", _ACCOUNT)
    walk.run("tokens", "list", key, _ACCOUNT)
    walk.run("apps", "list")
    walk.run("tokens", "check", first["token"], show="tokens check <first token>")

    walk.say("The provider disables the app: its tokens stop acting, and it gets no new ones.")
    walk.run("apps", "disable", key)
    walk.run("tokens", "check", first["token"], expect=1, show="tokens check <first token>")
    issue(expect=1)

    walk.say("Enabled again, the unexpired tokens work again.")
    walk.run("apps", "enable", key)
    walk.run("tokens", "check", first["token"], show="tokens check <first token>")

    walk.say("The first token was compromised: remove it. The app may still get new ones.")
    walk.run("tokens", "remove", first["token_id"])
    walk.run("tokens", "check", first["token"], expect=1, show="tokens check <first token>")
    third = issue()
    walk.run("tokens", "check", third["token"], show="tokens check <new token>")

    walk.say("Regenerating the secret voids the old secret and every token of the app.")
    walk.run("apps", "regenerate-secret", key)
    walk.run("tokens", "check", second["token"], expect=1, show="tokens check <second token>")
    walk.run("tokens", "check", third["token"], expect=1, show="tokens check <new token>")
    issue(expect=1, shown="<old secret>")
    walk.run("installs", "list", _ACCOUNT)

    walk.say(
        "Removing the app removes its installations and tokens; its key never works again, and "
        "is answered as a wrong secret is."
    )
    walk.run("apps", "remove", key)
    issue(expect=1)
    walk.run("apps", "list")


def run_demo(out: TextIO, *, url: str | None = None) -> int:
    """Tell the story on ``url`` (default: a new SQLite file in a temporary folder).

    Returns 0 when every step behaved as the rules say, 1 otherwise.
    """
    with tempfile.TemporaryDirectory(prefix="appregistry-demo-") as folder:
        database = url or f"sqlite:///{Path(folder) / 'demo.sqlite3'}"
        out.write(f"appregistry demo on {url or 'a fresh SQLite file in a temporary folder'}\n")
        with open_cli_registry(database) as registry:
            walk = _Walk(registry, out)
            _story(walk)
    if walk.failures:
        out.write("\nThe demo did not go as the rules say:\n")
        out.writelines(f"  {failure}\n" for failure in walk.failures)
        return 1
    out.write("\nEvery step behaved as the rules say.\n")
    return 0

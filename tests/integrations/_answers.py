"""The table of expected answers, and a registry with a token for each of its rows.

``tests/data/bearer_answers.csv`` holds one row per kind of request (no token, empty,
doubled, malformed, unknown, expired, denied, valid) with the answer every adapter must give.
Each adapter's test module sends every row through its framework's own test client and
checks the answer with `check_answer`; a new case is one line of the table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from appregistry import AccessRequest, Action, Decision, Policy, Registry
from appregistry.integrations import TokenGuard
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "data" / "bearer_answers.csv"
REALM = "example"


@dataclass(frozen=True)
class Case:
    """A row of the table: a request's token parts, and the answer it must get."""

    name: str
    authorization: tuple[str, ...]  # one value per Authorization header sent
    query: str
    status: int
    error: str | None
    account: str | None

    def headers(self, tokens: dict[str, str]) -> list[str]:
        """The Authorization header values, with the world's tokens in place."""
        return [value.format(**tokens) for value in self.authorization]

    def joined(self, tokens: dict[str, str]) -> str | None:
        """The header values as one, as a WSGI server joins repeated headers (or ``None``)."""
        values = self.headers(tokens)
        return ", ".join(values) if values else None

    def query_string(self, tokens: dict[str, str]) -> str:
        """The query string, with the world's tokens in place."""
        return self.query.format(**tokens)


def _cases() -> list[Case]:
    with TABLE.open(newline="", encoding="utf-8") as file:
        return [
            Case(
                row["case"],
                tuple(part.strip() for part in row["authorization"].split("|") if part.strip()),
                row["query"],
                int(row["status"]),
                row["error"] or None,
                row["account"] or None,
            )
            for row in csv.DictReader(file)
        ]


CASES = _cases()


def blocked_accounts(request: AccessRequest, now: datetime) -> Decision | None:
    """A host rule: tokens acting for ``blocked-org`` do not work, whatever its permission."""
    if request.action is Action.USE_TOKEN and request.account == "blocked-org":
        return Decision.deny("account_blocked", "the host blocked this account")
    return None


@dataclass
class World:
    """A registry with one token for each kind of token in the table, and a guard on it."""

    registry: Registry
    clock: ManualClock
    tokens: dict[str, str]
    guard: TokenGuard


def make_world() -> World:
    """Build the registry and its tokens; the clock is past the ``expired`` token's life."""
    clock = ManualClock()
    registry = Registry(
        storage=MemoryStorage(), clock=clock, policy=Policy(extra_rules=[blocked_accounts])
    )
    fields: dict[str, Any] = {
        "homepage": "https://example.com/",
        "admin_email": "admin@example.com",
        "redirect_url": "https://example.com/callback",
    }
    for account in ("acme", "globex", "blocked-org", "initech"):
        registry.permit_account(account, by="provider")

    def trusted(owner: str, name: str) -> tuple[str, str]:
        new = registry.register_app(owner, name=name, trusted=True, **fields)
        return new.app.key, new.secret

    weather = trusted("acme", "Weather")
    expired = registry.issue_token(*weather).token
    clock.advance(timedelta(hours=2))
    old = trusted("acme", "Old")
    mail = registry.register_app("acme", name="Mail", **fields)
    registry.install_app(mail.app.key, "globex", by="alice")
    forbidden_app = trusted("initech", "Reports")
    tokens = {
        "valid": registry.issue_token(*weather).token,
        "expired": expired,
        "disabled": registry.issue_token(*old).token,
        "installed": registry.issue_token(
            mail.app.key, mail.secret, account="globex", approved_by="alice"
        ).token,
        "blocked": registry.issue_token(*trusted("blocked-org", "Blocked")).token,
        "forbidden": registry.issue_token(*forbidden_app).token,
        "unknown": "Zm9vYmFyYmF6cXV4" * 3,
    }
    # A second installation, to be suspended, leaves the "installed" token working.
    registry.permit_account("umbrella", by="provider")
    registry.install_app(mail.app.key, "umbrella", by="bob")
    tokens["suspended"] = registry.issue_token(
        mail.app.key, mail.secret, account="umbrella", approved_by="bob"
    ).token
    registry.disable_app(old[0])
    registry.suspend_installation(mail.app.key, "umbrella")
    registry.forbid_account("initech")
    return World(registry, clock, tokens, TokenGuard(registry, realm=REALM))


Headers = Iterable[tuple[str, str]]
Expect = Callable[[Case, int, Headers, str], None]


def _fold(headers: Headers) -> dict[str, str]:
    folded: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        folded[key] = f"{folded[key]}, {value}" if key in folded else value
    return folded


def check_answer(world: World, case: Case, status: int, headers: Headers, body: str) -> None:
    """Checks an answer against a row: status, challenge, ``Vary``, account, no token shown."""
    found = _fold(headers)
    assert case.status == status, body
    assert "authorization" in {v.strip().lower() for v in found.get("vary", "").split(",")}
    for token in world.tokens.values():
        assert token not in body
        assert all(token not in value for value in found.values())
    if case.status == 200:
        assert case.account == json.loads(body)["account"]
        return
    assert "no-store" == found.get("cache-control")
    challenge = found["www-authenticate"]
    if case.error is None:
        assert f'Bearer realm="{REALM}"' == challenge
    else:
        prefix = f'Bearer realm="{REALM}", error="{case.error}", error_description="'
        assert challenge.startswith(prefix), challenge
        description = challenge.removeprefix(prefix).removesuffix('"')
        assert description in body

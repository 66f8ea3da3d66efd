"""The data the benchmarks run on, made once and loaded into every backend alike.

Apps, accounts (all permitted to use apps), installations, and rows of access tokens. Apps are
registered through the library with imported credentials, so every backend has the same keys;
token rows carry the digest the library would store for their plaintext, computed here (the
setup checks that the library agrees: every sample token must check ``allowed``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from appregistry import Grant

from ._harness import Sizes

#: The registries' pepper; known here so the raw baselines can digest tokens themselves.
PEPPER = b"benchmark pepper: not a production key"
# The label the library's token digests start with (appregistry/_credentials.py).
_TOKEN_LABEL = b"appregistry/token/v1\x00"
USER_AGENT = "libwww-perl 5.833"
TOKEN_LIFETIME = timedelta(hours=1)
#: The owner of the apps the app-list rows page through, and the account they are installed on.
LIST_OWNER = "lister"
LIST_ACCOUNT = "browser"


class TokenDigest:
    """The library's token digest, keyed BLAKE2s-256, with the keyed state prepared once.

    The key is HMAC-SHA256(`PEPPER`, the token label), as the library derives it. This is
    the cheapest way CPython offers to compute the digest the library stores, so the SQL
    baselines, which must find the same rows, use it too.
    """

    def __init__(self, pepper: bytes = PEPPER) -> None:
        key = hmac.digest(pepper, _TOKEN_LABEL, "sha256")
        self._copy = hashlib.blake2s(key=key).copy

    def __call__(self, token: str) -> bytes:
        state = self._copy()
        state.update(token.encode())
        return state.digest()


class TokenRow(NamedTuple):
    """A token as storage keeps it (no plaintext)."""

    token_id: str
    digest: bytes
    app_key: str
    account: str
    grant: Grant
    issued_at: datetime
    expires_at: datetime
    user_agent: str | None


@dataclass(frozen=True)
class AppInfo:
    """An app of the world: its imported key and secret, owner and trust."""

    key: str
    secret: str
    owner: str
    trusted: bool


@dataclass
class Tokens:
    """Rows to load, and the plaintext of each (same order)."""

    rows: list[TokenRow]
    plaintext: list[str]


def _random_text(count: int, length: int) -> list[str]:
    """``count`` random strings of ``length`` URL-safe characters, made in bulk."""
    nbytes = length * 3 // 4 + 3
    blob = base64.urlsafe_b64encode(os.urandom(nbytes * count)).decode()
    step = len(blob) // count
    return [blob[i * step : i * step + length] for i in range(count)]


def _credential(count: int) -> list[str]:
    # Imported credentials are 32 RFC 3986 unreserved characters; URL-safe base64 is a subset.
    return _random_text(count, 32)


@dataclass
class World:
    """Everything one run loads, made from ``sizes`` and a seed."""

    sizes: Sizes
    apps: list[AppInfo]
    accounts: list[str]
    installations: list[tuple[str, str]]
    now: datetime
    small: Tokens
    large: Tokens  # loaded on top of ``small``; holds the list pair's tokens
    expired: Tokens
    unknown: list[str]  # tokens that were never issued
    list_pair: tuple[str, str]
    list_apps: list[str]  # keys of LIST_OWNER's apps, each installed on LIST_ACCOUNT

    @classmethod
    def make(cls, sizes: Sizes, *, seed: int = 6) -> World:
        """Build the world; the clock's "now" is read once, here."""
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        accounts = [f"account{i:05d}" for i in range(sizes.accounts)]
        keys, secrets = _credential(sizes.apps), _credential(sizes.apps)
        apps = [
            AppInfo(keys[i], secrets[i], accounts[i % len(accounts)], trusted=i % 10 == 0)
            for i in range(sizes.apps)
        ]
        installations = [
            (apps[index].key, account)
            for account in accounts
            for index in rng.sample(range(sizes.apps), sizes.installs_per_account)
        ]
        now = datetime.now(UTC)
        world = cls(
            sizes=sizes,
            apps=apps,
            accounts=accounts,
            installations=installations,
            now=now,
            small=Tokens([], []),
            large=Tokens([], []),
            expired=Tokens([], []),
            unknown=_random_text(sizes.samples, 44),
            list_pair=installations[0],
            list_apps=_credential(sizes.list_apps),
        )
        digest = TokenDigest()
        world.small = world._tokens(rng, digest, sizes.small_tokens, live=True)
        spread = world._tokens(
            rng, digest, sizes.large_tokens - sizes.small_tokens - sizes.list_tokens, live=True
        )
        listed = world._tokens(rng, digest, sizes.list_tokens, live=True, pair=world.list_pair)
        world.large = _merge(spread, listed)
        world.expired = world._tokens(rng, digest, sizes.purge_tokens, live=False)
        return world

    def _tokens(
        self,
        rng: random.Random,
        digest: TokenDigest,
        count: int,
        *,
        live: bool,
        pair: tuple[str, str] | None = None,
    ) -> Tokens:
        """``count`` tokens over the installations (a tenth by client credentials).

        Live tokens were issued in the last 20 minutes, so they outlive any run; expired ones
        two to three hours ago. Rows come in order of issue, as a real registry writes them.
        """
        plaintext = _random_text(count, 44)
        ids = _random_text(count, 16)
        trusted = [app for app in self.apps if app.trusted]
        window = 20 * 60 * 1_000_000
        start = self.now - (timedelta(0) if live else timedelta(hours=2))
        offsets = sorted(rng.randrange(window) for _ in range(count))
        rows = []
        for i in range(count):
            if pair is None and rng.random() < 0.1:
                app = rng.choice(trusted)
                app_key, account, grant = app.key, app.owner, Grant.CLIENT_CREDENTIALS
            else:
                app_key, account = pair or rng.choice(self.installations)
                grant = Grant.AUTHORIZATION_CODE
            issued = start - timedelta(microseconds=window - offsets[i])
            rows.append(
                TokenRow(
                    ids[i],
                    digest(plaintext[i]),
                    app_key,
                    account,
                    grant,
                    issued,
                    issued + TOKEN_LIFETIME,
                    USER_AGENT,
                )
            )
        return Tokens(rows, plaintext)

    def samples(self, tokens: Tokens, *, seed: int = 7) -> list[str]:
        """Up to ``sizes.samples`` plaintext tokens of ``tokens``, in random order."""
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        count = min(self.sizes.samples, len(tokens.plaintext))
        return rng.sample(tokens.plaintext, count)


def _merge(first: Tokens, second: Tokens) -> Tokens:
    """Both sets, in order of issue."""
    rows = first.rows + second.rows
    plaintext = first.plaintext + second.plaintext
    order = sorted(range(len(rows)), key=lambda i: rows[i].issued_at)
    return Tokens([rows[i] for i in order], [plaintext[i] for i in order])

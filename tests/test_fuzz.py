"""Fuzzing: hostile input at every public entry point raises only documented errors, and an
error never leaves a partial write behind.

Every property runs on the memory and SQLite backends (and PostgreSQL when one is reachable).
Each example starts from the same seeded registry (apps trusted, plain and disabled; permitted
accounts; an installation, a suspended one; live tokens), calls one operation with arguments
that are valid, slightly mutated, wild Unicode (controls, bidi overrides, lone surrogates, NUL),
huge, or of the wrong type, and checks:

- the call returns, or raises one of the errors its docstring documents, and nothing else
  (never `TypeError`, `UnicodeError`, `KeyError`, `OverflowError`, or a `StorageError`);
- after an error, the registry looks exactly as before: through the public API, and on the
  SQL backends as a dump of every table read through a connection of its own;
- no error message repeats a secret or a token.

Two Hypothesis profiles are registered here: ``ci`` (the default, a few dozen examples per
property so ``make test`` stays quick) and ``fuzz`` (many more; ``make fuzz`` selects it with
``HYPOTHESIS_PROFILE=fuzz``). They apply to this file only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import operator
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import appregistry.errors
from _support import seen_check
from appregistry import (
    AppNotFound,
    Denied,
    ImportedCredentials,
    InstallationNotFound,
    LimitExceeded,
    NotFound,
    Reason,
    Registry,
    SecretNotRetrievable,
    StorageError,
    TokenNotFound,
    ValidationError,
)
from appregistry.cli import main as cli_main
from appregistry.cli import open_cli_registry
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing import ManualClock
from appregistry.testing import strategies as valid

# -- profiles -------------------------------------------------------------------------------

# Examples share nothing: each builds its own registry from the factory that a (function-
# scoped) fixture hands over, so that health check does not apply.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("ci", max_examples=25, **_COMMON)
settings.register_profile("fuzz", max_examples=500, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
fuzz_settings = settings(settings.get_profile(PROFILE if PROFILE in {"ci", "fuzz"} else "ci"))
#: Set (to anything) to run the properties on PostgreSQL too.
FUZZ_POSTGRES = "APPREGISTRY_FUZZ_POSTGRES"

# -- what may be raised ---------------------------------------------------------------------

#: The OAuth error for a bad code or refresh token (the OAuth tests skip without it).
InvalidGrant: type[Exception] | None = getattr(appregistry.errors, "InvalidGrant", None)
ANY_DOCUMENTED: tuple[type[Exception], ...] = (ValidationError, NotFound, Denied, LimitExceeded)

# -- hostile values -------------------------------------------------------------------------

SPECIAL_CHARACTERS = (
    "\x00\x01\x08\t\n\x0b\r\x1b\x7f\x85\xa0\xad"  # C0/C1 controls, NBSP, soft hyphen
    "\u0301\u0338\u034f"  # combining marks, grapheme joiner
    "\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2066\u2069"  # zero-width and bidi controls
    "\u2028\u2029\u3000\ufeff\ufffd\uffff"  # separators, BOM, replacement, noncharacter
    "\u0130\u0131\u00df\u03a3\u03c2\u212a\uff21\uff0e\u3002"  # case and dot oddities
    "\U0001f600\U000e0001"  # astral: an emoji and a tag
    "%@#:/?[]\\ \"'<>&;=+.-_~"  # URL and SQL punctuation
)
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
any_character = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARACTERS), surrogates)
wild_text = st.text(any_character, max_size=40)
huge_text = st.builds(
    operator.mul,
    st.sampled_from(["a", "é", "中", "\u202e", "\x00", "a.", "%41", "xn--", "\U0001f600"]),
    st.integers(1_000, 70_000),
)
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(),
    st.binary(max_size=20),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
)


def _insert(base: str, position: int, extra: str) -> str:
    at = position % (len(base) + 1)
    return base[:at] + extra + base[at:]


def mutated(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Values of ``strategy`` with a few wild characters slipped in somewhere."""
    return st.builds(
        _insert, strategy, st.integers(0, 2_000), st.text(any_character, min_size=1, max_size=3)
    )


def hostile(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values, valid values mutated, wild text, huge text and values of other types."""
    return st.one_of(strategy, mutated(strategy), wild_text, huge_text, wrong_types)


@dataclass(frozen=True)
class Known:
    """An index into one of the world's pools (keys, accounts, tokens...), drawn before the
    world exists; `resolve` turns it into the value. ``mutation`` slips text in, if given."""

    pool: str
    index: int
    mutation: tuple[int, str] | None = None

    def resolve(self, world: World) -> Any:
        values: Sequence[Any] = getattr(world, self.pool)
        value = values[self.index % len(values)]
        return value if self.mutation is None else _insert(value, *self.mutation)


def known(pool: str) -> st.SearchStrategy[Known]:
    return st.builds(Known, st.just(pool), st.integers(0, 9))


def known_mutated(pool: str) -> st.SearchStrategy[Known]:
    mutation = st.tuples(st.integers(0, 100), st.text(any_character, min_size=1, max_size=3))
    return st.builds(Known, st.just(pool), st.integers(0, 9), mutation)


def known_or_hostile(pool: str, strategy: st.SearchStrategy[Any] = wild_text) -> Any:
    return st.one_of(known(pool), known_mutated(pool), hostile(strategy))


def resolve(world: World, value: Any) -> Any:
    if isinstance(value, Known):
        return value.resolve(world)
    if isinstance(value, dict):
        return {name: resolve(world, v) for name, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(resolve(world, v) for v in value)
    return value


# -- the world: a seeded registry on one backend ------------------------------------------

PEPPER = b"fuzz pepper"
ENCRYPTION_KEY = Fernet.generate_key()
# Imported credentials (R6), so every example and every backend has the same keys.
KEYS = (
    "TrustedAppKey0000000000000000000",
    "PlainAppKey000000000000000000000",
    "Disabled-App.Key_~00000000000000",
)
SECRETS = (
    "TrustedSecret0000000000000000000",
    "PlainSecret000000000000000000000",
    "DisabledSecret000000000000000000",
)
ACCOUNTS = ("sp-admin", "org-1", "org-2", "alice")
# PKCE (RFC 7636): a verifier and its S256 challenge.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636, appendix B
REDIRECT_URLS = ("https://example.com/MyApp/handler", "https://xn--bcher-kva.example/cb")
APP = {
    "homepage": "http://bücher.example/MyApp",
    "admin_email": "myapp@exämple.com",
    "description": "I love my App!",
}


@dataclass
class World:
    """A registry seeded with a bit of everything, and what the tests know about it."""

    registry: Registry
    clock: ManualClock
    dump: Callable[[], object]
    keys: tuple[str, ...] = KEYS
    secrets: tuple[str, ...] = SECRETS
    accounts: tuple[str, ...] = ACCOUNTS
    redirect_urls: tuple[str, ...] = REDIRECT_URLS
    tokens: list[str] = field(default_factory=list)
    token_ids: list[str] = field(default_factory=list)
    # OAuth: unused codes (one with PKCE), the verifier, and refresh tokens (the first is
    # rotated already: presenting it again revokes its family).
    codes: list[str] = field(default_factory=list)
    verifiers: list[str] = field(default_factory=lambda: [VERIFIER])
    refresh_tokens: list[str] = field(default_factory=list)

    def seed(self) -> None:
        r = self.registry
        r.permit_account("sp-admin", by="provider")
        r.permit_account("org-1", by="sp-admin")
        for n, (key, secret) in enumerate(zip(KEYS, SECRETS, strict=True)):
            r.register_app(
                "sp-admin" if n < 2 else "org-1",
                name=("Trusted", "Plain", "Disabled")[n],
                redirect_url=REDIRECT_URLS[n % 2],
                trusted=n == 0,
                credentials=ImportedCredentials(key, secret),
                **APP,
            )
            r.install_app(key, "org-1", by="alice")
        self._issue(KEYS[0], SECRETS[0], user_agent="libwww-perl 5.833")
        self._issue(
            KEYS[1], SECRETS[1], account="org-1", approved_by="alice", user_agent="curl/8.4"
        )
        self._issue(KEYS[2], SECRETS[2], account="org-1", approved_by="alice")
        if hasattr(r, "authorize"):
            self._seed_oauth()
        r.disable_app(KEYS[2])
        r.suspend_installation(KEYS[0], "org-1")

    def _seed_oauth(self) -> None:
        r, consent = self.registry, {"redirect_url": REDIRECT_URLS[1], "approved_by": "alice"}
        self.codes.append(r.authorize(KEYS[1], "org-1", **consent).code)
        pkce = {"code_challenge": CHALLENGE, "code_challenge_method": "S256"}
        self.codes.append(r.authorize(KEYS[1], "org-1", **consent, **pkce).code)
        code = r.authorize(KEYS[1], "org-1", **consent).code
        first = r.exchange_code(KEYS[1], code, redirect_url=REDIRECT_URLS[1])
        second = r.refresh(KEYS[1], first.refresh_token or "")
        for issued in (first, second):
            self.tokens.append(issued.token)
            self.token_ids.append(issued.record.token_id)
            self.refresh_tokens.append(issued.refresh_token or "")

    def _issue(self, key: str, secret: str, **options: str) -> None:
        issued = self.registry.issue_token(key, secret, **options)
        self.tokens.append(issued.token)
        self.token_ids.append(issued.record.token_id)

    @property
    def plaintexts(self) -> tuple[str, ...]:
        """What must never appear in an error message."""
        return (*self.secrets, *self.tokens, *self.codes, *self.refresh_tokens)

    def snapshot(self) -> list[object]:
        """Everything a caller can see, and on SQL backends every row of every table."""
        r = self.registry
        # The checks come first: the uses they record (last use) are written before the lists
        # and rows below are read, so a second snapshot at the same time sees the same rows;
        # each answer is taken without the last use that the snapshot itself writes.
        seen: list[object] = [seen_check(r.check_token(token)) for token in self.tokens]
        seen.append(r.list_apps(per_page=1000))
        for key in self.keys:
            seen += [_or_error(r.get_app, key), _or_error(r.reveal_secret, key)]
        for account in self.accounts:
            seen += [r.get_permission(account), r.list_installations(account, per_page=1000)]
            seen += [_or_error(r.list_tokens, key, account, per_page=1000) for key in self.keys]
        seen.append(self.dump())
        return seen


def _or_error(operation: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return operation(*args, **kwargs)
    except NotFound as exc:
        return repr(exc)


WorldFactory = Callable[[], contextlib.AbstractContextManager[World]]


def _registry(storage: Any, clock: ManualClock) -> Registry:
    return Registry(
        storage=storage, clock=clock, pepper=PEPPER, secret_encryption_key=ENCRYPTION_KEY
    )


def _sqlite_dump(path: Path) -> Callable[[], object]:
    def dump() -> object:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            return {
                table: sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"')))  # noqa: S608
                for table in tables
            }

    return dump


@contextlib.contextmanager
def _memory_world() -> Iterator[World]:
    clock = ManualClock()
    world = World(_registry(MemoryStorage(), clock), clock, dump=lambda: None)
    world.seed()
    yield world
    world.registry.close()


def _sqlite_worlds(base: Path) -> WorldFactory:
    """Seeds one file, then gives each example a fresh copy of it: quicker than seeding."""
    template = base / "template.sqlite3"
    clock = ManualClock()
    seeded = World(_registry(SQLiteStorage(template), clock), clock, dump=lambda: None)
    seeded.seed()
    seeded.registry.close()  # checkpoints the WAL into the file
    copies = itertools.count()

    @contextlib.contextmanager
    def make() -> Iterator[World]:
        folder = base / f"example-{next(copies)}"
        folder.mkdir()
        path = folder / "registry.sqlite3"
        shutil.copyfile(template, path)
        example_clock = ManualClock(clock())
        world = dataclasses.replace(
            seeded,
            registry=_registry(SQLiteStorage(path, synchronous="NORMAL"), example_clock),
            clock=example_clock,
            dump=_sqlite_dump(path),
        )
        try:
            yield world
        finally:
            world.registry.close()
            shutil.rmtree(folder)

    return make


def _postgres_worlds(request: pytest.FixtureRequest) -> WorldFactory:
    """One schema per test, emptied and seeded again for each example."""
    import psycopg
    from psycopg import sql

    storage = request.getfixturevalue("postgres_storage_factory")()
    schema = storage.schema
    # A connection of its own, so the dump sees only what the storage committed.
    conn = psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True)
    request.addfinalizer(conn.close)
    names = [
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s ORDER BY table_name",
            (schema,),
        )
    ]
    select = [sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, n)) for n in names]
    truncate = sql.SQL("TRUNCATE {} CASCADE").format(
        sql.SQL(", ").join(
            sql.Identifier(schema, n) for n in names if n != "appregistry_schema_version"
        )
    )

    def dump() -> object:
        return [sorted(map(repr, conn.execute(query))) for query in select]

    @contextlib.contextmanager
    def make() -> Iterator[World]:
        conn.execute(truncate)
        clock = ManualClock()
        world = World(_registry(storage, clock), clock, dump=dump)
        world.seed()
        yield world

    return make


def _worlds(request: pytest.FixtureRequest, tmp_path: Path) -> WorldFactory:
    if request.param == "memory":
        return _memory_world
    if request.param == "sqlite":
        return _sqlite_worlds(tmp_path)
    return _postgres_worlds(request)


ON_POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


# PostgreSQL is ten times slower per example (a schema emptied and seeded over the network), so
# the properties run there only when asked; the regression cases always do.
@pytest.fixture(
    params=["memory", "sqlite", *([ON_POSTGRES] if os.environ.get(FUZZ_POSTGRES) else [])]
)
def worlds(request: pytest.FixtureRequest, tmp_path: Path) -> WorldFactory:
    """Makes a freshly seeded `World` per example, on each backend."""
    return _worlds(request, tmp_path)


@pytest.fixture(params=["memory", "sqlite", ON_POSTGRES])
def every_world(request: pytest.FixtureRequest, tmp_path: Path) -> WorldFactory:
    """Like `worlds`, always with PostgreSQL (when one is reachable)."""
    return _worlds(request, tmp_path)


def attempt(
    world: World,
    allowed: tuple[type[Exception], ...],
    operation: Callable[..., object],
    *args: object,
    may_write: bool = False,
    **kwargs: object,
) -> object:
    """Call ``operation``; return its result, or the documented error it raised.

    Any other exception propagates and fails the test. After a documented error, the world
    must look exactly as before (unless ``may_write``: a failure documented to write), and
    the message must not repeat a secret or a token.
    """
    before = world.snapshot()
    try:
        result = operation(*args, **kwargs)
    except allowed as exc:
        error = exc
    else:
        event("returned")
        return result
    event(type(error).__name__)
    if not may_write:
        assert before == world.snapshot(), f"{error!r} left a partial write"
    given_text = repr((args, kwargs))
    leaked = [p for p in world.plaintexts if p in str(error) and p not in given_text]
    assert [] == leaked
    return error


# -- properties of the Registry -------------------------------------------------------------

optional_fields = {
    "description": hostile(st.text(max_size=50)),
    "image_url": hostile(valid.homepages()),
    "admin_phone": hostile(valid.phone_numbers()),
    "trusted": st.one_of(st.booleans(), wrong_types),
}
required_fields = {
    "name": hostile(st.text(min_size=1, max_size=30)),
    "homepage": hostile(valid.homepages()),
    "admin_email": hostile(valid.emails()),
    "redirect_url": hostile(valid.redirect_urls()),
}
# Every field hostile at once (mostly refused), valid fields, or valid fields with one made
# hostile: a good share of examples reach storage, and one bad field must stop the write.
app_fields = st.one_of(
    st.fixed_dictionaries(required_fields, optional=optional_fields),
    valid.app_fields(),
    st.builds(
        lambda fields, name, value: {**fields, name: value},
        valid.app_fields(),
        st.sampled_from(sorted({**required_fields, **optional_fields})),
        hostile(wild_text),
    ),
)
credentials = st.one_of(
    st.none(),
    valid.imported_credentials(),
    st.builds(ImportedCredentials, known_or_hostile("keys"), known_or_hostile("secrets")),
    st.builds(ImportedCredentials, hostile(valid.importable_credentials()), wrong_types),
    wrong_types,
)


class TestRegisterApp:
    """register_app raises only ValidationError or LimitExceeded, and writes nothing then."""

    @fuzz_settings
    @given(
        owner=known_or_hostile("accounts", valid.accounts()),
        fields=app_fields,
        imported=credentials,
    )
    def test_hostile_fields(
        self, worlds: WorldFactory, owner: Any, fields: dict[str, Any], imported: Any
    ) -> None:
        with worlds() as world:
            owner, imported = resolve(world, owner), resolve(world, imported)
            result = attempt(
                world,
                (ValidationError, LimitExceeded),
                world.registry.register_app,
                owner,
                credentials=imported,
                **fields,
            )
            if not isinstance(result, Exception):
                assert result.app == world.registry.get_app(result.app.key)
                assert result.secret == world.registry.reveal_secret(result.app.key)


class TestUpdateApp:
    """update_app raises only ValidationError or AppNotFound, and changes nothing then."""

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"),
        fields=st.fixed_dictionaries(
            {},
            optional={
                **required_fields,
                **optional_fields,
                "description": st.one_of(st.none(), optional_fields["description"]),
            },
        ),
    )
    def test_hostile_fields(self, worlds: WorldFactory, key: Any, fields: dict[str, Any]) -> None:
        with worlds() as world:
            key = resolve(world, key)
            result = attempt(
                world, (ValidationError, AppNotFound), world.registry.update_app, key, **fields
            )
            if not isinstance(result, Exception):
                assert result == world.registry.get_app(key)

    @fuzz_settings
    @given(key=known("keys"), name=hostile(st.text(max_size=30)))
    def test_unset_fields_stay(self, worlds: WorldFactory, key: Known, name: Any) -> None:
        with worlds() as world:
            before = world.registry.get_app(resolve(world, key))
            result = attempt(
                world, (ValidationError,), world.registry.update_app, before.key, name=name
            )
            if not isinstance(result, Exception):
                assert attrs.evolve(before, name=result.name) == result


class TestIssueToken:
    """issue_token raises only Denied or ValidationError; a token it issues is allowed."""

    @fuzz_settings
    @given(
        key=known_or_hostile("keys", valid.app_keys()),
        secret=known_or_hostile("secrets", valid.app_secrets()),
        account=st.one_of(st.none(), known_or_hostile("accounts", valid.accounts())),
        user_agent=st.one_of(st.none(), hostile(st.text(max_size=80))),
    )
    def test_hostile_credentials(
        self, worlds: WorldFactory, key: Any, secret: Any, account: Any, user_agent: Any
    ) -> None:
        with worlds() as world:
            key, secret, account = (resolve(world, v) for v in (key, secret, account))
            result = attempt(
                world,
                (Denied, ValidationError),
                world.registry.issue_token,
                key,
                secret,
                account=account,
                approved_by=None if account is None else "alice",
                user_agent=user_agent,
            )
            if isinstance(result, Denied):
                # R25: the same words whatever the reason.
                assert "invalid client credentials, or the app may not act" == str(result)
            elif not isinstance(result, Exception):
                assert world.registry.check_token(result.token).allowed


class TestCheckToken:
    """check_token never raises, writes nothing, and knows only the tokens it issued."""

    @fuzz_settings
    @given(token=st.one_of(known("tokens"), known_mutated("tokens"), hostile(st.text())))
    def test_anything(self, worlds: WorldFactory, token: Any) -> None:
        with worlds() as world:
            token = resolve(world, token)
            before = world.snapshot()
            check = world.registry.check_token(token)
            assert before == world.snapshot()
            assert check.reason in set(Reason)
            if token not in world.tokens:
                assert Reason.TOKEN_UNKNOWN == check.reason
                assert check.token is None


paging = {
    "search": st.one_of(st.none(), hostile(st.text(max_size=10))),
    "page": st.one_of(st.integers(), st.integers(min_value=2**31), wrong_types),
    "per_page": st.one_of(st.sampled_from([10, 25, 100, 1000]), st.integers(), wrong_types),
}


class TestLists:
    """Lists raise only ValidationError (or AppNotFound for tokens) and never write."""

    @fuzz_settings
    @given(
        owner=st.one_of(st.none(), known_or_hostile("accounts")),
        query=st.fixed_dictionaries({}, optional=paging),
    )
    def test_list_apps(self, worlds: WorldFactory, owner: Any, query: dict[str, Any]) -> None:
        with worlds() as world:
            owner = resolve(world, owner)
            page = attempt(
                world, (ValidationError,), world.registry.list_apps, owner=owner, **query
            )
            _check_page(page, query)

    @fuzz_settings
    @given(account=known_or_hostile("accounts"), query=st.fixed_dictionaries({}, optional=paging))
    def test_list_installations(
        self, worlds: WorldFactory, account: Any, query: dict[str, Any]
    ) -> None:
        with worlds() as world:
            account = resolve(world, account)
            page = attempt(
                world, (ValidationError,), world.registry.list_installations, account, **query
            )
            _check_page(page, query)

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"),
        account=known_or_hostile("accounts"),
        query=st.fixed_dictionaries({}, optional=paging),
    )
    def test_list_tokens(
        self, worlds: WorldFactory, key: Any, account: Any, query: dict[str, Any]
    ) -> None:
        with worlds() as world:
            key, account = resolve(world, key), resolve(world, account)
            page = attempt(
                world,
                (ValidationError, AppNotFound),
                world.registry.list_tokens,
                key,
                account,
                **query,
            )
            _check_page(page, query)


def _check_page(page: Any, query: dict[str, Any]) -> None:
    if isinstance(page, Exception):
        return
    assert query.get("per_page", 10) == page.per_page
    assert query.get("page", 1) == page.page
    assert len(page.items) <= page.per_page


def _generator(ids: list[Any]) -> Iterator[Any]:
    yield from ids


class TestRemoveTokens:
    """remove_tokens raises only ValidationError or TokenNotFound, all or nothing."""

    @fuzz_settings
    @given(
        ids=st.one_of(
            st.lists(known_or_hostile("token_ids"), max_size=5),
            st.lists(known_or_hostile("token_ids"), max_size=5).map(tuple),
            st.lists(known_or_hostile("token_ids"), max_size=5).map(_generator),
            st.builds(operator.mul, st.just([Known("token_ids", 0)]), st.integers(990, 1100)),
            hostile(st.text(max_size=10)),
        ),
        key=st.one_of(st.none(), known_or_hostile("keys")),
        account=st.one_of(st.none(), known_or_hostile("accounts")),
    )
    def test_hostile_ids(self, worlds: WorldFactory, ids: Any, key: Any, account: Any) -> None:
        with worlds() as world:
            if isinstance(ids, list | tuple):
                ids = resolve(world, ids)
            key, account = resolve(world, key), resolve(world, account)
            removed = attempt(
                world,
                (ValidationError, TokenNotFound),
                world.registry.remove_tokens,
                ids,
                key=key,
                account=account,
            )
            if not isinstance(removed, Exception):
                assert len(set(ids)) == removed


# (operation, the arguments it takes from pools or hostile values, the errors it documents)
ID_OPERATIONS: dict[str, tuple[tuple[str, ...], tuple[type[Exception], ...]]] = {
    "get_app": (("keys",), (AppNotFound,)),
    "enable_app": (("keys",), (AppNotFound,)),
    "disable_app": (("keys",), (AppNotFound,)),
    "remove_app": (("keys",), (AppNotFound,)),
    "regenerate_secret": (("keys",), (AppNotFound,)),
    "reveal_secret": (("keys",), (AppNotFound, SecretNotRetrievable)),
    "permit_account": (("accounts", "by"), (ValidationError,)),
    "forbid_account": (("accounts",), (ValidationError,)),
    "get_permission": (("accounts",), ()),
    "install_app": (("keys", "accounts", "by"), (ValidationError, AppNotFound, Denied)),
    "suspend_installation": (("keys", "accounts"), (InstallationNotFound,)),
    "resume_installation": (("keys", "accounts"), (InstallationNotFound,)),
    "uninstall_app": (("keys", "accounts"), (InstallationNotFound,)),
    "remove_all_tokens": (("keys", "accounts"), (AppNotFound,)),
}


class TestIdOperations:
    """Operations on apps, accounts and installations by id raise only what they document."""

    @fuzz_settings
    @given(
        name=st.sampled_from(sorted(ID_OPERATIONS)),
        key=known_or_hostile("keys", valid.app_keys()),
        account=known_or_hostile("accounts", valid.accounts()),
        by=known_or_hostile("accounts", valid.accounts()),
    )
    def test_hostile_ids(
        self, worlds: WorldFactory, name: str, key: Any, account: Any, by: Any
    ) -> None:
        pools, allowed = ID_OPERATIONS[name]
        with worlds() as world:
            drawn = {"keys": resolve(world, key), "accounts": resolve(world, account)}
            args = [drawn[pool] for pool in pools if pool != "by"]
            kwargs = {"by": resolve(world, by)} if "by" in pools else {}
            attempt(world, allowed, getattr(world.registry, name), *args, **kwargs)


# -- OAuth, once the Registry has it ----------------------------------------------------


def _needs_oauth() -> type[Exception]:
    if InvalidGrant is None or not hasattr(Registry, "authorize"):
        pytest.skip("the Registry has no OAuth grants yet")
    return InvalidGrant


pkce_methods = st.one_of(st.none(), st.sampled_from(["S256", "plain", "s256"]), hostile(wild_text))
pkce_challenges = st.one_of(st.none(), st.just(CHALLENGE), mutated(st.just(CHALLENGE)), wild_text)
verifiers = st.one_of(st.none(), known("verifiers"), known_or_hostile("verifiers"))
user_agents = st.one_of(st.none(), hostile(st.text(max_size=80)))


class TestOAuthGrants:
    """The OAuth operations raise only what they document. Failures write nothing, except
    the two writes documented: a real code is taken even when its exchange fails, and a
    rotated refresh token presented again revokes its family."""

    @fuzz_settings
    @given(key=known_or_hostile("keys"), secret=known_or_hostile("secrets"))
    def test_authenticate_client(self, worlds: WorldFactory, key: Any, secret: Any) -> None:
        _needs_oauth()
        with worlds() as world:
            key, secret = resolve(world, key), resolve(world, secret)
            before = world.snapshot()
            decision = world.registry.authenticate_client(key, secret)
            assert before == world.snapshot()
            assert ((key, secret) in zip(KEYS, SECRETS, strict=True)) == decision.allowed

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"), url=known_or_hostile("redirect_urls", valid.redirect_urls())
    )
    def test_redirect_url_matches(self, worlds: WorldFactory, key: Any, url: Any) -> None:
        _needs_oauth()
        with worlds() as world:
            key, url = resolve(world, key), resolve(world, url)
            stored = {k: world.registry.get_app(k).redirect_url for k in world.keys}
            before = world.snapshot()
            matches = world.registry.redirect_url_matches(key, url)
            assert before == world.snapshot()
            expected = stored.get(key) if isinstance(key, str) else None
            if matches:
                assert expected is not None
            if expected is not None and url == expected:
                assert matches

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"),
        account=known_or_hostile("accounts"),
        url=known_or_hostile("redirect_urls", valid.redirect_urls()),
        by=known_or_hostile("accounts"),
        challenge=pkce_challenges,
        method=pkce_methods,
    )
    def test_authorize(
        self,
        worlds: WorldFactory,
        *,
        key: Any,
        account: Any,
        url: Any,
        by: Any,
        challenge: Any,
        method: Any,
    ) -> None:
        _needs_oauth()
        with worlds() as world:
            key, account, url, by = (resolve(world, v) for v in (key, account, url, by))
            issued = attempt(
                world,
                (ValidationError, Denied),
                world.registry.authorize,
                key,
                account,
                redirect_url=url,
                approved_by=by,
                code_challenge=challenge,
                code_challenge_method=method,
            )
            if not isinstance(issued, Exception):
                assert (key, account) == (issued.record.app_key, issued.record.account)

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"),
        code=st.one_of(known("codes"), known_or_hostile("codes"), known_or_hostile("tokens")),
        url=known_or_hostile("redirect_urls", valid.redirect_urls()),
        verifier=verifiers,
        user_agent=user_agents,
    )
    def test_exchange_code(
        self,
        worlds: WorldFactory,
        *,
        key: Any,
        code: Any,
        url: Any,
        verifier: Any,
        user_agent: Any,
    ) -> None:
        invalid_grant = _needs_oauth()
        with worlds() as world:
            key, code, url, verifier = (resolve(world, v) for v in (key, code, url, verifier))
            issued = attempt(
                world,
                (invalid_grant, Denied, ValidationError),
                world.registry.exchange_code,
                key,
                code,
                redirect_url=url,
                code_verifier=verifier,
                user_agent=user_agent,
                may_write=code in world.codes,
            )
            if not isinstance(issued, Exception):
                assert world.registry.check_token(issued.token).allowed

    @fuzz_settings
    @given(
        key=known_or_hostile("keys"),
        token=st.one_of(known("refresh_tokens"), known_or_hostile("refresh_tokens")),
        user_agent=user_agents,
    )
    def test_refresh(self, worlds: WorldFactory, key: Any, token: Any, user_agent: Any) -> None:
        invalid_grant = _needs_oauth()
        with worlds() as world:
            key, token = resolve(world, key), resolve(world, token)
            issued = attempt(
                world,
                (invalid_grant, Denied, ValidationError),
                world.registry.refresh,
                key,
                token,
                user_agent=user_agent,
                may_write=token in world.refresh_tokens,
            )
            if not isinstance(issued, Exception):
                assert world.registry.check_token(issued.token).allowed

    @fuzz_settings
    @given(
        token=st.one_of(known_or_hostile("tokens"), known_or_hostile("refresh_tokens")),
        key=st.one_of(st.none(), known_or_hostile("keys")),
    )
    def test_revoke(self, worlds: WorldFactory, token: Any, key: Any) -> None:
        _needs_oauth()
        with worlds() as world:
            token, key = resolve(world, token), resolve(world, key)
            before = world.snapshot()
            revoked = world.registry.revoke(token, key=key)
            if revoked:
                assert token in world.tokens or token in world.refresh_tokens
            else:
                assert before == world.snapshot()


# -- the command line -------------------------------------------------------------------

cli_text = st.one_of(
    st.sampled_from(["", "-", "--", "-h", "0", "-1", "10", "1001", "99999999999999999999"]),
    wild_text.filter(lambda s: "\x00" not in s),  # argv cannot hold NUL
    huge_text.filter(lambda s: "\x00" not in s),
    mutated(valid.homepages()),
    valid.accounts(),
)


def _options(*names: str) -> st.SearchStrategy[list[str]]:
    pairs = st.lists(st.tuples(st.sampled_from(names), cli_text), max_size=4)
    return pairs.map(lambda found: [part for pair in found for part in pair])


KEY = st.one_of(st.sampled_from(KEYS), cli_text)
ACCOUNT = st.one_of(st.sampled_from(ACCOUNTS), cli_text)
PAGING = ("--search", "--page", "--per-page")
cli_commands = st.one_of(
    st.tuples(
        st.just(["apps", "register"]),
        _options(
            "--owner",
            "--name",
            "--homepage",
            "--admin-email",
            "--redirect-url",
            "--description",
            "--image-url",
            "--admin-phone",
            "--import-key",
            "--import-secret",
        ),
    ).map(lambda t: [*t[0], *t[1]]),
    st.tuples(
        st.just(["apps", "edit"]),
        KEY,
        _options("--name", "--description", "--homepage", "--admin-phone", "--redirect-url"),
    ).map(lambda t: [*t[0], t[1], *t[2]]),
    st.tuples(st.just(["apps", "list"]), _options("--owner", *PAGING)).map(
        lambda t: [*t[0], *t[1]]
    ),
    st.tuples(
        st.sampled_from(["show", "enable", "disable", "remove", "regenerate-secret"]), KEY
    ).map(lambda t: ["apps", *t]),
    st.tuples(st.just(["accounts", "permit"]), ACCOUNT, st.just("--by"), cli_text).map(
        lambda t: [*t[0], *t[1:]]
    ),
    st.tuples(st.just(["accounts", "forbid"]), ACCOUNT).map(lambda t: [*t[0], t[1]]),
    st.tuples(st.just(["installs", "add"]), KEY, ACCOUNT, st.just("--by"), cli_text).map(
        lambda t: [*t[0], *t[1:]]
    ),
    st.tuples(st.just(["installs", "list"]), ACCOUNT, _options(*PAGING)).map(
        lambda t: [*t[0], t[1], *t[2]]
    ),
    st.tuples(st.sampled_from(["suspend", "resume", "remove"]), KEY, ACCOUNT).map(
        lambda t: ["installs", *t]
    ),
    st.tuples(
        st.just(["tokens", "issue", "--key"]),
        KEY,
        st.just("--secret"),
        st.one_of(st.sampled_from(SECRETS), cli_text),
        _options("--account", "--user-agent"),
    ).map(lambda t: [*t[0], *t[1:4], *t[4]]),
    st.tuples(st.just(["tokens", "list"]), KEY, ACCOUNT, _options(*PAGING)).map(
        lambda t: [*t[0], t[1], t[2], *t[3]]
    ),
    st.tuples(st.just(["tokens", "remove"]), st.lists(cli_text, max_size=3)).map(
        lambda t: [*t[0], *t[1]]
    ),
    st.tuples(st.just(["tokens", "remove", "--all"]), KEY, ACCOUNT).map(
        lambda t: [*t[0], t[1], t[2]]
    ),
    st.tuples(st.just(["tokens", "check"]), cli_text).map(lambda t: [*t[0], t[1]]),
    st.tuples(st.just(["tokens", "purge", "--batch-size"]), cli_text).map(lambda t: [*t[0], t[1]]),
)


@contextlib.contextmanager
def _console(stdin: str) -> Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """Swaps in streams that encode as a UTF-8 terminal does: stdout strict, stderr lenient."""
    out, err = io.BytesIO(), io.BytesIO()
    wrappers = (
        io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    streams = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, (sys.stdout, sys.stderr) = io.StringIO(stdin), wrappers
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        for wrapper in wrappers:
            wrapper.detach()  # else closing the wrapper would close the bytes too


@pytest.fixture(scope="module")
def cli_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded SQLite file, configured (pepper, encryption key) as the CLI opens it."""
    path = tmp_path_factory.mktemp("cli-template") / "registry.sqlite3"
    with open_cli_registry(f"sqlite:///{path}") as registry:
        World(registry, ManualClock(), dump=lambda: None).seed()
    return path


class TestCommandLine:
    """The CLI answers any arguments with exit status 0, 1 or 2 and no traceback; when it
    does not succeed, the database is unchanged."""

    @fuzz_settings
    @given(command=cli_commands, as_json=st.booleans(), stdin=cli_text)
    def test_hostile_arguments(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        cli_template: Path,
        command: list[str],
        as_json: bool,
        stdin: str,
    ) -> None:
        folder = tmp_path_factory.mktemp("cli")
        path = folder / "registry.sqlite3"
        shutil.copyfile(cli_template, path)
        dump = _sqlite_dump(path)
        before = dump()
        argv = ["--database", f"sqlite:///{path}", *(["--json"] if as_json else []), *command]
        with _console(stdin) as (out, err):
            try:
                status = cli_main(argv)
            except SystemExit as exc:  # argparse refusing the arguments
                status = exc.code if isinstance(exc.code, int) else 2
        event(f"{command[0]} {command[1]}: exit {status}")
        assert status in {0, 1, 2}
        assert "Traceback" not in err.getvalue().decode()
        if status != 0:
            assert before == dump()
        out.getvalue().decode("utf-8")  # what was printed is valid UTF-8
        shutil.rmtree(folder)


# -- regressions: what fuzzing found ---------------------------------------------------------


class TestRegressions:
    """Inputs that once escaped as undocumented errors or reached the storage driver."""

    @pytest.mark.parametrize("page", [2**63, 2**70, 10**9 + 1])
    def test_huge_page_numbers_are_a_validation_error(
        self, every_world: WorldFactory, page: int
    ) -> None:
        # SQLite raised OverflowError binding an OFFSET beyond 64 bits.
        with every_world() as world:
            for operation in (
                lambda: world.registry.list_apps(page=page),
                lambda: world.registry.list_installations("org-1", page=page),
                lambda: world.registry.list_tokens(KEYS[0], "org-1", page=page),
            ):
                with pytest.raises(ValidationError) as caught:
                    operation()
                assert {"page"} == caught.value.fields

    @pytest.mark.parametrize("batch_size", [2**63, 2**70])
    def test_huge_purge_batches_are_cut_to_a_bounded_size(
        self, every_world: WorldFactory, batch_size: int
    ) -> None:
        # SQLite raised OverflowError binding the LIMIT (`appregistry tokens purge
        # --batch-size 99999999999999999999` crashed with a traceback).
        with every_world() as world:
            world.clock.advance(timedelta(days=90))
            world.registry.purge_expired_tokens(batch_size=batch_size)
            assert {Reason.TOKEN_UNKNOWN} == {
                world.registry.check_token(token).reason for token in world.tokens
            }

    def test_the_last_page_allowed_is_empty(self, every_world: WorldFactory) -> None:
        with every_world() as world:
            assert () == world.registry.list_apps(page=10**9, per_page=1000).items

    @pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "a\x00b", ["a"], {"a": 1}, None, 7])
    def test_ids_that_no_storage_can_hold_name_nothing(
        self, every_world: WorldFactory, bad: Any
    ) -> None:
        # SQLite raised UnicodeEncodeError (lone surrogates) and, through a missing attribute
        # on the driver's error, AttributeError (lists); memory raised TypeError (unhashable).
        with every_world() as world:
            r = world.registry
            before = world.snapshot()
            assert r.get_permission(bad) is None
            for operation, error in (
                (lambda: r.get_app(bad), AppNotFound),
                (lambda: r.update_app(bad, name="x"), AppNotFound),
                (lambda: r.install_app(bad, "org-1", by="alice"), AppNotFound),
                (lambda: r.suspend_installation(bad, "org-1"), InstallationNotFound),
                (lambda: r.suspend_installation(KEYS[1], bad), InstallationNotFound),
                (lambda: r.uninstall_app(KEYS[1], bad), InstallationNotFound),
                (lambda: r.remove_tokens([bad] if isinstance(bad, str) else bad), Exception),
                (lambda: r.issue_token(bad, SECRETS[0]), Exception),
            ):
                with pytest.raises(error) as caught:
                    operation()
                assert isinstance(caught.value, ANY_DOCUMENTED)
            assert 0 == r.remove_all_tokens(KEYS[1], bad)
            assert before == world.snapshot()

    @pytest.mark.parametrize("bad", [5, None, 1.5, object()])
    def test_token_ids_that_are_not_a_collection(self, every_world: WorldFactory, bad: Any) -> None:
        with every_world() as world:
            with pytest.raises(ValidationError) as caught:
                world.registry.remove_tokens(bad)
            assert {"token_ids"} == caught.value.fields

    def test_token_ids_as_a_generator_are_refused_without_removing(
        self, every_world: WorldFactory
    ) -> None:
        with every_world() as world:
            ids = iter(world.token_ids)
            with pytest.raises(ValidationError):
                world.registry.remove_tokens(ids)  # type: ignore[arg-type]
            assert all(world.registry.check_token(t).token for t in world.tokens)

    def test_sqlite_driver_errors_without_a_code_become_storage_errors(
        self, tmp_path: Path
    ) -> None:
        # sqlite3's own ProgrammingError has no sqlite_errorcode; mapping it raised
        # AttributeError instead of StorageError.
        storage = SQLiteStorage(tmp_path / "r.sqlite3")
        with contextlib.closing(storage), pytest.raises(StorageError), storage.transaction() as tx:
            tx.apps.get(["not", "bindable"])  # type: ignore[arg-type]

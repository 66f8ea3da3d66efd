"""Random operations on the Registry agree with a small reference model of the rules.

The model below is written from DESIGN.md alone, with plain dicts, sets and dataclasses: it
knows nothing of appregistry's policy or storage. Every step compares what the Registry did
(its decision reasons, its error types, the counts it lists) with what the rules require.

`make_machine` builds the test case for any storage, so the SQL backends run this same
machine: ``TestSQLite = make_machine(lambda: SQLiteStorage(...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from unittest import TestCase

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from appregistry import (
    AppNotFound,
    Denied,
    InstallationNotFound,
    NotFound,
    Registry,
    TokenNotFound,
)
from appregistry.ports import Storage
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock

LIFETIME = timedelta(hours=1)
ACCOUNTS = ("acme", "globex", "initech")
UNKNOWN_KEY = "u" * 32
WRONG_SECRET = "w" * 32
UNKNOWN_TOKEN = "not-a-token-this-registry-issued"
UNKNOWN_TOKEN_ID = "no-such-token-id"
# Which secret a step presents: the app's current one (most often), its previous one, or junk.
SECRETS = st.sampled_from(["current", "current", "current", "previous", "wrong"])

# Outcomes are compared as plain strings: "ok", an error class name, or "denied:<reason>".
OK = "ok"


# -- the reference model ------------------------------------------------------------------------


@dataclass
class ModelApp:
    owner: str
    trusted: bool
    secret: str
    enabled: bool = True


@dataclass
class ModelToken:
    token_id: str
    key: str
    account: str
    client_credentials: bool
    expires_at: datetime


@dataclass
class Model:
    """The rules, stated as directly as possible."""

    apps: dict[str, ModelApp] = field(default_factory=dict)
    permitted: set[str] = field(default_factory=set)
    installations: dict[tuple[str, str], bool] = field(default_factory=dict)  # -> suspended
    tokens: dict[str, ModelToken] = field(default_factory=dict)  # plaintext -> token

    def issue(self, key: str, secret: str, account: str | None) -> str:
        """The outcome of asking for a token (R11, R12, R14, R19, R25), first reason wins.

        A caller that does not authenticate learns nothing else (R25): an unknown key and a
        wrong secret are one reason, whatever state the app is in.
        """
        app = self.apps.get(key)
        if app is None or secret != app.secret:
            return "denied:bad_credentials"
        if not app.enabled:
            return "denied:app_disabled"
        acting_for = app.owner if account is None else account
        suspended = self.installations.get((key, acting_for))
        if account is not None and suspended is None:
            return "denied:installation_missing"
        if suspended:
            return "denied:installation_suspended"
        if acting_for not in self.permitted:
            return "denied:apps_not_permitted"
        if account is None and not app.trusted:
            return "denied:app_not_trusted"
        return OK

    def check(self, token: str, now: datetime) -> str:
        """The reason a token check must give (R11-R14, R17-R20, R23)."""
        record = self.tokens.get(token)
        if record is None:
            return "token_unknown"
        if now >= record.expires_at:
            return "token_expired"
        app = self.apps.get(record.key)
        if app is None:
            return "app_unknown"
        if not app.enabled:
            return "app_disabled"
        suspended = self.installations.get((record.key, record.account))
        if not record.client_credentials and suspended is None:
            return "installation_missing"
        if suspended:
            return "installation_suspended"
        if record.account not in self.permitted:
            return "apps_not_permitted"
        if record.client_credentials and not app.trusted:
            return "app_not_trusted"
        return "allowed"

    def install(self, key: str, account: str) -> str:
        app = self.apps.get(key)
        if app is None:
            return AppNotFound.__name__
        if not app.enabled:
            return "denied:app_disabled"
        if account not in self.permitted:
            return "denied:apps_not_permitted"
        self.installations.setdefault((key, account), False)
        return OK

    def drop_tokens(self, keep: Callable[[ModelToken], bool]) -> int:
        gone = [token for token, record in self.tokens.items() if not keep(record)]
        for token in gone:
            del self.tokens[token]
        return len(gone)

    def instances(self, key: str) -> int:
        return sum(1 for app_key, _ in self.installations if app_key == key)

    def live(self, key: str, account: str, now: datetime) -> int:
        return sum(
            1
            for t in self.tokens.values()
            if (t.key, t.account) == (key, account) and now < t.expires_at
        )

    def app_management(self, account: str, now: datetime) -> dict[str, tuple[int, bool | None]]:
        """An account's App Management: each app's live Access Tokens, and whether it is
        suspended (``None``: the account's own app, listed for its tokens though not
        installed; R19, R21)."""
        shown: dict[str, tuple[int, bool | None]] = {
            key: (self.live(key, account, now), suspended)
            for (key, holder), suspended in self.installations.items()
            if holder == account
        }
        for key, app in self.apps.items():
            if app.owner == account and key not in shown and self.live(key, account, now):
                shown[key] = (self.live(key, account, now), None)
        return shown

    def remove_app(self, key: str) -> None:
        del self.apps[key]
        for pair in [p for p in self.installations if p[0] == key]:
            del self.installations[pair]
        self.drop_tokens(lambda t: t.key != key)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``call`` and say how it ended, in the model's terms."""
    try:
        value = call()
    except Denied as error:
        return f"denied:{error.decision.reason}", None
    except NotFound as error:
        return type(error).__name__, None
    return OK, value


# -- the machine --------------------------------------------------------------------------------


class RegistryMachine(RuleBasedStateMachine):
    """Drives one Registry and the model with the same random operations.

    Subclasses (see `make_machine`) set ``storage_factory``; each run gets a fresh storage.
    """

    storage_factory: Callable[[], Storage] = MemoryStorage

    apps = Bundle("apps")
    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.registry = Registry(storage=type(self).storage_factory(), clock=self.clock)
        self.model = Model()
        # What the model no longer holds but the steps may still present.
        self.ever_secrets: dict[str, list[str]] = {}  # key -> every secret it had, newest last
        self.token_ids: dict[str, str] = {}  # plaintext -> public id, for every token issued

    def teardown(self) -> None:
        self.registry.close()

    def now(self) -> datetime:
        return self.clock()

    def secret_for(self, key: str, which: str) -> str:
        secrets = self.ever_secrets.get(key, [])
        if which == "current" and secrets:
            return secrets[-1]
        if which == "previous" and len(secrets) > 1:
            return secrets[-2]
        return WRONG_SECRET

    # -- a start where tokens can be had: random steps alone rarely line up all the rules ------

    @initialize(
        target=apps,
        owners=st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS)),
        installed_on=st.tuples(*[st.sets(st.sampled_from(ACCOUNTS), min_size=1)] * 2),
    )
    def start(self, owners: tuple[str, str], installed_on: tuple[set[str], set[str]]) -> Any:
        for account in ACCOUNTS:
            self.permit_or_forbid(account, permitted=True)
        keys = []
        for owner, trusted, accounts in zip(owners, (True, False), installed_on, strict=True):
            key = self.register(owner, trusted)
            # The trusted app is installed on its owner too: there its client-credentials
            # tokens meet suspension and uninstallation (R12, R15 with R19).
            for account in sorted(accounts | ({owner} if trusted else set())):
                self.install(key, account)
                # Not in the tokens bundle, but every step checks every token ever issued.
                self.issue(key, account, "current")
            keys.append(key)
        self.issue(keys[0], None, "current")
        return multiple(*keys)

    # -- apps ----------------------------------------------------------------------------------

    @rule(target=apps, owner=st.sampled_from(ACCOUNTS), trusted=st.booleans())
    def register(self, owner: str, trusted: bool) -> str:
        new = self.registry.register_app(
            owner,
            name=f"App of {owner}",
            homepage="http://example.com/",
            admin_email="admin@example.com",
            redirect_url="https://example.com/cb",
            trusted=trusted,
        )
        self.model.apps[new.app.key] = ModelApp(owner, trusted, new.secret)
        self.ever_secrets[new.app.key] = [new.secret]
        return new.app.key

    @rule(key=apps, trusted=st.booleans())
    def set_trusted(self, key: str, trusted: bool) -> None:
        expected = OK if key in self.model.apps else AppNotFound.__name__
        actual, _ = outcome(lambda: self.registry.update_app(key, trusted=trusted))
        assert expected == actual
        if expected == OK:
            self.model.apps[key].trusted = trusted

    @rule(key=apps, enabled=st.booleans())
    def enable_or_disable(self, key: str, enabled: bool) -> None:
        change = self.registry.enable_app if enabled else self.registry.disable_app
        expected = OK if key in self.model.apps else AppNotFound.__name__
        actual, _ = outcome(lambda: change(key))
        assert expected == actual
        if expected == OK:
            self.model.apps[key].enabled = enabled

    @rule(key=apps)
    def regenerate_secret(self, key: str) -> None:
        expected = OK if key in self.model.apps else AppNotFound.__name__
        actual, value = outcome(lambda: self.registry.regenerate_secret(key))
        assert expected == actual
        if expected == OK:
            self.model.apps[key].secret = value.secret
            self.ever_secrets[key].append(value.secret)
            self.model.drop_tokens(lambda t: t.key != key)

    # Keep one app at least, or most later steps would only meet removed apps.
    @precondition(lambda self: len(self.model.apps) > 1)
    @rule(key=apps | st.just(UNKNOWN_KEY))
    def remove_app(self, key: str) -> None:
        expected = OK if key in self.model.apps else AppNotFound.__name__
        actual, _ = outcome(lambda: self.registry.remove_app(key))
        assert expected == actual
        if expected == OK:
            self.model.remove_app(key)

    # "Remove Selected": all of them or none (an unknown or removed key among them).
    @precondition(lambda self: len(self.model.apps) > 2)
    @rule(keys=st.lists(apps | st.just(UNKNOWN_KEY), min_size=1, max_size=3))
    def remove_apps(self, keys: list[str]) -> None:
        known = all(key in self.model.apps for key in keys)
        distinct = list(dict.fromkeys(keys))
        if known and len(distinct) >= len(self.model.apps):
            return  # keep one app at least
        actual, removed = outcome(lambda: self.registry.remove_apps(keys))
        assert (OK if known else AppNotFound.__name__) == actual
        if known:
            assert len(distinct) == removed
            for key in distinct:
                self.model.remove_app(key)

    # -- accounts and installations --------------------------------------------------------------

    @rule(account=st.sampled_from(ACCOUNTS), permitted=st.booleans())
    def permit_or_forbid(self, account: str, permitted: bool) -> None:
        if permitted:
            self.registry.permit_account(account, by="provider")
            self.model.permitted.add(account)
        else:
            self.registry.forbid_account(account)
            self.model.permitted.discard(account)

    @rule(key=apps | st.just(UNKNOWN_KEY), account=st.sampled_from(ACCOUNTS))
    def install(self, key: str, account: str) -> None:
        actual, _ = outcome(lambda: self.registry.install_app(key, account, by="user"))
        assert self.model.install(key, account) == actual

    @rule(key=apps, account=st.sampled_from(ACCOUNTS), suspended=st.booleans())
    def suspend_or_resume(self, key: str, account: str, suspended: bool) -> None:
        change = (
            self.registry.suspend_installation if suspended else self.registry.resume_installation
        )
        present = (key, account) in self.model.installations
        actual, _ = outcome(lambda: change(key, account))
        assert (OK if present else InstallationNotFound.__name__) == actual
        if present:
            self.model.installations[key, account] = suspended

    @rule(keys=st.lists(apps, min_size=1, max_size=3), account=st.sampled_from(ACCOUNTS))
    def uninstall_several(self, keys: list[str], account: str) -> None:
        present = all((key, account) in self.model.installations for key in keys)
        actual, removed = outcome(lambda: self.registry.uninstall_apps(keys, account))
        assert (OK if present else InstallationNotFound.__name__) == actual
        if present:
            chosen = set(keys)
            for key in chosen:
                del self.model.installations[key, account]
            expected_removed = self.model.drop_tokens(
                lambda t: t.account != account or t.key not in chosen
            )
            assert expected_removed == removed

    @rule(key=apps, account=st.sampled_from(ACCOUNTS))
    def uninstall(self, key: str, account: str) -> None:
        present = (key, account) in self.model.installations
        actual, removed = outcome(lambda: self.registry.uninstall_app(key, account))
        assert (OK if present else InstallationNotFound.__name__) == actual
        if present:
            del self.model.installations[key, account]
            expected_removed = self.model.drop_tokens(
                lambda t: (t.key, t.account) != (key, account)
            )
            assert expected_removed == removed

    # -- tokens ----------------------------------------------------------------------------------

    @rule(target=tokens, key=apps, which=SECRETS)
    def issue_client_credentials(self, key: str, which: str) -> Any:
        return self.issue(key, None, which)

    @rule(account=st.none() | st.sampled_from(ACCOUNTS))
    def issue_with_unknown_key(self, account: str | None) -> None:
        self.issue(UNKNOWN_KEY, account, "wrong")  # asserts the model's bad_credentials denial

    @rule(target=tokens, key=apps, account=st.sampled_from(ACCOUNTS), which=SECRETS)
    def issue_for_account(self, key: str, account: str, which: str) -> Any:
        return self.issue(key, account, which)

    def issue(self, key: str, account: str | None, which: str) -> Any:
        secret = self.secret_for(key, which)
        expected = self.model.issue(key, secret, account)
        actual, issued = outcome(
            lambda: self.registry.issue_token(
                key,
                secret,
                account=account,
                approved_by=None if account is None else "user",
                user_agent="ua",
            )
        )
        assert expected == actual
        event(f"issue: {actual}")
        if actual != OK:
            return multiple()
        record = issued.record
        acting_for = self.model.apps[key].owner if account is None else account
        assert (key, acting_for, self.now() + LIFETIME) == (
            record.app_key,
            record.account,
            record.expires_at,
        )
        self.model.tokens[issued.token] = ModelToken(
            record.token_id, key, acting_for, account is None, record.expires_at
        )
        self.token_ids[issued.token] = record.token_id
        return issued.token

    @rule(first=tokens, more=st.lists(tokens, max_size=2), include_unknown=st.booleans())
    def remove_tokens(self, first: str, more: list[str], include_unknown: bool) -> None:
        chosen = list(dict.fromkeys([first, *more]))
        ids = [self.token_ids[token] for token in chosen]
        if include_unknown:
            ids.append(UNKNOWN_TOKEN_ID)
        # One id that names no stored token (removed, purged or made up) removes nothing.
        all_stored = all(token in self.model.tokens for token in chosen) and not include_unknown
        expected = OK if all_stored else TokenNotFound.__name__
        actual, removed = outcome(lambda: self.registry.remove_tokens(ids))
        assert expected == actual
        if expected == OK:
            assert len(chosen) == removed
            self.model.drop_tokens(lambda t: t.token_id not in ids)

    @rule(token=tokens, key=apps, account=st.sampled_from(ACCOUNTS))
    def remove_token_in_scope(self, token: str, key: str, account: str) -> None:
        # Removing through one app+account's window: the token must belong to it.
        record = self.model.tokens.get(token)
        in_scope = record is not None and (record.key, record.account) == (key, account)
        token_id = self.token_ids[token]
        actual, _ = outcome(
            lambda: self.registry.remove_tokens([token_id], key=key, account=account)
        )
        assert (OK if in_scope else TokenNotFound.__name__) == actual
        if in_scope:
            del self.model.tokens[token]

    @rule(key=apps, account=st.sampled_from(ACCOUNTS))
    def remove_all_tokens(self, key: str, account: str) -> None:
        expected = OK if key in self.model.apps else AppNotFound.__name__
        actual, removed = outcome(lambda: self.registry.remove_all_tokens(key, account))
        assert expected == actual
        if expected == OK:
            assert self.model.drop_tokens(lambda t: (t.key, t.account) != (key, account)) == removed

    @rule(minutes=st.sampled_from([1, 10, 30, 59, 60, 61, 90]))
    def advance_clock(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    @rule(batch_size=st.integers(min_value=1, max_value=4))
    def purge(self, batch_size: int) -> None:
        now = self.now()
        expected = self.model.drop_tokens(lambda t: now < t.expires_at)
        assert expected == self.registry.purge_expired_tokens(batch_size=batch_size).total

    # -- what the checks and lists show ---------------------------------------------------------

    @invariant()
    def every_token_check_agrees(self) -> None:
        now = self.now()
        for token in [*self.token_ids, UNKNOWN_TOKEN]:
            actual = self.registry.check_token(token).reason
            assert self.model.check(token, now) == actual
            event(f"check: {actual}")

    @invariant()
    def instances_agree(self) -> None:
        listed = self.registry.list_apps(per_page=1000)
        assert {key: self.model.instances(key) for key in self.model.apps} == {
            item.app.key: item.instances for item in listed.items
        }
        assert len(self.model.apps) == listed.total

    @invariant()
    def access_tokens_agree(self) -> None:
        now = self.now()
        for account in ACCOUNTS:
            listed = self.registry.list_installations(account, per_page=1000)
            assert self.model.app_management(account, now) == {
                item.app.key: (
                    item.access_tokens,
                    None if item.installation is None else item.installation.suspended,
                )
                for item in listed.items
            }
            assert len(listed.items) == listed.total
            for key in self.model.apps:
                live = self.registry.list_tokens(key, account, per_page=1000).total
                assert self.model.live(key, account, now) == live
        for key in self.model.apps:
            every = self.registry.list_tokens(key, per_page=1000)
            expected = sorted(
                (t.account, t.token_id)
                for t in self.model.tokens.values()
                if t.key == key and now < t.expires_at
            )
            assert expected == sorted((t.account, t.token_id) for t in every.items)
            assert [t.account for t in every.items] == sorted(t.account for t in every.items)

    @invariant()
    def permissions_and_instances_agree(self) -> None:
        permitted = self.registry.list_permissions(per_page=1000)
        assert sorted(self.model.permitted) == [p.account for p in permitted.items]
        for key in self.model.apps:
            accounts = self.registry.list_app_installations(key, per_page=1000)
            assert sorted(a for k, a in self.model.installations if k == key) == [
                i.account for i in accounts.items
            ]

    @rule(per_page=st.integers(min_value=1, max_value=3), account=st.sampled_from(ACCOUNTS))
    def page_through_with_cursors(self, per_page: int, account: str) -> None:
        """Pages reached by cursors, forward then back, are the list's pages by number."""
        for read in (
            lambda **kw: self.registry.list_apps(per_page=per_page, **kw),
            lambda **kw: self.registry.list_installations(account, per_page=per_page, **kw),
        ):
            by_number = [read(page=1)]
            while by_number[-1].page < by_number[-1].pages:
                by_number.append(read(page=by_number[-1].page + 1))
            walked = [by_number[0]]
            while walked[-1].after is not None:
                walked.append(read(page=walked[-1].page + 1, after=walked[-1].after))
            back = [walked[-1]]
            while back[-1].before is not None:
                back.append(read(page=back[-1].page - 1, before=back[-1].before))
            assert [p.items for p in by_number] == [p.items for p in walked]
            assert [p.items for p in by_number] == [p.items for p in reversed(back)]


def make_machine(
    storage_factory: Callable[[], Storage],
    *,
    name: str = "Memory",
    max_examples: int = 200,
    stateful_step_count: int = 40,
) -> type[TestCase]:
    """The model-agreement test case for storage made by ``storage_factory``.

    Args:
        storage_factory: Returns a fresh, empty storage; called once per generated run. The
            Registry closes it when the run ends.
        name: Names the machine in reports (``RegistryMachine<name>``).
        max_examples, stateful_step_count: How many runs, and how many steps each.

    Returns:
        A `unittest.TestCase` class; bind it to a ``Test...`` name for pytest to collect it.
    """
    machine = type(
        f"RegistryMachine{name}",
        (RegistryMachine,),
        {"storage_factory": staticmethod(storage_factory)},
    )
    test_case = machine.TestCase
    test_case.settings = settings(
        max_examples=max_examples,
        stateful_step_count=stateful_step_count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    test_case.__doc__ = f"The Registry on {name} storage agrees with the reference model."
    return test_case


TestMemoryStorageAgreesWithModel = make_machine(MemoryStorage)

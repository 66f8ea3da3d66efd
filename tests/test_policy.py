"""The policy layer: every reason code, precedence, host rules, and purity (R23-R25)."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appregistry import (
    AccessRequest,
    AccessToken,
    Action,
    App,
    AppsPermission,
    Decision,
    Grant,
    Installation,
    Policy,
    Reason,
    TokenContext,
)

T0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
KEY = "PVui7jiATDKcWhPOpAUkXAliGahUvEdf"

#: The order DESIGN.md documents, written out here rather than read from the enum.
DOCUMENTED_ORDER = [
    "allowed",
    "token_unknown",
    "token_expired",
    "app_unknown",
    "app_disabled",
    "installation_missing",
    "installation_suspended",
    "apps_not_permitted",
    "bad_credentials",
    "app_not_trusted",
]


def app(*, enabled: bool = True, trusted: bool = False) -> App:
    return App(
        key=KEY,
        owner="acme",
        name="MyApp",
        homepage="http://example.com/",
        admin_email="myapp@example.com",
        redirect_url="https://example.com/cb",
        created_at=T0,
        trusted=trusted,
        enabled=enabled,
    )


def installation(*, suspended: bool = False) -> Installation:
    return Installation(KEY, "acme", "user1", T0, suspended=suspended)


def token(
    *, expires_in: timedelta = timedelta(hours=1), grant: Grant = Grant.AUTHORIZATION_CODE
) -> AccessToken:
    return AccessToken("t1", KEY, "acme", grant, T0, T0 + expires_in, "libwww-perl 5.833")


PERMISSION = AppsPermission("acme", "admin", T0)
EXPIRED = token(expires_in=timedelta(0))


def install(**changes: Any) -> AccessRequest:
    """An install that every built-in rule allows, with ``changes``."""
    return attrs.evolve(
        AccessRequest(Action.INSTALL, app=app(), account="acme", permission=PERMISSION), **changes
    )


def issue(**changes: Any) -> AccessRequest:
    """An authorization-code token request that every built-in rule allows, with ``changes``."""
    return attrs.evolve(
        AccessRequest(
            Action.ISSUE_TOKEN,
            app=app(),
            account="acme",
            installation=installation(),
            permission=PERMISSION,
            needs_installation=True,
            credentials_valid=True,
        ),
        **changes,
    )


def client_credentials(**changes: Any) -> AccessRequest:
    """A client-credentials token request by a trusted app for its owner, with ``changes``."""
    return attrs.evolve(
        AccessRequest(
            Action.ISSUE_TOKEN,
            app=app(trusted=True),
            account="acme",
            permission=PERMISSION,
            needs_trust=True,
            credentials_valid=True,
        ),
        **changes,
    )


CASES = [
    pytest.param(install(), Reason.ALLOWED, id="install allowed"),
    pytest.param(issue(), Reason.ALLOWED, id="authorization-code token allowed"),
    pytest.param(client_credentials(), Reason.ALLOWED, id="client-credentials token allowed"),
    pytest.param(
        AccessRequest.for_token(token(), app(), installation(), PERMISSION),
        Reason.ALLOWED,
        id="live token allowed",
    ),
    pytest.param(
        AccessRequest.for_token(
            token(grant=Grant.CLIENT_CREDENTIALS), app(trusted=True), None, PERMISSION
        ),
        Reason.ALLOWED,
        id="client-credentials token needs no installation",
    ),
    pytest.param(AccessRequest.for_token(None), Reason.TOKEN_UNKNOWN, id="unknown token"),
    pytest.param(
        AccessRequest.for_token(EXPIRED, app(), installation(), PERMISSION),
        Reason.TOKEN_EXPIRED,
        id="expired token",
    ),
    pytest.param(install(app=None), Reason.APP_UNKNOWN, id="install of an unknown app"),
    pytest.param(
        AccessRequest.for_token(token(), None, installation(), PERMISSION),
        Reason.APP_UNKNOWN,
        id="token of a removed app",
    ),
    pytest.param(install(app=app(enabled=False)), Reason.APP_DISABLED, id="disabled app"),
    pytest.param(
        issue(installation=None), Reason.INSTALLATION_MISSING, id="token for an uninstalled app"
    ),
    pytest.param(
        issue(installation=installation(suspended=True)),
        Reason.INSTALLATION_SUSPENDED,
        id="token for a suspended installation",
    ),
    pytest.param(
        AccessRequest.for_token(token(), app(), installation(suspended=True), PERMISSION),
        Reason.INSTALLATION_SUSPENDED,
        id="token used on a suspended installation",
    ),
    pytest.param(
        AccessRequest.for_token(
            token(grant=Grant.CLIENT_CREDENTIALS),
            app(trusted=True),
            installation(suspended=True),
            PERMISSION,
        ),
        Reason.INSTALLATION_SUSPENDED,
        id="owner suspended the trusted app on the account",
    ),
    pytest.param(install(permission=None), Reason.APPS_NOT_PERMITTED, id="install unpermitted"),
    pytest.param(
        client_credentials(permission=None),
        Reason.APPS_NOT_PERMITTED,
        id="owner without the apps permission",
    ),
    pytest.param(issue(credentials_valid=False), Reason.BAD_CREDENTIALS, id="wrong key or secret"),
    pytest.param(
        client_credentials(app=app(trusted=False)),
        Reason.APP_NOT_TRUSTED,
        id="client credentials for an untrusted app",
    ),
    pytest.param(
        AccessRequest.for_token(
            token(grant=Grant.CLIENT_CREDENTIALS), app(trusted=False), None, PERMISSION
        ),
        Reason.APP_NOT_TRUSTED,
        id="client-credentials token after the app lost its trust",
    ),
]

PRECEDENCE = [
    pytest.param(
        AccessRequest(Action.USE_TOKEN, app=None, account=None),
        Reason.TOKEN_UNKNOWN,
        id="unknown token before unknown app and no permission",
    ),
    pytest.param(
        AccessRequest.for_token(EXPIRED, app(enabled=False), None, None),
        Reason.TOKEN_EXPIRED,
        id="expired before disabled, uninstalled and unpermitted",
    ),
    pytest.param(
        issue(app=None, installation=None, permission=None, credentials_valid=False),
        Reason.APP_UNKNOWN,
        id="unknown app before missing installation and bad credentials",
    ),
    pytest.param(
        client_credentials(app=app(enabled=False), permission=None, credentials_valid=False),
        Reason.APP_DISABLED,
        id="disabled before unpermitted, bad credentials and untrusted",
    ),
    pytest.param(
        issue(installation=None, permission=None, credentials_valid=False),
        Reason.INSTALLATION_MISSING,
        id="missing installation before unpermitted and bad credentials",
    ),
    pytest.param(
        issue(installation=installation(suspended=True), permission=None),
        Reason.INSTALLATION_SUSPENDED,
        id="suspended before unpermitted",
    ),
    pytest.param(
        client_credentials(app=app(), permission=None, credentials_valid=False),
        Reason.APPS_NOT_PERMITTED,
        id="unpermitted before bad credentials and untrusted",
    ),
    pytest.param(
        client_credentials(app=app(), credentials_valid=False),
        Reason.BAD_CREDENTIALS,
        id="bad credentials before untrusted",
    ),
]


class TestReasons:
    """Every reason code is reachable through Policy().evaluate, each by its own cause."""

    @pytest.mark.parametrize(("request_", "expected"), CASES)
    def test_case(self, request_: AccessRequest, expected: Reason) -> None:
        assert expected == Policy().evaluate(request_, T0).reason

    def test_cases_reach_every_reason(self) -> None:
        reached = {param.values[1] for param in CASES}
        assert set(Reason) == reached

    def test_reasons_are_in_the_documented_order(self) -> None:
        assert DOCUMENTED_ORDER == [str(reason) for reason in Reason]

    def test_a_denial_says_why(self) -> None:
        decision = Policy().evaluate(install(app=app(enabled=False)), T0)
        assert (False, "the app is disabled") == (decision.allowed, decision.detail)

    def test_allow_is_not_a_denial(self) -> None:
        with pytest.raises(ValueError, match="allowed"):
            Decision.deny(Reason.ALLOWED)


class TestPrecedence:
    """When several denials apply, the first in the documented order is reported."""

    @pytest.mark.parametrize(("request_", "expected"), PRECEDENCE)
    def test_case(self, request_: AccessRequest, expected: Reason) -> None:
        assert expected == Policy().evaluate(request_, T0).reason

    def test_expiry_is_decided_by_now(self) -> None:
        request = AccessRequest.for_token(token(), app(), installation(), PERMISSION)
        one_hour = timedelta(hours=1)
        assert [Reason.ALLOWED, Reason.TOKEN_EXPIRED, Reason.TOKEN_EXPIRED] == [
            Policy().evaluate(request, T0 + offset).reason
            for offset in (one_hour - timedelta(microseconds=1), one_hour, 2 * one_hour)
        ]


class Recorder:
    """Host rules that note when they run, and deny with their own code when told to."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def rule(self, name: str, *, deny: bool = False) -> Callable[[AccessRequest, datetime], Any]:
        def host_rule(request: AccessRequest, now: datetime) -> Decision | None:
            self.ran.append(name)
            return Decision.deny(name, f"{name} says no") if deny else None

        return host_rule


class TestHostRules:
    """Host rules run after the built-in ones, in the order given; the first denial wins."""

    def test_built_in_denial_stops_before_host_rules(self) -> None:
        recorder = Recorder()
        policy = Policy(extra_rules=[recorder.rule("a", deny=True)])
        assert Reason.APP_UNKNOWN == policy.evaluate(install(app=None), T0).reason
        assert [] == recorder.ran

    def test_host_rules_run_in_order(self) -> None:
        recorder = Recorder()
        policy = Policy(extra_rules=[recorder.rule("a"), recorder.rule("b"), recorder.rule("c")])
        assert Reason.ALLOWED == policy.evaluate(install(), T0).reason
        assert ["a", "b", "c"] == recorder.ran

    def test_first_host_denial_wins(self) -> None:
        recorder = Recorder()
        policy = Policy(
            extra_rules=[
                recorder.rule("a"),
                recorder.rule("outside_hours", deny=True),
                recorder.rule("inactive_account", deny=True),
            ]
        )
        decision = policy.evaluate(install(), T0)
        assert ("outside_hours", "outside_hours says no") == (decision.reason, decision.detail)
        assert ["a", "outside_hours"] == recorder.ran

    def test_with_rules_appends(self) -> None:
        recorder = Recorder()
        policy = Policy(extra_rules=[recorder.rule("a")]).with_rules(
            recorder.rule("b"), recorder.rule("c", deny=True)
        )
        assert "c" == policy.evaluate(install(), T0).reason
        assert ["a", "b", "c"] == recorder.ran

    def test_an_explicit_allow_does_not_stop_later_rules(self) -> None:
        recorder = Recorder()

        def allow(request: AccessRequest, now: datetime) -> Decision:
            return Decision.allow()

        policy = Policy(extra_rules=[allow, recorder.rule("later", deny=True)])
        assert "later" == policy.evaluate(install(), T0).reason

    def test_rules_lists_builtins_first(self) -> None:
        recorder = Recorder()
        host_rule = recorder.rule("a")
        rules = Policy(extra_rules=[host_rule]).rules
        assert host_rule is rules[-1]
        assert Policy().rules == rules[:-1]


# -- the reference model --------------------------------------------------------------------


def reference(request: AccessRequest, now: datetime) -> str:
    """The decision as DESIGN.md states it: every condition, then the first in order."""
    found_app = request.app
    applies = {
        "token_unknown": request.action is Action.USE_TOKEN and request.token is None,
        "token_expired": request.token is not None and not now < request.token.expires_at,
        "app_unknown": found_app is None,
        "app_disabled": found_app is not None and not found_app.enabled,
        "installation_missing": request.needs_installation and request.installation is None,
        # A suspension stops the app on the account whatever the grant (R12).
        "installation_suspended": request.installation is not None
        and request.installation.suspended,
        "apps_not_permitted": request.permission is None,
        "bad_credentials": request.credentials_valid is False,
        "app_not_trusted": request.needs_trust and found_app is not None and not found_app.trusted,
    }
    return next((code for code in DOCUMENTED_ORDER[1:] if applies[code]), "allowed")


_apps = st.one_of(st.none(), st.builds(app, enabled=st.booleans(), trusted=st.booleans()))
_installations = st.one_of(st.none(), st.builds(installation, suspended=st.booleans()))
_permissions = st.sampled_from([None, PERMISSION])
_tokens = st.builds(
    token,
    expires_in=st.integers(-120, 120).map(lambda m: timedelta(minutes=m)),
    grant=st.sampled_from(Grant),
)
_nows = st.integers(-3 * 3600, 3 * 3600).map(lambda s: T0 + timedelta(seconds=s))

requests = st.one_of(
    st.builds(
        AccessRequest,
        action=st.sampled_from(Action),
        app=_apps,
        account=st.sampled_from([None, "acme"]),
        token=st.one_of(st.none(), _tokens),
        installation=_installations,
        permission=_permissions,
        needs_installation=st.booleans(),
        needs_trust=st.booleans(),
        credentials_valid=st.sampled_from([None, True, False]),
    ),
    st.builds(
        AccessRequest.for_token,
        st.one_of(st.none(), _tokens),
        app=_apps,
        installation=_installations,
        permission=_permissions,
    ),
)


class TestAgainstReference:
    """For any records and flags, the policy agrees with the reference model."""

    @given(request=requests, now=_nows)
    def test_built_ins(self, request: AccessRequest, now: datetime) -> None:
        assert reference(request, now) == Policy().evaluate(request, now).reason

    @given(request=requests, now=_nows, denies=st.lists(st.booleans(), max_size=4))
    def test_with_host_rules(
        self, request: AccessRequest, now: datetime, denies: list[bool]
    ) -> None:
        recorder = Recorder()
        rules = [recorder.rule(f"host_{i}", deny=deny) for i, deny in enumerate(denies)]
        expected = reference(request, now)
        if expected == "allowed":
            expected = next((f"host_{i}" for i, deny in enumerate(denies) if deny), "allowed")
        assert expected == Policy(extra_rules=rules).evaluate(request, now).reason


class TestTokenFastPath:
    """The token check's shortcut decides exactly as `Policy.evaluate` on the same records."""

    def test_same_decision_for_every_combination(self) -> None:
        # Each record at each state the rules tell apart: 288 cases, every one checked.
        for expires_in, grant, app_, installation_, permission, denies in itertools.product(
            [timedelta(0), timedelta(minutes=1)],
            list(Grant),
            [None, app(enabled=False), app(), app(trusted=True)],
            [None, installation(suspended=True), installation()],
            [None, PERMISSION],
            [[], [False], [False, True]],
        ):
            presented = token(expires_in=expires_in, grant=grant)
            rules = [Recorder().rule(f"host_{i}", deny=deny) for i, deny in enumerate(denies)]
            policy = Policy(extra_rules=rules)
            request = AccessRequest.for_token(presented, app_, installation_, permission)
            context = TokenContext(presented, app_, installation_, permission)
            assert policy.evaluate(request, T0) == policy._evaluate_token(context, T0), context

    @given(
        context=st.builds(TokenContext, _tokens, _apps, _installations, _permissions),
        now=_nows,
    )
    def test_same_decision_at_any_time(self, context: TokenContext, now: datetime) -> None:
        request = AccessRequest.for_token(
            context.token, context.app, context.installation, context.permission
        )
        assert Policy().evaluate(request, now) == Policy()._evaluate_token(context, now)

    def test_a_subclass_decides_through_its_evaluate(self) -> None:
        class Strict(Policy):
            def evaluate(self, request: AccessRequest, now: datetime) -> Decision:
                return Decision.deny("strict", "nothing acts")

        context = TokenContext(token(), app(), installation(), PERMISSION)
        assert "strict" == Strict()._evaluate_token(context, T0).reason


# -- purity ---------------------------------------------------------------------------------

_CLOCKS = {
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "time",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
    "localtime",
    "gmtime",
}


_WATCHED = ("appregistry", __name__)


@contextmanager
def clock_reads() -> Iterator[list[str]]:
    """Collect the clock functions that appregistry or this module call inside the block.

    Calls from other code (Hypothesis times its own runs) are not the policy's.
    """
    found: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        name = getattr(arg, "__qualname__", "")
        caller = frame.f_globals.get("__name__", "")
        if event == "c_call" and name in _CLOCKS and caller.startswith(_WATCHED):
            found.append(name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield found
    finally:
        sys.setprofile(previous)


class TestPurity:
    """Rules are pure: the same request and time give the same decision, and no clock is read."""

    def test_clock_reads_are_detected(self) -> None:
        def impatient(request: AccessRequest, now: datetime) -> Decision | None:
            wall_clock = datetime.now(UTC).timestamp() + time.time()
            return Decision.deny("late") if wall_clock > now.timestamp() else None

        with clock_reads() as found:
            Policy(extra_rules=[impatient]).evaluate(install(), T0)
        assert ["datetime.now", "time"] == found

    @given(request=requests, now=_nows)
    def test_same_input_same_output_and_no_clock(
        self, request: AccessRequest, now: datetime
    ) -> None:
        with clock_reads() as found:
            first = Policy().evaluate(request, now)
            second = Policy().evaluate(attrs.evolve(request), now)
        assert first == second
        assert [] == found

    def test_decision_follows_the_given_time_not_the_wall_clock(self) -> None:
        # Long expired by the wall clock, this token is live at the `now` passed in.
        old = AccessRequest.for_token(token(), app(), installation(), PERMISSION)
        assert Reason.ALLOWED == Policy().evaluate(old, T0).reason

"""atheris harness: `Registry.check_token` and `Registry.issue_token` on a memory registry.

``check_token`` never raises and knows no token but the one it issued; ``issue_token`` raises
only `Denied` (with one message for every reason, R25) or `ValidationError`, and a token it
issues is allowed at once. Every call leaves the registry as it found it (issued tokens are
removed again), and no error message repeats the secret or the token.

    python fuzz/fuzz_tokens.py -max_total_time=60
    python fuzz/fuzz_tokens.py -atheris_runs=100000
"""

# Asserts are the checks: libFuzzer reports a failed one, with its input, as a crash;
# they read `expected == actual`, as in the tests.
# ruff: noqa: S101, SIM300

from __future__ import annotations

import atheris
from _harness import hostile_text, hostile_value, run, seeded_registry

with atheris.instrument_imports():
    import appregistry.storage.memory  # noqa: F401 - instrumented for coverage
    from appregistry import Denied, Reason, ValidationError

REGISTRY, KNOWN = seeded_registry()
PLAINTEXTS = (KNOWN["secret"], KNOWN["plain_secret"], KNOWN["token"])


def _salted(fdp: atheris.FuzzedDataProvider, base: str) -> str:
    at = fdp.ConsumeIntInRange(0, len(base))
    return base[:at] + hostile_text(fdp, 4) + base[at + fdp.ConsumeIntInRange(0, 2) :]


def _check(fdp: atheris.FuzzedDataProvider) -> None:
    token = hostile_value(fdp, KNOWN["token"], _salted(fdp, KNOWN["token"]))
    check = REGISTRY.check_token(token)
    assert check.reason in set(Reason)
    if token != KNOWN["token"]:
        assert Reason.TOKEN_UNKNOWN == check.reason, repr(token)
    else:
        assert check.allowed


def _issue(fdp: atheris.FuzzedDataProvider) -> None:
    key = hostile_value(fdp, KNOWN["key"], KNOWN["plain_key"], _salted(fdp, KNOWN["key"]))
    secret = hostile_value(fdp, KNOWN["secret"], KNOWN["plain_secret"])
    account = hostile_value(fdp, None, "org-1", "sp-admin") if fdp.ConsumeBool() else None
    user_agent = hostile_value(fdp, None, "libwww-perl 5.833")
    try:
        issued = REGISTRY.issue_token(
            key,
            secret,
            account=account,
            approved_by=None if account is None else "alice",
            user_agent=user_agent,
        )
    except (Denied, ValidationError) as exc:
        error: Exception = exc
    else:
        _issued(issued.token, issued.record.token_id)
        return
    if isinstance(error, Denied):
        assert "invalid client credentials, or the app may not act" == str(error)
    assert [] == [p for p in PLAINTEXTS if p in str(error)]


def _issued(token: str, token_id: str) -> None:
    assert REGISTRY.check_token(token).allowed
    REGISTRY.remove_tokens([token_id])
    assert Reason.TOKEN_UNKNOWN == REGISTRY.check_token(token).reason


def test_one_input(data: bytes) -> None:
    """One check or one issue, made of ``data``; raises (a crash for libFuzzer) on a failure."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        _check(fdp)
    else:
        _issue(fdp)


if __name__ == "__main__":
    run(test_one_input)

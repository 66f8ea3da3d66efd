"""atheris harness: the validators in `appregistry._validation`.

For any input, each validator returns without raising, records a problem exactly when it
refuses, and gives back a normalized value that it accepts again unchanged (a fixed point):
canonical URLs are ASCII and within the length limit, texts have no control characters, and
`display_url` can show every canonical URL.

    python fuzz/fuzz_validators.py -max_total_time=60
    python fuzz/fuzz_validators.py -atheris_runs=100000
"""

# Asserts are the checks: libFuzzer reports a failed one, with its input, as a crash.
# ruff: noqa: S101

from __future__ import annotations

import unicodedata

import atheris
from _harness import hostile_text, hostile_value, run

with atheris.instrument_imports():
    from appregistry._validation import (
        MAX_PAGE,
        MAX_PER_PAGE,
        MAX_URL_LENGTH,
        Problems,
        display_url,
    )

_CONTROLS = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _url(fdp: atheris.FuzzedDataProvider) -> None:
    https_only, required = fdp.ConsumeBool(), fdp.ConsumeBool()
    scheme = fdp.PickValueInList(["http://", "https://", "HTTPS://", "", "ftp://", "//"])
    value = hostile_value(fdp, scheme + hostile_text(fdp), "https://bücher.example/a?b=ä")
    problems = Problems()
    result = problems.url("url", value, https_only=https_only, required=required)
    if result is None:
        assert problems or not required, (value, "refused without a problem")
        return
    assert not problems, (value, "a problem, yet a value")
    assert result.isascii(), (value, result)
    assert len(result) <= MAX_URL_LENGTH, value
    again = Problems()
    assert result == again.url("url", result, https_only=https_only), (value, result)
    display_url(result)


def _email(fdp: atheris.FuzzedDataProvider) -> None:
    value = hostile_value(fdp, hostile_text(fdp, 40) + "@" + hostile_text(fdp, 40))
    problems = Problems()
    result = problems.email("admin_email", value)
    assert (result is None) == bool(problems), value
    if result is not None:
        assert result == Problems().email("admin_email", result), (value, result)


def _phone(fdp: atheris.FuzzedDataProvider) -> None:
    value = hostile_value(fdp, "+" + hostile_text(fdp, 20), "+40 21 312 0000")
    problems = Problems()
    result = problems.phone("admin_phone", value)
    if result is not None:
        assert not problems, value
        assert result.startswith("+"), (value, result)
        assert result[1:].isdigit(), (value, result)
        assert result == Problems().phone("admin_phone", result), (value, result)


def _text(fdp: atheris.FuzzedDataProvider) -> None:
    multiline, max_length = fdp.ConsumeBool(), fdp.ConsumeIntInRange(1, 300)
    value = hostile_value(fdp)
    problems = Problems()
    if multiline:
        result = problems.multiline("description", value, max_length=max_length)
        allowed = {"\n", "\t", "\r"}
    else:
        result = problems.text("name", value, max_length=max_length, required=False)
        allowed = set()
    if result is None:
        return
    assert not problems, value
    assert len(result) <= max_length, value
    assert result == unicodedata.normalize("NFC", result).strip(), (value, result)
    bad = [ch for ch in result if ch not in allowed and unicodedata.category(ch) in _CONTROLS]
    assert not bad, (value, bad)


def _identifier(fdp: atheris.FuzzedDataProvider) -> None:
    value = hostile_value(fdp, "org-1", "sp-admin")
    problems = Problems()
    result = problems.identifier("account", value)
    assert (result is None) == bool(problems), value
    if result is not None:
        assert value == result
        result.encode("utf-8")  # storable: no lone surrogates


def _paging(fdp: atheris.FuzzedDataProvider) -> None:
    page = hostile_value(fdp, 1, 2, MAX_PAGE, MAX_PAGE + 1, fdp.ConsumeInt(16))
    per_page = hostile_value(fdp, 10, 25, 100, MAX_PER_PAGE, fdp.ConsumeInt(4))
    problems = Problems()
    good_page, good_size = problems.paging(page, per_page)
    assert 1 <= good_page <= MAX_PAGE
    assert 1 <= good_size <= MAX_PER_PAGE
    # The offset a backend will bind fits a signed 64-bit integer.
    assert (good_page - 1) * good_size < 2**63


def _search(fdp: atheris.FuzzedDataProvider) -> None:
    value = hostile_value(fdp, "MyApp", "Straße")
    problems = Problems()
    result = problems.search(value)
    if result is not None:
        assert not problems, value
        assert result == result.casefold() or not result.isascii(), (value, result)


VALIDATORS = [_url, _email, _phone, _text, _identifier, _paging, _search]


def test_one_input(data: bytes) -> None:
    """One call of one validator, made of ``data``; raises (a crash for libFuzzer) on a failure."""
    fdp = atheris.FuzzedDataProvider(data)
    fdp.PickValueInList(VALIDATORS)(fdp)


if __name__ == "__main__":
    run(test_one_input)

"""What the atheris harnesses share: setup, a seeded registry, and ways to draw hostile values.

Not a harness itself. Each ``fuzz_*.py`` beside it imports this, instruments appregistry for
coverage, and hands libFuzzer its ``TestOneInput``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris

#: Characters that have broken parsers elsewhere: controls, bidi overrides, zero-width and
#: separator characters, a BOM, case oddities, full-width dots, NUL.
SPECIALS = (
    "\x00\x01\t\n\r\x1b\x7f\x85\xa0\xad\u0301\u200b\u200d\u202e\u2066\u2028\u3000\ufeff"
    "\u0130\u00df\u03a3\u212a\uff0e\u3002\ud800\udfff%@#:/?[]\\ \"'&=+.-_~"
)


def hostile_text(fdp: atheris.FuzzedDataProvider, max_length: int = 200) -> str:
    """Text of any code points, lone surrogates included, often salted with `SPECIALS`."""
    text: str = fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, max_length))
    if text and fdp.ConsumeBool():
        at = fdp.ConsumeIntInRange(0, len(text))
        text = text[:at] + fdp.PickValueInList(list(SPECIALS)) + text[at:]
    return text


def hostile_value(fdp: atheris.FuzzedDataProvider, *likely: object) -> object:
    """One of ``likely`` (valid values), hostile text, or a value of another type."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if likely and choice < 4:
        return fdp.PickValueInList(list(likely))
    if choice < 8:
        return hostile_text(fdp)
    others: list[Callable[[], object]] = [
        lambda: None,
        lambda: fdp.ConsumeInt(9),
        lambda: fdp.ConsumeBytes(8),
        lambda: [hostile_text(fdp, 8)],
        fdp.ConsumeBool,
        fdp.ConsumeFloat,
        lambda: "a" * fdp.ConsumeIntInRange(1_000, 100_000),
    ]
    return fdp.PickValueInList(others)()


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Hand ``test_one_input`` to libFuzzer, with the command line's options."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def seeded_registry() -> tuple[Any, dict[str, str]]:
    """A memory registry, and the keys, secrets and token that the harnesses present.

    It holds a trusted app (its owner permitted, one live token) and an untrusted app
    installed on ``org-1``.
    """
    # Imported here, not above: a harness imports appregistry first, inside
    # `atheris.instrument_imports`, so that its code is instrumented for coverage.
    from appregistry import ImportedCredentials, Registry  # noqa: PLC0415
    from appregistry.storage.memory import MemoryStorage  # noqa: PLC0415
    from appregistry.testing import ManualClock  # noqa: PLC0415

    registry = Registry(storage=MemoryStorage(), clock=ManualClock())
    fields = {
        "homepage": "http://bücher.example/MyApp",
        "admin_email": "myapp@exämple.com",
        "redirect_url": "https://example.com/MyApp/handler",
    }
    known = {
        "key": "TrustedAppKey0000000000000000000",
        "secret": "TrustedSecret0000000000000000000",
        "plain_key": "PlainAppKey000000000000000000000",
        "plain_secret": "PlainSecret000000000000000000000",
        "redirect_url": fields["redirect_url"],
    }
    registry.permit_account("sp-admin", by="provider")
    registry.permit_account("org-1", by="sp-admin")
    registry.register_app(
        "sp-admin",
        name="Trusted",
        trusted=True,
        credentials=ImportedCredentials(known["key"], known["secret"]),
        **fields,
    )
    registry.register_app(
        "sp-admin",
        name="Plain",
        credentials=ImportedCredentials(known["plain_key"], known["plain_secret"]),
        **fields,
    )
    registry.install_app(known["plain_key"], "org-1", by="alice")
    known["token"] = registry.issue_token(known["key"], known["secret"]).token
    return registry, known

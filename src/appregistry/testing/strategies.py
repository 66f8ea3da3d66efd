"""Hypothesis strategies for appregistry's inputs, for hosts to reuse in their own tests.

Every strategy draws values that `appregistry.Registry` accepts, so a host can test its own
code (forms, policies, backends) with realistic data: internationalized hosts and emails,
phone numbers of every region, credentials in the exact formats the registry makes and imports.

>>> from hypothesis import given
>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> @given(fields=app_fields(), owner=accounts())
... def test_any_valid_app_registers(fields, owner):
...     registry = Registry(storage=MemoryStorage())
...     new = registry.register_app(owner, **fields)
...     assert new.app == registry.get_app(new.app.key)
>>> test_any_valid_app_registers()

This module needs Hypothesis (``pip install 'appregistry[testing]'``).
"""

from __future__ import annotations

import functools
import string
from typing import Any, Final

import phonenumbers
from hypothesis import strategies as st

from .._records import ImportedCredentials

__all__ = [
    "accounts",
    "app_fields",
    "app_keys",
    "app_secrets",
    "emails",
    "homepages",
    "idn_hosts",
    "importable_credentials",
    "imported_credentials",
    "phone_numbers",
    "redirect_urls",
]

_CREDENTIAL_LENGTH: Final = 32
_GENERATED: Final = string.ascii_letters + string.digits
_UNRESERVED: Final = _GENERATED + "-._~"

# Letters that are PVALID in IDNA 2008 and need no context rule, from several scripts, all
# lower case and precomposed (NFC), so a drawn host is already in the form UTS 46 gives back.
# Deviation characters (ß, ς) are left out: their upper-case forms name other hosts.
_LATIN: Final = "àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿāăąćčďđēęěğīıľłńňőœřśşšťūůűźżž"
_GREEK: Final = "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ"
_CYRILLIC: Final = "абвгдежзийклмнопрстуфхцчшщъыьэюя"
_CJK: Final = "例子测试中文日本語東京大阪あいうえおかきくけこさしすせそアイウエオカキクケコ"
_UNICODE_LETTERS: Final = _LATIN + _GREEK + _CYRILLIC + _CJK
_ASCII_LETTERS: Final = string.ascii_lowercase
_ASCII_ALNUM: Final = string.ascii_lowercase + string.digits
# email-validator refuses these top-level domains (RFC 6761 and friends).
_SPECIAL_USE_TLDS: Final = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _credential(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=_CREDENTIAL_LENGTH, max_size=_CREDENTIAL_LENGTH)


def app_keys() -> st.SearchStrategy[str]:
    """App keys as the registry makes them: 32 characters of ``[A-Za-z0-9]``."""
    return _credential(_GENERATED)


def app_secrets() -> st.SearchStrategy[str]:
    """App secrets as the registry makes them: 32 characters of ``[A-Za-z0-9]``."""
    return _credential(_GENERATED)


def importable_credentials() -> st.SearchStrategy[str]:
    """Keys or secrets that can be imported: 32 characters of RFC 3986 unreserved."""
    return _credential(_UNRESERVED)


def imported_credentials() -> st.SearchStrategy[ImportedCredentials]:
    """`appregistry.ImportedCredentials` with a valid key and secret."""
    return st.builds(ImportedCredentials, key=importable_credentials(), secret=app_secrets())


def _joined(chars: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=chars, min_size=min_size, max_size=max_size)


def _ascii_label() -> st.SearchStrategy[str]:
    # Hyphens only inside, one at a time, so "--" never lands at positions 3-4 (IDNA 2008
    # keeps those for "xn--" and other prefixes).
    return st.lists(_joined(_ASCII_ALNUM, 1, 8), min_size=1, max_size=3).map("-".join)


# A label keeps to one script, or it is refused as a look-alike (docs/security.md): ASCII
# digits go with every script, ASCII letters only with Latin and with Han and kana.
_SCRIPTS: Final = (_LATIN, _GREEK, _CYRILLIC, _CJK)
_SCRIPTS_AND_ASCII: Final = (
    (_LATIN, _ASCII_ALNUM),
    (_GREEK, string.digits),
    (_CYRILLIC, string.digits),
    (_CJK, _ASCII_ALNUM),
)


def _unicode_label() -> st.SearchStrategy[str]:
    # Non-ASCII letters of one script with ASCII; short enough that the xn-- form stays
    # under 63.
    return st.sampled_from(_SCRIPTS_AND_ASCII).flatmap(
        lambda letters: st.lists(
            st.one_of(_joined(letters[0], 1, 4), _joined(letters[1], 1, 4)),
            min_size=1,
            max_size=3,
        ).map("".join)
    )


def _tld(*, unicode: bool) -> st.SearchStrategy[str]:
    ascii_tld = _joined(_ASCII_LETTERS, 2, 6).filter(lambda t: t not in _SPECIAL_USE_TLDS)
    if not unicode:
        return ascii_tld
    return st.one_of(ascii_tld, st.sampled_from(_SCRIPTS).flatmap(lambda s: _joined(s, 2, 5)))


def _hosts(*, unicode_tld: bool) -> st.SearchStrategy[str]:
    labels = st.lists(st.one_of(_ascii_label(), _unicode_label()), min_size=1, max_size=3)
    return st.builds(lambda names, tld: ".".join([*names, tld]), labels, _tld(unicode=unicode_tld))


def idn_hosts() -> st.SearchStrategy[str]:
    """Valid host names, many with non-ASCII labels, in lower case Unicode (NFC).

    Each passes ``idna.encode(host, uts46=True)`` and decodes back to itself; its last label
    is never all digits, so no host looks like an IPv4 address. Each label keeps to one
    script (Latin, Greek, Cyrillic, or Han and kana with or without Latin), as the registry
    requires.

    >>> import idna
    >>> from hypothesis import given
    >>> @given(idn_hosts())
    ... def test_round_trip(host):
    ...     assert host == idna.decode(idna.encode(host, uts46=True))
    >>> test_round_trip()
    """
    return _hosts(unicode_tld=True)


_PATH_CHARS: Final = string.ascii_letters + string.digits + "-._~" + "äöüéñ中文"


def _paths() -> st.SearchStrategy[str]:
    segments = st.lists(_joined(_PATH_CHARS, 0, 8), min_size=0, max_size=3)
    return segments.map(lambda parts: "/" + "/".join(parts))


def _queries() -> st.SearchStrategy[str]:
    pair = st.tuples(_joined(string.ascii_lowercase, 1, 5), _joined(_PATH_CHARS, 0, 6))
    return st.lists(pair, min_size=0, max_size=2).map(
        lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else ""
    )


def _ports(scheme: str) -> st.SearchStrategy[str]:
    default = {"http": 80, "https": 443}[scheme]
    return st.one_of(
        st.just(""),
        st.just(f":{default}"),
        st.integers(min_value=1, max_value=65535).map(lambda port: f":{port}"),
    )


def _urls(scheme: str, *, fragment: bool) -> st.SearchStrategy[str]:
    fragments = (
        st.one_of(st.just(""), _joined(_PATH_CHARS, 1, 6).map(lambda f: "#" + f))
        if fragment
        else st.just("")
    )
    return st.builds(
        lambda host, port, path, query, frag: f"{scheme}://{host}{port}{path}{query}{frag}",
        idn_hosts(),
        _ports(scheme),
        _paths(),
        _queries(),
        fragments,
    )


def homepages() -> st.SearchStrategy[str]:
    """Absolute http(s) URLs with IDN hosts, ports, Unicode paths and queries.

    Usable as ``homepage`` or ``image_url``.
    """
    return st.one_of(_urls("http", fragment=True), _urls("https", fragment=True))


def redirect_urls() -> st.SearchStrategy[str]:
    """Redirect URLs the registry accepts: ``https``, with an (IDN) host, no fragment."""
    return _urls("https", fragment=False)


_LOCAL_ASCII: Final = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


def _local_parts() -> st.SearchStrategy[str]:
    atom = st.one_of(_joined(_LOCAL_ASCII, 1, 8), _joined(_UNICODE_LETTERS, 1, 6))
    # Dots only between atoms: never first, last or doubled.
    return st.lists(atom, min_size=1, max_size=3).map(".".join)


def emails() -> st.SearchStrategy[str]:
    """Email addresses that ``email-validator`` accepts without DNS.

    Local parts may be internationalized (SMTPUTF8) and domains may be IDNs; the top-level
    domain is ASCII letters and never a special-use name (``test``, ``localhost``, ...).
    """
    domains = st.builds(
        lambda labels, tld: ".".join([*labels, tld]),
        st.lists(st.one_of(_ascii_label(), _unicode_label()), min_size=1, max_size=2),
        _tld(unicode=False),
    )
    return st.builds(lambda local, domain: f"{local}@{domain}", _local_parts(), domains)


@functools.cache
def _example_numbers() -> tuple[Any, ...]:
    # phonenumbers ships a valid example number for most regions and types; computed once.
    kinds = (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in kinds:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                found.append(number)
    return tuple(found)


_PHONE_FORMATS: Final = (
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.RFC3966,
)


def phone_numbers() -> st.SearchStrategy[str]:
    """Valid international phone numbers of many regions, each normalizing to E.164.

    They come in E.164, international or RFC 3966 (``tel:``) spelling.

    >>> from hypothesis import given
    >>> @given(phone_numbers())
    ... def test_plus(number):
    ...     assert number.startswith(("+", "tel:+"))
    >>> test_plus()
    """
    return st.builds(
        lambda number, fmt: str(phonenumbers.format_number(number, fmt)),
        st.sampled_from(_example_numbers()),
        st.sampled_from(_PHONE_FORMATS),
    )


# Printable text: letters, marks, numbers, punctuation, symbols and ordinary spaces.
_PRINTABLE: Final = st.characters(categories=("L", "M", "N", "P", "S", "Zs"))


def _names() -> st.SearchStrategy[str]:
    # At most 30 drawn characters: NFC may lengthen text (at most threefold), and names
    # may have 100.
    return st.text(alphabet=_PRINTABLE, min_size=1, max_size=30).filter(lambda s: s.strip())


def _descriptions() -> st.SearchStrategy[str]:
    lines = st.text(alphabet=_PRINTABLE, max_size=40)
    return st.lists(lines, min_size=1, max_size=4).map("\n".join)


def accounts() -> st.SearchStrategy[str]:
    """Account, owner or user ids: 1-40 printable characters, no surrounding whitespace."""
    readable = st.builds(
        lambda word, n: f"{word}-{n}", _joined(string.ascii_lowercase, 1, 10), st.integers(0, 999)
    )
    unicode = st.text(
        alphabet=st.characters(categories=("L", "M", "N", "P", "S")), min_size=1, max_size=40
    )
    return st.one_of(readable, unicode)


def app_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments that `appregistry.Registry.register_app` accepts (after ``owner``).

    The required fields are always there; the optional ones (``description``,
    ``image_url``, ``admin_phone``, ``trusted``) are present or not.

    >>> from hypothesis import given
    >>> @given(app_fields())
    ... def test_required_fields(fields):
    ...     assert {"name", "homepage", "admin_email", "redirect_url"} <= fields.keys()
    >>> test_required_fields()
    """
    return st.fixed_dictionaries(
        {
            "name": _names(),
            "homepage": homepages(),
            "admin_email": emails(),
            "redirect_url": redirect_urls(),
        },
        optional={
            "description": _descriptions(),
            "image_url": homepages(),
            "admin_phone": phone_numbers(),
            "trusted": st.booleans(),
        },
    )

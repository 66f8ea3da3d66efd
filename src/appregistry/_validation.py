"""Validation of everything that comes from outside: app fields, ids, paging and search text.

Each validator returns the normalized value or records a `FieldProblem` in a `Problems`
collector; the caller raises one `ValidationError` with every problem once all fields are seen
(R10). Hosts go through ``idna`` (IDNA 2008 with UTS 46 mapping), emails through
``email-validator`` (syntax only, no DNS), phone numbers through ``phonenumbers``.

Each label of a host or of an email domain must also pass a mixed-script check in the spirit
of Unicode TS 39's "moderately restrictive" level (see `_label_problem`); character scripts
come from ``regex``, which carries Unicode's Script and Script_Extensions properties.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
import urllib.parse
from typing import Final

import email_validator
import idna
import phonenumbers
import regex

from .errors import FieldProblem, ValidationError

__all__ = [
    "MAX_ACCOUNT_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_EMAIL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PAGE",
    "MAX_PER_PAGE",
    "MAX_SEARCH_LENGTH",
    "MAX_URL_LENGTH",
    "MAX_USER_AGENT_LENGTH",
    "Problems",
    "display_url",
    "search_text",
]

#: App name, after trimming surrounding whitespace.
MAX_NAME_LENGTH: Final = 100
#: App description.
MAX_DESCRIPTION_LENGTH: Final = 1000
#: Homepage, image and redirect URLs, in their canonical (ASCII) form.
MAX_URL_LENGTH: Final = 2000
#: Account, owner and user ids: opaque strings owned by the host.
MAX_ACCOUNT_LENGTH: Final = 128
#: A token's user agent; longer ones are refused rather than silently cut.
MAX_USER_AGENT_LENGTH: Final = 512
#: Search text.
MAX_SEARCH_LENGTH: Final = 200
#: Largest page size a list accepts.
MAX_PER_PAGE: Final = 1000
#: Largest page number a list accepts: the offset it makes must fit a 64-bit SQL integer.
MAX_PAGE: Final = 1_000_000_000
#: The phone number as typed, before normalization.
MAX_PHONE_LENGTH: Final = 40
#: The admin email as typed, after trimming: the longest address SMTP can carry (RFC 5321).
MAX_EMAIL_LENGTH: Final = 254
# Text longer than this many times its limit is refused before it is normalized, so refusing
# a huge value costs no more than refusing a short one. Normalization can shorten text: NFC
# composes up to four code points into one (Greek alpha with psili, perispomeni and
# ypogegrammeni), and trimming drops surrounding spaces. Text that long is not a name.
_RAW_SLACK: Final = 4

_LINE_BREAKS: Final = str.maketrans("", "", "\n\t\r")

_HOST_LABEL_MAX: Final = 63
_HOST_MAX: Final = 253


def _has_control(value: str) -> bool:
    # Cc (controls), Cf (format: bidi overrides, zero-width joiners), Zl/Zp (line separators):
    # none belongs in a name, id or URL, and they are the usual tools of spoofing. Cs (lone
    # surrogates) are not characters at all: they cannot be encoded as UTF-8 for storage.
    if value.isascii():
        # The common case, in C: the only such characters in ASCII are its controls (Cc),
        # and they are exactly what `str.isprintable` refuses there.
        return not value.isprintable()
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in value)


class Problems:
    """Collects field problems; `raise_if_any` raises them together as one ValidationError.

    >>> problems = Problems()
    >>> problems.text("name", "  MyApp ", max_length=10)
    'MyApp'
    >>> problems.text("name", "", max_length=10) is None
    True
    >>> problems.raise_if_any()
    Traceback (most recent call last):
    ...
    appregistry.errors.ValidationError: name: name is required
    """

    def __init__(self) -> None:
        self._found: list[FieldProblem] = []

    def add(self, field: str, code: str, message: str) -> None:
        """Record one problem."""
        self._found.append(FieldProblem(field, code, message))

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_if_any(self) -> None:
        """Raise one `ValidationError` carrying every problem recorded, if there are any."""
        if self._found:
            raise ValidationError(self._found)

    # -- plain text -------------------------------------------------------------------------

    def text(
        self, field: str, value: object, *, max_length: int, required: bool = True
    ) -> str | None:
        """A single-line text: NFC-normalized, trimmed, no control characters, length-capped.

        An empty optional value becomes ``None``.
        """
        return self._text(field, value, max_length=max_length, required=required, lines=False)

    def multiline(self, field: str, value: object, *, max_length: int) -> str | None:
        """An optional free text (a description): like `text`, but line breaks and tabs are kept."""
        return self._text(field, value, max_length=max_length, required=False, lines=True)

    def _text(
        self, field: str, value: object, *, max_length: int, required: bool, lines: bool
    ) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.add(field, "required", f"{field} is required")
            return None
        if not isinstance(value, str):
            self.add(field, "not_text", f"{field} must be text")
            return None
        if len(value) > _RAW_SLACK * max_length:
            self.add(field, "too_long", f"{field} must be at most {max_length} characters")
            return None
        normalized = unicodedata.normalize("NFC", value).strip()
        # Line breaks and tabs are the only controls a multi-line text may hold.
        checked = normalized.translate(_LINE_BREAKS) if lines else normalized
        if _has_control(checked):
            self.add(field, "control_character", f"{field} must not contain control characters")
            return None
        if len(normalized) > max_length:
            self.add(field, "too_long", f"{field} must be at most {max_length} characters")
            return None
        return normalized

    def identifier(self, field: str, value: object) -> str | None:
        """An account, owner or user id: opaque to us, but non-empty, printable and bounded.

        Ids are compared exactly, so they are not trimmed or normalized: ``" a"`` is refused.
        """
        if not isinstance(value, str) or not value:
            self.add(field, "required", f"{field} is required")
            return None
        # Length first: the character checks below cost time in proportion to the length.
        if len(value) > MAX_ACCOUNT_LENGTH:
            self.add(field, "too_long", f"{field} must be at most {MAX_ACCOUNT_LENGTH} characters")
            return None
        if value != value.strip() or _has_control(value):
            self.add(
                field,
                "invalid",
                f"{field} must not have surrounding whitespace or control characters",
            )
            return None
        return value

    # -- URLs -------------------------------------------------------------------------------

    def url(
        self, field: str, value: object, *, required: bool = True, https_only: bool = False
    ) -> str | None:
        """An absolute http(s) URL, returned in canonical form (R2, R4).

        The host goes through IDNA 2008 / UTS 46 and is kept as lower-case ASCII, so the
        Unicode and ``xn--`` spellings of one host give the same string. Non-ASCII characters
        in the path and query are percent-encoded. User-info, whitespace, control characters,
        percent-encoded hosts, hosts a browser reads as an IPv4 number (``0x7f.1``), labels
        that mix scripts (``mixed_script``) or digits (``mixed_digits``) and (for redirect
        URLs) fragments are refused.

        >>> Problems().url("homepage", "http://Bücher.Example/Shop?q=ä")
        'http://xn--bcher-kva.example/Shop?q=%C3%A4'
        >>> Problems().url("redirect_url", "https://example.com/cb", https_only=True)
        'https://example.com/cb'
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.add(field, "required", f"{field} is required")
            return None
        if not isinstance(value, str):
            self.add(field, "not_text", f"{field} must be text")
            return None
        if len(value) > MAX_URL_LENGTH:
            self.add(field, "too_long", f"{field} must be at most {MAX_URL_LENGTH} characters")
            return None
        if any(ch.isspace() for ch in value) or _has_control(value):
            self.add(field, "invalid_url", f"{field} must not contain whitespace or controls")
            return None
        try:
            parts = urllib.parse.urlsplit(value)
            port = _port(parts)
        except ValueError:
            self.add(field, "invalid_url", f"{field} is not a valid URL")
            return None
        scheme = parts.scheme.lower()
        if https_only and scheme != "https":
            self.add(field, "not_https", f"{field} must be an https:// URL")
            return None
        if scheme not in {"http", "https"}:
            self.add(field, "invalid_scheme", f"{field} must be an http:// or https:// URL")
            return None
        if "@" in parts.netloc:
            self.add(field, "userinfo", f"{field} must not contain a user name or password")
            return None
        if https_only and (parts.fragment or value.endswith("#")):
            self.add(field, "fragment", f"{field} must not contain a #fragment")
            return None
        host = self._host(field, _raw_hostname(parts.netloc))
        if host is None:
            return None
        netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
        path = _quote(parts.path) or "/"
        query = _quote(parts.query)
        fragment = _quote(parts.fragment)
        canonical = urllib.parse.urlunsplit((scheme, netloc, path, query, fragment))
        if len(canonical) > MAX_URL_LENGTH:
            self.add(field, "too_long", f"{field} must be at most {MAX_URL_LENGTH} characters")
            return None
        return canonical

    def _host(self, field: str, hostname: str | None) -> str | None:
        if not hostname:
            self.add(field, "no_host", f"{field} must have a host")
            return None
        if "%" in hostname:
            self.add(field, "invalid_host", f"{field} host must not be percent-encoded")
            return None
        if hostname.startswith("["):
            self.add(field, "invalid_host", f"{field} host is not a valid address")
            return None
        try:
            address = ipaddress.ip_address(hostname)
        except ValueError:
            pass
        else:
            return f"[{address.compressed}]" if address.version == 6 else address.compressed
        if hostname.endswith("."):
            # "example.com." and "example.com" name the same host: keep one spelling.
            hostname = hostname[:-1]
        try:
            ascii_host = idna.encode(hostname, uts46=True).decode("ascii").lower()
            # Decoding back rejects xn-- labels that do not decode to a valid IDNA 2008 name.
            unicode_host = idna.decode(ascii_host)
        except (idna.IDNAError, UnicodeError, ValueError):
            self.add(field, "invalid_host", f"{field} host is not a valid domain name")
            return None
        labels = ascii_host.split(".")
        if len(ascii_host) > _HOST_MAX or any(
            not label or len(label) > _HOST_LABEL_MAX for label in labels
        ):
            self.add(field, "invalid_host", f"{field} host is not a valid domain name")
            return None
        if _NUMERIC_LABEL.fullmatch(labels[-1]):
            # A host whose last label is a number is an IPv4 address to browsers (WHATWG URL):
            # "1.2.3", "010.0.0.1", "2130706433" and "0x7f.1" all reach 127.0.0.1 or some
            # other address that the text does not show. Only the plain dotted form is kept.
            self.add(field, "invalid_host", f"{field} host is not a valid domain name")
            return None
        if self._scripts(field, unicode_host, f"{field} host"):
            return None
        return ascii_host

    def _scripts(self, field: str, domain: str, what: str) -> bool:
        # Record a problem for the first label of ``domain`` that mixes scripts or digits.
        for label in domain.split("."):
            code = _label_problem(label)
            if code == "mixed_script":
                self.add(
                    field,
                    code,
                    f"{what} label {label!r} mixes letters of different scripts, "
                    "as look-alike hosts do",
                )
                return True
            if code == "mixed_digits":
                self.add(field, code, f"{what} label {label!r} mixes digits of different scripts")
                return True
        return False

    # -- contact details ---------------------------------------------------------------------

    def email(self, field: str, value: object) -> str | None:
        """An email address, syntax-checked without DNS, normalized (R3).

        Internationalized local parts and IDN domains are accepted; the domain is kept in
        Unicode, lower-cased, as ``email-validator`` normalizes it. Its labels may not mix
        scripts or digits, as a host's may not; the local part is not checked for scripts.

        >>> Problems().email("admin_email", "Pelé@Exämple.COM")
        'Pelé@exämple.com'
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            self.add(field, "required", f"{field} is required")
            return None
        if not isinstance(value, str):
            self.add(field, "not_text", f"{field} must be text")
            return None
        address = value.strip()
        if len(address) > MAX_EMAIL_LENGTH:
            self.add(field, "too_long", f"{field} must be at most {MAX_EMAIL_LENGTH} characters")
            return None
        try:
            result = email_validator.validate_email(
                address, check_deliverability=False, allow_smtputf8=True
            )
        except email_validator.EmailNotValidError as exc:
            self.add(field, "invalid_email", f"{field} is not a valid email address: {exc}")
            return None
        if self._scripts(field, str(result.domain), f"{field} domain"):
            return None
        return str(result.normalized)

    def phone(self, field: str, value: object) -> str | None:
        """An optional international phone number, normalized to E.164 (R5).

        >>> Problems().phone("admin_phone", "+40 21 312 0000")
        '+40213120000'
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            self.add(field, "not_text", f"{field} must be text")
            return None
        if len(value) > MAX_PHONE_LENGTH:
            self.add(field, "too_long", f"{field} must be at most {MAX_PHONE_LENGTH} characters")
            return None
        try:
            # phonenumbers skips characters it does not know, controls included: refuse them
            # first, so what is stored is what was typed.
            number = None if _has_control(value) else phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            number = None
        # E.164 has no room for an extension; dropping it silently would store another number.
        if number is None or number.extension or not phonenumbers.is_valid_number(number):
            self.add(
                field,
                "invalid_phone",
                f"{field} must be a valid international number, such as +40 21 312 0000",
            )
            return None
        return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    # -- lists ------------------------------------------------------------------------------

    def paging(self, page: object, per_page: object) -> tuple[int, int]:
        """A page number (1 to `MAX_PAGE`) and a page size (1 to `MAX_PER_PAGE`)."""
        good_page, good_size = 1, 10
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
            self.add("page", "invalid", f"page must be a whole number from 1 to {MAX_PAGE}")
        else:
            good_page = page
        if (
            isinstance(per_page, bool)
            or not isinstance(per_page, int)
            or not 1 <= per_page <= MAX_PER_PAGE
        ):
            self.add(
                "per_page", "invalid", f"per_page must be a whole number from 1 to {MAX_PER_PAGE}"
            )
        else:
            good_size = per_page
        return good_page, good_size

    def search(self, value: object) -> str | None:
        """Search text, folded for case-insensitive matching; empty means "everything"."""
        text = self.text("search", value, max_length=MAX_SEARCH_LENGTH, required=False)
        return search_text(text) if text else None


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# RFC 3986 reserved and unreserved characters stay as they are; "%" too, so existing
# percent-escapes are not encoded twice. Everything else (non-ASCII) is percent-encoded.
_URL_SAFE: Final = "!#$%&'()*+,-./:;=?@[]_~"


def _raw_hostname(netloc: str) -> str:
    # Not `SplitResult.hostname`: it lower-cases with str.lower(), whose final-sigma rule
    # turns a word-final capital sigma into final sigma (U+03C2), where UTS 46 maps it to
    # sigma (U+03C3): another host. IDNA does the case mapping itself.
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        literal, _, after = host[1:].partition("]")
        # "[::1]x" is no address: keep the brackets, so the host is refused, not cut short.
        return literal if not after or after.startswith(":") else host
    return host.partition(":")[0]


def _port(parts: urllib.parse.SplitResult) -> int | None:
    port = parts.port  # ValueError when not a number from 0 to 65535
    if port == 0:
        # urlsplit accepts 0, but nothing listens there: a typo, not an address.
        raise ValueError("port 0")
    return port


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe=_URL_SAFE)


# What the WHATWG URL parser takes for a number in a host's last label: decimal, octal (a
# leading 0) or hexadecimal (0x, even with no digits after it).
_NUMERIC_LABEL: Final = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII)

# -- scripts (Unicode TS 39, section 5) ------------------------------------------------------
#
# A label may not mix scripts, as "apple" spelt with a Cyrillic first letter does. Accepted:
# - one script, with Common and Inherited characters (digits, hyphen, combining marks);
# - Han with Hiragana and Katakana (Japanese), with Hangul (Korean) or with Bopomofo, which
#   TS 39 treats as one script each;
# - Latin with any one of those, or with one other Recommended script (UAX 31, table 5)
#   except Cyrillic and Greek, whose letters are too often Latin look-alikes.
# This is TS 39's "moderately restrictive" level, the one Chromium applies before it shows a
# host in Unicode. Digits of two numbering systems in one label are refused too (TS 39, 5.3).

#: Every script Unicode names, by ISO 15924 code. Those the installed ``regex`` does not know
#: (newer than its Unicode data) are left out: their letters count as one unknown script.
_SCRIPT_CODES: Final = """
    Adlm Aghb Ahom Arab Armi Armn Avst Bali Bamu Bass Batk Beng Berf Bhks Bopo Brah Brai Bugi
    Buhd Cakm Cans Cari Cham Cher Chrs Copt Cpmn Cprt Cyrl Deva Diak Dogr Dsrt Dupl Egyp Elba
    Elym Ethi Gara Geor Glag Gong Gonm Goth Gran Grek Gujr Gukh Guru Hang Hani Hano Hatr Hebr
    Hira Hluw Hmng Hmnp Hrkt Hung Ital Java Jurc Kali Kana Kawi Khar Khmr Khoj Kits Knda Krai
    Kthi Lana Laoo Latn Lepc Limb Lina Linb Lisu Lyci Lydi Mahj Maka Mand Mani Marc Medf Mend
    Merc Mero Miao Mlym Modi Mong Mroo Mtei Mult Mymr Nagm Nand Narb Nbat Newa Nkoo Nshu Ogam
    Olck Onao Orkh Orya Osge Osma Ougr Palm Pauc Pcun Perm Phag Phli Phlp Phnx Prti Rjng Rohg
    Runr Samr Sarb Saur Seal Sgnw Shaw Shrd Sidd Sidt Sind Sinh Sogd Sogo Sora Soyo Sund Sunu
    Sylo Syrc Tagb Takr Tale Talu Taml Tang Tavt Tayo Telu Tfng Tglg Thaa Thai Tibt Tirh Tnsa
    Todr Tols Toto Tutg Ugar Vaii Vith Wara Wcho Xpeo Xsux Yezi Yiii Zanb Zinh Zyyy
""".split()  # noqa: SIM905 - a block reads better than 178 quoted codes
_UNKNOWN_SCRIPT: Final = "Zzzz"
# Common (Zyyy) and Inherited (Zinh) characters go with any script.
_ANY_SCRIPT: Final = (frozenset({"Zyyy"}), frozenset({"Zinh"}))
# TS 39 5.1: Han is written with kana in Japanese (Jpan), with Hangul in Korean (Kore) and
# with Bopomofo (Hanb); each of those counts as one script.
_WRITING_SYSTEMS: Final = {
    "Hani": frozenset({"Hanb", "Jpan", "Kore"}),
    "Hira": frozenset({"Jpan"}),
    "Kana": frozenset({"Jpan"}),
    "Hrkt": frozenset({"Jpan"}),
    "Hang": frozenset({"Kore"}),
    "Bopo": frozenset({"Hanb"}),
}
#: What may share a label with Latin: the Recommended scripts of UAX 31 (table 5) and the
#: writing systems above, less Cyrillic and Greek.
_WITH_LATIN: Final = frozenset(
    """
    Arab Armn Beng Bopo Deva Ethi Geor Gujr Guru Hang Hani Hebr Hira Kana Khmr Knda Laoo Mlym
    Mymr Orya Sinh Taml Telu Thaa Thai Tibt Hanb Jpan Kore
    """.split()  # noqa: SIM905 - as _SCRIPT_CODES
)


@functools.cache
def _script_patterns() -> tuple[regex.Pattern[str], regex.Pattern[str], regex.Pattern[str]]:
    # Compiled on first use, not at import: the three take some milliseconds.
    known = []
    for code in _SCRIPT_CODES:
        try:
            regex.compile(rf"\p{{sc={code}}}")
        except regex.error:
            continue
        known.append(code)
    # Script is a partition: each character matches exactly one branch (or the last).
    script = regex.compile("|".join(rf"(?P<{c}>\p{{sc={c}}})" for c in known) + "|(?s:.)")
    # The few characters whose Script_Extensions say more than their Script does, such as
    # the Japanese prolonged sound mark (Common; used with Hiragana and Katakana).
    extended = regex.compile(
        "[" + "".join(rf"[\p{{scx={c}}}--\p{{sc={c}}}]" for c in known) + "]", regex.V1
    )
    extensions = regex.compile("".join(rf"(?=(?P<{c}>\p{{scx={c}}})?)" for c in known))
    return script, extended, extensions


@functools.lru_cache(maxsize=1024)
def _extended_scripts(char: str) -> frozenset[str]:
    # Only characters in the small `extended` class come here, so the cache stays warm.
    match = _script_patterns()[2].match(char)
    found = frozenset(name for name, hit in match.groupdict().items() if hit) if match else None
    return found or frozenset({_UNKNOWN_SCRIPT})


def _char_scripts(char: str) -> frozenset[str]:
    r"""The scripts ``char`` is used with (its Script_Extensions), by ISO 15924 code.

    >>> cyrillic_a, prolonged_sound_mark = "\u0430", "\u30fc"
    >>> [sorted(_char_scripts(c)) for c in (cyrillic_a, prolonged_sound_mark, "7")]
    [['Cyrl'], ['Hira', 'Kana'], ['Zyyy']]
    """
    script, extended, _ = _script_patterns()
    if extended.match(char):
        return _extended_scripts(char)
    match = script.match(char)
    return frozenset({(match.lastgroup if match else None) or _UNKNOWN_SCRIPT})


def _resolved(script_sets: list[frozenset[str]]) -> frozenset[str] | None:
    # TS 39 5.1: the scripts every character is used with (None: any, for no characters).
    resolved: frozenset[str] | None = None
    for scripts in script_sets:
        systems = scripts.union(*(_WRITING_SYSTEMS.get(s, frozenset()) for s in scripts))
        resolved = systems if resolved is None else resolved & systems
    return resolved


def _label_problem(label: str) -> str | None:
    r"""Why a host label (in Unicode) is refused for its scripts, or ``None``.

    >>> _label_problem("bücher"), _label_problem("例えテスト"), _label_problem("\u0430pple")
    (None, None, 'mixed_script')
    >>> _label_problem("12\u0968")  # "12" then DEVANAGARI DIGIT TWO
    'mixed_digits'
    """
    if label.isascii():
        return None  # letters, digits and hyphens: Latin and Common
    sets = [s for s in map(_char_scripts, label) if s not in _ANY_SCRIPT]
    if sets and not _resolved(sets):
        # Not one script: it may still be Latin with one script that may go with it.
        others = _resolved([s for s in sets if "Latn" not in s]) or frozenset()
        if not others & _WITH_LATIN:
            return "mixed_script"
    zeros = {ord(c) - d for c in label if (d := unicodedata.decimal(c, None)) is not None}
    return "mixed_digits" if len(zeros) > 1 else None


def search_text(*parts: str | None) -> str:
    r"""The text that searches match against: NFKC case-folded, parts joined by a newline.

    Every backend stores or computes this same string, so search agrees across backends.

    >>> search_text("MyApp", "Straße")
    'myapp\nstrasse'
    """
    return "\n".join(unicodedata.normalize("NFKC", p).casefold() for p in parts if p)


def display_url(url: str) -> str:
    """The Unicode spelling of a canonical URL, for showing to people (R2).

    >>> display_url("http://xn--bcher-kva.example/Shop")
    'http://bücher.example/Shop'
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        shown = idna.decode(host) if "xn--" in host else host
    except idna.IDNAError:
        shown = host
    netloc = parts.netloc.replace(host, shown, 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

"""Validation of app fields: the vector tables in tests/data, and properties over any input."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import idna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appregistry import ImportedCredentials, Registry, ValidationError, display_url
from appregistry._validation import Problems, _has_control
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder
from appregistry.testing import strategies as ars

DATA = Path(__file__).parent / "data"

_REPEAT = re.compile(r"\{\{(.+?)\*(\d+)\}\}")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})")


def _unescape(text: str) -> str:
    """Expand the tables' escapes: ``{{text*N}}``, ``\\xNN`` and ``\\uNNNN``."""
    text = _REPEAT.sub(lambda m: m[1] * int(m[2]), text)
    return _ESCAPE.sub(lambda m: chr(int(m[1] or m[2], 16)), text)


def _rows(name: str) -> list[dict[str, str]]:
    """The rows of a vector table, escapes expanded."""
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = [{k: _unescape(v) for k, v in row.items()} for row in csv.DictReader(lines)]
    assert rows, f"{name} has no rows"
    return rows


def _table(name: str, *columns: str) -> list[Any]:
    """The rows of a vector table as pytest params of ``columns``, with the note as id."""
    return [pytest.param(*(row[c] for c in columns), id=row["note"]) for row in _rows(name)]


def _check(call: Callable[[Problems], object]) -> tuple[object, list[tuple[str, str]]]:
    """Run one validator; return its result and the (field, code) of every problem."""
    problems = Problems()
    result = call(problems)
    try:
        problems.raise_if_any()
    except ValidationError as exc:
        return result, [(p.field, p.code) for p in exc.problems]
    return result, []


def _url(field: str, value: object) -> tuple[object, list[tuple[str, str]]]:
    return _check(lambda p: p.url(field, value, https_only=field == "redirect_url"))


def _canonical(value: object, field: str = "homepage") -> object:
    return _url(field, value)[0]


def _expect(
    outcome: tuple[object, list[tuple[str, str]]], field: str, value: str, error: str
) -> None:
    result, problems = outcome
    if error:
        assert (None, [(field, error)]) == (result, problems)
    else:
        assert (value or None, []) == (result, problems)


class TestUrlVectors:
    """Every row of hosts.csv: the URL is stored in its canonical form or refused with its code."""

    @pytest.mark.parametrize(
        ("field", "value", "canonical", "error"),
        _table("hosts.csv", "field", "input", "canonical", "error"),
    )
    def test_row(self, field: str, value: str, canonical: str, error: str) -> None:
        _expect(_url(field, value), field, canonical, error)

    @pytest.mark.parametrize(
        ("field", "canonical"),
        [
            pytest.param(row["field"], row["canonical"], id=row["note"])
            for row in _rows("hosts.csv")
            if row["canonical"]
        ],
    )
    def test_canonical_form_is_a_fixed_point(self, field: str, canonical: str) -> None:
        assert canonical == _canonical(canonical, field)

    def test_unicode_and_xn_spellings_share_one_row_of_truth(self) -> None:
        spellings = [
            "http://bücher.example/",
            "http://xn--bcher-kva.example/",
            "http://BÜCHER.example./",
            "http://bu\u0308cher.EXAMPLE:80/",
        ]
        assert {"http://xn--bcher-kva.example/"} == {_canonical(s) for s in spellings}

    def test_display_url_shows_the_unicode_host(self) -> None:
        assert "http://bücher.example/Shop?q=%C3%A4" == display_url(
            "http://xn--bcher-kva.example/Shop?q=%C3%A4"
        )


class TestEmailVectors:
    """Every row of emails.csv: the address is stored normalized or refused with its code."""

    @pytest.mark.parametrize(
        ("value", "normalized", "error"), _table("emails.csv", "input", "normalized", "error")
    )
    def test_row(self, value: str, normalized: str, error: str) -> None:
        outcome = _check(lambda p: p.email("admin_email", value))
        _expect(outcome, "admin_email", normalized, error)


class TestPhoneVectors:
    """Every row of phones.csv: the number is stored as E.164, absent, or refused with its code."""

    @pytest.mark.parametrize(
        ("value", "e164", "error"), _table("phones.csv", "input", "e164", "error")
    )
    def test_row(self, value: str, e164: str, error: str) -> None:
        _expect(_check(lambda p: p.phone("admin_phone", value)), "admin_phone", e164, error)


# -- any input ------------------------------------------------------------------------------

_URLISH = st.from_regex(
    r"\A(https?|HTTPS?|ftp)?:?/{0,3}[\w.%:@\[\]\-ä例]{0,24}(/[^#]{0,12})?(\?[^#]{0,8})?(#.{0,4})?\Z"
)


_PREFIXES = ("http://", "https://", "https://example.com/", "http://例え.jp:8080/", "a@", "+40 ")


def anything() -> st.SearchStrategy[object]:
    """Whatever a host might pass through from outside: text of every kind, and non-text."""
    odd_text = st.one_of(
        # Lone surrogates among letters and digits; controls, format characters, separators.
        st.text(alphabet=st.characters(codec=None, categories=("Cs", "Lo", "Nd")), max_size=8),
        st.text(alphabet=st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Zs")), max_size=4),
    )
    tails = st.one_of(st.text(max_size=12), odd_text)
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(max_size=8),
        st.text(),
        odd_text,
        _URLISH,
        st.builds(lambda prefix, tail: prefix + tail, st.sampled_from(_PREFIXES), tails),
        st.builds(lambda head, tail: f"{head}@{tail}", tails, tails),
        st.lists(st.text(max_size=3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.builds(object),
    )


_VALIDATORS: dict[str, Callable[[Problems, object], object]] = {
    "url": lambda p, v: p.url("homepage", v),
    "optional_url": lambda p, v: p.url("image_url", v, required=False),
    "https_url": lambda p, v: p.url("redirect_url", v, https_only=True),
    "email": lambda p, v: p.email("admin_email", v),
    "phone": lambda p, v: p.phone("admin_phone", v),
    "text": lambda p, v: p.text("name", v, max_length=100),
    "multiline": lambda p, v: p.multiline("description", v, max_length=1000),
    "identifier": lambda p, v: p.identifier("account", v),
    "search": lambda p, v: p.search(v),
}


def _fresh_registry() -> tuple[Registry, EventRecorder]:
    recorder = EventRecorder()
    return Registry(storage=MemoryStorage(), listeners=[recorder]), recorder


def _field_or_anything(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[object]:
    return st.one_of(valid, anything())


class TestAnyInput:
    """Any input to a validator, or to register_app, gives a value or one ValidationError.

    Nothing else escapes (no TypeError, UnicodeError, library errors), and a refused
    registration writes nothing and emits no event.
    """

    @pytest.mark.parametrize("validator", _VALIDATORS.values(), ids=_VALIDATORS.keys())
    @settings(max_examples=300)
    @given(value=anything())
    def test_validator(
        self, validator: Callable[[Problems, object], object], value: object
    ) -> None:
        result, problems = _check(lambda p: validator(p, value))
        if problems:
            assert result is None
        else:
            assert result is None or isinstance(result, str)

    @given(value=anything(), per_page=anything())
    def test_paging(self, value: object, per_page: object) -> None:
        result, problems = _check(lambda p: p.paging(value, per_page))
        page, size = result  # type: ignore[misc]
        assert page >= 1
        assert 1 <= size <= 1000
        assert {f for f, _ in problems} <= {"page", "per_page"}

    @settings(suppress_health_check=[HealthCheck.too_slow])
    @given(
        owner=_field_or_anything(ars.accounts()),
        fields=st.fixed_dictionaries(
            {
                "name": _field_or_anything(st.just("MyApp")),
                "homepage": _field_or_anything(ars.homepages()),
                "admin_email": _field_or_anything(ars.emails()),
                "redirect_url": _field_or_anything(ars.redirect_urls()),
                "description": _field_or_anything(st.none()),
                "image_url": _field_or_anything(st.none()),
                "admin_phone": _field_or_anything(ars.phone_numbers()),
                "trusted": _field_or_anything(st.booleans()),
                "credentials": _field_or_anything(ars.imported_credentials() | st.none()),
            }
        ),
    )
    def test_register_app(self, owner: object, fields: dict[str, object]) -> None:
        registry, recorder = _fresh_registry()
        try:
            registry.register_app(owner, **fields)  # type: ignore[arg-type]
        except ValidationError:
            registered = 0
        else:
            registered = 1
        assert registered == registry.list_apps(per_page=1000).total
        assert registered == len(recorder.events)


# -- what valid input gives -----------------------------------------------------------------


def _upper_ascii(text: str) -> str:
    return "".join(ch.upper() if ch.isascii() else ch for ch in text)


def _upper_where_reversible(text: str) -> str:
    # Some letters have no one-letter upper case that maps back; UTS 46 maps the rest.
    return "".join(ch.upper() if ch.upper().lower() == ch else ch for ch in text)


class TestControlCharacters:
    """The ASCII fast path of the control-character check agrees with the general rule."""

    @given(st.text(st.characters(max_codepoint=0x7F)) | st.text())
    def test_fast_path_agrees_with_the_categories(self, value: str) -> None:
        refused = {"Cc", "Cf", "Cs", "Zl", "Zp"}
        expected = any(unicodedata.category(ch) in refused for ch in value)
        assert expected == _has_control(value)


class TestUrls:
    """Valid IDN URLs are accepted; one host in any spelling gives one canonical URL."""

    @given(url=ars.homepages())
    def test_homepages_are_accepted(self, url: str) -> None:
        result, problems = _url("homepage", url)
        assert [] == problems
        assert isinstance(result, str)
        assert result.isascii()

    @given(url=ars.redirect_urls())
    def test_redirect_urls_are_accepted(self, url: str) -> None:
        result, problems = _url("redirect_url", url)
        assert [] == problems
        assert isinstance(result, str)
        assert result.startswith("https://")

    @given(host=ars.idn_hosts(), path=st.sampled_from(["/", "/a/b?c=d", "/ä"]))
    def test_spellings_of_one_host_give_one_url(self, host: str, path: str) -> None:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
        spellings = [
            host,
            ascii_host,
            ascii_host.upper(),
            _upper_where_reversible(host),
            f"{host}.",
            f"{_upper_ascii(host)}:80",
        ]
        canonical = {_canonical(f"http://{spelling}{path}") for spelling in spellings}
        assert {_canonical(f"http://{ascii_host}{path}")} == canonical
        assert None not in canonical

    @given(host=ars.idn_hosts())
    def test_display_url_shows_the_host_as_written(self, host: str) -> None:
        canonical = _canonical(f"https://{host}/cb", "redirect_url")
        assert isinstance(canonical, str)
        assert f"https://{host}/cb" == display_url(canonical)

    @given(url=st.one_of(ars.homepages(), ars.redirect_urls(), _URLISH))
    def test_canonicalization_is_idempotent(self, url: str) -> None:
        canonical = _canonical(url)
        if canonical is not None:
            assert canonical == _canonical(canonical)


# Cyrillic letters that look like Latin a e o p c y x i j d q w, Greek ones like a o v p t k i.
_LOOKALIKES = (
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0501\u051b\u051d"
    "\u03b1\u03bf\u03bd\u03c1\u03c4\u03ba\u03b9"
)
_LATIN_LABELS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=20)


@st.composite
def _lookalike_labels(draw: st.DrawFn) -> str:
    """A Latin label with one Cyrillic or Greek look-alike letter put in anywhere."""
    label = draw(_LATIN_LABELS)
    position = draw(st.integers(0, len(label)))
    return label[:position] + draw(st.sampled_from(_LOOKALIKES)) + label[position:]


class TestMixedScripts:
    """One look-alike letter in a Latin label is refused, in any spelling and any label; the
    same letters make up a whole label of their own script."""

    @given(label=_lookalike_labels(), tld=st.sampled_from(["com", "\u0440\u0444"]))
    def test_in_a_host(self, label: str, tld: str) -> None:
        ascii_label = idna.encode(label, uts46=True).decode("ascii")
        for host in (f"{label}.{tld}", f"www.{ascii_label}.{tld}", f"{label.upper()}.{tld}"):
            assert (None, [("homepage", "mixed_script")]) == _url("homepage", f"http://{host}/")

    @given(label=_lookalike_labels())
    def test_in_an_email_domain(self, label: str) -> None:
        outcome = _check(lambda p: p.email("admin_email", f"admin@{label}.com"))
        assert (None, [("admin_email", "mixed_script")]) == outcome

    @given(label=st.text(alphabet=_LOOKALIKES[:12], min_size=1, max_size=20))
    def test_a_whole_cyrillic_label_is_accepted_and_shown_in_unicode(self, label: str) -> None:
        canonical = _canonical(f"https://{label}.com/cb", "redirect_url")
        assert isinstance(canonical, str)
        assert f"https://{label}.com/cb" == display_url(canonical)


class TestEmails:
    """Valid emails, IDN domains and internationalized local parts included, are accepted."""

    @given(email=ars.emails())
    def test_accepted_and_stable(self, email: str) -> None:
        normalized, problems = _check(lambda p: p.email("admin_email", email))
        assert [] == problems
        assert (normalized, []) == _check(lambda p: p.email("admin_email", normalized))

    @given(email=ars.emails())
    def test_unicode_and_xn_domains_are_one_address(self, email: str) -> None:
        local, domain = email.rsplit("@", 1)
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        spellings = {email, f"{local}@{ascii_domain}", f"{local}@{ascii_domain.upper()}"}
        assert 1 == len({_check(lambda p, s=s: p.email("admin_email", s))[0] for s in spellings})


class TestPhones:
    """Valid international numbers are stored as E.164, with the same digits."""

    @given(number=ars.phone_numbers())
    def test_accepted_as_e164(self, number: str) -> None:
        e164, problems = _check(lambda p: p.phone("admin_phone", number))
        assert [] == problems
        assert isinstance(e164, str)
        assert re.fullmatch(r"\+[1-9]\d{1,14}", e164)
        assert re.sub(r"\D", "", number) == e164[1:]
        assert (e164, []) == _check(lambda p: p.phone("admin_phone", e164))


# -- every problem at once ------------------------------------------------------------------

_BAD: dict[str, object] = {
    "owner": " acme",
    "name": "x" * 101,
    "description": 42,
    "homepage": "ftp://example.com/",
    "image_url": "http://user@example.com/x.png",
    "admin_email": "User <user@example.com>",
    "admin_phone": "+40 21",
    "redirect_url": "http://example.com/cb",
    "trusted": "yes",
}


class TestEveryProblemAtOnce:
    """Several bad fields give one ValidationError that lists each of them (R10)."""

    def test_all_bad_fields_are_listed_with_their_codes(self) -> None:
        registry, recorder = _fresh_registry()
        with pytest.raises(ValidationError) as caught:
            registry.register_app(
                "",
                name="",
                homepage="http://exa\u200bmple.com/",
                admin_email="userexample.com",
                redirect_url="https://example.com/cb#x",
                admin_phone="0213120000",
                credentials=ImportedCredentials(key="short", secret="s" * 32),
            )
        expected = {
            ("owner", "required"),
            ("name", "required"),
            ("homepage", "invalid_url"),
            ("admin_email", "invalid_email"),
            ("redirect_url", "fragment"),
            ("admin_phone", "invalid_phone"),
            ("key", "invalid_credential"),
        }
        assert expected == {(p.field, p.code) for p in caught.value.problems}
        assert 0 == registry.list_apps(per_page=1000).total
        assert [] == recorder.events

    @settings(suppress_health_check=[HealthCheck.too_slow])
    @given(
        fields=ars.app_fields(),
        bad=st.sets(st.sampled_from(sorted(_BAD)), min_size=1),
    )
    def test_any_set_of_bad_fields(self, fields: dict[str, Any], bad: set[str]) -> None:
        registry, _ = _fresh_registry()
        arguments = {"owner": "acme", **fields} | {name: _BAD[name] for name in bad}
        with pytest.raises(ValidationError) as caught:
            registry.register_app(**arguments)
        assert bad == caught.value.fields
        assert len(bad) == len(caught.value.problems)
        assert 0 == registry.list_apps(per_page=1000).total

    def test_secret_is_not_echoed(self) -> None:
        secret = "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3t!!"
        with pytest.raises(ValidationError) as caught:
            _fresh_registry()[0].register_app(
                "acme",
                name="MyApp",
                homepage="http://example.com/",
                admin_email="a@example.com",
                redirect_url="https://example.com/cb",
                credentials=ImportedCredentials(key="k" * 32, secret=secret),
            )
        assert [("secret", "invalid_credential")] == [
            (p.field, p.code) for p in caught.value.problems
        ]
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value.problems)


class TestStoredForms:
    """register_app stores the canonical URL, the normalized email and the E.164 phone."""

    def test_register_app_normalizes(self) -> None:
        registry, _ = _fresh_registry()
        app = registry.register_app(
            "acme",
            name="  MyApp ",
            homepage="http://Bücher.Example/MyApp",
            admin_email="myapp@EXÄMPLE.com",
            redirect_url="HTTPS://example.com:443/MyApp/handler",
            admin_phone="+40 21 312 0000",
            image_url="http://xn--bcher-kva.example/logo.png",
        ).app
        assert (
            "MyApp",
            "http://xn--bcher-kva.example/MyApp",
            "myapp@exämple.com",
            "https://example.com/MyApp/handler",
            "+40213120000",
            "http://xn--bcher-kva.example/logo.png",
        ) == (
            app.name,
            app.homepage,
            app.admin_email,
            app.redirect_url,
            app.admin_phone,
            app.image_url,
        )


class TestTableEscapes:
    """The tables' escapes expand to the characters they name."""

    def test_escapes(self) -> None:
        assert "a\u200bb!" == _unescape("a\\u200bb\\x21")

    def test_repetition(self) -> None:
        assert "xyxy." == _unescape("{{xy*2}}.")

"""Request parameters as RFC 6749 section 3.1 and 3.2 read them: once each, empty is omitted."""

from __future__ import annotations

import re
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from oauthlib.common import urldecode

__all__ = ["MalformedParameters", "RepeatedParameter", "normalize"]

# A parameter name safe to quote back in an error description.
_SHOWN_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class MalformedParameters(ValueError):
    """The query string or form body is not ``application/x-www-form-urlencoded``."""


class RepeatedParameter(ValueError):
    """A parameter appears more than once, in the query string and form body together.

    RFC 6749 sections 3.1 and 3.2: request parameters MUST NOT be included more than once.
    The message names the parameter when its name is plain enough to quote.
    """

    def __init__(self, name: str) -> None:
        shown = f" {name}" if _SHOWN_NAME.fullmatch(name) else ""
        super().__init__(f"The parameter{shown} appears more than once.")
        self.name = name


def _decode(text: str) -> list[tuple[str, str]]:
    try:
        return [(str(name), str(value)) for name, value in urldecode(text)]
    except ValueError:
        # oauthlib's message quotes the text, which may hold a secret: not kept.
        raise MalformedParameters("The parameters are not form-encoded.") from None


def _present(params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    # RFC 6749 section 3.1: "Parameters sent without a value MUST be treated as if they
    # were omitted from the request."
    return [(name, value) for name, value in params if value != ""]


def normalize(uri: str, body: object) -> tuple[str, object]:
    """``uri`` and ``body`` with empty parameters left out, after checking none repeats.

    The query string of ``uri`` and a form-encoded ``body`` (a `str`, or a mapping or list
    of pairs, as oauthlib takes them) are read together: a name that appears twice, in one
    or across both, is refused.

    Raises:
        RepeatedParameter: A parameter appears more than once.
        MalformedParameters: The query or body is not form-encoded.

    >>> normalize("https://h/t?scope=&a=1", "grant_type=client_credentials&client_id=")
    ('https://h/t?a=1', 'grant_type=client_credentials')
    >>> normalize("https://h/t", "code=a&code=b")
    Traceback (most recent call last):
    ...
    appregistry.oauth2._params.RepeatedParameter: The parameter code appears more than once.
    """
    parts = urllib.parse.urlsplit(uri)
    query = _decode(parts.query)
    form: list[tuple[str, str]] | None
    if isinstance(body, str):
        form = _decode(body)
    elif isinstance(body, Mapping):
        form = [(str(name), str(value)) for name, value in body.items()]
    elif isinstance(body, list | tuple):
        form = [(str(name), str(value)) for name, value in body]
    else:
        form = None
    counts = Counter(name for name, _ in (*query, *(form or ())))
    for name, count in counts.items():
        if count > 1:
            raise RepeatedParameter(name)
    uri = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(_present(query))))
    if form is None:
        return uri, body
    return uri, urllib.parse.urlencode(_present(form))

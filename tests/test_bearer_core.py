"""`appregistry.oauth2.bearer_token` parses as the integrations' core does, and refuses alike.

Hosts that read the token with `bearer_token` and check it themselves used to get a bare
`ValueError` for an empty or doubled token, which most answered with 500. Now it raises the
integrations' `BearerError`, whose status and headers are the RFC 6750 answer.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from appregistry.integrations import BearerError, TokenGuard, read_bearer_token
from appregistry.oauth2 import bearer_token

TOKEN = "Zm9vYmFyYmF6cXV4" * 3


def environ(authorization: str | None = None, query: str = "") -> dict[str, object]:
    """A WSGI environ with only the parts `bearer_token` reads."""
    found: dict[str, object] = {"QUERY_STRING": query}
    if authorization is not None:
        found["HTTP_AUTHORIZATION"] = authorization
    return found


class TestAccepted:
    """A single token, in the header or the original query parameter, comes back as is."""

    @pytest.mark.parametrize(
        ("authorization", "query"),
        [
            (f"Bearer {TOKEN}", ""),
            (f"bearer  {TOKEN} ", ""),
            (None, f"accessRequestToken=Bearer%20{TOKEN}"),
            (None, f"accessRequestToken={TOKEN}"),
            ("Basic dXNlcjpwYXNz", f"page=2&accessRequestToken=Bearer+{TOKEN}"),
        ],
    )
    def test_one_token(self, authorization: str | None, query: str) -> None:
        assert TOKEN == bearer_token(environ(authorization, query))

    def test_no_token_is_none(self) -> None:
        assert (None, None) == (
            bearer_token(environ()),
            bearer_token(environ("Basic dXNlcjpwYXNz", "page=2")),
        )


class TestRefused:
    """Empty, doubled and malformed tokens are 400 ``invalid_request``, with a challenge."""

    @pytest.mark.parametrize(
        ("authorization", "query", "reason"),
        [
            ("Bearer", "", "empty"),
            ("Bearer   ", "", "empty"),
            (None, "accessRequestToken=", "empty"),
            (f"Bearer {TOKEN}, Bearer {TOKEN}", "", "doubled"),
            (f"Bearer {TOKEN}", f"accessRequestToken={TOKEN}", "doubled"),
            (None, f"accessRequestToken={TOKEN}&accessRequestToken={TOKEN}", "doubled"),
            (f"Bearer {TOKEN} extra", "", "malformed"),
            (f"Bearer {TOKEN}!", "", "malformed"),
        ],
    )
    def test_bad_request(self, authorization: str | None, query: str, reason: str) -> None:
        with pytest.raises(BearerError) as caught:
            bearer_token(environ(authorization, query), realm="host")
        error = caught.value
        assert (400, "invalid_request", reason) == (error.status, error.error, error.reason)
        challenge = dict(error.headers)["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="host", error="invalid_request"')
        assert TOKEN not in f"{error} {error!r} {error.body!r} {error.headers}"

    def test_earlier_value_error_handlers_still_catch_it(self) -> None:
        """Hosts written for the old bare ValueError keep working."""
        with pytest.raises(ValueError, match="empty"):
            bearer_token(environ("Bearer "))

    def test_default_realm_is_the_integrations(self) -> None:
        with pytest.raises(BearerError) as caught:
            bearer_token(environ("Bearer "))
        assert "api" == caught.value.realm


_HEADER = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.builds("Bearer {}".format, st.text(max_size=40)),
    st.sampled_from([f"Bearer {TOKEN}", "Bearer", f"Bearer {TOKEN}, Bearer {TOKEN}"]),
)
_QUERY = st.one_of(
    st.text(max_size=60),
    st.builds("accessRequestToken={}".format, st.text(max_size=40)),
    st.sampled_from(["", f"accessRequestToken=Bearer%20{TOKEN}", "accessRequestToken=%zz"]),
)


class TestSameAsTheCore:
    """`bearer_token`, `read_bearer_token` and `TokenGuard.token_of` agree on every request."""

    @given(authorization=_HEADER, query=_QUERY)
    @example(authorization=f"Bearer {TOKEN}", query=f"accessRequestToken={TOKEN}")
    @example(authorization="Bearer ,", query="")
    def test_agree(self, authorization: str | None, query: str) -> None:
        answers: list[tuple[str | None, int, str | None, str | None]] = []
        guard = TokenGuard.from_url("memory:", realm="api")
        parsers: tuple[Callable[[], str | None], ...] = (
            lambda: bearer_token(environ(authorization, query)),
            lambda: read_bearer_token(authorization, query),
            lambda: guard.token_of(authorization, query),
        )
        for parse in parsers:
            try:
                answers.append((parse(), 200, None, None))
            except BearerError as error:  # anything else, a bare ValueError too, fails here
                answers.append((None, error.status, error.error, error.reason))
        assert [answers[0]] * 3 == answers
        assert answers[0][1:3] in {(200, None), (400, "invalid_request")}

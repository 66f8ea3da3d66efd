"""An oauthlib server with exactly the grants appregistry supports, wired to a Registry."""

from __future__ import annotations

import json
from typing import Any, Final

from oauthlib.oauth2 import (
    AuthorizationCodeGrant,
    BearerToken,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from oauthlib.oauth2.rfc6749 import errors as oauth_errors
from oauthlib.oauth2.rfc6749.endpoints import (
    AuthorizationEndpoint,
    IntrospectEndpoint,
    ResourceEndpoint,
    RevocationEndpoint,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749.tokens import OAuth2Token

from .._credentials import is_s256_challenge
from .._registry import Registry
from ._params import MalformedParameters, RepeatedParameter, normalize
from ._validator import RegistryValidator

__all__ = ["MAX_STATE_LENGTH", "MIN_STATE_LENGTH", "RegistryServer", "make_server"]

#: The shortest ``state`` an authorization request may carry (the original system's rule).
MIN_STATE_LENGTH: Final = 16
#: The longest ``state`` accepted; it is echoed in the redirect, so it is bounded.
MAX_STATE_LENGTH: Final = 512

#: What every response of oauthlib's shape is: headers, body, HTTP status.
Response = tuple[dict[str, str], str | None, int]


class _SecretText(str):
    """A token as oauthlib's debug log shows it: redacted. Its value is unchanged."""

    __slots__ = ()

    def __str__(self) -> str:
        return "<redacted>"

    __repr__ = __str__


class _SecretToken(OAuth2Token):  # type: ignore[misc] # oauthlib is untyped
    """oauthlib logs the token response at DEBUG after it is saved; it shows no token here."""

    def __repr__(self) -> str:
        return "<token response, redacted>"


def _redact_token(token: dict[str, Any], *_: object) -> _SecretToken:
    # A token modifier: what it returns is what save_bearer_token fills in and what is sent.
    return _SecretToken(token)


#: What oauthlib's `BearerToken` puts in a token response before `save_bearer_token` replaces
#: it with the tokens the Registry issued. Not a token: it is never stored, and a response
#: with it is never sent (the save either fills the real tokens in or raises).
_NOT_YET_ISSUED: Final = "(not yet issued)"


def _not_yet_issued(_request: Any) -> str:
    # oauthlib's default draws 30 random characters one `SystemRandom.choice` at a time
    # (about 33 µs, a tenth of a grant's CPU), for a token that is thrown away.
    return _NOT_YET_ISSUED


def _redact_refresh_token(request: Any) -> None:
    # oauthlib logs the presented refresh token at DEBUG right after the pre-token validators.
    if isinstance(request.refresh_token, str):
        request.refresh_token = _SecretText(request.refresh_token)


_STATE_LENGTH: Final = f"{MIN_STATE_LENGTH} to {MAX_STATE_LENGTH} characters"


def _check_state(request: Any, *, always_required: bool) -> dict[str, Any]:
    # state protects the client from cross-site request forgery. PKCE protects it as well
    # (RFC 9700 section 2.1), so with a code_challenge state may be left out, unless the
    # server asks for it always; _require_s256 then makes sure the challenge is S256.
    state = request.state
    if state is None:
        if always_required or request.code_challenge is None:
            without = "" if always_required else " without PKCE"
            raise oauth_errors.InvalidRequestError(
                description=f"state is required{without}: {_STATE_LENGTH}.", request=request
            )
        return {}
    if not isinstance(state, str) or not MIN_STATE_LENGTH <= len(state) <= MAX_STATE_LENGTH:
        raise oauth_errors.InvalidRequestError(
            description=f"state must be {_STATE_LENGTH}.", request=request
        )
    return {}


def _require_s256(request: Any) -> dict[str, Any]:
    challenge = request.code_challenge
    if challenge is None:
        return {}
    if request.code_challenge_method != "S256":
        raise oauth_errors.UnsupportedCodeChallengeMethodError(
            description="code_challenge_method must be S256.", request=request
        )
    if not is_s256_challenge(challenge):
        raise oauth_errors.InvalidRequestError(
            description="code_challenge must be 43 base64url characters (S256).", request=request
        )
    return {}


# oauthlib is untyped: mypy sees each base as Any.
class RegistryServer(
    AuthorizationEndpoint,  # type: ignore[misc]
    TokenEndpoint,  # type: ignore[misc]
    RevocationEndpoint,  # type: ignore[misc]
    IntrospectEndpoint,  # type: ignore[misc]
    ResourceEndpoint,  # type: ignore[misc]
):
    """oauthlib's endpoints for the grants the Registry supports, and nothing else.

    Like ``oauthlib.oauth2.Server``, with these differences: only the authorization-code,
    client-credentials and refresh-token grants exist (no implicit or password grant); errors
    raised while the Registry issues a token or a code become responses here rather than
    escaping; every ``401`` of the token, revocation and introspection endpoints asks for
    HTTP Basic, the scheme clients authenticate with; and authorization requests follow the
    ``state`` rule (see `make_server`).

    Build it with `make_server`.
    """

    def __init__(
        self,
        validator: RegistryValidator,
        *,
        realm: str = "appregistry",
        always_require_state: bool = False,
    ) -> None:
        self.validator = validator
        self._realm = realm
        self.always_require_state = always_require_state

        def check_state(request: Any) -> dict[str, Any]:
            return _check_state(request, always_required=always_require_state)

        self.auth_grant = AuthorizationCodeGrant(
            validator, pre_auth=[check_state], post_auth=[_require_s256]
        )
        # The client is authenticated where its token is issued: one transaction a grant.
        self.credentials_grant = ClientCredentialsGrant(
            validator, pre_token=[validator.present_client]
        )
        self.refresh_grant = RefreshTokenGrant(
            validator, issue_new_refresh_tokens=True, pre_token=[_redact_refresh_token]
        )
        for grant in (self.auth_grant, self.credentials_grant, self.refresh_grant):
            grant.register_token_modifier(_redact_token)
        self.bearer = BearerToken(validator, token_generator=_not_yet_issued)
        AuthorizationEndpoint.__init__(
            self,
            default_response_type="code",
            response_types={"code": self.auth_grant},
            default_token_type=self.bearer,
        )
        TokenEndpoint.__init__(
            self,
            default_grant_type="authorization_code",
            grant_types={
                "authorization_code": self.auth_grant,
                "client_credentials": self.credentials_grant,
                "refresh_token": self.refresh_grant,
            },
            default_token_type=self.bearer,
        )
        ResourceEndpoint.__init__(
            self,
            default_token="Bearer",  # noqa: S106 - the token type's name
            token_types={"Bearer": self.bearer},
        )
        RevocationEndpoint.__init__(self, validator)
        IntrospectEndpoint.__init__(self, validator)

    # Every request's parameters are normalized first (`_params.normalize`): a repeated one is
    # refused, an empty one is treated as omitted (RFC 6749 sections 3.1, 3.2).

    def validate_authorization_request(
        self, uri: str, http_method: str = "GET", body: Any = None, headers: Any = None
    ) -> tuple[list[str], dict[str, Any]]:
        """As oauthlib's, after normalizing the parameters.

        Raises:
            oauthlib.oauth2.FatalClientError: The client or redirect URL is not valid, or a
                parameter repeats: show the user an error page and do not redirect.
        """
        uri, body = _normalized_authorization(uri, body)
        return super().validate_authorization_request(  # type: ignore[no-any-return]
            uri, http_method, body, headers
        )

    def create_authorization_response(
        self,
        uri: str,
        http_method: str = "GET",
        body: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> Response:
        """As oauthlib's; a refusal while saving the code redirects with its error.

        Raises:
            oauthlib.oauth2.FatalClientError: The client or redirect URL is not valid, or a
                parameter repeats: show the user an error page and do not redirect.
        """
        uri, body = _normalized_authorization(uri, body)
        try:
            headers, text, status = super().create_authorization_response(
                uri, http_method, body, headers, **kwargs
            )
        except oauth_errors.FatalClientError:
            raise
        except oauth_errors.OAuth2Error as exc:
            if not exc.redirect_uri:
                raise
            return {"Location": exc.in_uri(exc.redirect_uri)}, None, 302
        return headers, text, status

    def create_token_response(
        self,
        uri: str,
        http_method: str = "POST",
        body: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> Response:
        """As oauthlib's; a refusal while the Registry issues the token is a JSON error."""
        try:
            uri, body = normalize(uri, body)
            response = super().create_token_response(uri, http_method, body, headers, **kwargs)
        except oauth_errors.OAuth2Error as exc:
            response = _error_response(exc)
        except ValueError as exc:
            response = _error_response(_invalid_request(exc))
        return self._challenge(response)

    def create_revocation_response(
        self, uri: str, http_method: str = "POST", body: Any = None, headers: Any = None
    ) -> Response:
        """As oauthlib's (RFC 7009); ``401`` asks for HTTP Basic.

        Success is ``200`` with an empty JSON object: RFC 7009 has clients ignore the body,
        and some (simple-oauth2) read every answer as JSON.
        """
        try:
            uri, body = normalize(uri, body)
            response = super().create_revocation_response(uri, http_method, body, headers)
        except ValueError as exc:
            response = _error_response(_invalid_request(exc))
        answer_headers, text, status = response
        if status == 200 and not text:
            answer_headers = {**answer_headers, "Content-Type": "application/json"}
            response = answer_headers, "{}", status
        return self._challenge(response)

    def create_introspect_response(
        self, uri: str, http_method: str = "POST", body: Any = None, headers: Any = None
    ) -> Response:
        """As oauthlib's (RFC 7662); ``401`` asks for HTTP Basic."""
        try:
            uri, body = normalize(uri, body)
            response = super().create_introspect_response(uri, http_method, body, headers)
        except ValueError as exc:
            response = _error_response(_invalid_request(exc))
        return self._challenge(response)

    def _challenge(self, response: Response) -> Response:
        headers, body, status = response
        if status == 401:
            headers = {**headers, "WWW-Authenticate": f'Basic realm="{self._realm}"'}
        if status >= 400 and body:
            try:
                data = json.loads(body)
            except ValueError:
                return headers, body, status
            described = with_description(data)
            if described is not data:
                body = json.dumps(described)
        return headers, body, status


# What each error code means, for error bodies that would otherwise carry the code alone.
ERROR_DESCRIPTIONS: Final[dict[str, str]] = {
    "invalid_request": "The request is malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The grant is invalid, expired or already used.",
    "unauthorized_client": "This client may not use this grant type.",
    "unsupported_grant_type": "The grant type is not supported.",
    "unsupported_response_type": "The response type is not supported.",
    "unsupported_token_type": "The token type is not supported.",
    "invalid_scope": "Scopes are not used here: leave scope out.",
    "invalid_token": "The access token is invalid, expired or revoked.",
    "access_denied": "Access was denied.",
    "not_found": "There is no endpoint at this path.",
    "server_error": "The server failed; try again later.",
    "temporarily_unavailable": "The server is unavailable for now; try again later.",
}


def with_description(data: object) -> object:
    """``data`` with an ``error_description``, when it is an error object without one.

    RFC 6749 section 5.2 makes the description optional; here every error carries one, so
    that a person reading it learns what went wrong. ``data`` itself when nothing is added.

    >>> with_description({"error": "invalid_client"})
    {'error': 'invalid_client', 'error_description': 'Client authentication failed.'}
    """
    if not isinstance(data, dict) or data.get("error_description"):
        return data
    code = data.get("error")
    error = code if isinstance(code, str) else "invalid_request"
    return {**data, "error": error, "error_description": ERROR_DESCRIPTIONS.get(error, error)}


def _invalid_request(exc: ValueError) -> Any:
    # Our own messages are safe to send; oauthlib's ValueErrors may quote the request.
    if isinstance(exc, RepeatedParameter | MalformedParameters):
        return oauth_errors.InvalidRequestError(description=str(exc))
    return oauth_errors.InvalidRequestError()


def _normalized_authorization(uri: str, body: Any) -> tuple[str, Any]:
    try:
        return normalize(uri, body)
    except (RepeatedParameter, MalformedParameters) as exc:
        raise oauth_errors.InvalidRequestFatalError(description=str(exc)) from None


def _error_response(exc: Any) -> Response:
    headers = {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        **exc.headers,
    }
    return headers, json.dumps(dict(exc.twotuples)), exc.status_code


def make_server(
    registry: Registry, *, realm: str = "appregistry", always_require_state: bool = False
) -> RegistryServer:
    """An oauthlib server whose tokens, codes and decisions all come from ``registry``.

    Hosts with their own web framework call its ``create_authorization_response``,
    ``create_token_response``, ``create_revocation_response`` and
    ``create_introspect_response`` with the request's URI, method, body and headers, and send
    back the ``(headers, body, status)`` they return. `make_wsgi_app` does exactly that.

    **The state rule.** An authorization request without PKCE must carry ``state``,
    `MIN_STATE_LENGTH` to `MAX_STATE_LENGTH` characters (the original system's rule). With
    a PKCE ``S256`` challenge, ``state`` may be left out (RFC 9700 section 2.1); when given,
    it has the same bounds.

    Args:
        realm: The realm named in ``WWW-Authenticate`` challenges.
        always_require_state: Require ``state`` in every authorization request, PKCE or
            not, as the original system did.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> server = make_server(Registry(storage=MemoryStorage()))
    >>> headers, body, status = server.create_token_response(
    ...     "https://example.com/oauth/token.php", "POST",
    ...     "grant_type=client_credentials&client_id=nobody&client_secret=nothing", {})
    >>> status, headers["WWW-Authenticate"]
    (401, 'Basic realm="appregistry"')
    >>> body
    '{"error": "invalid_client", "error_description": "Client authentication failed."}'
    """
    return RegistryServer(
        RegistryValidator(registry), realm=realm, always_require_state=always_require_state
    )

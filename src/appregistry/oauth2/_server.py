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


def _redact_refresh_token(request: Any) -> None:
    # oauthlib logs the presented refresh token at DEBUG right after the pre-token validators.
    if isinstance(request.refresh_token, str):
        request.refresh_token = _SecretText(request.refresh_token)


def _require_state(request: Any) -> dict[str, Any]:
    state = request.state
    if not isinstance(state, str) or not MIN_STATE_LENGTH <= len(state) <= MAX_STATE_LENGTH:
        raise oauth_errors.InvalidRequestError(
            description=f"state is required: {MIN_STATE_LENGTH} to {MAX_STATE_LENGTH} characters.",
            request=request,
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

    Like ``oauthlib.oauth2.Server``, with three differences: only the authorization-code,
    client-credentials and refresh-token grants exist (no implicit or password grant); errors
    raised while the Registry issues a token or a code become responses here rather than
    escaping; and every ``401`` of the token, revocation and introspection endpoints asks for
    HTTP Basic, the scheme clients authenticate with.

    Build it with `make_server`.
    """

    def __init__(self, validator: RegistryValidator, *, realm: str = "appregistry") -> None:
        self.validator = validator
        self._realm = realm
        self.auth_grant = AuthorizationCodeGrant(
            validator, pre_auth=[_require_state], post_auth=[_require_s256]
        )
        self.credentials_grant = ClientCredentialsGrant(validator)
        self.refresh_grant = RefreshTokenGrant(
            validator, issue_new_refresh_tokens=True, pre_token=[_redact_refresh_token]
        )
        for grant in (self.auth_grant, self.credentials_grant, self.refresh_grant):
            grant.register_token_modifier(_redact_token)
        self.bearer = BearerToken(validator)
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

    def create_authorization_response(self, *args: Any, **kwargs: Any) -> Response:
        """As oauthlib's; a refusal while saving the code redirects with its error.

        Raises:
            oauthlib.oauth2.FatalClientError: The client or redirect URL is not valid: show
                the user an error page and do not redirect.
        """
        try:
            headers, body, status = super().create_authorization_response(*args, **kwargs)
        except oauth_errors.FatalClientError:
            raise
        except oauth_errors.OAuth2Error as exc:
            if not exc.redirect_uri:
                raise
            return {"Location": exc.in_uri(exc.redirect_uri)}, None, 302
        return headers, body, status

    def create_token_response(self, *args: Any, **kwargs: Any) -> Response:
        """As oauthlib's; a refusal while the Registry issues the token is a JSON error."""
        try:
            response = super().create_token_response(*args, **kwargs)
        except oauth_errors.OAuth2Error as exc:
            response = _error_response(exc)
        except ValueError:
            # oauthlib could not parse the request (its message quotes the request: not kept).
            response = _error_response(oauth_errors.InvalidRequestError())
        return self._challenge(response)

    def create_revocation_response(self, *args: Any, **kwargs: Any) -> Response:
        """As oauthlib's (RFC 7009); ``401`` asks for HTTP Basic."""
        try:
            response = super().create_revocation_response(*args, **kwargs)
        except ValueError:
            response = _error_response(oauth_errors.InvalidRequestError())
        return self._challenge(response)

    def create_introspect_response(self, *args: Any, **kwargs: Any) -> Response:
        """As oauthlib's (RFC 7662); ``401`` asks for HTTP Basic."""
        try:
            response = super().create_introspect_response(*args, **kwargs)
        except ValueError:
            response = _error_response(oauth_errors.InvalidRequestError())
        return self._challenge(response)

    def _challenge(self, response: Response) -> Response:
        headers, body, status = response
        if status == 401:
            headers = {**headers, "WWW-Authenticate": f'Basic realm="{self._realm}"'}
        return headers, body, status


def _error_response(exc: Any) -> Response:
    headers = {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        **exc.headers,
    }
    return headers, json.dumps(dict(exc.twotuples)), exc.status_code


def make_server(registry: Registry, *, realm: str = "appregistry") -> RegistryServer:
    """An oauthlib server whose tokens, codes and decisions all come from ``registry``.

    Hosts with their own web framework call its ``create_authorization_response``,
    ``create_token_response``, ``create_revocation_response`` and
    ``create_introspect_response`` with the request's URI, method, body and headers, and send
    back the ``(headers, body, status)`` they return. `make_wsgi_app` does exactly that.

    Args:
        realm: The realm named in ``WWW-Authenticate`` challenges.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> server = make_server(Registry(storage=MemoryStorage()))
    >>> headers, body, status = server.create_token_response(
    ...     "https://example.com/oauth/token.php", "POST",
    ...     "grant_type=client_credentials&client_id=nobody&client_secret=nothing", {})
    >>> status, body, headers["WWW-Authenticate"]
    (401, '{"error": "invalid_client"}', 'Basic realm="appregistry"')
    """
    return RegistryServer(RegistryValidator(registry), realm=realm)

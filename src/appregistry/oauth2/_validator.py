"""The oauthlib `RequestValidator` backed by a `Registry`.

oauthlib orchestrates each flow: it parses the request, checks its shape and calls this
validator at fixed points. Every decision is the Registry's: the validator authenticates
clients with `Registry.authenticate_client`, compares redirect URLs with
`Registry.redirect_url_matches`, records approvals with `Registry.authorize`, and lets
`Registry.issue_token`, `Registry.exchange_code` and `Registry.refresh` make the tokens, in
`RegistryValidator.save_bearer_token`. oauthlib's own tokens are placeholders that are replaced
there before anything is sent.
"""

from __future__ import annotations

import base64
import binascii
import logging
import unicodedata
import urllib.parse
from typing import Any, Final

import attrs
from oauthlib.oauth2 import RequestValidator
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from .._policy import Reason
from .._records import IssuedToken
from .._registry import Registry
from .._validation import MAX_USER_AGENT_LENGTH
from ..errors import AppNotFound, Denied, InvalidGrant, ValidationError

__all__ = [
    "MAX_PRESENTED_CREDENTIAL",
    "AuthenticatedClient",
    "PresentedClient",
    "RegistryValidator",
    "SignedInUser",
    "plain",
    "user_agent",
]

logger = logging.getLogger("appregistry.oauth2")

#: Presented keys, secrets, codes and tokens longer than this are refused without a look-up.
MAX_PRESENTED_CREDENTIAL: Final = 512

# The description of every refused grant, whatever the cause (the cause goes to the log).
_GRANT_REFUSED: Final = "The grant is invalid, expired or already used."
# Unicode categories that never belong in a stored user agent (the registry refuses them).
_CONTROL: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# The client may not act: said exactly as for a bad key or secret, so nothing leaks (R25).
_CLIENT_REASONS: Final = frozenset(
    {Reason.BAD_CREDENTIALS, Reason.APP_UNKNOWN, Reason.APP_DISABLED}
)

# The refusals of a client-credentials issue that come before the trust check all the same:
# the credentials are wrong (R25), or the app is untrusted.
_TOLD_BEFORE_TRUST: Final = frozenset({Reason.BAD_CREDENTIALS, Reason.APP_NOT_TRUSTED})


@attrs.frozen
class SignedInUser:
    """The user signed in to the host, who approves or denies an app on the consent page.

    Args:
        account: The account the approval is for (the app gets installed there).
        user: The user id recorded as having approved it (``installed_by``).
    """

    account: str
    user: str


@attrs.frozen
class AuthenticatedClient:
    """The app authenticated on a token, revocation or introspection request.

    oauthlib reads ``client_id``; the secret is kept for `Registry.issue_token`, which checks
    it again in its own transaction.
    """

    client_id: str
    secret: str = attrs.field(repr=False)


@attrs.frozen
class PresentedClient:
    """The key and secret a client-credentials token request presents, not checked yet.

    A client-credentials grant authenticates its client in the very transaction that issues
    the token (`Registry.issue_token` reads the app, its secret and its owner's installation
    and permission at once, locked), rather than in one transaction for authentication, one
    for the app's ``trusted`` flag and a third to issue. The server's client-credentials
    grant puts this on the request before oauthlib asks `RegistryValidator.authenticate_client`,
    which then defers to the issue; only that grant does, so revocation and introspection,
    which act on the client's say-so, always authenticate it first.
    """

    client_id: str
    secret: str = attrs.field(repr=False)


def plain(value: object) -> str | None:
    """``value`` as a plain `str` when it is text of a sensible length, else ``None``.

    Values oauthlib hands over may be `str` subclasses (see ``_server``); the Registry gets
    the plain string.

    >>> plain("abc"), plain(""), plain(None), plain("x" * 513)
    ('abc', None, None, None)
    """
    if not isinstance(value, str) or not value or len(value) > MAX_PRESENTED_CREDENTIAL:
        return None
    return str.__str__(value)


def user_agent(value: object) -> str | None:
    """A request's ``User-Agent`` made fit to store: control characters dropped, cut to length.

    The registry refuses a user agent longer than ``MAX_USER_AGENT_LENGTH``; a client cannot
    choose its library's header, so here it is truncated rather than refused.

    >>> user_agent("libwww-perl/5.833"), user_agent("  "), len(user_agent("x" * 600))
    ('libwww-perl/5.833', None, 512)
    """
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFC", value)
    text = unicodedata.normalize(
        "NFC", "".join(ch for ch in text if unicodedata.category(ch) not in _CONTROL)
    ).strip()
    # Cutting can leave a string whose normal form differs; repeat until it is stable.
    while len(text) > MAX_USER_AGENT_LENGTH:
        text = unicodedata.normalize("NFC", text[:MAX_USER_AGENT_LENGTH]).strip()
    return text or None


def client_credentials(request: Any) -> tuple[str, str] | None:
    """The key and secret a token request presents: HTTP Basic or the form body, not both.

    HTTP Basic credentials are form-urlencoded before base64 (RFC 6749 section 2.3.1).
    Anything malformed or ambiguous is ``None``: the caller answers ``invalid_client``.
    """
    header = request.headers.get("Authorization")
    body_id, body_secret = request.client_id, request.client_secret
    if header is not None:
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic" or body_secret is not None:
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            return None
        key = urllib.parse.unquote_plus(raw_id)
        secret = urllib.parse.unquote_plus(raw_secret)
        if body_id is not None and body_id != key:
            return None
    else:
        key, secret = body_id, body_secret
    checked_key, checked_secret = plain(key), plain(secret)
    if checked_key is None or checked_secret is None:
        return None
    return checked_key, checked_secret


class RegistryValidator(RequestValidator):  # type: ignore[misc] # oauthlib is untyped
    """An oauthlib `RequestValidator` whose every answer comes from a `Registry`.

    Supported: the authorization-code grant (exact redirect URLs, which a request may leave
    out since every app has one; PKCE ``S256`` honoured), client credentials for trusted apps,
    refresh tokens (rotated), RFC 7009 revocation and RFC 7662 introspection. Every client
    authenticates with its key and secret, by HTTP Basic or in the form body. Scopes are not
    used: a request naming any is refused.

    Use it through `appregistry.oauth2.make_server`, which configures the grants it expects
    (the ``state`` rule, PKCE ``S256`` only, tokens kept out of oauthlib's logs).

    Errors the Registry raises while issuing a token surface from `save_bearer_token` as
    oauthlib errors; the server from `make_server` turns them into responses.
    """

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self._registry = registry

    # -- clients ----------------------------------------------------------------------------

    def client_authentication_required(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        """Always: every app has a secret, and every grant here is for confidential clients."""
        return True

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        """Check the key and secret (an unknown key and a wrong secret look the same).

        A client-credentials grant's `PresentedClient` is checked later, when its token is
        issued, in the same transaction (see `present_client`): nothing is read here.
        """
        client = request.client
        if isinstance(client, PresentedClient) and request.grant_type == "client_credentials":
            request.client_id = client.client_id
            return True
        return self._authenticate(request)

    def _authenticate(self, request: Any) -> bool:
        presented = client_credentials(request)
        if presented is None:
            return False
        key, secret = presented
        decision = self._registry.authenticate_client(key, secret)
        if not decision.allowed:
            logger.info("client authentication failed: %s", decision.reason)
            return False
        request.client = AuthenticatedClient(key, secret)
        request.client_id = key
        return True

    def present_client(self, request: Any) -> dict[str, Any]:
        """Defer a client-credentials request's authentication to the issue of its token.

        A ``pre_token`` validator of the client-credentials grant (`make_server` installs
        it), run before oauthlib authenticates the client. It puts the presented key and
        secret on the request as a `PresentedClient`; `save_bearer_token` then lets
        `Registry.issue_token` authenticate, judge and issue in one transaction: a grant
        costs one transaction (two PostgreSQL round trips) instead of three. Credentials
        that cannot be parsed are left alone, and fail `authenticate_client` as before.
        """
        presented = client_credentials(request)
        if presented is not None:
            request.client = PresentedClient(*presented)
        return {}

    def _settle(self, request: Any) -> None:
        # Authenticate a deferred client now, and check that it may use client credentials
        # (R19), raising what oauthlib would have raised before: a request that fails
        # another check later (a scope) is answered as it always was, client errors first.
        # Only refusals pass here, so the extra transactions cost nothing on the hot path.
        if not self._authenticate(request):
            raise oauth_errors.InvalidClientError(request=request)
        if not self.validate_grant_type(
            request.client_id, "client_credentials", request.client, request
        ):
            raise oauth_errors.UnauthorizedClientError(request=request)

    def authenticate_client_id(
        self, client_id: str, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """Never: a client without its secret is not authenticated."""
        return False

    def validate_client_id(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> bool:
        """Whether an app has this key (the authorization request; nothing is secret yet)."""
        key = plain(client_id)
        if key is None:
            return False
        try:
            self._registry.get_app(key)
        except AppNotFound:
            return False
        return True

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """Client credentials are for trusted apps only; the other grants for every app.

        For a `PresentedClient`, `Registry.issue_token` decides it, with the credentials.
        """
        if grant_type in {"authorization_code", "refresh_token"}:
            return True
        if grant_type == "client_credentials" and isinstance(client, PresentedClient):
            return True
        if grant_type != "client_credentials" or not isinstance(client, AuthenticatedClient):
            return False
        try:
            return self._registry.get_app(client.client_id).trusted
        except AppNotFound:
            return False

    # -- authorization requests -------------------------------------------------------------

    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """The registered redirect URL, exactly: never a prefix or a look-alike."""
        key, url = plain(client_id), plain(redirect_uri)
        return key is not None and url is not None and self._registry.redirect_url_matches(key, url)

    def get_default_redirect_uri(
        self, client_id: str, request: Any, *args: Any, **kwargs: Any
    ) -> str | None:
        """The app's redirect URL: an app has one, so a request may leave it out.

        RFC 6749 sections 3.1.2.3 and 4.1.1. A code issued for a request that left it out
        needs none in its token request either (section 4.1.3).
        """
        key = plain(client_id)
        if key is None:
            return None
        try:
            return self._registry.get_app(key).redirect_url
        except AppNotFound:
            return None

    def validate_response_type(
        self,
        client_id: str,
        response_type: str,
        client: Any,
        request: Any,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        """Only ``code``."""
        return response_type == "code"

    def get_default_scopes(
        self, client_id: str, request: Any, *args: Any, **kwargs: Any
    ) -> list[str]:
        """No scopes: a token acts for its account with everything the host allows the app."""
        return []

    def validate_scopes(
        self,
        client_id: str,
        scopes: list[str],
        client: Any,
        request: Any,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        """Only the empty scope; asking for any is refused rather than silently ignored.

        A deferred client is authenticated first, so that bad credentials are still told
        before a bad scope.
        """
        if scopes and isinstance(client, PresentedClient):
            self._settle(request)
        return not scopes

    def is_pkce_required(self, client_id: str, request: Any) -> bool:
        """PKCE is optional; when the authorization request used it, the exchange must too."""
        return False

    def save_authorization_code(
        self, client_id: str, code: dict[str, Any], request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """The signed-in user approved: `Registry.authorize` installs the app and makes the code.

        ``request.user`` must be a `SignedInUser`. oauthlib's code in ``code`` is replaced by
        the Registry's, in place, before oauthlib puts it in the redirect.

        Raises:
            oauthlib.oauth2.AccessDeniedError: The policy refused (the cause is logged).
        """
        user = request.user
        if not isinstance(user, SignedInUser):
            raise TypeError("request.user must be the SignedInUser who approved the app")
        try:
            issued = self._registry.authorize(
                client_id,
                user.account,
                redirect_url=_given_redirect_uri(request),
                approved_by=user.user,
                code_challenge=request.code_challenge,
                code_challenge_method=request.code_challenge_method,
            )
        except Denied as exc:
            logger.info("authorization denied for app %s: %s", client_id, exc.decision.reason)
            raise oauth_errors.AccessDeniedError(request=request) from exc
        except AppNotFound as exc:
            raise oauth_errors.InvalidClientIdError(request=request) from exc
        except ValidationError as exc:
            if "redirect_url" in exc.fields:
                raise oauth_errors.MismatchingRedirectURIError(request=request) from exc
            raise oauth_errors.InvalidRequestError(request=request) from exc
        code["code"] = issued.code

    # -- token requests ---------------------------------------------------------------------

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """Only the shape here: a code works once, so `save_bearer_token` takes and judges it."""
        request.scopes = []
        return plain(code) is not None

    def confirm_redirect_uri(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        client: Any,
        request: Any,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        """Deferred: `Registry.exchange_code` compares it with the code's, exactly."""
        return True

    def get_code_challenge(self, code: str, request: Any) -> None:
        """None: `Registry.exchange_code` checks the PKCE verifier against the stored challenge."""

    def invalidate_authorization_code(
        self, client_id: str, code: str, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Nothing to do: `Registry.exchange_code` took the code already."""

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """Only the shape here: `Registry.refresh` judges and rotates it in one transaction."""
        return plain(refresh_token) is not None

    def get_original_scopes(
        self, refresh_token: str, request: Any, *args: Any, **kwargs: Any
    ) -> list[str]:
        """No scopes (see `get_default_scopes`)."""
        return []

    def rotate_refresh_token(self, request: Any) -> bool:
        """Always: each refresh token works once, and a reused one revokes its family."""
        return True

    def save_bearer_token(
        self, token: dict[str, Any], request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Let the Registry issue the tokens, and put them in oauthlib's response, in place.

        The token request's ``User-Agent`` is recorded on the token, truncated to fit.

        Raises:
            oauthlib.oauth2.InvalidGrantError: The code or refresh token is unknown, expired,
                used, bound to another app or redirect URL, or its PKCE verifier fails.
            oauthlib.oauth2.InvalidClientError: The app may not act now (bad credentials,
                unknown or disabled app), said as for a wrong secret.
            oauthlib.oauth2.UnauthorizedClientError: Client credentials of an untrusted app.
        """
        client = request.client
        deferred = isinstance(client, PresentedClient) and request.grant_type == (
            "client_credentials"
        )
        if not deferred and not isinstance(client, AuthenticatedClient):
            raise oauth_errors.InvalidClientError(request=request)
        agent = user_agent(request.headers.get("User-Agent"))
        try:
            issued = self._issue(client, request, agent)
        except InvalidGrant as exc:
            logger.info("grant refused for app %s: %s", client.client_id, exc.detail)
            raise oauth_errors.InvalidGrantError(
                description=_GRANT_REFUSED, request=request
            ) from exc
        except Denied as exc:
            logger.info("token refused for app %s: %s", client.client_id, exc.decision.reason)
            if deferred and exc.decision.reason not in _TOLD_BEFORE_TRUST:
                self._refuse_untrusted(client.client_id, request)
            raise _denial(exc, request) from exc
        except ValidationError as exc:
            raise oauth_errors.InvalidRequestError(request=request) from exc
        token["access_token"] = issued.token
        token["token_type"] = "Bearer"
        token["expires_in"] = issued.expires_in(issued.record.issued_at)
        if issued.refresh_token is not None:
            token["refresh_token"] = issued.refresh_token
        else:
            token.pop("refresh_token", None)
        if not token.get("scope"):
            token.pop("scope", None)

    def _refuse_untrusted(self, key: str, request: Any) -> None:
        # The client authenticated, but another rule refused it: had it been authenticated
        # first, an untrusted app would have been told so before anything else (R19), as
        # `validate_grant_type` does. A refusal only, so the extra read costs no grant.
        try:
            trusted = self._registry.get_app(key).trusted
        except AppNotFound:
            return
        if not trusted:
            raise oauth_errors.UnauthorizedClientError(request=request)

    def _issue(
        self, client: AuthenticatedClient | PresentedClient, request: Any, agent: str | None
    ) -> IssuedToken:
        grant_type = request.grant_type
        if grant_type == "client_credentials":
            # One transaction: the credentials, the app's state (locked) and the insert.
            return self._registry.issue_token(client.client_id, client.secret, user_agent=agent)
        if grant_type == "authorization_code":
            code = plain(request.code)
            if code is None:
                raise oauth_errors.InvalidGrantError(description=_GRANT_REFUSED, request=request)
            return self._registry.exchange_code(
                client.client_id,
                code,
                redirect_url=_given_redirect_uri(request),
                code_verifier=plain(request.code_verifier),
                user_agent=agent,
            )
        if grant_type == "refresh_token":
            refresh_token = plain(request.refresh_token)
            if refresh_token is None:
                raise oauth_errors.InvalidGrantError(description=_GRANT_REFUSED, request=request)
            return self._registry.refresh(client.client_id, refresh_token, user_agent=agent)
        raise oauth_errors.UnsupportedGrantTypeError(request=request)

    # -- revocation, introspection, resources -----------------------------------------------

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """Revoke an access token, or a refresh token's whole family, of the requesting app.

        Another app's token is left alone and answered as if revoked, as unknown tokens are
        (RFC 7009 section 2.2), so the caller learns nothing about it.
        """
        value = plain(token)
        client = request.client
        if value is None or not isinstance(client, AuthenticatedClient):
            return
        self._registry.revoke(value, key=client.client_id)

    def introspect_token(
        self, token: str, token_type_hint: str | None, request: Any, *args: Any, **kwargs: Any
    ) -> dict[str, Any] | None:
        """The claims of an access token the requesting app holds and may use now, else None.

        Every denial (unknown, expired, disabled, another app's token, a refresh token) is
        ``{"active": false}``, without saying why (RFC 7662 section 2.2).
        """
        value = plain(token)
        client = request.client
        if value is None or not isinstance(client, AuthenticatedClient):
            return None
        check = self._registry.check_token(value)
        record = check.token
        if not check.allowed or record is None or record.app_key != client.client_id:
            return None
        return {
            "client_id": record.app_key,
            "sub": record.account,
            "token_type": "Bearer",
            "iat": int(record.issued_at.timestamp()),
            "exp": int(record.expires_at.timestamp()),
            "jti": record.token_id,
        }

    def validate_bearer_token(self, token: str, scopes: list[str], request: Any) -> bool:
        """`Registry.check_token`: for hosts that protect resources with ``verify_request``.

        On success ``request.client_id`` is the app's key and ``request.user`` the account;
        ``request.token_check`` is the `TokenCheck` either way.
        """
        value = plain(token)
        if value is None:
            return False
        check = self._registry.check_token(value)
        request.token_check = check
        if check.allowed and check.token is not None:
            request.client_id = check.token.app_key
            request.user = check.token.account
            return True
        return False


def _given_redirect_uri(request: Any) -> str | None:
    # oauthlib fills in the default (`get_default_redirect_uri`) for a request without one;
    # the Registry must know that it was left out.
    if getattr(request, "using_default_redirect_uri", False):
        return None
    uri = request.redirect_uri
    return str.__str__(uri) if isinstance(uri, str) else None


def _denial(exc: Denied, request: Any) -> Exception:
    reason = exc.decision.reason
    error: Exception
    if reason == Reason.APP_NOT_TRUSTED:
        error = oauth_errors.UnauthorizedClientError(request=request)
    elif reason in _CLIENT_REASONS:
        error = oauth_errors.InvalidClientError(request=request)
    else:
        # The account's side (installation missing or suspended, no apps permission, a host
        # rule): the grant no longer holds.
        error = oauth_errors.InvalidGrantError(description=_GRANT_REFUSED, request=request)
    return error

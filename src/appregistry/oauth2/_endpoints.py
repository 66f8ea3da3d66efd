"""The endpoints' logic, once for every transport: a `_Request` in, a `_Response` out.

`make_wsgi_app` and `make_asgi_app` are thin adapters around `Endpoints`: they turn their
transport's request into a `_Request`, ask `Endpoints.refusal` whether to refuse it before
reading its body, read the body within the same limits, and send back what
`Endpoints.respond` answers. `respond` blocks (it calls the registry); the ASGI adapter runs
it in a worker thread.
"""

from __future__ import annotations

import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import attrs
from oauthlib.common import add_params_to_uri
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from .._policy import Reason
from .._records import App
from .._registry import Clock, Registry
from ..errors import AppNotFound, StorageError, ValidationError
from ..integrations import BearerError, TokenGuard
from ..metrics import Metrics
from ._consent import (
    CONSENT_FIELDS,
    ConsentPage,
    ConsentRequest,
    CsrfSigner,
    message_page,
)
from ._http import (
    SECURITY_HEADERS,
    _Refused,
    _Request,
    _Response,
    check_limits,
    described,
    endpoint_paths,
    error_code,
    form_text,
    html_response,
    json_response,
    oauthlib_response,
    redirect_response,
)
from ._logging import install_log_escaping
from ._metrics import observe
from ._server import RegistryServer, make_server
from ._throttle import Throttle, Throttling
from ._validator import SignedInUser

__all__ = ["Endpoints", "make_endpoints", "server_metadata"]

logger = logging.getLogger("appregistry.oauth2")

# The methods each endpoint answers; any other gets 405.
_METHODS: Final = {
    "authorize": ("GET", "POST"),
    "token": ("POST",),
    "revoke": ("POST",),
    "introspect": ("POST",),
    "me": ("GET",),
    "metadata": ("GET",),
}
# What the consent page says when an approval would be refused, by the policy's reason.
_BLOCKED: Final[dict[str, str]] = {
    Reason.APPS_NOT_PERMITTED: (
        "The account {account} is not permitted to use apps. "
        "Ask your service provider to permit it, then try again."
    ),
    Reason.INSTALLATION_SUSPENDED: (
        "{app} is suspended on the account {account}. Resume it on the account's "
        "App Management page, then try again."
    ),
    Reason.APP_DISABLED: "{app} is disabled by its provider for now.",
}
_BLOCKED_OTHERWISE: Final = "{app} cannot be allowed on the account {account} now."


def server_metadata(issuer: str) -> dict[str, object]:
    """The RFC 8414 metadata of the endpoints mounted at ``issuer``.

    ``issuer`` is the URL of the mount point, such as ``https://example.com`` (the endpoints
    at the site's root) or ``https://example.com/oauth``; the endpoints' URLs follow
    `endpoint_paths`.

    >>> data = server_metadata("https://example.com")
    >>> data["token_endpoint"], data["code_challenge_methods_supported"]
    ('https://example.com/oauth/token.php', ['S256'])
    >>> server_metadata("https://example.com/oauth")["token_endpoint"]
    'https://example.com/oauth/token.php'
    """
    issuer = issuer.rstrip("/")
    paths = endpoint_paths(urllib.parse.urlsplit(issuer).path)
    methods = ["client_secret_basic", "client_secret_post"]
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}{paths['authorize']}",
        "token_endpoint": f"{issuer}{paths['token']}",
        "revocation_endpoint": f"{issuer}{paths['revoke']}",
        "introspection_endpoint": f"{issuer}{paths['introspect']}",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "introspection_endpoint_auth_methods_supported": methods,
        "code_challenge_methods_supported": ["S256"],
    }


def make_endpoints(
    registry: Registry,
    *,
    current_user: Callable[[Any], SignedInUser | None],
    consent_page: ConsentPage,
    stylesheet_url: str | None,
    login_url: str | None,
    csrf_key: bytes | None,
    max_body_size: int,
    clock: Clock,
    realm: str,
    always_require_state: bool,
    issuer: str | None,
    throttling: Throttling | None = None,
    metrics: Metrics | None = None,
) -> Endpoints:
    """The endpoints with the options `make_wsgi_app` and `make_asgi_app` document."""
    if max_body_size < 1:
        raise ValueError("max_body_size must be at least 1")
    install_log_escaping()
    return Endpoints(
        registry=registry,
        server=make_server(registry, realm=realm, always_require_state=always_require_state),
        current_user=current_user,
        consent_page=consent_page,
        stylesheet_url=stylesheet_url,
        login_url=login_url,
        signer=CsrfSigner(csrf_key if csrf_key is not None else secrets.token_bytes(32)),
        max_body_size=max_body_size,
        clock=clock,
        realm=realm,
        issuer=issuer.rstrip("/") if issuer is not None else None,
        throttle=Throttle(throttling, metrics) if throttling is not None else None,
        metrics=metrics,
    )


@attrs.define(kw_only=True)
class Endpoints:
    """The OAuth 2.0 endpoints and ``/uapi/me``, behind any transport."""

    registry: Registry
    server: RegistryServer
    current_user: Callable[[Any], SignedInUser | None]
    consent_page: ConsentPage
    stylesheet_url: str | None
    login_url: str | None
    signer: CsrfSigner
    max_body_size: int
    clock: Clock
    realm: str
    issuer: str | None
    throttle: Throttle | None = None
    metrics: Metrics | None = None

    def refusal(self, request: _Request) -> _Response | None:
        """The answer to a request refused on its head alone (path, method, limits), or None.

        Adapters ask this before reading the body: a refused body is never read.
        """
        name = self._route(request)
        if name is None:
            response = json_response(404, {"error": "not_found"})
        elif request.method not in _METHODS[name]:
            response = json_response(
                405,
                {"error": "invalid_request", "error_description": "Method not allowed."},
                [("Allow", ", ".join(_METHODS[name]))],
            )
        else:
            try:
                check_limits(request, self.max_body_size)
            except _Refused as refused:
                response = self._refused(name, refused)
            else:
                return None
        return self._finish(request, response)

    def too_large(self, request: _Request) -> _Response:
        """The answer to a body found larger than allowed while it was read (413)."""
        name = self._route(request) or "metadata"
        refused = _Refused(413, f"The body is larger than {self.max_body_size} bytes.")
        return self._finish(request, self._refused(name, refused))

    def respond(self, request: _Request) -> _Response:
        """The answer to ``request``, its body read. Blocks: it calls the registry."""
        early = self.refusal(request)
        if early is not None:
            return early
        name = self._route(request) or "metadata"
        handler = getattr(self, f"_{name}")
        started = time.perf_counter()
        try:
            throttled = self.throttle.refusal(name, request) if self.throttle else None
            if throttled is not None:
                response = self._refused(name, throttled)
            else:
                response = handler(request)
                if self.throttle is not None:
                    self.throttle.record(name, request, response)
        except _Refused as refused:
            response = self._refused(name, refused)
        except StorageError:
            logger.exception("storage failed while serving %s", self._shown_path(request))
            response = json_response(503, {"error": "temporarily_unavailable"})
        except Exception:
            logger.exception("failed while serving %s", self._shown_path(request))
            response = json_response(500, {"error": "server_error"})
        if self.metrics is not None:
            observe(self.metrics, name, request, response, time.perf_counter() - started)
        return self._finish(request, response)

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _route(request: _Request) -> str | None:
        for name, path in endpoint_paths(request.root).items():
            if request.path == path:
                return name
        return None

    def _refused(self, name: str, refused: _Refused) -> _Response:
        if name == "authorize":
            page = html_response(
                refused.status, self._message("Request refused", refused.description)
            )
            return attrs.evolve(page, headers=(*page.headers, *refused.headers))
        return json_response(
            refused.status,
            {"error": "invalid_request", "error_description": refused.description},
            refused.headers,
        )

    def _finish(self, request: _Request, response: _Response) -> _Response:
        response = described(response)
        self._log_refusal(request, response)
        headers = (*response.headers, *SECURITY_HEADERS)
        return _Response(
            response.status, (*headers, ("Content-Length", str(len(response.body)))), response.body
        )

    def _shown_path(self, request: _Request) -> str:
        # Only our own paths are logged: any other could be anything the client typed.
        shown = f"{request.root}{request.path}"
        return shown if self._route(request) is not None else "(another path)"

    def _log_refusal(self, request: _Request, response: _Response) -> None:
        # Why a request was refused, for the operator: the status and the OAuth error code,
        # never a parameter, header or body (they may hold secrets).
        error = error_code(response)
        if response.status < 400 and error is None:
            return
        logger.info(
            "refused %s %s: %s %s",
            request.method[:16],
            self._shown_path(request),
            response.status,
            error or "-",
        )

    @staticmethod
    def _headers(request: _Request) -> dict[str, str]:
        headers = dict(request.headers)
        if "User-Agent" in headers:
            # Transports hand headers over as Latin-1; clients send their user agent in UTF-8.
            raw = headers["User-Agent"].encode("latin-1", errors="replace")
            headers["User-Agent"] = raw.decode("utf-8", errors="replace")
        return headers

    def _message(self, title: str, message: str) -> str:
        return message_page(title, message, stylesheet_url=self.stylesheet_url)

    def _authorize_path(self, request: _Request) -> str:
        return f"{request.root}{endpoint_paths(request.root)['authorize']}"

    # -- the consent page -------------------------------------------------------------------

    def _authorize(self, request: _Request) -> _Response:
        if request.method == "GET":
            return self._ask(request, request.uri(), "GET", None, request.query)
        body = form_text(request.body)
        try:
            params = urllib.parse.parse_qsl(body, keep_blank_values=True, strict_parsing=bool(body))
        except ValueError:
            raise _Refused(400, "The form is malformed.") from None
        if any(name == "decision" for name, _ in params):
            return self._answer(request, params)
        return self._ask(request, request.uri(), "POST", body, body)

    def _ask(
        self, request: _Request, uri: str, method: str, body: str | None, query: str
    ) -> _Response:
        user = self.current_user(request.native)
        if user is None:
            return self._sign_in(request, query)
        try:
            _, info = self.server.validate_authorization_request(
                uri, method, body, self._headers(request)
            )
        except oauth_errors.FatalClientError as exc:
            return self._invalid_request(exc)
        except oauth_errors.OAuth2Error as exc:
            # Only errors after the client and redirect URL were found valid get here.
            return redirect_response(exc.in_uri(exc.redirect_uri))
        except ValueError:
            return html_response(400, self._message("Request refused", "The request is malformed."))
        asked = info["request"]
        try:
            app = self.registry.get_app(asked.client_id)
        except AppNotFound:
            return self._invalid_request(oauth_errors.InvalidClientIdError())
        fields = _consent_fields(asked)
        token = self.signer.sign(user, fields, self.clock())
        blocked = self._blocked(app, user)
        consent = ConsentRequest(
            app=app,
            user=user,
            action=self._authorize_path(request),
            fields=(*fields.items(), ("csrf_token", token)),
            stylesheet_url=self.stylesheet_url,
            blocked=blocked,
        )
        return html_response(200 if blocked is None else 403, self.consent_page(consent))

    def _blocked(self, app: App, user: SignedInUser) -> str | None:
        # Why an approval would be refused now: said at once rather than after "Allow".
        try:
            decision = self.registry.authorization_decision(app.key, user.account)
        except ValidationError:
            return "You are signed in to an account that cannot be used here."
        if decision.allowed:
            return None
        logger.info("consent blocked for app %s: %s", app.key, decision.reason)
        return _BLOCKED.get(decision.reason, _BLOCKED_OTHERWISE).format(
            app=app.name, account=user.account
        )

    def _answer(self, request: _Request, params: list[tuple[str, str]]) -> _Response:
        user = self.current_user(request.native)
        if user is None:
            return self._sign_in(request, None)
        names = [name for name, _ in params]
        if len(names) != len(set(names)):
            raise _Refused(400, "The form repeats a field.")
        form = dict(params)
        fields: dict[str, str] = {name: form[name] for name in CONSENT_FIELDS if name in form}
        if not self.signer.verify(form.get("csrf_token"), user, fields, self.clock()):
            return html_response(
                403,
                self._message(
                    "This form has expired",
                    "The form is too old or did not come from this site. "
                    "Go back to the app and start again.",
                ),
            )
        uri = request.uri(query=False)
        body = urllib.parse.urlencode(fields)
        headers = self._headers(request)
        decision = form["decision"]
        try:
            if decision == "approve":
                response = self.server.create_authorization_response(
                    uri, "POST", body, headers, scopes=[], credentials={"user": user}
                )
                return oauthlib_response(response)
            if decision != "deny":
                raise _Refused(400, "The decision must be approve or deny.")
            _, info = self.server.validate_authorization_request(uri, "POST", body, headers)
        except oauth_errors.FatalClientError as exc:
            return self._invalid_request(exc)
        except oauth_errors.OAuth2Error as exc:
            return redirect_response(exc.in_uri(exc.redirect_uri))
        denied = oauth_errors.AccessDeniedError(request=info["request"])
        return redirect_response(denied.in_uri(denied.redirect_uri))

    def _sign_in(self, request: _Request, query: str | None) -> _Response:
        if self.login_url is None or query is None:
            return html_response(
                401,
                self._message("Sign in first", "Sign in, then open the app's link again."),
            )
        back = self._authorize_path(request)
        if query:
            back = f"{back}?{query}"
        return redirect_response(add_params_to_uri(self.login_url, [("next", back)]))

    def _invalid_request(self, exc: Any) -> _Response:
        # Never redirect here: the client or its redirect URL is what is wrong (RFC 6749 4.1.2.1).
        return html_response(
            400,
            self._message(
                "This link to authorize an app is not valid",
                f"{exc.description or 'The request is not valid.'} Tell the app's makers.",
            ),
        )

    # -- the JSON endpoints -----------------------------------------------------------------

    def _token(self, request: _Request) -> _Response:
        body = form_text(request.body)
        return oauthlib_response(
            self.server.create_token_response(request.uri(), "POST", body, self._headers(request))
        )

    def _revoke(self, request: _Request) -> _Response:
        body = form_text(request.body)
        headers, text, status = self.server.create_revocation_response(
            request.uri(), "POST", body, self._headers(request)
        )
        return oauthlib_response(({"Cache-Control": "no-store", **headers}, text, status))

    def _introspect(self, request: _Request) -> _Response:
        body = form_text(request.body)
        return oauthlib_response(
            self.server.create_introspect_response(
                request.uri(), "POST", body, self._headers(request)
            )
        )

    def _me(self, request: _Request) -> _Response:
        # The integrations' guard decides, so /uapi/me answers as every framework adapter
        # does (RFC 6750): 400 invalid_request for an empty, malformed or doubled token, 401
        # with a challenge for a missing, unknown, expired or denied one.
        guard = TokenGuard(self.registry, realm=self.realm, metrics=self.metrics)
        try:
            identity = guard.authenticate(request.headers.get("Authorization"), request.query)
        except BearerError as refused:
            return _Response(refused.status, tuple(refused.headers), refused.body)
        return json_response(200, identity.as_json(), [("Vary", "Authorization")])

    def _metadata(self, request: _Request) -> _Response:
        return json_response(200, server_metadata(self.issuer or f"{request.origin}{request.root}"))


def _consent_fields(request: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in CONSENT_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str):
            fields[name] = value
    if getattr(request, "using_default_redirect_uri", False):
        # The request left redirect_uri out: so does the answer, and so may the exchange.
        fields.pop("redirect_uri", None)
    if "code_challenge" not in fields:
        fields.pop("code_challenge_method", None)
    return fields

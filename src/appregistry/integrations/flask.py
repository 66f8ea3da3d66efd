"""Flask: an extension that protects views with the registry's bearer tokens.

``pip install 'appregistry[flask]'``. `init_app` puts the guard in ``app.extensions``;
`require_token` protects a view; `identity_from` reads the `TokenIdentity` the view was let in
with (it is also ``flask.g.token_identity``).

>>> from flask import Flask
>>> from appregistry.integrations import TokenGuard
>>> app = init_app(Flask("example"), TokenGuard.from_url("memory:"))
>>> @app.get("/me")
... @require_token()
... def me():
...     return {"account": identity_from().account}
>>> app.test_client().get("/me").status_code
401
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

from flask import Flask, Response, current_app, g, make_response, request
from flask.ctx import _AppCtxGlobals

from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity

__all__ = ["EXTENSION_KEY", "get_guard", "identity_from", "init_app", "require_token"]

#: The key of the guard in ``app.extensions``.
EXTENSION_KEY: Final = "appregistry"

P = ParamSpec("P")
R = TypeVar("R")
FlaskT = TypeVar("FlaskT", bound=Flask)


def init_app(app: FlaskT, guard: TokenGuard) -> FlaskT:
    """Make ``guard`` check the tokens of ``app``'s protected views; returns ``app``."""
    app.extensions[EXTENSION_KEY] = guard
    return app


def get_guard(app: Flask | None = None) -> TokenGuard:
    """The guard `init_app` gave ``app`` (by default, the current app).

    Raises:
        RuntimeError: `init_app` was not called on the app.
    """
    app = current_app if app is None else app
    guard: TokenGuard | None = app.extensions.get(EXTENSION_KEY)
    if guard is None:
        raise RuntimeError(
            "appregistry.integrations.flask.init_app(app, guard) was not called on this app"
        )
    return guard


def identity_from(g: _AppCtxGlobals = g) -> TokenIdentity | None:
    """The `TokenIdentity` of the current request (``None`` if no token was required)."""
    identity = g.get(IDENTITY_KEY)
    return identity if isinstance(identity, TokenIdentity) else None


def _refusal(error: BearerError) -> Response:
    response = current_app.response_class(error.body, status=error.status)
    response.headers.update(error.headers)
    return response


def require_token(*, optional: bool = False) -> Callable[[Callable[P, R]], Callable[P, Any]]:
    """Protect a view: only a request with a valid bearer token reaches it.

    A refused request gets the RFC 6750 answer (see `appregistry.integrations.BearerError`)
    and the view does not run. An accepted one runs it with `identity_from` set, and the
    answer gets ``Vary: Authorization``. Async views work too.

    Args:
        optional: Run the view without a token too (the identity is ``None``); a token that
            is presented must still be valid.
    """

    def decorate(view: Callable[P, R]) -> Callable[P, Any]:
        @functools.wraps(view)
        def protected(*args: P.args, **kwargs: P.kwargs) -> Any:
            guard = get_guard()
            try:
                identity = guard.authenticate(
                    request.headers.getlist("Authorization"),
                    request.query_string,
                    optional=optional,
                )
            except BearerError as error:
                return _refusal(error)
            setattr(g, IDENTITY_KEY, identity)
            response = make_response(current_app.ensure_sync(view)(*args, **kwargs))
            response.vary.add("Authorization")
            return response

        return protected

    return decorate

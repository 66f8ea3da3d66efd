"""A plain WSGI application whose API answers only requests with a valid access token.

Run it with any WSGI server, on the registry that ``APPREGISTRY_DATABASE`` names::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 gunicorn 'wsgi_example:create_app()'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from appregistry.integrations import TokenGuard
from appregistry.integrations.wsgi import TokenMiddleware, identity_from


def guard_from_environment() -> TokenGuard:
    """A guard on the registry ``APPREGISTRY_DATABASE`` names, opened on first use."""
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    return TokenGuard.from_url(
        os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
        realm="example",
        pepper=pepper.encode() if pepper else None,
    )


def api(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/me``: who the request's token acts for."""
    identity = identity_from(environ)
    if environ.get("PATH_INFO") != "/me" or identity is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(identity.as_json()).encode()]


def create_app(guard: TokenGuard | None = None) -> WSGIApplication:
    """The whole application: the API behind the token middleware, under ``/api``."""
    protected = TokenMiddleware(api, guard or guard_from_environment())

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/api/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/api"
            environ["PATH_INFO"] = path.removeprefix("/api")
            return protected(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a public page"]

    return app

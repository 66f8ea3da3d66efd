"""A Flask application whose API answers only requests with a valid access token.

Run it on the registry that ``APPREGISTRY_DATABASE`` names, with Flask's development server
or under a prefork server::

    export APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3
    flask --app flask_example run
    gunicorn --workers 4 'flask_example:create_app()'
"""

from __future__ import annotations

import os

from flask import Flask

from appregistry.integrations import TokenGuard
from appregistry.integrations.flask import identity_from, init_app, require_token


def guard_from_environment() -> TokenGuard:
    """A guard on the registry ``APPREGISTRY_DATABASE`` names, opened on first use.

    Opened in each worker process, after the server forks: no pool is shared.
    """
    pepper = os.environ.get("APPREGISTRY_PEPPER")
    return TokenGuard.from_url(
        os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
        realm="example",
        pepper=pepper.encode() if pepper else None,
    )


def create_app(guard: TokenGuard | None = None) -> Flask:
    """The application; tests pass a guard of their own."""
    app = Flask(__name__)
    init_app(app, guard or guard_from_environment())

    @app.get("/")
    def index() -> str:
        return "a public page"

    @app.get("/api/me")
    @require_token()
    def me() -> dict[str, str]:
        return identity_from().as_json()

    @app.get("/api/hello")
    @require_token(optional=True)
    def hello() -> dict[str, str]:
        identity = identity_from()
        return {"hello": identity.account if identity else "stranger"}

    return app

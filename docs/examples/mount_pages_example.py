r"""A Starlette site with pages of its own, the management pages and the OAuth 2.0 endpoints.

The site keeps its users and its sign-in; appregistry adds the management pages under
``/manage`` and the OAuth endpoints under ``/oauth``. Both ask the site who is signed in,
through a ``current_user`` function that reads the site's own session. Run it with::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 SITE_SECRET=change-me \\
        uvicorn --factory mount_pages_example:create_app

``--factory`` makes each worker call `create_app`, so the registry (and its connection pool)
is opened in the process that uses it, after any fork.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
from typing import Final

import attrs
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from appregistry import Registry, open_registry
from appregistry.oauth2 import SignedInUser, make_asgi_app
from appregistry.web import Role, WebUser, make_app


@attrs.frozen
class SiteUser:
    """One of the site's own users: the site decides who may administer apps."""

    name: str
    account: str
    admin: bool = False


#: The site's users. A real site has a user table and passwords; this one trusts the name.
USERS: Final = {
    "root": SiteUser("root", "provider", admin=True),
    "alice": SiteUser("alice", "acme"),
}


def signed_in(request: Request) -> SiteUser | None:
    """The user the site's session says is signed in, or ``None``."""
    return USERS.get(request.session.get("user", ""))


def current_web_user(request: Request) -> WebUser | None:
    """Who the management pages serve: the site's administrators are the provider."""
    user = signed_in(request)
    if user is None:
        return None
    return WebUser(user.name, Role.PROVIDER if user.admin else Role.ACCOUNT, user.account)


def current_oauth_user(request: Request) -> SignedInUser | None:
    """Who approves an app on the consent page: the signed-in user, for their account."""
    user = signed_in(request)
    return SignedInUser(account=user.account, user=user.name) if user else None


async def home(request: Request) -> HTMLResponse:
    """The site's own first page, which knows nothing of appregistry."""
    user = signed_in(request)
    greeting = f"Hello, {html.escape(user.name)}." if user else "Hello, stranger."
    return HTMLResponse(f'<h1>Our site</h1><p>{greeting}</p><a href="/manage/">Apps</a>')


def _local(target: str) -> str:
    # Only a path on this site: "next" comes from the query, so it must not lead elsewhere.
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


async def login(request: Request) -> Response:
    """The site's sign-in: a form, then the page the visitor came from (``next``)."""
    target = _local(request.query_params.get("next", "/"))
    if request.method == "POST":
        form = await request.form()
        name = str(form.get("name", ""))
        if name in USERS:
            # A new session on sign-in, so a session fixed before it is worth nothing.
            request.session.clear()
            request.session["user"] = name
            return RedirectResponse(target, status_code=303)
    return HTMLResponse(
        '<form method="post"><label>Name <input name="name"></label>'
        "<button>Sign in</button></form>",
        status_code=401 if request.method == "POST" else 200,
    )


def _derived(secret: str, purpose: str) -> str:
    # One key per use: the session and the CSRF cookie are never signed with the same key.
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def create_app(registry: Registry | None = None, *, secret: str | None = None) -> Starlette:
    """The site. Tests pass a registry and a secret; a deployment reads the environment.

    Args:
        registry: The registry; by default the one ``APPREGISTRY_DATABASE`` names.
        secret: Signs the site's session cookie and the pages' CSRF cookie; every process of
            the site must share it (``SITE_SECRET``). Without it each process makes its own.
    """
    if registry is None:
        registry = open_registry(os.environ.get("APPREGISTRY_DATABASE", "sqlite:///apps.sqlite3"))
    secret = secret or os.environ.get("SITE_SECRET") or secrets.token_urlsafe(32)
    pages = make_app(
        registry,
        current_user=current_web_user,
        login_url="/login",
        csrf_secret=_derived(secret, "csrf"),
    )
    oauth = make_asgi_app(registry, current_user=current_oauth_user, login_url="/login")
    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login, methods=["GET", "POST"]),
            Mount("/manage", app=pages),
            Mount("/oauth", app=oauth),
        ],
        # The site's session, in front of everything: the pages use it too (for their
        # one-line messages), so one cookie serves the whole site.
        middleware=[Middleware(SessionMiddleware, secret_key=_derived(secret, "session"))],
    )

"""`make_app`: the pages as one Starlette application, ready to mount under any path."""

from __future__ import annotations

import functools
import os
import secrets
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any, Final

import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from .._registry import Registry
from .._validation import display_url
from . import _account, _dev, _provider
from ._forms import beside_field
from ._security import (
    CSRF_FIELD,
    RequestGuard,
    SecurityHeaders,
    SessionIfMissing,
    csrf_middleware,
)
from ._site import PAGE_SIZES, Ctx, OwnUrls, Site, csrf_token, path_for, take_flash
from ._users import CurrentUser, Role

__all__ = ["DEFAULT_MAX_BODY_SIZE", "make_app"]

#: The largest form accepted (413 beyond): a Remove Selected of a 1000-token page fits.
DEFAULT_MAX_BODY_SIZE: Final = 128 * 1024
#: How long a session lasts without a visit.
SESSION_MAX_AGE: Final = 8 * 60 * 60


def make_app(
    registry: Registry,
    *,
    current_user: CurrentUser,
    login_url: str | None = None,
    session_secret: str | None = None,
    csrf_secret: str | None = None,
    https_only: bool = False,
    reveal_secrets: bool = False,
    templates_dir: str | os.PathLike[str] | None = None,
    time_zone: tzinfo = UTC,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    session_cookie: str = "appregistry_session",
    csrf_cookie: str = "appregistry_csrftoken",
    unsafe_dev_sign_in: bool = False,
) -> Starlette:
    """The management pages on ``registry``, as a Starlette (ASGI) application.

    Mount it anywhere (``Mount("/manage", app=make_app(...))``, or behind a proxy with a
    ``root_path``): every link and asset is built from where it is mounted.

    Args:
        current_user: Says who is signed in, from the request (the host's session, cookie or
            header): a `WebUser`, or ``None``. Called in a worker thread for every page.
        login_url: Where a visitor who is not signed in is sent, with the page to come back
            to as ``next``. Without it, such a visitor gets a 401 page.
        session_secret: Signs the session cookie, which carries the one-line messages (and
            the development sign-in). Processes serving the same site must share it; by
            default each app makes its own, so sessions end when the process does. If the
            host already runs Starlette's ``SessionMiddleware`` in front of the app, its
            session is used instead and this is ignored.
        csrf_secret: Signs the CSRF cookie; the same rules as ``session_secret``.
        https_only: Mark the cookies ``Secure`` (set it whenever the site is served over
            HTTPS, as it should be outside development).
        reveal_secrets: Offer "Reveal" for an app's secret on Edit App. Only a registry
            with a ``secret_encryption_key`` can reveal one; without it the page says so.
        templates_dir: A folder of templates that replace the package's own, name for name
            (``appregistry/layout.html`` restyles every page).
        time_zone: The zone the pages show times in (UTC by default; times say their zone).
        max_body_size: The largest form accepted (413 beyond).
        session_cookie, csrf_cookie: The cookies' names.
        unsafe_dev_sign_in: DEVELOPMENT ONLY. Adds a sign-in page (``/sign-in``) where anyone
            may sign in as any role, account and name; `dev_session_user` reads the choice.
            Never turn it on where anyone else can reach the pages.

    >>> from appregistry import Registry
    >>> from appregistry.storage.memory import MemoryStorage
    >>> from appregistry.web import Role, WebUser
    >>> app = make_app(
    ...     Registry(storage=MemoryStorage()),
    ...     current_user=lambda request: WebUser("admin", Role.PROVIDER, "provider"),
    ... )
    >>> sorted(route.name for route in app.routes if route.name.startswith("app"))[:3]
    ['app_disable', 'app_edit', 'app_enable']
    """
    if max_body_size < 1:
        raise ValueError("max_body_size must be at least 1")
    templates = _templates(templates_dir)
    site = Site(
        registry=registry,
        templates=templates,
        current_user=current_user,
        login_url=login_url,
        reveal_secrets=reveal_secrets,
        time_zone=time_zone,
        dev_sign_in=unsafe_dev_sign_in,
    )
    templates.env.filters["when"] = site.when
    templates.env.filters["day"] = functools.partial(site.when, time=False)
    templates.env.globals["dev_sign_in"] = unsafe_dev_sign_in

    def error_page(scope: Scope, status: int, title: str, message: str) -> Response:
        return site.error(Request(scope), status, title, message)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        titles = {404: "Not found", 405: "Not allowed"}
        messages = {404: "There is no such page.", 405: "This page does not take that method."}
        response = site.error(
            request,
            status,
            titles.get(status, "Bad request"),
            messages.get(status, "The request cannot be answered."),
        )
        if isinstance(exc, HTTPException) and exc.headers:
            response.headers.update(exc.headers)
        return response

    return Starlette(
        routes=_routes(site, dev_sign_in=unsafe_dev_sign_in),
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(OwnUrls),
            Middleware(RequestGuard, max_body_size=max_body_size, error_page=error_page),
            Middleware(
                SessionIfMissing,
                secret_key=session_secret or secrets.token_urlsafe(32),
                session_cookie=session_cookie,
                max_age=SESSION_MAX_AGE,
                same_site="lax",
                https_only=https_only,
            ),
            Middleware(
                csrf_middleware,
                secret=csrf_secret or secrets.token_urlsafe(32),
                cookie_name=csrf_cookie,
                https_only=https_only,
                error_page=error_page,
            ),
        ],
        exception_handlers={HTTPException: http_error},
    )


def _routes(site: Site, *, dev_sign_in: bool) -> list[BaseRoute]:
    provider, account = Role.PROVIDER, Role.ACCOUNT
    get, post, both = ["GET"], ["POST"], ["GET", "POST"]

    def page(path: str, view: Any, name: str, methods: list[str], role: Role | None) -> Route:
        return Route(path, site.page(view, role=role), name=name, methods=methods)

    routes: list[BaseRoute] = [
        page("/", _home, "home", get, None),
        # The provider administrator.
        page("/apps/", _provider.apps, "apps", get, provider),
        page("/apps/new", _provider.app_new, "app_new", both, provider),
        page("/apps/remove", _provider.apps_remove, "apps_remove", post, provider),
        page("/apps/{key}", _provider.app_edit, "app_edit", both, provider),
        page("/apps/{key}/enable", _provider.app_enable, "app_enable", post, provider),
        page("/apps/{key}/disable", _provider.app_disable, "app_disable", post, provider),
        page("/apps/{key}/regenerate", _provider.app_regenerate, "app_regenerate", both, provider),
        page("/apps/{key}/reveal", _provider.app_reveal, "app_reveal", post, provider),
        page("/accounts/", _provider.accounts, "accounts", get, provider),
        page("/accounts/permit", _provider.account_permit, "account_permit", post, provider),
        page("/accounts/forbid", _provider.account_forbid, "account_forbid", post, provider),
        # An account's user.
        page("/installed/", _account.installed, "installed", get, account),
        page("/installed/remove", _account.installed_remove, "installed_remove", post, account),
        page(
            "/installed/{key}/suspend",
            _account.installation_suspend,
            "installation_suspend",
            post,
            account,
        ),
        page(
            "/installed/{key}/resume",
            _account.installation_resume,
            "installation_resume",
            post,
            account,
        ),
        page("/installed/{key}/tokens", _account.tokens, "tokens", get, account),
        page(
            "/installed/{key}/tokens/remove", _account.tokens_remove, "tokens_remove", post, account
        ),
        page("/install/", _account.install, "install", get, account),
        page("/install/{key}", _account.install_app, "install_app", post, account),
        Mount("/static", StaticFiles(packages=[("appregistry.web", "static")]), name="static"),
    ]
    if dev_sign_in:
        routes += [
            Route(
                "/sign-in",
                functools.partial(_dev.sign_in, site.templates),
                name="sign_in",
                methods=both,
            ),
            Route("/sign-out", _dev.sign_out, name="sign_out", methods=post),
        ]
    return routes


def _home(_site: Site, ctx: Ctx) -> Response:
    """The signed-in user's first page: App Registration or App Management."""
    route = "apps" if ctx.user.role is Role.PROVIDER else "installed"
    return RedirectResponse(path_for(ctx.request, route), 303)


def _templates(directory: str | os.PathLike[str] | None) -> Jinja2Templates:
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("appregistry.web", "templates")]
    if directory is not None:
        loaders.insert(0, jinja2.FileSystemLoader(directory))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        url_for=_url_for,
        list_url=_list_url,
        csrf_input=_csrf_input,
        display_url=display_url,
        page_sizes=PAGE_SIZES,
        csrf_field=CSRF_FIELD,
    )
    env.filters["beside_field"] = beside_field
    return Jinja2Templates(env=env, context_processors=[_flash])


def _flash(request: Request) -> dict[str, Any]:
    return {"flash": take_flash(request)}


@jinja2.pass_context
def _url_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


@jinja2.pass_context
def _list_url(
    context: Mapping[str, Any], name: str, /, *, query: Mapping[str, Any], **params: Any
) -> str:
    """A list page's URL with its search and paging; empty values and page 1 are left out."""
    kept = {k: v for k, v in query.items() if v not in (None, "") and not (k == "page" and v == 1)}
    path = path_for(context["request"], name, **params)
    return f"{path}?{urllib.parse.urlencode(kept)}" if kept else path


@jinja2.pass_context
def _csrf_input(context: Mapping[str, Any]) -> Markup:
    token = csrf_token(context["request"])
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))

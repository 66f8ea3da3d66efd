"""What every page shares: who is signed in, rendering, redirects, messages and errors.

A view is a plain function ``view(site, ctx) -> Response``. `Site.page` turns it into a
Starlette endpoint that reads the form (the only asynchronous part), then runs the view in a
worker thread, since the Registry and storage block. Every answer and every failure passes
through `Site._run`: the one place that signs visitors in, checks the role, and turns errors
into pages, so no view can leak a 500 or skip the role check.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, tzinfo
from typing import Any, Final, TypeVar

import attrs
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from .._records import Page
from .._registry import Registry
from ..errors import (
    AppNotFound,
    Denied,
    FieldProblem,
    InstallationNotFound,
    NotFound,
    StorageError,
    TokenNotFound,
    ValidationError,
)
from ._security import CSRF_FIELD
from ._users import CurrentUser, Role, WebUser

__all__ = ["MAX_FORM_FIELDS", "Ctx", "OwnUrls", "Refusal", "Site", "View", "path_for"]

logger = logging.getLogger("appregistry.web")

#: The most fields one form may carry (a Remove Selected of a 1000-entry page, and some).
MAX_FORM_FIELDS: Final = 1100
#: The page sizes the lists offer, as the seeds do; any size from 1 to 1000 is accepted.
PAGE_SIZES: Final = (10, 25, 100)
_FLASH: Final = "appregistry.flash"
_MAX_PAGE: Final = 1_000_000_000
_MAX_PER_PAGE: Final = 1000
_MAX_CURSOR: Final = 4096
T = TypeVar("T")


class Refusal(Exception):
    """Stop the view and answer with an error page: 401, 403, 404 and the like."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


@attrs.frozen
class Ctx:
    """One request as a view sees it: the request, the signed-in user, the posted form."""

    request: Request
    user: WebUser
    form: FormData | None = None

    def field(self, name: str) -> str:
        """A posted field's text ("" when absent)."""
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""

    def fields(self, name: str) -> list[str]:
        """Every value posted under ``name`` (checkboxes), de-duplicated, in order."""
        if self.form is None:
            return []
        return list(dict.fromkeys(v for v in self.form.getlist(name) if isinstance(v, str)))

    def cursor(self) -> dict[str, str]:
        """The list cursor the Previous or Next link carried (``after`` or ``before``)."""
        source = self.request.query_params
        for name in ("after", "before"):
            value = source.get(name)
            if value and len(value) <= _MAX_CURSOR:
                return {name: value}
        return {}

    def listing(self) -> tuple[str | None, int, int]:
        """The list's search text, page and page size, from the query or the posted form."""
        source: Mapping[str, Any] = (
            self.form if self.form is not None else self.request.query_params
        )
        search = source.get("search")
        text = search.strip() if isinstance(search, str) and search.strip() else None
        return (
            text,
            _whole(source.get("page"), 1, _MAX_PAGE, 1),
            _whole(source.get("per_page"), 1, _MAX_PER_PAGE, PAGE_SIZES[0]),
        )


def _whole(value: object, low: int, high: int, default: int) -> int:
    # A list's paging comes from links and hidden fields: anything odd means the default.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
        number = int(value)
        if low <= number <= high:
            return number
    return default


View = Callable[["Site", Ctx], Response]


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """The path of the pages' route ``name``, under wherever the host mounted them."""
    router: Router = request.scope["appregistry.router"]
    base: str = request.scope["appregistry.root_path"]
    return base.rstrip("/") + str(router.url_path_for(name, **params))


class OwnUrls:
    """Remembers where the pages are mounted and which router names their routes.

    Links are built from the pages' own router, not the host's, so they hold whatever name
    (or none) the host mounts the app under, and behind any ``root_path``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {
                **scope,
                "appregistry.router": scope["app"].router,
                "appregistry.root_path": scope.get("root_path", ""),
            }
        await self.app(scope, receive, send)


@attrs.define(kw_only=True)
class Site:
    """The pages' shared state and plumbing."""

    registry: Registry
    templates: Jinja2Templates
    current_user: CurrentUser
    login_url: str | None
    reveal_secrets: bool
    time_zone: tzinfo
    dev_sign_in: bool

    # -- endpoints ------------------------------------------------------------------------

    def page(
        self, view: View, *, role: Role | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint running ``view`` for users of ``role`` (any role if None)."""

        async def endpoint(request: Request) -> Response:
            form = None
            if request.method == "POST":
                try:
                    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
                except HTTPException as exc:
                    return self.error(
                        request, exc.status_code, "Bad request", "The form is malformed."
                    )
            return await run_in_threadpool(self._run, view, role, request, form)

        return endpoint

    def _run(
        self, view: View, role: Role | None, request: Request, form: FormData | None
    ) -> Response:
        user: WebUser | None = None
        try:
            user = self.current_user(request)
            if user is None:
                return self._sign_in(request)
            if role is not None and user.role is not role:
                return self.error(
                    request, 403, "Not for you", "Your role cannot open this page.", user=user
                )
            response = view(self, Ctx(request, user, form))
        except Refusal as refusal:
            response = self.error(
                request, refusal.status, refusal.title, refusal.message, user=user
            )
        except (AppNotFound, InstallationNotFound, TokenNotFound, NotFound):
            response = self.error(
                request,
                404,
                "Not found",
                "There is nothing here; it may have been removed.",
                user=user,
            )
        except Denied as exc:
            # The decision's reason is for logs; the page says what the user can act on.
            logger.info("refused by policy: %s", exc.decision.reason)
            response = self.error(request, 403, "Not allowed", str(exc), user=user)
        except StorageError:
            logger.exception("storage failed while serving %s", request.url.path)
            response = self.error(
                request, 503, "Try again later", "The registry's storage is not available now."
            )
        except Exception:
            logger.exception("failed while serving %s", request.url.path)
            response = self.error(request, 500, "Something went wrong", "The error is logged.")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _sign_in(self, request: Request) -> Response:
        login = self.login_url
        if login is None and self.dev_sign_in:
            login = path_for(request, "sign_in")
        if login is None:
            return self.error(request, 401, "Sign in first", "Sign in, then open this page again.")
        back = request.url.path
        if request.method == "GET" and request.url.query:
            back = f"{back}?{request.url.query}"
        elif request.method != "GET":
            back = path_for(request, "home")
        separator = "&" if "?" in login else "?"
        return RedirectResponse(f"{login}{separator}{urllib.parse.urlencode({'next': back})}", 303)

    # -- answers --------------------------------------------------------------------------

    def render(
        self,
        ctx: Ctx,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        message: str | None = None,
    ) -> Response:
        """The page ``template`` for ``ctx``'s user; ``message`` shows as this page's notice."""
        return self.templates.TemplateResponse(
            ctx.request,
            template,
            {"user": ctx.user, "notice": message, **context},
            status_code=status,
        )

    def redirect(
        self,
        ctx: Ctx,
        route: str,
        message: str,
        *,
        query: Mapping[str, object] | None = None,
        **params: Any,
    ) -> Response:
        """303 to ``route``, with a one-line message shown on the page it leads to."""
        ctx.request.session[_FLASH] = message
        target = path_for(ctx.request, route, **params)
        kept = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        if kept:
            target = f"{target}?{urllib.parse.urlencode(kept)}"
        return RedirectResponse(target, 303)

    def error(
        self,
        request: Request,
        status: int,
        title: str,
        message: str,
        *,
        user: WebUser | None = None,
    ) -> Response:
        """An error page (with the user's tabs when signed in); it never fails itself."""
        try:
            return self.templates.TemplateResponse(
                request,
                "appregistry/error.html",
                {"status": status, "title": title, "message": message, "user": user},
                status_code=status,
                headers={"Cache-Control": "no-store"},
            )
        except Exception:
            logger.exception("failed to render the error page")
            return Response(f"{status} {title}", status, media_type="text/plain")

    def list_page(
        self, ctx: Ctx, fetch: Callable[..., Page[T]]
    ) -> tuple[Page[T], dict[str, list[str]]]:
        """A page of a list, by the request's search, paging and cursor; and the problems.

        A Next or Previous link carries a cursor, so a deep page costs what the first does
        (R26); a cursor that no longer fits the list (stale or forged) is dropped, and the
        page is counted out by its number instead. Bad search text is a problem to show
        beside the search box, with an empty list.
        """
        search, page, per_page = ctx.listing()
        attempts = [ctx.cursor(), {}] if ctx.cursor() else [{}]
        for cursor in attempts:
            try:
                return fetch(search=search, page=page, per_page=per_page, **cursor), {}
            except ValidationError as exc:
                if cursor and any(p.field in cursor for p in exc.problems):
                    continue
                return Page((), 0, 1, per_page), problems_by_field(exc.problems)
        return Page((), 0, 1, per_page), {}  # pragma: no cover - the last attempt returns

    # -- template helpers -----------------------------------------------------------------

    def when(self, moment: datetime, *, time: bool = True) -> str:
        """A time as the pages show it: "Apr 20, 2015 10:56:40 UTC" (the date alone if not time)."""
        local = moment.astimezone(self.time_zone)
        text = f"{local:%b} {local.day}, {local.year}"
        return f"{text} {local:%H:%M:%S %Z}" if time else text


def take_flash(request: Request) -> str | None:
    """The message left by the last redirect, once."""
    session = request.scope.get("session")
    message = session.pop(_FLASH, None) if session is not None else None
    return message if isinstance(message, str) else None


def problems_by_field(problems: tuple[FieldProblem, ...]) -> dict[str, list[str]]:
    """``ValidationError.problems`` grouped by field, for showing beside each input."""
    grouped: dict[str, list[str]] = {}
    for problem in problems:
        grouped.setdefault(problem.field, []).append(problem.message)
    return grouped


def csrf_token(request: Request) -> str:
    """The CSRF token for this request's forms (asgi-csrf puts a getter in the scope)."""
    getter = request.scope.get(CSRF_FIELD)
    return str(getter()) if callable(getter) else ""

"""DEVELOPMENT ONLY: a sign-in page where anyone may be anyone, kept in the session.

`appregistry.web.make_app` adds it with ``unsafe_dev_sign_in=True``, and
`dev_session_user` reads the choice back; ``appregistry serve --dev-sign-in`` uses both.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from ._site import csrf_token, path_for
from ._users import Role, WebUser

__all__ = ["DEV_USER_KEY", "dev_session_user", "safe_next"]

#: The session key holding the development sign-in's choice.
DEV_USER_KEY: Final = "appregistry.dev_user"
_MAX_ID: Final = 128


def dev_session_user(request: Request) -> WebUser | None:
    """The user chosen on the development sign-in page, from the session; or ``None``.

    Usable as ``current_user`` wherever Starlette's session is in the request (the consent
    page's too, which is how ``appregistry serve --dev-sign-in`` signs both in at once).
    """
    session = request.scope.get("session")
    chosen = session.get(DEV_USER_KEY) if session is not None else None
    if not isinstance(chosen, dict):
        return None
    name, role, account = chosen.get("name"), chosen.get("role"), chosen.get("account")
    if not all(isinstance(v, str) and _is_id(v) for v in (name, account)):
        return None
    if role not in {r.value for r in Role}:
        return None
    return WebUser(str(name), Role(role), str(account))


def _is_id(value: str) -> bool:
    return 0 < len(value) <= _MAX_ID and value == value.strip() and value.isprintable()


def safe_next(value: object, default: str) -> str:
    """``value`` if it is a path on this site, else ``default``: no open redirects.

    >>> safe_next("/manage/apps/?page=2", "/"), safe_next("//evil.example/", "/")
    ('/manage/apps/?page=2', '/')
    """
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value or not value.isprintable():
        return default
    return value


async def sign_in(templates: Jinja2Templates, request: Request) -> Response:
    """GET: the page; POST: sign in as the chosen role, account and name."""
    home = path_for(request, "home")
    problems: dict[str, list[str]] = {}
    values = {"role": Role.PROVIDER.value, "account": "provider", "name": "admin"}
    back = safe_next(request.query_params.get("next"), home)
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=10)
        values = {k: str(form.get(k) or "") for k in ("role", "account", "name")}
        back = safe_next(form.get("next"), home)
        if values["role"] not in {r.value for r in Role}:
            problems["role"] = ["Choose a role."]
        for field in ("account", "name"):
            if not _is_id(values[field]):
                problems[field] = [f"Give a {field} of 1 to {_MAX_ID} printable characters."]
        if not problems:
            request.session[DEV_USER_KEY] = values
            return RedirectResponse(back, 303)
    response: Response = templates.TemplateResponse(
        request,
        "appregistry/sign_in.html",
        {
            "user": dev_session_user(request),
            "values": values,
            "problems": problems,
            "next": back,
            "roles": list(Role),
            "csrf": csrf_token(request),
        },
        status_code=400 if problems else 200,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def sign_out(request: Request) -> Response:
    """Forget the development sign-in."""
    request.session.pop(DEV_USER_KEY, None)
    return RedirectResponse(path_for(request, "sign_in"), 303)

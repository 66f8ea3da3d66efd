"""A Django project in one file, whose API answers only requests with a valid access token.

Run it on the registry that ``APPREGISTRY_DATABASE`` names::

    APPREGISTRY_DATABASE=sqlite:///myapps.sqlite3 python django_example.py runserver

In a project of your own, `SETTINGS` go in ``settings.py`` and the views in an app.
"""

from __future__ import annotations

import os
import sys

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views import View

from appregistry.integrations import TokenGuard
from appregistry.integrations.django import identity_from, require_token

_pepper = os.environ.get("APPREGISTRY_PEPPER")
#: Named by the APPREGISTRY_TOKEN_GUARD setting. Nothing is opened here: the registry is
#: opened on first use in each process, after the server forks its workers.
guard = TokenGuard.from_url(
    os.environ.get("APPREGISTRY_DATABASE", "sqlite:///appregistry.sqlite3"),
    realm="example",
    pepper=_pepper.encode() if _pepper else None,
)


@require_token()
def me(request: HttpRequest) -> JsonResponse:
    """Who the request's token acts for."""
    return JsonResponse(identity_from(request).as_json())


@require_token(optional=True)
async def hello(request: HttpRequest) -> JsonResponse:
    """An async view that greets the token's account, or anyone without a token."""
    identity = identity_from(request)
    return JsonResponse({"hello": identity.account if identity else "stranger"})


@require_token()
class Grant(View):
    """A class-based view: decorating the class protects every method."""

    def get(self, request: HttpRequest) -> JsonResponse:
        """How the request's token was obtained."""
        return JsonResponse({"grant": str(identity_from(request).grant)})


def index(request: HttpRequest) -> JsonResponse:
    """A public page: the middleware lets requests without a token through."""
    return JsonResponse({"page": "public", "path": request.path})


urlpatterns = [
    path("", index),
    path("api/me", me),
    path("api/hello", hello),
    path("api/grant", Grant.as_view()),
]

SETTINGS = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "testserver"],
    "SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "an example only: set DJANGO_SECRET_KEY"),
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": ["appregistry.integrations.django.token_middleware"],
    "APPREGISTRY_TOKEN_GUARD": f"{__name__}.guard",
}

if __name__ == "__main__":
    from django.conf import settings
    from django.core.management import execute_from_command_line

    settings.configure(**SETTINGS)
    execute_from_command_line(sys.argv)

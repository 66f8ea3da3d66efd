"""The library's side of the HTTP rows, and the trivial app that measures the client's ceiling.

gunicorn imports this module in each worker (no ``--preload``), so the registry is opened
after the fork, once per worker process, on the database ``APPREGISTRY_BENCH_DATABASE`` names.

`ours` is what a Django host would deploy: a Django project whose ``/api/me`` is protected
by the library's ``@require_token()`` (DOT's side protects its view with
``@protected_resource()``, so both pay the same framework and differ in the check alone),
and, in front of Django, `appregistry.oauth2.make_wsgi_app` for the token endpoint at
``/oauth/token.php``. The library has no Django view for the token endpoint; its WSGI app is
how a Django host serves it, mounted beside Django's WSGI handler as here. So its grants do
not pass through Django, where DOT's do: the `trivial` app's figure tells what the framework
and server cost before either side does any work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, JsonResponse
from django.urls import path

from appregistry import open_registry
from appregistry.integrations import TokenGuard
from appregistry.integrations.django import identity_from, require_token
from appregistry.oauth2 import make_wsgi_app

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment


def trivial(
    environ: WSGIEnvironment,  # noqa: ARG001 - WSGI
    start_response: StartResponse,
) -> Iterable[bytes]:
    """Two bytes, no work: what the server and the load generator reach on their own."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


_URL = os.environ.get("APPREGISTRY_BENCH_DATABASE")
if _URL is not None:  # imported by the bench's driver too, which serves nothing
    registry = open_registry(_URL)
    guard = TokenGuard(registry)

    @require_token()
    def me(request: HttpRequest) -> JsonResponse:
        """Whom the request's token acts for."""
        identity = identity_from(request)
        assert identity is not None  # require_token() lets no request without one through
        return JsonResponse(identity.as_json())

    def unprotected(request: HttpRequest) -> JsonResponse:  # noqa: ARG001 - a Django view
        """The same kind of answer with no check at all: what Django alone costs."""
        return JsonResponse({"account": "acme", "app_key": "", "grant": "client_credentials"})

    urlpatterns = [path("api/me", me), path("api/open", unprotected)]
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        SECRET_KEY="benchmark only, never deployed",  # noqa: S106 - a throwaway project
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        APPREGISTRY_TOKEN_GUARD=guard,
    )
    django.setup()
    _django = WSGIHandler()
    _oauth = make_wsgi_app(registry, current_user=lambda _environ: None)

    def ours(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The token endpoint under ``/oauth/``, Django for everything else."""
        if environ.get("PATH_INFO", "").startswith("/oauth/"):
            return _oauth(environ, start_response)
        return _django(environ, start_response)

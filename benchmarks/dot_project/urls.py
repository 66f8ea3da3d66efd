"""DOT's URLs (the token endpoint at ``/o/token/``) and one protected view, ``/api/me``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from oauth2_provider.decorators import protected_resource


@protected_resource()
def me(request: HttpRequest) -> JsonResponse:
    """Whom the request's token acts for, as the library's ``/api/me`` answers."""
    owner = request.resource_owner  # type: ignore[attr-defined] # set by DOT
    return JsonResponse({"user": None if owner is None else owner.get_username()})


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/me", me),
]

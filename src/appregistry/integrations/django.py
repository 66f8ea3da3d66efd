"""Django: middleware and a view decorator that protect views with bearer tokens.

``pip install 'appregistry[django]'``. Name a `TokenGuard` in the settings, by dotted path
(opened on first use in each process, see `TokenGuard.from_url`)::

    APPREGISTRY_TOKEN_GUARD = "myproject.auth.guard"
    MIDDLEWARE = [..., "appregistry.integrations.django.token_middleware"]

`token_middleware` checks the token of every request that presents one, and refuses a bad
one; `require_token` refuses a view to requests without one. The decorator works without the
middleware too (it then checks the token itself), on function views, sync or async, and on
class-based views (decorate the class, or its methods). The `TokenIdentity` is
``request.token_identity``; read it with `identity_from`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django import conf
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.utils.decorators import sync_and_async_middleware
from django.utils.module_loading import import_string

from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity

__all__ = ["SETTING", "get_guard", "identity_from", "require_token", "token_middleware"]

#: The setting that names the guard: a dotted path to a `TokenGuard`, or the guard itself.
SETTING: Final = "APPREGISTRY_TOKEN_GUARD"

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


def get_guard() -> TokenGuard:
    """The `TokenGuard` the ``APPREGISTRY_TOKEN_GUARD`` setting names.

    Raises:
        ImproperlyConfigured: The setting is missing, or names something else.
    """
    # conf.settings, not settings: a module global that is lazy trips doctest collection.
    named = getattr(conf.settings, SETTING, None)
    if named is None:
        raise ImproperlyConfigured(f"{SETTING} must name a TokenGuard, e.g. 'myproject.auth.guard'")
    try:
        guard = import_string(named) if isinstance(named, str) else named
    except ImportError as exc:
        raise ImproperlyConfigured(f"{SETTING}: cannot import {named!r}: {exc}") from exc
    if not isinstance(guard, TokenGuard):
        raise ImproperlyConfigured(f"{SETTING} must name a TokenGuard, not {type(guard).__name__}")
    return guard


def identity_from(request: HttpRequest) -> TokenIdentity | None:
    """The `TokenIdentity` of ``request``, or ``None`` (no token, or none checked)."""
    identity = getattr(request, IDENTITY_KEY, None)
    return identity if isinstance(identity, TokenIdentity) else None


def _refusal(error: BearerError) -> HttpResponse:
    response = JsonResponse(error.as_json(), status=error.status)
    for name, value in error.headers:
        response[name] = value
    return response


def _authenticate(
    guard: TokenGuard, request: HttpRequest, *, optional: bool
) -> TokenIdentity | None:
    return guard.authenticate(
        request.headers.get("Authorization"),  # Django keeps one value per header
        request.META.get("QUERY_STRING", ""),
        optional=optional,
    )


@sync_and_async_middleware
def token_middleware(
    get_response: Callable[[HttpRequest], Any],
) -> Callable[[HttpRequest], Any]:
    """Check the bearer token of every request that presents one.

    A request without a token passes, with ``request.token_identity = None`` (a view that
    needs one says so with `require_token`). A presented token that is refused gets the
    RFC 6750 answer, wherever it was sent. Every answer gets ``Vary: Authorization``. In an
    async stack the check runs in a worker thread, never on the event loop.

    Raises:
        ImproperlyConfigured: At start-up, when the guard setting is wrong.
    """
    guard = get_guard()

    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            try:
                identity = await sync_to_async(_authenticate, thread_sensitive=False)(
                    guard, request, optional=True
                )
            except BearerError as error:
                return _refusal(error)
            setattr(request, IDENTITY_KEY, identity)
            response = await get_response(request)
            patch_vary_headers(response, ("Authorization",))
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        try:
            identity = _authenticate(guard, request, optional=True)
        except BearerError as error:
            return _refusal(error)
        setattr(request, IDENTITY_KEY, identity)
        response = get_response(request)
        patch_vary_headers(response, ("Authorization",))
        return response

    return middleware


def _request_of(args: tuple[Any, ...]) -> HttpRequest:
    # A function view gets the request first; a method of a class-based view gets it after
    # ``self`` (decorating a method directly, without method_decorator).
    for arg in args[:2]:
        if isinstance(arg, HttpRequest):
            return arg
    raise TypeError("require_token: the view was not given an HttpRequest")


def _checked(request: HttpRequest, *, optional: bool) -> TokenIdentity | BearerError | None:
    """What the middleware found: the identity, or the refusal for a missing token."""
    identity = identity_from(request)
    if identity is None and not optional:
        return get_guard().challenge()
    return identity


def require_token(*, optional: bool = False) -> Callable[[ViewT], ViewT]:
    """Protect a view: only a request with a valid bearer token reaches it.

    Decorates function views (sync or async), class-based views (the class: its
    ``dispatch`` is protected) and their methods. A refused request gets the RFC 6750 answer
    and the view does not run; an accepted one has ``request.token_identity`` set.

    Args:
        optional: Run the view without a token too (the identity is ``None``); a token that
            is presented must still be valid.
    """

    def decorate(view: ViewT) -> ViewT:
        if inspect.isclass(view):
            # A class-based view: every request goes through dispatch (Authlib #305).
            view.dispatch = decorate(view.dispatch)  # type: ignore[attr-defined]
            return view
        if iscoroutinefunction(view):
            return _async_view(view, optional=optional)  # type: ignore[return-value]
        return _sync_view(view, optional=optional)  # type: ignore[return-value]

    return decorate


def _sync_view(view: Callable[..., Any], *, optional: bool) -> Callable[..., Any]:
    @functools.wraps(view)
    def protected(*args: Any, **kwargs: Any) -> Any:
        request = _request_of(args)
        found: TokenIdentity | BearerError | None
        if hasattr(request, IDENTITY_KEY):
            found = _checked(request, optional=optional)
        else:
            try:
                found = _authenticate(get_guard(), request, optional=optional)
            except BearerError as error:
                found = error
        if isinstance(found, BearerError):
            return _refusal(found)
        setattr(request, IDENTITY_KEY, found)
        response = view(*args, **kwargs)
        patch_vary_headers(response, ("Authorization",))
        return response

    return protected


def _async_view(
    view: Callable[..., Awaitable[Any]], *, optional: bool
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(view)
    async def protected(*args: Any, **kwargs: Any) -> Any:
        request = _request_of(args)
        found: TokenIdentity | BearerError | None
        if hasattr(request, IDENTITY_KEY):
            found = _checked(request, optional=optional)
        else:
            try:
                found = await sync_to_async(_authenticate, thread_sensitive=False)(
                    get_guard(), request, optional=optional
                )
            except BearerError as error:
                found = error
        if isinstance(found, BearerError):
            return _refusal(found)
        setattr(request, IDENTITY_KEY, found)
        response = await view(*args, **kwargs)
        patch_vary_headers(response, ("Authorization",))
        return response

    return markcoroutinefunction(protected)

"""FastAPI: a security dependency that checks bearer tokens and appears in OpenAPI.

``pip install 'appregistry[fastapi]'``. `require_token` makes a `TokenBearer`, a subclass of
FastAPI's own security base, so the endpoints that depend on it declare an HTTP bearer scheme
(under its own ``scheme_name``, ``AppRegistryBearer`` by default, so it never merges with
another ``HTTPBearer`` of the host) and ``/docs`` offers to send a token. The dependency's
value is the `TokenIdentity`. The check runs in a worker thread, never on the event loop.

>>> from typing import Annotated
>>> from fastapi import FastAPI, Security
>>> from appregistry.integrations import TokenGuard, TokenIdentity
>>> guard = TokenGuard.from_url("memory:")
>>> app = FastAPI()
>>> @app.get("/me")
... def me(identity: Annotated[TokenIdentity, Security(require_token(guard))]):
...     return {"account": identity.account}
>>> app.openapi()["components"]["securitySchemes"]
{'AppRegistryBearer': {'type': 'http', 'scheme': 'bearer'}}
"""

from __future__ import annotations

from typing import Final

from fastapi import HTTPException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ._core import IDENTITY_KEY, BearerError, TokenGuard, TokenIdentity, add_vary

__all__ = ["DEFAULT_SCHEME_NAME", "TokenBearer", "require_token"]

#: The name of the security scheme in the OpenAPI document, unless given another.
DEFAULT_SCHEME_NAME: Final = "AppRegistryBearer"


class TokenBearer(SecurityBase):
    """A dependency: the `TokenIdentity` of the request's bearer token, or the RFC 6750 answer.

    The token comes from ``Authorization: Bearer T`` or ``?accessRequestToken=Bearer T``. A
    refused request gets an `fastapi.HTTPException` with the status and headers the core
    decided (``WWW-Authenticate`` included) and FastAPI's body, ``{"detail": description}``.
    An accepted one gets its identity as the dependency's value (also
    ``request.state.token_identity``), and ``Vary: Authorization`` on its answer.

    Args:
        guard: Checks the tokens.
        optional: Give ``None`` for a request without a token instead of refusing it; a token
            that is presented must still be valid.
        scheme_name: The scheme's name in OpenAPI.
        description: The scheme's description in OpenAPI.
    """

    def __init__(
        self,
        guard: TokenGuard,
        *,
        optional: bool = False,
        scheme_name: str = DEFAULT_SCHEME_NAME,
        description: str | None = None,
    ) -> None:
        self.model = HTTPBearerModel(description=description)
        self.scheme_name = scheme_name
        self.guard = guard
        self.optional = optional

    async def __call__(self, request: Request, response: Response) -> TokenIdentity | None:
        """The identity of the request's token (``None`` for no token, when optional)."""
        try:
            # Parsing reads only the request: it stays on the loop. The check may block.
            token = self.guard.token_of(
                request.headers.getlist("Authorization"), request.scope.get("query_string", b"")
            )
            if token is None:
                if not self.optional:
                    raise self.guard.challenge()
                identity = None
            else:
                identity = await run_in_threadpool(self.guard.verify, token)
        except BearerError as error:
            raise HTTPException(
                error.status, detail=error.description, headers=dict(error.headers)
            ) from None
        setattr(request.state, IDENTITY_KEY, identity)
        # FastAPI copies these headers onto the endpoint's answer (unless it returns a
        # Response of its own).
        for name, value in add_vary(response.headers.items()):
            if name.lower() == "vary":
                response.headers["Vary"] = value
        return identity


def require_token(
    guard: TokenGuard,
    *,
    optional: bool = False,
    scheme_name: str = DEFAULT_SCHEME_NAME,
    description: str | None = None,
) -> TokenBearer:
    """A `TokenBearer` dependency: ``Security(require_token(guard))`` protects an endpoint."""
    return TokenBearer(guard, optional=optional, scheme_name=scheme_name, description=description)

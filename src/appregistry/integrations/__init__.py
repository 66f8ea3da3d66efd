"""Protect a host's endpoints with the registry's access tokens, in any web framework.

The core is framework-neutral: `TokenGuard` turns the parts of a request (the
``Authorization`` header values and the query string) into the `TokenIdentity` the token acts
for, or raises the `BearerError` to answer with: its status, JSON body and
``WWW-Authenticate`` header follow RFC 6750 section 3. One adapter per framework converts the
request in and the error out, each a public module that imports its framework itself (so
``import appregistry.integrations`` imports none):

- `appregistry.integrations.wsgi`: WSGI middleware (no dependencies).
- `appregistry.integrations.asgi`: pure ASGI middleware (``anyio``).
- `appregistry.integrations.flask`: an extension, ``init_app`` and ``require_token``.
- `appregistry.integrations.django`: middleware and a ``require_token`` view decorator.
- `appregistry.integrations.fastapi`: a security dependency that appears in OpenAPI.
- `appregistry.integrations.starlette`: an authentication backend and ``require_token``.

Every adapter uses the same names: ``require_token(optional=False)`` protects an endpoint,
``identity_from(...)`` reads the `TokenIdentity` of the request. `read_bearer_token` is the
parser alone, for a host that checks the token itself; the OAuth endpoints' ``/uapi/me`` and
`appregistry.oauth2.bearer_token` use it too, so every part of the library answers alike.

>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> registry = Registry(storage=MemoryStorage())
>>> new = registry.register_app(
...     "acme", name="MyApp", homepage="https://example.com/", admin_email="a@example.com",
...     redirect_url="https://example.com/cb", trusted=True)
>>> _ = registry.permit_account("acme", by="admin")
>>> token = registry.issue_token(new.app.key, new.secret).token
>>> guard = TokenGuard(registry)
>>> guard.authenticate([f"Bearer {token}"]).account
'acme'
>>> guard.authenticate([], f"accessRequestToken=Bearer%20{token}").account
'acme'
>>> try:
...     guard.authenticate([f"Bearer {token}"], f"accessRequestToken=Bearer%20{token}")
... except BearerError as error:
...     print(error.status, error.error, error.description)
400 invalid_request Send one bearer token, in one place.
"""

from ._core import (
    DEFAULT_REALM,
    IDENTITY_KEY,
    QUERY_TOKEN_PARAMETER,
    BearerError,
    TokenGuard,
    TokenIdentity,
    add_vary,
    read_bearer_token,
)

__all__ = [
    "DEFAULT_REALM",
    "IDENTITY_KEY",
    "QUERY_TOKEN_PARAMETER",
    "BearerError",
    "TokenGuard",
    "TokenIdentity",
    "add_vary",
    "read_bearer_token",
]

"""OAuth 2.0 over a `Registry`, through oauthlib: ``pip install 'appregistry[oauth2]'``.

oauthlib parses and orchestrates; the Registry authenticates, decides and makes every token.

- `make_wsgi_app`: the endpoints as one WSGI application, ready to mount in any WSGI server or
  framework: ``/oauth/authorize.php`` (the consent page), ``/oauth/token.php``,
  ``/oauth/revoke`` (RFC 7009), ``/oauth/introspect`` (RFC 7662) and ``/uapi/me``, an example
  protected resource.
- `make_server`: the configured oauthlib server, for hosts that route requests themselves.
- `RegistryValidator`: the oauthlib ``RequestValidator`` under both.

``import appregistry`` never imports this package, nor oauthlib.

>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> from appregistry.oauth2 import make_wsgi_app, SignedInUser
>>> registry = Registry(storage=MemoryStorage())
>>> app = make_wsgi_app(registry, current_user=lambda environ: SignedInUser("acme", "alice"))
"""

from ._consent import (
    CONSENT_LIFETIME,
    ConsentPage,
    ConsentRequest,
    default_consent_page,
)
from ._server import MAX_STATE_LENGTH, MIN_STATE_LENGTH, RegistryServer, make_server
from ._validator import AuthenticatedClient, RegistryValidator, SignedInUser
from ._wsgi import (
    AUTHORIZE_PATH,
    DEFAULT_MAX_BODY_SIZE,
    INTROSPECT_PATH,
    ME_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    CurrentUser,
    bearer_token,
    make_wsgi_app,
)

__all__ = [
    "AUTHORIZE_PATH",
    "CONSENT_LIFETIME",
    "DEFAULT_MAX_BODY_SIZE",
    "INTROSPECT_PATH",
    "MAX_STATE_LENGTH",
    "ME_PATH",
    "MIN_STATE_LENGTH",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "AuthenticatedClient",
    "ConsentPage",
    "ConsentRequest",
    "CurrentUser",
    "RegistryServer",
    "RegistryValidator",
    "SignedInUser",
    "bearer_token",
    "default_consent_page",
    "make_server",
    "make_wsgi_app",
]
